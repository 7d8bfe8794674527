"""`evaluate` metric: corpus BLEU computed by sacrebleu (0-100 scale, sacrebleu's defaults).

Load with `evaluate.load("<path to this file>")`; works offline.
"""

import datasets
import evaluate
import sacrebleu

_DESCRIPTION = "Corpus-level BLEU (Papineni et al., 2002) as implemented by sacrebleu (Post, 2018)."
_CITATION = """@inproceedings{post-2018-call, title = "A Call for Clarity in Reporting {BLEU} Scores",
author = "Post, Matt", booktitle = "Proceedings of the Third Conference on Machine Translation", year = "2018"}"""
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one hypothesis per example.
    references (list of str, or list of list of str): one or several references per example; every
        example needs the same number of references.
    tokenize (str): sacrebleu tokenizer ("13a", "intl", "char", "none", ...). Defaults to "13a".
    lowercase (bool): compare lowercased text. Defaults to False.
    smooth_method (str): "exp", "floor", "add-k" or "none". Defaults to "exp".
Returns:
    bleu (float, 0-100), precisions (n-gram precisions, 0-100), brevity_penalty, length_ratio,
    translation_length, reference_length, signature (sacrebleu's reproducibility string).
Examples:
    >>> bleu = evaluate.load("hf_simplegpt/evaluation/metrics/bleu.py")
    >>> bleu.compute(predictions=["the cat sat on the mat"], references=[["the cat sat on the mat"]])["bleu"]
    100.00000000000004
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}
                ),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
        )

    def _compute(self, predictions, references, tokenize="13a", lowercase=False, smooth_method="exp"):
        references = [[r] if isinstance(r, str) else list(r) for r in references]
        n_refs = {len(r) for r in references}
        if len(n_refs) != 1:
            raise ValueError(f"Every prediction needs the same number of references; got counts {sorted(n_refs)}.")
        streams = [list(refs) for refs in zip(*references)]  # sacrebleu wants one list per reference slot
        bleu = sacrebleu.BLEU(tokenize=tokenize, lowercase=lowercase, smooth_method=smooth_method)
        result = bleu.corpus_score(predictions, streams)
        return {
            "bleu": result.score,
            "precisions": result.precisions,
            "brevity_penalty": result.bp,
            "length_ratio": result.ratio,
            "translation_length": result.sys_len,
            "reference_length": result.ref_len,
            "signature": str(bleu.get_signature()),
        }
