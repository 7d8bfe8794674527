"""hf_simplegpt.generation: one generate helper for every job; prompts and new tokens fit the model's context."""

import logging

import pytest
import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.generation import fit_to_context, generate
from tests.conftest import tiny_config_kwargs


def greedy_alone(model, tokenizer, prompt: str, new_tokens: int) -> str:
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    out = model.generate(ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_batched_greedy_text_equals_each_prompt_generated_alone(tiny_model, tiny_tokenizer):
    prompts = ["The quick brown", "To be", "All that glitters is not"]  # different lengths: left padding
    texts = generate(tiny_model, tiny_tokenizer, prompts, max_new_tokens=6, batch_size=2)
    assert texts == [greedy_alone(tiny_model, tiny_tokenizer, p, 6) for p in prompts]
    assert all(texts)  # something was generated for every prompt


def test_sampling_is_reproducible_by_seed_and_leaves_the_callers_random_state(tiny_model, tiny_tokenizer):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = generate(tiny_model, tiny_tokenizer, ["The sun"] * 4, max_new_tokens=8, do_sample=True, seed=7)
    assert torch.rand(1) == expected_next  # the caller's stream did not move
    assert first == generate(tiny_model, tiny_tokenizer, ["The sun"] * 4, max_new_tokens=8, do_sample=True, seed=7)
    assert len(set(first)) > 1  # four samples of one prompt differ: this is sampling, not greedy decoding


def test_chat_prompts_are_rendered_with_the_chat_template(tiny_model, tiny_tokenizer):
    chat = [{"role": "user", "content": "Say hi."}]
    rendered = tiny_tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert generate(tiny_model, tiny_tokenizer, [chat], max_new_tokens=5) == [
        greedy_alone(tiny_model, tiny_tokenizer, rendered, 5)
    ]


def test_new_tokens_and_long_prompts_are_capped_at_the_context_once_in_the_log(tiny_tokenizer, caplog):
    torch.manual_seed(0)
    model = SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs(max_position_embeddings=16))).eval()
    with caplog.at_level(logging.WARNING, logger="hf_simplegpt.generation"):
        texts = generate(model, tiny_tokenizer, ["The quick brown fox", "A"], max_new_tokens=40)
    prompt_tokens = len(tiny_tokenizer("The quick brown fox", add_special_tokens=False)["input_ids"])
    assert len(tiny_tokenizer(texts[0], add_special_tokens=False)["input_ids"]) <= 16 - prompt_tokens
    assert [r.message for r in caplog.records if "max_new_tokens=40" in r.message] != []
    assert len(caplog.records) == 1  # said once, not per token or per batch

    ids, new = fit_to_context([list(range(30)), [1, 2]], 10, limit=16)
    assert ids[0] == list(range(15, 30)) and ids[1] == [1, 2] and new == 1  # last 15 tokens kept, 1 position left
    assert fit_to_context([[1, 2, 3]], 5, limit=None) == ([[1, 2, 3]], 5)


def test_nothing_to_generate_is_an_error(tiny_model, tiny_tokenizer):
    assert generate(tiny_model, tiny_tokenizer, [], max_new_tokens=4) == []
    with pytest.raises(ValueError, match="max_new_tokens must be at least 1"):
        generate(tiny_model, tiny_tokenizer, ["x"], max_new_tokens=0)
