"""`evaluate` metric: MMLU accuracy per subject, per category (STEM, humanities, social sciences, other) and overall.

Predictions and references are answer indices 0-3; `subjects` names each question's MMLU subject.
Category and overall accuracies are micro averages over questions (lm-evaluation-harness's size-weighted
groups). Load with `evaluate.load("<path to this file>")`; `hf_simplegpt` must be importable.
"""

import datasets
import evaluate

from hf_simplegpt.evaluation.mmlu import aggregate

_DESCRIPTION = "MMLU (Hendrycks et al., 2021) accuracy aggregated per subject, per category and overall."
_CITATION = """@article{hendryckstest2021, title={Measuring Massive Multitask Language Understanding},
author={Dan Hendrycks and Collin Burns and Steven Basart and Andy Zou and Mantas Mazeika and Dawn Song and Jacob Steinhardt},
journal={Proceedings of the International Conference on Learning Representations (ICLR)}, year={2021}}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted answer index (0-3) per question.
    references (list of int): correct answer index per question.
    subjects (list of str): MMLU subject of each question, e.g. "abstract_algebra".
Returns:
    acc, acc_stderr, n, categories {category: {acc, n}}, subjects {subject: {acc, n}}.
Examples:
    >>> mmlu = evaluate.load("hf_simplegpt/evaluation/metrics/mmlu.py")
    >>> mmlu.compute(predictions=[0, 1], references=[0, 2], subjects=["anatomy", "marketing"])["categories"]
    {'stem': {'acc': 1.0, 'n': 1}, 'other': {'acc': 0.0, 'n': 1}}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Mmlu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "subjects": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, subjects):
        return aggregate(list(predictions), list(references), list(subjects))
