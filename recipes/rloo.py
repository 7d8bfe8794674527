"""Online RL with TRL's RLOOTrainer against a reward model and/or reward functions.

    accelerate launch recipes/rloo.py --config recipes/configs/rloo_tiny.yaml [flags]      # == hf-simplegpt rloo ...

The code is hf_simplegpt/recipes/rloo.py.
"""

from hf_simplegpt.recipes.rloo import main

if __name__ == "__main__":
    main()
