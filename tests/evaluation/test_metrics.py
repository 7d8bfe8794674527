"""The project's `evaluate` modules load from their files offline and compute known values."""

import importlib

import evaluate
import pytest
import sacrebleu

from hf_simplegpt.evaluation import METRICS_DIR, metric_path
from hf_simplegpt.evaluation.mmlu import aggregate
from tests.evaluation.conftest import loss_perplexity

NAMES = ["bleu", "mmlu", "perplexity"]


@pytest.mark.parametrize("name", NAMES)
def test_module_is_importable_and_loads_from_its_file(name):
    module = importlib.import_module(f"hf_simplegpt.evaluation.metrics.{name}")
    assert module.__file__ == str(METRICS_DIR / f"{name}.py")
    assert isinstance(evaluate.load(metric_path(name)), evaluate.EvaluationModule)


def test_unknown_metric_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: bleu, mmlu, perplexity"):
        metric_path("rouge")


def test_bleu_matches_sacrebleu_with_one_or_several_references():
    bleu = evaluate.load(metric_path("bleu"))
    preds = ["the cat sat on the mat", "a quick brown dog"]
    refs = [["the cat sat on a mat", "a cat sat on the mat"], ["the quick brown dog", "a fast brown dog"]]
    expected = sacrebleu.corpus_bleu(preds, [list(r) for r in zip(*refs)]).score
    assert bleu.compute(predictions=preds, references=refs)["bleu"] == pytest.approx(expected)
    single = bleu.compute(predictions=preds, references=[r[0] for r in refs])
    assert single["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [[r[0] for r in refs]]).score)
    assert bleu.compute(predictions=preds[:1], references=[preds[0]])["bleu"] == pytest.approx(100.0)


def test_mmlu_metric_is_the_harness_aggregate():
    kwargs = dict(
        predictions=[0, 1, 3, 2], references=[0, 2, 3, 2], subjects=["anatomy", "anatomy", "sociology", "law"]
    )
    result = evaluate.load(metric_path("mmlu")).compute(**kwargs)
    assert result == aggregate(kwargs["predictions"], kwargs["references"], kwargs["subjects"])
    assert result["categories"] == {"stem": {"acc": 0.5, "n": 2}, "social_sciences": {"acc": 1.0, "n": 1}}


def test_perplexity_of_short_texts_is_exp_of_the_model_loss(tiny_model, tiny_tokenizer):
    texts = ["The quick brown fox jumps over the lazy dog.", "To be, or not to be."]
    result = evaluate.load(metric_path("perplexity")).compute(
        predictions=texts, model=tiny_model, tokenizer=tiny_tokenizer
    )
    expected = [loss_perplexity(tiny_model, tiny_tokenizer, t) for t in texts]
    assert result["perplexities"] == pytest.approx(expected, rel=1e-5)
    assert result["mean_perplexity"] == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_perplexity_from_a_model_folder(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    text = ["All that glitters is not gold."]
    result = evaluate.load(metric_path("perplexity")).compute(predictions=text, model_id=str(tmp_path))
    assert result["perplexity"] == pytest.approx(loss_perplexity(tiny_model, tiny_tokenizer, text[0]), rel=1e-5)
