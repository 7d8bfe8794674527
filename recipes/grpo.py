"""Online RL with TRL's GRPOTrainer against a reward model and/or reward functions.

    accelerate launch recipes/grpo.py --config recipes/configs/grpo_tiny.yaml [flags]      # == hf-simplegpt grpo ...

The code is hf_simplegpt/recipes/grpo.py.
"""

from hf_simplegpt.recipes.grpo import main

if __name__ == "__main__":
    main()
