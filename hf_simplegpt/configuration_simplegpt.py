"""Configuration of SimpleGPT: the reference design's GPT as a transformers configuration.

This file is uploaded to the Hub next to `modeling_simplegpt.py` as remote code, so it imports nothing from
hf_simplegpt.
"""

from typing import Literal

from huggingface_hub.dataclasses import as_validated_field, strict
from transformers import PreTrainedConfig
from transformers.utils.type_validators import activation_fn_key, interval

NORM_POSITIONS = ("post", "pre")
AUTO_MAP = {
    "AutoModel": "modeling_simplegpt.SimpleGPTModel",
    "AutoModelForCausalLM": "modeling_simplegpt.SimpleGPTForCausalLM",
    "AutoModelForMaskedLM": "modeling_simplegpt.SimpleGPTForMaskedLM",
    "AutoModelForSequenceClassification": "modeling_simplegpt.SimpleGPTForSequenceClassification",
}


@as_validated_field
def positive_or_unset(value: int | None):
    """A size that, unset (`None`), is derived from the others."""
    if value is not None and value < 1:
        raise ValueError(f"Value must be a positive integer (or None: derived), got {value}.")


@strict
class SimpleGPTConfig(PreTrainedConfig):
    r"""
    Configuration of a [`SimpleGPTModel`]. The defaults are the reference design's: a 12-layer, 768-wide GPT with
    12 heads, a 10,000-token vocabulary and 512 learned positions.

    Args:
        vocab_size (`int`, defaults to 10000): number of token ids the embedding accepts.
        hidden_size (`int`, defaults to 768): width of the residual stream.
        num_hidden_layers (`int`, defaults to 12): number of transformer blocks.
        num_attention_heads (`int`, defaults to 12): heads per attention layer; must divide `hidden_size` unless
            `head_dim` is given.
        head_dim (`int`, *optional*): width of each attention head; `hidden_size // num_attention_heads` when unset.
            Set explicitly, `num_attention_heads * head_dim` may differ from `hidden_size` (e.g. after pruning heads):
            q/k/v project `hidden_size -> num_attention_heads * head_dim` and the output projection maps back.
        max_position_embeddings (`int`, defaults to 512): number of learned positions, i.e. the context length.
        intermediate_size (`int`, *optional*): width of the feed-forward layer; `4 * hidden_size` when unset.
        hidden_act (`str`, defaults to `"gelu"`): feed-forward activation, any key of `transformers.ACT2FN`
            (`"gelu_pytorch_tanh"` is GPT-2's tanh approximation as one fused kernel).
        embedding_dropout, residual_dropout, attention_dropout (`float`, default 0.1 each): dropout after the
            embeddings, on each residual branch, and on the attention probabilities. The reference design's single `dropout=`
            argument sets all three.
        layer_norm_eps (`float`, defaults to 1e-5): epsilon of every LayerNorm.
        initializer_range (`float`, defaults to 0.02): std of the normal init; residual output projections are
            further scaled by 1/sqrt(2 * num_hidden_layers) as in GPT-2.
        norm_position (`str`, defaults to `"post"`): `"post"` is the reference design's block (`x = norm(x + f(x))`),
            `"pre"` is GPT-2's (`x = x + f(norm(x))`), which trains more stably when deep.
        attention_bias, mlp_bias (`bool`, default `True`): biases of the attention and feed-forward projections.
        tie_word_embeddings (`bool`, defaults to `False`): share the output projection with the token embedding.
            The reference design uses a separate output projection.
        is_causal (`bool`, defaults to `True`): causal self-attention. `SimpleGPTForMaskedLM` sets it to `False` on its own copy.

    Every value is checked when set (`huggingface_hub`'s `@strict`, as transformers' own configs are): a wrong one
    raises `StrictDataclassFieldValidationError` naming the field, the bound and the value; the special token ids are
    checked against the vocabulary after `__init__` (`validate_token_ids`).

    The reference design's argument names are accepted as aliases: `num_layers`, `num_heads`, `max_seq_len`
    (`SimpleGPTConfig(num_layers=6).num_hidden_layers == 6` and `config.num_layers` reads it back).
    """

    model_type = "simplegpt"
    keys_to_ignore_at_inference = ["cache"]
    attribute_map = {
        "num_layers": "num_hidden_layers",
        "num_heads": "num_attention_heads",
        "max_seq_len": "max_position_embeddings",
    }
    # Tensor-parallel plan keyed by module names of SimpleGPTModel (transformers adds vocab-parallel `embed_tokens`).
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    # Pipeline stages in order: what each takes and returns. The learned positions are not a stage of their own:
    # every stage looks them up (a small table, like Llama's rotary embedding) and the first block adds them, so a
    # stage that receives hidden states as `inputs_embeds` never adds them twice.
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = interval(min=1)(default=10000)
    hidden_size: int = interval(min=1)(default=768)
    num_hidden_layers: int = interval(min=1)(default=12)
    num_attention_heads: int = interval(min=1)(default=12)
    head_dim: int | None = positive_or_unset(default=None)
    max_position_embeddings: int = interval(min=1)(default=512)
    intermediate_size: int | None = positive_or_unset(default=None)
    hidden_act: str = activation_fn_key(default="gelu")
    embedding_dropout: float | int = interval(min=0, max=1, exclude_max=True)(default=0.1)
    residual_dropout: float | int = interval(min=0, max=1, exclude_max=True)(default=0.1)
    attention_dropout: float | int = interval(min=0, max=1, exclude_max=True)(default=0.1)
    layer_norm_eps: float = interval(min=0, exclude_min=True)(default=1e-5)
    initializer_range: float = interval(min=0)(default=0.02)
    norm_position: Literal["post", "pre"] = "post"
    attention_bias: bool = True
    mlp_bias: bool = True
    tie_word_embeddings: bool = False
    is_causal: bool = True
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs):
        # The reference design configures one dropout rate for the whole model.
        if (dropout := kwargs.pop("dropout", None)) is not None:
            self.embedding_dropout = self.residual_dropout = self.attention_dropout = dropout
        super().__post_init__(
            **kwargs
        )  # also applies the reference design's aliases (num_layers=...) through attribute_map
        if self.intermediate_size is None:
            self.intermediate_size = 4 * self.hidden_size
        if getattr(self, "auto_map", None) is None:
            # Every saved folder can then be loaded as remote code by each Auto class, whatever class saved it.
            self.auto_map = {"AutoConfig": "configuration_simplegpt.SimpleGPTConfig", **AUTO_MAP}
        if (
            self.head_dim is None
        ):  # saved explicitly from now on; folders written before head_dim existed load as before
            # Only a derived head_dim needs the heads to divide the width; an explicit one (a pruned model) need not.
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(
                    f"SimpleGPTConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                    f"({self.num_attention_heads}); e.g. use num_attention_heads in "
                    f"{[h for h in range(1, min(self.hidden_size, 64) + 1) if self.hidden_size % h == 0]}, or set "
                    "head_dim."
                )
            self.head_dim = self.hidden_size // self.num_attention_heads

    def validate_token_ids(self):
        """Part of `@strict`'s validation: the special tokens a SimpleGPT embeds must be inside its vocabulary."""
        for name in ("bos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise ValueError(
                    f"SimpleGPTConfig.{name}={value} is outside the vocabulary [0, {self.vocab_size}); "
                    "raise vocab_size or use a token id inside it."
                )


__all__ = ["SimpleGPTConfig"]
