"""Quantize a SimpleGPT with torchao (int8 weight-only, int8 dynamic; int4 on a GPU) and compare it with the original.

    python recipes/quantize.py --model_name_or_path DIR --method int8_dynamic --output_dir OUT   # == hf-simplegpt quantize ...

The code is hf_simplegpt/recipes/quantize.py.
"""

from hf_simplegpt.recipes.quantize import main

if __name__ == "__main__":
    main()
