"""Structured pruning of a SimpleGPT (Minitron-style) and recovery by distillation from the unpruned model.

    accelerate launch recipes/prune.py --model_name_or_path DIR --train_file TXT --keep_ratio 0.5 \
        --recovery_steps 200 --output_dir OUT                                     # == hf-simplegpt prune ...

The code is hf_simplegpt/recipes/prune.py.
"""

from hf_simplegpt.recipes.prune import main

if __name__ == "__main__":
    main()
