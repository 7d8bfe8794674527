"""Train a reward model on preference pairs with TRL's RewardTrainer.

    accelerate launch recipes/reward.py --config recipes/configs/reward_tiny.yaml [flags]      # == hf-simplegpt reward ...

The code is hf_simplegpt/recipes/reward.py.
"""

from hf_simplegpt.recipes.reward import main

if __name__ == "__main__":
    main()
