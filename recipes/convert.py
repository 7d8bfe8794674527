"""Convert a GPT-2 checkpoint into a SimpleGPT with the same logits.

    python recipes/convert.py --gpt2 openai-community/gpt2 --output_dir simplegpt-gpt2      # == hf-simplegpt convert ...

The code is hf_simplegpt/recipes/convert.py.
"""

from hf_simplegpt.recipes.convert import main

if __name__ == "__main__":
    main()
