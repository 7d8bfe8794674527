"""hf_simplegpt.quantization: torchao through transformers' TorchAoConfig; bytes, agreement and loss measured."""

import pytest
import torch
from torchao.quantization import Int8Tensor
from transformers import AutoModelForCausalLM

from hf_simplegpt.quantization import (
    check_method,
    compare_on_blocks,
    quantized_weights,
    torchao_config,
    weight_bytes,
)


@pytest.fixture(scope="module")
def float_and_int8(trained_tiny_dir):
    reference = AutoModelForCausalLM.from_pretrained(trained_tiny_dir).eval()
    config = torchao_config("int8_weight_only", reference.config)
    quantized = AutoModelForCausalLM.from_pretrained(trained_tiny_dir, quantization_config=config).eval()
    return reference, quantized


def test_every_linear_and_embedding_weight_is_int8_and_nothing_else_is(float_and_int8):
    reference, quantized = float_and_int8
    linear, embedding = quantized_weights(reference.config)
    assert len(linear) == 6 * reference.config.num_hidden_layers + 1 and "lm_head.weight" in linear
    assert embedding == ["model.embed_tokens.weight", "model.embed_positions.weight"]
    for name, param in quantized.named_parameters():
        assert isinstance(param, Int8Tensor) == (name in linear + embedding), name  # biases, LayerNorms stay float


def test_weight_bytes_count_int8_data_and_a_scale_and_zero_point_per_row(float_and_int8):
    reference, quantized = float_and_int8
    linear, embedding = quantized_weights(reference.config)
    params = dict(reference.named_parameters())
    expected = sum(
        # int8 values, a float32 scale and an int8 zero point (stored, though symmetric: 0) per output row
        p.numel() + p.shape[0] * (4 + 1) if name in linear + embedding else p.numel() * 4
        for name, p in params.items()
    )
    assert weight_bytes(quantized) == expected
    assert weight_bytes(reference) == 4 * reference.num_parameters()
    assert quantized.num_parameters() == reference.num_parameters()  # a quantized weight counts its elements
    assert weight_bytes(quantized) <= 0.5 * weight_bytes(reference)


def test_compare_on_blocks_measures_loss_agreement_and_logit_difference(float_and_int8):
    reference, quantized = float_and_int8
    blocks = torch.randint(3, 300, (6, 64), generator=torch.Generator().manual_seed(0))
    same = compare_on_blocks(reference, reference, blocks, batch_size=4)
    assert (same["top1_agreement"], same["max_logit_diff"], same["tokens"]) == (1.0, 0.0, 6 * 63)
    with torch.no_grad():
        loss = reference(blocks, labels=blocks).loss.item()  # transformers' own mean next-token loss
    assert same["reference_loss"] == pytest.approx(loss, rel=1e-5)
    assert same["reference_perplexity"] == pytest.approx(torch.exp(torch.tensor(loss)).item(), rel=1e-5)

    result = compare_on_blocks(reference, quantized, blocks, batch_size=4)
    with torch.no_grad():
        ref, cand = reference(blocks).logits[:, :-1], quantized(blocks).logits[:, :-1]
    assert result["max_logit_diff"] == pytest.approx((ref - cand).abs().max().item())
    assert result["top1_agreement"] == (ref.argmax(-1) == cand.argmax(-1)).sum().item() / ref.shape[0] / ref.shape[1]
    assert 0 < result["max_logit_diff"] < 0.5 and result["top1_agreement"] >= 0.95


@pytest.mark.parametrize("method", ["int4", "int8", "fp8_dynamic"])
def test_unknown_methods_are_refused_with_the_choices(method):
    with pytest.raises(ValueError, match=f"--method '{method}' is not a quantization method.*int8_weight_only"):
        check_method(method)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on machines without a GPU")
def test_int4_without_a_gpu_is_refused_naming_the_method_and_what_it_needs():
    with pytest.raises(ValueError, match="--method int4_weight_only needs a CUDA GPU"):
        check_method("int4_weight_only")
