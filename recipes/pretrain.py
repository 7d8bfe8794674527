"""Pretrain a SimpleGPT from scratch with the transformers Trainer.

    accelerate launch recipes/pretrain.py --config recipes/configs/pretrain_tiny.yaml [flags]      # == hf-simplegpt pretrain ...

The code is hf_simplegpt/recipes/pretrain.py.
"""

from hf_simplegpt.recipes.pretrain import main

if __name__ == "__main__":
    main()
