"""Direct preference optimisation with TRL's DPOTrainer: learn from preference pairs without a reward model.

    accelerate launch recipes/dpo.py --config recipes/configs/dpo_tiny.yaml [flags]      # == hf-simplegpt dpo ...

The code is hf_simplegpt/recipes/dpo.py.
"""

from hf_simplegpt.recipes.dpo import main

if __name__ == "__main__":
    main()
