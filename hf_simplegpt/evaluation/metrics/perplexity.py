"""`evaluate` metric: perplexity of a causal LM on texts, sliding window with a stride for long texts.

The model is a folder (or Hub id) given as `model_id`, or a loaded model passed as `model` together with
its `tokenizer`. Load with `evaluate.load("<path to this file>")`; `hf_simplegpt` must be importable.
"""

import datasets
import evaluate

from hf_simplegpt.evaluation.perplexity import perplexity

_DESCRIPTION = "Perplexity = exp(mean negative log-likelihood per token) of a causal language model."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): the texts to score.
    model_id (str): folder or Hub id of a causal LM (and its tokenizer). Either this or `model`.
    model: a loaded causal LM; then `tokenizer` is required.
    tokenizer: the tokenizer of `model`.
    stride (int): window step in tokens; defaults to half the window.
    max_length (int): window length; defaults to the model's context length.
    batch_size (int): windows per forward pass. Defaults to 8.
    add_bos (bool): prepend BOS so each text's first token is scored. Defaults to True.
    device (str): where to run a model loaded from `model_id`. Defaults to "cpu".
Returns:
    perplexities (one per text), mean_perplexity, perplexity (over all tokens), num_tokens.
Examples:
    >>> ppl = evaluate.load("hf_simplegpt/evaluation/metrics/perplexity.py")
    >>> ppl.compute(predictions=["Hello world."], model_id="outputs/pretrain")["perplexity"]  # doctest: +SKIP
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Perplexity(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(
        self,
        predictions,
        model_id=None,
        model=None,
        tokenizer=None,
        stride=None,
        max_length=None,
        batch_size=8,
        add_bos=True,
        device="cpu",
    ):
        if (model_id is None) == (model is None):
            raise ValueError("Give exactly one of model_id (a folder or Hub id) or model (with tokenizer).")
        if model_id is not None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)

            model = AutoModelForCausalLM.from_pretrained(model_id).to(device)
            tokenizer = AutoTokenizer.from_pretrained(model_id)
        elif tokenizer is None:
            raise ValueError("A model object needs its tokenizer: pass tokenizer=...")
        return perplexity(
            model, tokenizer, predictions, stride=stride, max_length=max_length, batch_size=batch_size, add_bos=add_bos
        )
