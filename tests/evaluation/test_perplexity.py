"""hf_simplegpt.evaluation.perplexity: the sliding-window plan, every token scored once, batching, bad input."""

import pytest

from hf_simplegpt.evaluation.perplexity import _windows, perplexity
from tests.evaluation.conftest import loss_perplexity


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
        loss_perplexity(tiny_model, tiny_tokenizer, short), rel=1e-5
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
