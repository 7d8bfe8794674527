"""hf_simplegpt.configuration_simplegpt: the reference defaults, its argument names, the Auto round trip, and a clear
error for every invalid value."""

import json
import logging

import pytest
import torch
from huggingface_hub.errors import StrictDataclassError
from transformers import AutoConfig, AutoModelForCausalLM

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from tests.conftest import tiny_config_kwargs


def test_config_defaults_are_the_seeds_and_log_nothing(caplog):
    with caplog.at_level(logging.WARNING):
        config = SimpleGPTConfig()
    assert caplog.records == []
    assert (config.vocab_size, config.hidden_size, config.num_hidden_layers) == (10000, 768, 12)
    assert (config.num_attention_heads, config.max_position_embeddings, config.intermediate_size) == (12, 512, 3072)
    assert (config.embedding_dropout, config.residual_dropout, config.attention_dropout) == (0.1, 0.1, 0.1)
    assert config.hidden_act == "gelu" and config.norm_position == "post" and config.head_dim == 64


def test_head_dim_defaults_to_the_width_per_head_and_can_be_set_freely():
    assert SimpleGPTConfig(hidden_size=64, num_attention_heads=4).head_dim == 16
    pruned = SimpleGPTConfig(**tiny_config_kwargs(hidden_size=30, num_attention_heads=4, head_dim=6))
    assert pruned.head_dim == 6  # 4 x 6 = 24 attention width in a 30-wide model: no divisibility needed
    attention = SimpleGPTForCausalLM(pruned).model.layers[0].self_attn
    assert attention.q_proj.weight.shape == (24, 30) and attention.o_proj.weight.shape == (30, 24)
    assert attention.scaling == 6**-0.5


def test_a_folder_saved_before_head_dim_existed_loads_with_identical_logits(tmp_path):
    torch.manual_seed(0)
    model = SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs())).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["head_dim"] == 8
    del config["head_dim"]  # what folders written before the field existed contain
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.head_dim == 8
    ids = torch.randint(3, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, atol=0, rtol=0)


def test_config_accepts_the_seeds_argument_names():
    config = SimpleGPTConfig(num_layers=3, num_heads=2, max_seq_len=128, dropout=0.2, hidden_size=64)
    assert (config.num_hidden_layers, config.num_attention_heads, config.max_position_embeddings) == (3, 2, 128)
    assert (config.num_layers, config.num_heads, config.max_seq_len) == (3, 2, 128)
    assert config.attention_dropout == config.residual_dropout == config.embedding_dropout == 0.2


def test_config_round_trips_through_auto_config(tmp_path):
    SimpleGPTConfig(**tiny_config_kwargs(norm_position="pre")).save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, SimpleGPTConfig)
    assert loaded.norm_position == "pre" and loaded.hidden_size == 32 and loaded.num_layers == 2


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(hidden_size=30, num_attention_heads=4), "hidden_size (30) must be divisible by num_attention_heads (4)"),
        (
            dict(head_dim=0),
            "field 'head_dim':\n    ValueError: Value must be a positive integer (or None: derived), got 0",
        ),
        (dict(norm_position="middle"), "Field 'norm_position' expected one of ('post', 'pre'), got middle"),
        (dict(hidden_act="gelu_wrong"), "field 'hidden_act':\n    ValueError: Value must be one of ['gelu'"),
        (
            dict(num_hidden_layers=0),
            "field 'num_hidden_layers':\n    ValueError: Value must be greater or equal to 1, got 0",
        ),
        (dict(hidden_size=32.0), "Field 'hidden_size' expected int, got float (value: 32.0)"),
        (
            dict(attention_dropout=1.5, dropout=None),
            "field 'attention_dropout':\n    ValueError: Value must be greater or equal to 0 and smaller than 1, got 1.5",
        ),
        (dict(pad_token_id=300), "pad_token_id=300 is outside the vocabulary [0, 300)"),
        (dict(layer_norm_eps=0.0), "field 'layer_norm_eps':\n    ValueError: Value must be greater than 0, got 0.0"),
    ],
)
def test_invalid_config_values_raise_naming_the_field(overrides, message):
    """transformers' own validation (huggingface_hub's `@strict`, `interval`), as its in-tree configs use it."""
    with pytest.raises((ValueError, StrictDataclassError)) as error:
        SimpleGPTConfig(**tiny_config_kwargs(**overrides))
    assert message in str(error.value)


def test_a_value_set_later_is_checked_too():
    config = SimpleGPTConfig(**tiny_config_kwargs())
    with pytest.raises(StrictDataclassError, match="field 'num_attention_heads'"):
        config.num_attention_heads = 0
