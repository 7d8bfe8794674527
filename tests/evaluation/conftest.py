"""Fixtures and reference implementations shared by the evaluation tests."""

import math

import pytest
import torch

from hf_simplegpt.tokenization import train_tokenizer
from tests.conftest import TINY_CORPUS


@pytest.fixture(scope="module")
def answer_tokenizer():
    """A tokenizer that has seen "Answer: A".."D" often enough to merge " A".." D" into single tokens."""
    extra = [f"Answer: {letter}" for letter in "ABCD"] * 20
    return train_tokenizer(TINY_CORPUS + extra, vocab_size=300, model_max_length=64)


def reference_loglik(model, tokenizer, context, continuation):
    """Plain one-request implementation of the harness's scoring, to check the batched engine against."""
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = tokenizer(context + continuation, add_special_tokens=False)["input_ids"][len(ctx) :]
    seq = (ctx + cont)[-(model.config.max_position_embeddings + 1) :]
    with torch.no_grad():
        logprobs = model(torch.tensor([seq[:-1]])).logits[0].log_softmax(-1)
    return sum(logprobs[len(seq) - 1 - len(cont) + j, t].item() for j, t in enumerate(cont))


def loss_perplexity(model, tokenizer, text):
    ids = torch.tensor([[tokenizer.bos_token_id] + tokenizer(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return math.exp(model(input_ids=ids, labels=ids).loss.item())
