"""Export a SimpleGPT to ExecuTorch (.pte) and check that it decodes exactly as `generate` does.

    python recipes/export.py --model_name_or_path DIR --format executorch --output_dir OUT   # == hf-simplegpt export ...

The code is hf_simplegpt/recipes/export.py.
"""

from hf_simplegpt.recipes.export import main

if __name__ == "__main__":
    main()
