"""Write a small instruction dataset (two-number arithmetic as chat turns) for trying the SFT recipe offline.

    python recipes/make_sft_toy_data.py [flags]      # == hf-simplegpt make-sft-data ...

The code is hf_simplegpt/recipes/make_sft_toy_data.py.
"""

from hf_simplegpt.recipes.make_sft_toy_data import main

if __name__ == "__main__":
    main()
