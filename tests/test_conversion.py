"""GPT-2 -> SimpleGPT conversion: an external numerical reference for the whole model."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from hf_simplegpt.conversion import convert_gpt2_to_simplegpt


def tiny_gpt2(**overrides) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=128, n_positions=32, n_embd=48, n_layer=3, n_head=4, bos_token_id=127, eos_token_id=127, **overrides
    )
    return GPT2LMHeadModel(config).eval()


def test_converted_model_matches_gpt2_logits_in_float32():
    gpt2 = tiny_gpt2()
    model = convert_gpt2_to_simplegpt(gpt2)
    ids = torch.randint(0, 128, (3, 20), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    with torch.no_grad():
        reference = gpt2(ids).logits
        torch.testing.assert_close(model(ids).logits, reference, atol=1e-5, rtol=0)
        assert reference.abs().max() > 0.1  # a real signal, not near-zero logits
    assert model.config.norm_position == "pre" and model.config.hidden_act == "gelu_pytorch_tanh"
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_converted_model_generates_what_gpt2_generates():
    gpt2 = tiny_gpt2()
    model = convert_gpt2_to_simplegpt(gpt2)
    prompt = torch.tensor([[5, 17, 42]])
    kwargs = dict(max_new_tokens=10, do_sample=False, pad_token_id=0)
    assert torch.equal(model.generate(prompt, **kwargs), gpt2.generate(prompt, **kwargs))


def test_gpt2_variants_without_an_equivalent_are_refused():
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True"):
        convert_gpt2_to_simplegpt(tiny_gpt2(scale_attn_by_inverse_layer_idx=True))
