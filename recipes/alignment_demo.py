"""Offline demonstration that alignment works, on a CPU in a few minutes: SFT -> reward model -> GRPO/RLOO, DPO,

    python recipes/alignment_demo.py [flags]      # == hf-simplegpt alignment-demo ...

The code is hf_simplegpt/recipes/alignment_demo.py.
"""

from hf_simplegpt.recipes.alignment_demo import main

if __name__ == "__main__":
    main()
