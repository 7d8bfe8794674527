"""Evaluate a causal LM folder: perplexity, MMLU (lm-evaluation-harness protocol) and BLEU.

    python recipes/eval.py [flags]      # == hf-simplegpt evaluate ...

The code is hf_simplegpt/recipes/eval.py.
"""

from hf_simplegpt.recipes.eval import main

if __name__ == "__main__":
    main()
