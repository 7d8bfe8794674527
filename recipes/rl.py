"""Online RL from a reward: GRPO (default) or RLOO with TRL, against a reward model and/or Python reward functions.

    accelerate launch recipes/rl.py --config recipes/configs/rl_tiny.yaml [flags]      # == hf-simplegpt rl ...

The code is hf_simplegpt/recipes/rl.py.
"""

from hf_simplegpt.recipes.rl import main

if __name__ == "__main__":
    main()
