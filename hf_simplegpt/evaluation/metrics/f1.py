"""`evaluate` metric: F1 = 2 * precision * recall / (precision + recall), binary or averaged over classes.

Load with `evaluate.load("<path to this file>")`; works offline. Same arguments and results as
scikit-learn's `f1_score` for average in {"binary", "micro", "macro", "weighted"} (0 where undefined).
"""

import datasets
import evaluate

_DESCRIPTION = "F1 score: harmonic mean of precision and recall."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted labels.
    references (list of int): true labels.
    average (str): "binary" (only `pos_label`), "micro" (global counts), "macro" (unweighted class mean),
        "weighted" (class mean weighted by support). Defaults to "binary".
    pos_label (int): the positive class for average="binary". Defaults to 1.
    labels (list of int): classes to average over. Defaults to all labels seen.
Returns:
    f1 (float): in [0, 1].
Examples:
    >>> f1 = evaluate.load("hf_simplegpt/evaluation/metrics/f1.py")
    >>> f1.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1])
    {'f1': 0.5}
"""


def _f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class F1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references, average="binary", pos_label=1, labels=None):
        if average not in ("binary", "micro", "macro", "weighted"):
            raise ValueError(f"average must be one of binary, micro, macro, weighted; got {average!r}.")
        if average == "binary":
            labels = [pos_label]
        elif labels is None:
            labels = sorted(set(predictions) | set(references))
        counts = {c: [0, 0, 0] for c in labels}  # tp, fp, fn
        for p, r in zip(predictions, references):
            if p == r and p in counts:
                counts[p][0] += 1
                continue
            if p in counts:
                counts[p][1] += 1
            if r in counts:
                counts[r][2] += 1
        if average in ("binary", "micro"):
            return {"f1": _f1(*(sum(c[i] for c in counts.values()) for i in range(3)))}
        scores = {c: _f1(*counts[c]) for c in labels}
        if average == "macro":
            return {"f1": sum(scores.values()) / len(scores)}
        support = {c: counts[c][0] + counts[c][2] for c in labels}
        total = sum(support.values())
        return {"f1": sum(scores[c] * support[c] for c in labels) / total if total else 0.0}
