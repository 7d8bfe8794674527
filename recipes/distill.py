"""On-policy knowledge distillation with TRL's DistillationTrainer: a small student learns from a larger teacher.

    accelerate launch recipes/distill.py --config recipes/configs/distill_tiny.yaml [flags]      # == hf-simplegpt distill ...

The code is hf_simplegpt/recipes/distill.py.
"""

from hf_simplegpt.recipes.distill import main

if __name__ == "__main__":
    main()
