"""The project's `evaluate` modules load from their files offline, compute known values and combine."""

import importlib
import math

import evaluate
import pytest
import sacrebleu
import torch

from hf_simplegpt.evaluation import METRICS_DIR, metric_path
from hf_simplegpt.evaluation.mmlu import aggregate
from hf_simplegpt.evaluation.perplexity import _windows, perplexity

NAMES = ["accuracy", "bleu", "f1", "mmlu", "perplexity"]


@pytest.mark.parametrize("name", NAMES)
def test_module_is_importable_and_loads_from_its_file(name):
    module = importlib.import_module(f"hf_simplegpt.evaluation.metrics.{name}")
    assert module.__file__ == str(METRICS_DIR / f"{name}.py")
    assert isinstance(evaluate.load(metric_path(name)), evaluate.EvaluationModule)


def test_unknown_metric_lists_valid_ones():
    with pytest.raises(ValueError, match="valid: accuracy, bleu, f1, mmlu, perplexity"):
        metric_path("rouge")


def test_accuracy_and_f1_values_and_combine():
    preds, refs = [0, 1, 2, 2, 1, 0, 2], [0, 2, 2, 1, 1, 0, 0]
    assert evaluate.load(metric_path("accuracy")).compute(predictions=preds, references=refs) == {"accuracy": 4 / 7}
    f1 = evaluate.load(metric_path("f1"))
    # per class (tp, fp, fn): 0 -> (2, 0, 1), 1 -> (1, 1, 1), 2 -> (1, 2, 1); f1 = 2tp / (2tp + fp + fn)
    per_class = [4 / 5, 2 / 4, 2 / 5]
    assert f1.compute(predictions=preds, references=refs, average="macro")["f1"] == pytest.approx(sum(per_class) / 3)
    assert f1.compute(predictions=preds, references=refs, average="micro")["f1"] == pytest.approx(4 / 7)
    weighted = (3 * per_class[0] + 2 * per_class[1] + 2 * per_class[2]) / 7
    assert f1.compute(predictions=preds, references=refs, average="weighted")["f1"] == pytest.approx(weighted)
    combined = evaluate.combine([metric_path("accuracy"), metric_path("f1")])
    assert combined.compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 1]) == {"accuracy": 0.5, "f1": 0.5}


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
    kwargs = dict(predictions=[0, 1, 3, 2], references=[0, 2, 3, 2], subjects=["anatomy", "anatomy", "sociology", "law"])
    result = evaluate.load(metric_path("mmlu")).compute(**kwargs)
    assert result == aggregate(kwargs["predictions"], kwargs["references"], kwargs["subjects"])
    assert result["categories"] == {"stem": {"acc": 0.5, "n": 2}, "social_sciences": {"acc": 1.0, "n": 1}}


def _loss_perplexity(model, tokenizer, text):
    ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return math.exp(model(input_ids=ids, labels=ids).loss.item())


def test_perplexity_of_short_texts_is_exp_of_the_model_loss(tiny_model, tiny_tokenizer):
    texts = ["The quick brown fox jumps over the lazy dog.", "To be, or not to be."]
    result = evaluate.load(metric_path("perplexity")).compute(predictions=texts, model=tiny_model, tokenizer=tiny_tokenizer)
    expected = [_loss_perplexity(tiny_model, tiny_tokenizer, t) for t in texts]
    assert result["perplexities"] == pytest.approx(expected, rel=1e-5)
    assert result["mean_perplexity"] == pytest.approx(sum(expected) / 2, rel=1e-5)


def test_perplexity_from_a_model_folder(tiny_model, tiny_tokenizer, tmp_path):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    text = ["All that glitters is not gold."]
    result = evaluate.load(metric_path("perplexity")).compute(predictions=text, model_id=str(tmp_path))
    assert result["perplexity"] == pytest.approx(_loss_perplexity(tiny_model, tiny_tokenizer, text[0]), rel=1e-5)


def test_window_plan():
    # (begin, end, first scored): tokens first..end-1 are scored with tokens begin..t-1 as context
    assert _windows(10, 4, 2) == [(0, 4, 1), (2, 6, 4), (4, 8, 6), (6, 10, 8)]
    assert _windows(10, 4, 4) == [(0, 4, 1), (4, 8, 5), (8, 10, 9)]  # tokens 4 and 8 start a window: unscored
    assert _windows(3, 8, 4) == [(0, 3, 1)]


def test_sliding_window_scores_every_token_once(tiny_model, tiny_tokenizer):
    text = " ".join(["Every cloud has a silver lining, even on the darkest day."] * 4)
    n_tokens = 1 + len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])  # + BOS
    assert n_tokens > 2 * 64
    overlapping = perplexity(tiny_model, tiny_tokenizer, [text], stride=16)
    assert overlapping["num_tokens"] == n_tokens - 1
    disjoint = perplexity(tiny_model, tiny_tokenizer, [text], stride=64)
    assert disjoint["num_tokens"] == n_tokens - 1 - (n_tokens - 1) // 64  # each window's first token has no context
    # a text that fits one window is scored with its full left context, whatever the stride
    short = "The sun rises in the east and sets in the west."
    assert 1 + len(tiny_tokenizer(short, add_special_tokens=False)["input_ids"]) <= 64
    assert perplexity(tiny_model, tiny_tokenizer, [short], stride=8)["perplexity"] == pytest.approx(
        _loss_perplexity(tiny_model, tiny_tokenizer, short), rel=1e-5
    )


def test_perplexity_batched_equals_single(tiny_model, tiny_tokenizer):
    texts = ["The sun rises in the east.", "Numbers like 3.14159 appear everywhere in mathematics. " * 3, "Hi"]
    batched = perplexity(tiny_model, tiny_tokenizer, texts, stride=32, batch_size=8)
    single = [perplexity(tiny_model, tiny_tokenizer, [t], stride=32, batch_size=1)["perplexity"] for t in texts]
    assert batched["perplexities"] == pytest.approx(single, rel=1e-5)


def test_perplexity_rejects_texts_empty_after_tokenisation(tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"Text 1 \(''\) has 1 token"):
        perplexity(tiny_model, tiny_tokenizer, ["fine text", ""])
    with pytest.raises(ValueError, match="at least one non-empty text"):
        perplexity(tiny_model, tiny_tokenizer, [])
    with pytest.raises(ValueError, match="stride must be in 1..max_length=64"):
        perplexity(tiny_model, tiny_tokenizer, ["x y"], stride=65)
