"""Supervised fine-tuning of a SimpleGPT (or any causal LM) with TRL's SFTTrainer, optionally through LoRA / QLoRA.

    accelerate launch recipes/sft.py --config recipes/configs/sft_tiny.yaml [flags]      # == hf-simplegpt sft ...

The code is hf_simplegpt/recipes/sft.py.
"""

from hf_simplegpt.recipes.sft import main

if __name__ == "__main__":
    main()
