"""Evaluation: MMLU and CrowS-Pairs (lm-evaluation-harness protocols), perplexity, and `evaluate` metric modules.

The metric modules live as files under `metrics/` so that `evaluate.load(METRICS_DIR / "bleu.py")` works offline.
"""

from pathlib import Path

from .crows_pairs import evaluate_crows_pairs, load_crows_pairs
from .loglikelihood import encode_pair, encode_pairs, score_token_pairs
from .mmlu import aggregate, evaluate_mmlu, load_mmlu
from .perplexity import perplexity

METRICS_DIR = Path(__file__).parent / "metrics"


def metric_path(name: str) -> str:
    """Path of one of this project's `evaluate` modules: bleu (what `hf-simplegpt evaluate` scores with), and mmlu
    and perplexity (the project's own measures, for `evaluate` users)."""
    path = METRICS_DIR / f"{name}.py"
    if not path.is_file():
        valid = sorted(p.stem for p in METRICS_DIR.glob("*.py") if p.stem != "__init__")
        raise ValueError(f"No metric module {name!r}; valid: {', '.join(valid)}.")
    return str(path)


__all__ = [
    "METRICS_DIR",
    "aggregate",
    "encode_pair",
    "evaluate_crows_pairs",
    "encode_pairs",
    "evaluate_mmlu",
    "load_crows_pairs",
    "load_mmlu",
    "metric_path",
    "perplexity",
    "score_token_pairs",
]
