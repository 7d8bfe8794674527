"""Convert a GPT-2 checkpoint into a SimpleGPTForCausalLM with the same logits.

GPT-2 is SimpleGPT with pre-norm blocks, tanh-GELU, tied embeddings and fused q/k/v stored as `Conv1D`
(weights transposed relative to `nn.Linear`). The job that converts a folder or Hub id is `hf-simplegpt convert`
(hf_simplegpt/recipes/convert.py).
"""

from pathlib import Path

import torch
from transformers import GPT2LMHeadModel

from .configuration_simplegpt import SimpleGPTConfig
from .modeling_simplegpt import SimpleGPTForCausalLM

# GPT-2's "gelu_new" is the tanh approximation written as several ops; "gelu_pytorch_tanh" is one fused kernel.
GPT2_ACTIVATIONS = {"gelu_new": "gelu_pytorch_tanh", "gelu_pytorch_tanh": "gelu_pytorch_tanh", "gelu": "gelu"}


def simplegpt_config_from_gpt2(gpt2_config) -> SimpleGPTConfig:
    """The SimpleGPTConfig with GPT-2's shapes, pre-norm blocks and tanh-GELU."""
    unsupported = {
        "scale_attn_by_inverse_layer_idx": True,
        "reorder_and_upcast_attn": True,
        "scale_attn_weights": False,
        "add_cross_attention": True,
    }
    for name, bad_value in unsupported.items():
        if getattr(gpt2_config, name, not bad_value) == bad_value:
            raise ValueError(f"Cannot convert a GPT-2 with {name}={bad_value}: SimpleGPT has no equivalent.")
    if gpt2_config.activation_function not in GPT2_ACTIVATIONS:
        raise ValueError(
            f"Cannot convert GPT-2 activation {gpt2_config.activation_function!r}; supported: {sorted(GPT2_ACTIVATIONS)}."
        )
    return SimpleGPTConfig(
        vocab_size=gpt2_config.vocab_size,
        hidden_size=gpt2_config.n_embd,
        num_hidden_layers=gpt2_config.n_layer,
        num_attention_heads=gpt2_config.n_head,
        max_position_embeddings=gpt2_config.n_positions,
        intermediate_size=gpt2_config.n_inner or 4 * gpt2_config.n_embd,
        hidden_act=GPT2_ACTIVATIONS[gpt2_config.activation_function],
        embedding_dropout=gpt2_config.embd_pdrop,
        residual_dropout=gpt2_config.resid_pdrop,
        attention_dropout=gpt2_config.attn_pdrop,
        layer_norm_eps=gpt2_config.layer_norm_epsilon,
        initializer_range=gpt2_config.initializer_range,
        norm_position="pre",
        attention_bias=True,
        mlp_bias=True,
        tie_word_embeddings=True,
        bos_token_id=gpt2_config.bos_token_id,
        eos_token_id=gpt2_config.eos_token_id,
        pad_token_id=gpt2_config.pad_token_id,
    )


def gpt2_state_dict_to_simplegpt(gpt2_state: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Rename GPT-2 weights to SimpleGPT's and transpose `Conv1D` (in, out) weights to `nn.Linear` (out, in)."""
    state = {
        "model.embed_tokens.weight": gpt2_state["transformer.wte.weight"],
        "model.embed_positions.weight": gpt2_state["transformer.wpe.weight"],
        "model.norm.weight": gpt2_state["transformer.ln_f.weight"],
        "model.norm.bias": gpt2_state["transformer.ln_f.bias"],
    }
    for i in range(num_layers):
        src, dst = f"transformer.h.{i}.", f"model.layers.{i}."
        q, k, v = gpt2_state[src + "attn.c_attn.weight"].t().chunk(3, dim=0)
        q_bias, k_bias, v_bias = gpt2_state[src + "attn.c_attn.bias"].chunk(3, dim=0)
        state.update(
            {
                dst + "self_attn.q_proj.weight": q,
                dst + "self_attn.q_proj.bias": q_bias,
                dst + "self_attn.k_proj.weight": k,
                dst + "self_attn.k_proj.bias": k_bias,
                dst + "self_attn.v_proj.weight": v,
                dst + "self_attn.v_proj.bias": v_bias,
                dst + "self_attn.o_proj.weight": gpt2_state[src + "attn.c_proj.weight"].t(),
                dst + "self_attn.o_proj.bias": gpt2_state[src + "attn.c_proj.bias"],
                dst + "attention_norm.weight": gpt2_state[src + "ln_1.weight"],
                dst + "attention_norm.bias": gpt2_state[src + "ln_1.bias"],
                dst + "mlp.up_proj.weight": gpt2_state[src + "mlp.c_fc.weight"].t(),
                dst + "mlp.up_proj.bias": gpt2_state[src + "mlp.c_fc.bias"],
                dst + "mlp.down_proj.weight": gpt2_state[src + "mlp.c_proj.weight"].t(),
                dst + "mlp.down_proj.bias": gpt2_state[src + "mlp.c_proj.bias"],
                dst + "mlp_norm.weight": gpt2_state[src + "ln_2.weight"],
                dst + "mlp_norm.bias": gpt2_state[src + "ln_2.bias"],
            }
        )
    return {name: tensor.contiguous() for name, tensor in state.items()}


def convert_gpt2_to_simplegpt(gpt2: GPT2LMHeadModel | str | Path) -> SimpleGPTForCausalLM:
    """A SimpleGPTForCausalLM whose float32 logits match `gpt2`'s (a model, a local folder or a Hub id)."""
    if not isinstance(gpt2, GPT2LMHeadModel):
        gpt2 = GPT2LMHeadModel.from_pretrained(gpt2)
    config = simplegpt_config_from_gpt2(gpt2.config)
    model = SimpleGPTForCausalLM(config)
    state = gpt2_state_dict_to_simplegpt(gpt2.state_dict(), config.num_hidden_layers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # lm_head is tied to the token embedding, so it is the only key the GPT-2 state need not provide.
    if set(missing) - {"lm_head.weight"} or unexpected:
        raise ValueError(f"GPT-2 conversion left weights unmatched: missing={missing}, unexpected={unexpected}.")
    model.tie_weights()
    return model.to(gpt2.dtype).eval()
