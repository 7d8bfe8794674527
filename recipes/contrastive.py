"""Contrastive learning: a SimpleGPT as a sentence encoder trained on similar-text pairs (sentence-transformers).

    accelerate launch recipes/contrastive.py --config recipes/configs/contrastive.yaml \
        --model_name_or_path DIR --train_file pairs.jsonl --output_dir OUT          # == hf-simplegpt contrastive ...

The code is hf_simplegpt/recipes/contrastive.py.
"""

from hf_simplegpt.recipes.contrastive import main

if __name__ == "__main__":
    main()
