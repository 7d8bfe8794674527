"""`evaluate` metric: accuracy, the fraction of predictions equal to their references.

Load with `evaluate.load("<path to this file>")`; works offline (the Hub's canonical "accuracy" needs a download).
"""

import datasets
import evaluate

_DESCRIPTION = "Accuracy = (number of predictions equal to their reference) / (number of predictions)."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    normalize (bool): True returns the fraction correct, False the count correct. Defaults to True.
    sample_weight (list of float): per-example weights. Defaults to None (all 1).
Returns:
    accuracy (float or int): fraction (or weighted count) of correct predictions.
Examples:
    >>> accuracy = evaluate.load("hf_simplegpt/evaluation/metrics/accuracy.py")
    >>> accuracy.compute(predictions=[0, 1, 1], references=[0, 1, 0])
    {'accuracy': 0.6666666666666666}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, normalize=True, sample_weight=None):
        weights = [1.0] * len(predictions) if sample_weight is None else list(sample_weight)
        if len(weights) != len(predictions):
            raise ValueError(f"sample_weight has {len(weights)} entries for {len(predictions)} predictions.")
        correct = sum(w for p, r, w in zip(predictions, references, weights) if p == r)
        if not normalize:
            return {"accuracy": correct}
        if sum(weights) == 0:
            raise ValueError("Accuracy of zero examples (or all-zero weights) is undefined.")
        return {"accuracy": correct / sum(weights)}
