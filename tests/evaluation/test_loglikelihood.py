"""hf_simplegpt.evaluation.loglikelihood: request encoding and batched scoring against a one-by-one reference."""

import pytest

from hf_simplegpt.evaluation.loglikelihood import encode_pair, encode_pairs, score_token_pairs
from tests.evaluation.conftest import reference_loglik


def test_whitespace_moves_from_context_to_continuation(answer_tokenizer):
    assert encode_pair(answer_tokenizer, "Answer: ", "A") == encode_pair(answer_tokenizer, "Answer:", " A")


def test_batched_encoding_equals_one_by_one_and_empty_context_gets_bos(answer_tokenizer):
    requests = [("Answer:", " A"), ("Answer:", " B"), ("The quick", " brown fox"), ("", "Hello")]
    pairs = encode_pairs(answer_tokenizer, requests)
    assert pairs == [encode_pair(answer_tokenizer, *r) for r in requests]
    hello = answer_tokenizer("Hello", add_special_tokens=False)["input_ids"]
    assert pairs[3] == ([answer_tokenizer.bos_token_id], hello)
    assert pairs[0][0] + pairs[0][1] == answer_tokenizer("Answer: A", add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_batched_equals_one_by_one(tiny_model, tiny_tokenizer, padding_side):
    contexts = ["The quick brown fox", "To be, or not to be,", "A", "Knowledge is power, and power is " * 3]
    pairs = [encode_pair(tiny_tokenizer, c, cont) for c in contexts for cont in (" jumps", " the", " A")]
    single = score_token_pairs(tiny_model, pairs, batch_size=1, share_inputs=False)
    batched = score_token_pairs(tiny_model, pairs, batch_size=5, padding_side=padding_side)
    assert batched == pytest.approx(single, abs=1e-4)
    assert single[0] == pytest.approx(reference_loglik(tiny_model, tiny_tokenizer, contexts[0], " jumps"), abs=1e-4)
