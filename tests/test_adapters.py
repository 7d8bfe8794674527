"""hf_simplegpt.adapters: LoRA/DoRA config building checked against the model, QLoRA checks, merging."""

import json

import pytest
import torch
from peft import AutoPeftModelForCausalLM, get_peft_model
from transformers import AutoModelForCausalLM
from trl import ModelConfig

from hf_simplegpt import SimpleGPTForCausalLM, adapters
from tests.conftest import expected_lora_params


def test_default_lora_targets_every_attention_and_mlp_projection(tiny_model):
    lora_config = adapters.build_lora_config(tiny_model, r=4, lora_alpha=8)
    assert sorted(lora_config.target_modules) == ["down_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    peft_model = get_peft_model(tiny_model, lora_config)
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all("lora_" in name for name in trainable)
    assert sum(trainable.values()) == expected_lora_params(tiny_model.config, r=4)


def test_dora_adds_a_magnitude_vector_per_target(tiny_model):
    lora_config = adapters.build_lora_config(tiny_model, r=4, target_modules=["q_proj", "v_proj"], use_dora=True)
    peft_model = get_peft_model(tiny_model, lora_config)
    magnitudes = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2 * tiny_model.config.num_hidden_layers


def test_unknown_lora_target_lists_the_available_linear_layers(tiny_model):
    with pytest.raises(ValueError) as error:
        adapters.build_lora_config(tiny_model, target_modules=["query", "q_proj"])
    message = str(error.value)
    assert "['query']" in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"):
        assert name in message
    with pytest.raises(ValueError, match="matches no linear layer"):
        adapters.build_lora_config(tiny_model, target_modules=r".*\.attn_proj")


def test_model_config_arguments_build_the_same_lora_config(tiny_model):
    # TRL's ModelConfig turns a one-item target list into a bare string; it must still mean that module.
    model_args = ModelConfig(use_peft=True, lora_r=8, lora_alpha=16, lora_target_modules=["q_proj"])
    lora_config = adapters.lora_config_from_model_args(model_args, tiny_model)
    assert (lora_config.r, lora_config.lora_alpha, set(lora_config.target_modules)) == (8, 16, {"q_proj"})
    assert adapters.lora_config_from_model_args(ModelConfig(use_peft=False), tiny_model) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on machines without a GPU")
def test_qlora_without_gpu_stops_with_a_clear_message():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        adapters.quantization_config_from_model_args(ModelConfig(use_peft=True, load_in_4bit=True))


def test_merged_model_matches_the_peft_model_and_reloads(tmp_path, tiny_model, tiny_tokenizer):
    base_dir, adapter_dir, merged_dir = tmp_path / "base", tmp_path / "adapter", tmp_path / "merged"
    tiny_model.save_pretrained(base_dir)
    tiny_tokenizer.save_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, adapters.build_lora_config(base, r=4, lora_alpha=8, lora_dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA's B starts at zero; a random B makes the adapter change the outputs
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    peft_model.save_pretrained(adapter_dir)
    tiny_tokenizer.save_pretrained(adapter_dir)

    ids = torch.tensor([tiny_tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]])
    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir)).eval()
    merged_in_memory = adapters.merge_adapter(adapter_dir, merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        peft_logits = reloaded(input_ids=ids).logits
        merged_logits = merged(input_ids=ids).logits
        base_logits = tiny_model(input_ids=ids).logits
    assert isinstance(merged, SimpleGPTForCausalLM) and not hasattr(merged, "peft_config")
    assert not (merged_dir / "adapter_config.json").exists()
    assert set(json.loads((adapter_dir / "adapter_config.json").read_text())["target_modules"]) >= {"q_proj"}
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-5, rtol=0)
    assert (peft_logits - base_logits).abs().max() > 1e-2  # the adapter really changed the model
    assert merged_in_memory.config.model_type == "simplegpt"


def test_merge_adapter_rejects_a_directory_without_adapter(tmp_path):
    with pytest.raises(ValueError, match="adapter_config.json"):
        adapters.merge_adapter(tmp_path, tmp_path / "merged")


def test_modules_to_save_train_in_full_next_to_the_adapters(tiny_model):
    lora_config = adapters.build_lora_config(tiny_model, r=4, modules_to_save=["embed_tokens", "lm_head"])
    peft_model = get_peft_model(tiny_model, lora_config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    config = tiny_model.config
    assert trainable == expected_lora_params(config, r=4) + 2 * config.vocab_size * config.hidden_size
    with pytest.raises(ValueError, match=r"\['embeddings'\] are not modules"):
        adapters.build_lora_config(tiny_model, modules_to_save=["embeddings"])
