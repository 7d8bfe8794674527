"""SimpleGPT: the reference design's GPT as a transformers model.

token embedding + learned position embedding -> N x [self-attention, GELU feed-forward, LayerNorm, residuals]
-> final LayerNorm -> output projection. (The first block adds the position embedding; see `SimpleGPTModel`.)

The reference design's code had four bugs, fixed here:
  1. no causal mask: every position could read the future, so training was trivial and generation useless.
     Attention is causal (masks come from transformers' masking utilities).
  2. heads were not transposed to (batch, heads, seq, head_dim) before the score matmul, so "heads" mixed positions.
  3. scores were scaled by 1/sqrt(hidden_size) instead of 1/sqrt(head_dim), flattening the softmax.
  4. heads were concatenated without transposing back to (batch, seq, heads, head_dim).

This file is uploaded to the Hub as remote code: its only project import is the configuration module.
"""

import copy
from collections.abc import Callable

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.loss.loss_utils import ForCausalLMLoss
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    MaskedLMOutput,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.utils import can_return_tuple
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_simplegpt import SimpleGPTConfig


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. q, k, v: (batch, heads, seq, head_dim); mask: additive (batch, 1, q, kv).

    Returns the output as (batch, seq, heads, head_dim) and the probabilities as (batch, heads, q, kv).
    """
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    # Softmax in float32: bf16 scores lose the small differences that matter for long contexts.
    probs = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, probs


class SimpleGPTAttention(nn.Module):
    """Multi-head self-attention: (batch, seq, hidden) -> (batch, seq, heads * head_dim) -> (batch, seq, hidden)."""

    def __init__(self, config: SimpleGPTConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5  # seed bug 3: it used hidden_size**-0.5
        self.is_causal = config.is_causal  # read by the sdpa/flash/flex kernels
        # heads x head_dim need not equal hidden_size (a pruned model keeps fewer heads of the same width).
        attention_size = config.num_attention_heads * config.head_dim
        self.q_proj = nn.Linear(config.hidden_size, attention_size, bias=config.attention_bias)
        self.k_proj = nn.Linear(config.hidden_size, attention_size, bias=config.attention_bias)
        self.v_proj = nn.Linear(config.hidden_size, attention_size, bias=config.attention_bias)
        self.o_proj = nn.Linear(attention_size, config.hidden_size, bias=config.attention_bias)
        self.o_proj.writes_residual = True  # gets the depth-scaled init

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        heads_shape = (*input_shape, -1, self.head_dim)
        # seed bug 2: split into heads *and* move heads before the sequence axis.
        query = self.q_proj(hidden_states).view(heads_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(heads_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(heads_shape).transpose(1, 2)

        if cache is not None:
            key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        output, probs = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            dropout=self.config.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
            **kwargs,
        )
        # seed bug 4: every interface returns (batch, seq, heads, head_dim), so heads concatenate per position.
        output = self.o_proj(output.reshape(*input_shape, -1).contiguous())
        return output, probs


class SimpleGPTMLP(nn.Module):
    """Position-wise feed-forward network: hidden -> intermediate -> GELU -> hidden."""

    def __init__(self, config: SimpleGPTConfig):
        super().__init__()
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.down_proj.writes_residual = True  # gets the depth-scaled init

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.up_proj(hidden_states)))


class SimpleGPTBlock(GradientCheckpointingLayer):
    """One transformer block, post-norm (the reference design's) or pre-norm (GPT-2's) after `config.norm_position`.

    Block 0 starts the residual stream: it adds the learned position embedding to the token embeddings it receives.
    """

    def __init__(self, config: SimpleGPTConfig, layer_idx: int):
        super().__init__()
        self.embedding_dropout = nn.Dropout(config.embedding_dropout) if layer_idx == 0 else None
        self.pre_norm = config.norm_position == "pre"
        self.self_attn = SimpleGPTAttention(config, layer_idx)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = SimpleGPTMLP(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.residual_dropout)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        position_embeddings: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        """hidden_states: (batch, seq, hidden) -> (batch, seq, hidden); position_embeddings: (batch or 1, seq, hidden)."""
        if self.embedding_dropout is not None:
            hidden_states = self.embedding_dropout(hidden_states + position_embeddings)
        if self.pre_norm:
            attn_output, _ = self.self_attn(self.attention_norm(hidden_states), attention_mask, cache, **kwargs)
            hidden_states = hidden_states + self.dropout(attn_output)
            return hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        attn_output, _ = self.self_attn(hidden_states, attention_mask, cache, **kwargs)
        hidden_states = self.attention_norm(hidden_states + self.dropout(attn_output))
        return self.mlp_norm(hidden_states + self.dropout(self.mlp(hidden_states)))


class SimpleGPTPreTrainedModel(PreTrainedModel):
    config_class = SimpleGPTConfig
    config: SimpleGPTConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["SimpleGPTBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": SimpleGPTBlock, "attentions": SimpleGPTAttention}

    def _init_weights(self, module):
        super()._init_weights(module)  # normal(0, initializer_range) for Linear/Embedding, LayerNorm to identity
        # GPT-2: each block adds two residual branches, so shrink their output projections by 1/sqrt(2 * layers)
        # to keep the residual stream's variance independent of depth.
        # (Marked on the Linear itself: transformers skips parameter-less parents such as the attention module.)
        if getattr(module, "writes_residual", False):
            std = self.config.initializer_range / (2 * self.config.num_hidden_layers) ** 0.5
            init.normal_(module.weight, mean=0.0, std=std)


class SimpleGPTModel(SimpleGPTPreTrainedModel):
    """The bare SimpleGPT: token ids (batch, seq) -> final hidden states (batch, seq, hidden).

    The learned positions are looked up here and added by the first block, not added to `inputs_embeds` here: under
    pipeline parallelism (vLLM, SGLang, transformers) every stage after the first receives hidden states as
    `inputs_embeds` and runs only its own blocks, and the engines also keep the pre-block modules on the last stage
    when the head is tied. Whichever stage owns block 0 adds the positions, exactly once. `inputs_embeds` keeps its
    usual meaning (token embeddings; positions are added to them, as in GPT-2).
    """

    def __init__(self, config: SimpleGPTConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_positions = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(SimpleGPTBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")  # the pre-v5 name, still used by many callers
    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        validate_inputs: bool = True,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        r"""
        Args:
            input_ids: (batch, seq) token ids, or give `inputs_embeds` (batch, seq, hidden) instead.
            attention_mask: (batch, past + seq) with 1 for real tokens and 0 for padding, or a prepared 4D mask.
            inputs_embeds: token embeddings (batch, seq, hidden), e.g. `model.get_input_embeddings()(input_ids)`;
                the first block adds the positions to them.
            position_ids: (batch, seq). Derived from `attention_mask` when absent, so left-padded rows start at 0.
                Without `attention_mask`, positions that restart at 0 mark packed documents, which then do not
                attend to each other (padding-free training).
            cache: a `Cache` (`DynamicCache`, `StaticCache`, or continuous batching's `PagedAttentionCache`) holding
                past keys and values; created when `use_cache` and none is given. `past_key_values=` is accepted
                with a deprecation warning.
            validate_inputs: raise a `ValueError` for token ids outside the vocabulary and positions beyond
                `max_position_embeddings` (one read of two tiny reductions from the device). `generate` turns it off
                for its decode steps, which feed the model's own tokens at positions it bounds on the host.
        Returns:
            `BaseModelOutputWithPast` with `last_hidden_state` (batch, seq, hidden) and `cache`.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
        if not torch.compiler.is_compiling():  # shapes and dtypes only: no device sync
            check_input_shapes(self.config, input_ids, inputs_embeds, attention_mask, position_ids)
        # A cache made here starts empty: the mask is built as without one, which keeps packed-sequence detection
        # (it only runs without a cache) working when `config.use_cache` is on during training or evaluation.
        mask_cache = cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        batch_size, seq_length = (input_ids if input_ids is not None else inputs_embeds).shape[:2]

        if attention_mask is not None and attention_mask.ndim == 2:
            if attention_mask.shape[0] != batch_size or attention_mask.shape[1] < seq_length:
                past_length = cache.get_seq_length() if cache is not None else 0
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, expected (batch_size={batch_size}, "
                    f"past + current length={past_length + seq_length}): one row per sequence, one column per "
                    "cached and current token."
                )
        if position_ids is None:
            if attention_mask is not None and attention_mask.ndim == 2:
                # Count real tokens so a left-padded row starts at position 0, exactly like its unpadded self.
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -seq_length:]
            else:
                # The cache length is read only here: continuous batching's paged cache has none (it always passes
                # positions), and a static cache's is a tensor, so the shape must not depend on it (torch.export).
                past_length = cache.get_seq_length() if cache is not None else 0
                position_ids = (torch.arange(seq_length, device=self.device) + past_length).unsqueeze(0)
        # The checks read values back from the device: impossible inside a compiled graph or while capturing a CUDA
        # graph (continuous batching on GPUs), where out-of-range indices are the caller's responsibility.
        if validate_inputs and not torch.compiler.is_compiling():
            if not (position_ids.is_cuda and torch.cuda.is_current_stream_capturing()):
                self._check_values(input_ids, position_ids, attention_mask)

        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        # Every pipeline stage computes this (a small table, like Llama's rotary embedding); block 0 adds it.
        position_embeddings = self.embed_positions(position_ids)

        mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=mask_cache,
            position_ids=position_ids,
        )
        hidden_states = inputs_embeds
        for layer in self.layers:
            hidden_states = layer(
                hidden_states, mask, cache, position_embeddings=position_embeddings, position_ids=position_ids, **kwargs
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)

    def _check_values(
        self, input_ids: torch.Tensor | None, position_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ):
        """Reject positions outside the position table, ids outside the vocabulary and a 2-D attention mask holding
        anything but 0 and 1, reading the device once.

        Out-of-range indices would otherwise fail inside the embedding lookup with an opaque error (a device-side
        assert on GPUs), and a mask of 2s (a segment id, a count) would silently be read as "attend". The reductions
        are tiny; the cost is the host-device sync, so there is only one.
        input_ids: (batch, seq) or None; position_ids: (batch or 1, seq); attention_mask: (batch, past + seq) or None.
        """
        extremes = list(torch.aminmax(position_ids)) if position_ids.numel() else [position_ids.new_zeros(())] * 2
        mask_values = attention_mask is not None and attention_mask.ndim == 2 and attention_mask.numel() > 0
        # One flag: does the mask hold a value other than 0 and 1? (Counted as a 0/1 long, stacked with the rest.)
        extremes.append(((attention_mask != 0) & (attention_mask != 1)).any() if mask_values else extremes[0] * 0)
        if input_ids is not None and input_ids.numel():
            extremes += torch.aminmax(input_ids)
        min_position, max_position, bad_mask, *id_range = torch.stack([x.long() for x in extremes]).tolist()
        if bad_mask:
            values = torch.unique(attention_mask.detach()).tolist()  # only on the error path: a second read is fine
            raise ValueError(
                f"attention_mask holds {[v for v in values if v not in (0, 1)][:5]}: it must hold 1 for tokens to "
                "attend to and 0 for padding, nothing else (pass tokenizer(...)['attention_mask'])."
            )
        if min_position < 0:
            raise ValueError(f"position_ids hold {min_position}; positions count from 0.")
        if max_position >= self.config.max_position_embeddings:
            raise ValueError(
                f"Sequence too long: position {max_position} is beyond "
                f"max_position_embeddings={self.config.max_position_embeddings}. Truncate the input "
                f"(tokenizer(..., truncation=True, max_length={self.config.max_position_embeddings})) or generate "
                "fewer new tokens."
            )
        if id_range:
            low, high = id_range
            if low < 0 or high >= self.config.vocab_size:
                bad = high if high >= self.config.vocab_size else low
                raise ValueError(
                    f"Token id {bad} is outside the vocabulary [0, {self.config.vocab_size}). Use the tokenizer the "
                    "model was trained with, or call model.resize_token_embeddings(len(tokenizer)) after adding tokens."
                )


def check_input_shapes(config, input_ids, inputs_embeds, attention_mask=None, position_ids=None, labels=None) -> None:
    """Raise ValueError for inputs of the wrong shape or dtype, which would otherwise fail deep inside the model or,
    worse, broadcast into a wrong result (3-D ids, a 1-D mask). Shapes and dtypes only: no device sync."""
    if input_ids is not None:
        if input_ids.ndim != 2 or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError(
                f"input_ids must be a (batch, seq) tensor of integer token ids; got shape {tuple(input_ids.shape)}, "
                f"dtype {input_ids.dtype}. One sequence needs a batch dimension: input_ids[None]."
            )
        shape = tuple(input_ids.shape)
    else:
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            raise ValueError(
                f"inputs_embeds must have shape (batch, seq, hidden_size={config.hidden_size}); got "
                f"{tuple(inputs_embeds.shape)}."
            )
        shape = tuple(inputs_embeds.shape[:2])
    if 0 in shape:
        raise ValueError(f"The input is empty (shape {shape}): pass at least one token per sequence.")
    if attention_mask is not None and attention_mask.ndim not in (2, 4):
        raise ValueError(
            f"attention_mask must be (batch, seq) (or a prepared 4-D mask); got shape {tuple(attention_mask.shape)}."
        )
    if position_ids is not None and (position_ids.ndim != 2 or position_ids.shape[-1] != shape[1]):
        raise ValueError(f"position_ids must have shape (batch or 1, seq={shape[1]}); got {tuple(position_ids.shape)}.")
    if labels is not None and (tuple(labels.shape) != shape or labels.dtype.is_floating_point):
        raise ValueError(
            f"labels must be integer token ids of the input's shape {shape} (-100 where no loss is "
            f"wanted); got shape {tuple(labels.shape)}, dtype {labels.dtype}."
        )


# Elements of the (tokens, vocab) float32 logits that the chunked loss holds at once: 2**25 floats = 128 MiB.
LOSS_CHUNK_ELEMENTS = 2**25


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T` against `labels`, divided by `divisor`, one block of rows at a time.

    hidden: (tokens, hidden); weight: (vocab, hidden); labels: (tokens,), -100 where ignored; divisor: () tensor.
    Returns the scalar loss. The plain path keeps float32 logits, their log-softmax and its gradient, each
    (tokens, vocab): at GPT-2's vocabulary that outweighs the rest of the activations. Here only one
    (chunk_rows, vocab) block exists at a time, and the gradients are computed right away in the forward pass
    (softmax - one-hot), so the backward pass only scales the saved (tokens, hidden) and (vocab, hidden) gradients.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, divisor, chunk_rows: int):
        ctx.weight_dtype = weight.dtype
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        # Accumulated over chunks in float32 whatever the weight's dtype, like a float32 main-grad.
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        loss = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            logits = (hidden[rows] @ weight.t()).float()  # under autocast: a bf16 matmul, softmax in float32
            valid = labels[rows] != -100
            target = torch.where(valid, labels[rows], 0).unsqueeze(1)
            logsumexp = logits.logsumexp(dim=-1, keepdim=True)
            loss += ((logsumexp - logits.gather(1, target)).squeeze(1) * valid).sum()
            if grad_hidden is None and grad_weight is None:
                continue
            # d(loss)/d(logits) = (softmax - one_hot(target)) / divisor on valid rows, 0 on ignored ones: in place.
            grad_logits = logits.sub_(logsumexp).exp_()
            grad_logits.scatter_add_(1, target, torch.full_like(target, -1, dtype=grad_logits.dtype))
            grad_logits.mul_((valid / divisor).unsqueeze(1))
            if grad_hidden is not None:
                grad_hidden[rows] = grad_logits @ weight.to(grad_logits.dtype)
            if grad_weight is not None:
                grad_weight += grad_logits.t() @ hidden[rows].to(grad_logits.dtype)
        ctx.save_for_backward(grad_hidden, grad_weight)
        return loss / divisor

    @staticmethod
    def backward(ctx, grad_loss):
        grad_hidden, grad_weight = ctx.saved_tensors
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_loss.to(grad_hidden.dtype)
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_loss).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_causal_lm_loss(
    hidden_states: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor | None = None,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """transformers' causal-LM loss (`ForCausalLMLoss`) computed from hidden states without full logits.

    hidden_states: (batch, seq, hidden); weight: the output projection (vocab, hidden); labels: (batch, seq), shifted
    here, or shift_labels: (batch, seq) already shifted; -100 is ignored. The sum over target tokens is divided by
    `num_items_in_batch` when given (exact gradient accumulation), else by the number of target tokens.
    """
    if shift_labels is None:
        shift_labels = nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    shift_labels = shift_labels.reshape(-1).to(hidden_states.device)
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])
    if num_items_in_batch is None:
        num_items_in_batch = (shift_labels != -100).sum()
    divisor = torch.as_tensor(num_items_in_batch, dtype=torch.float32, device=hidden.device)
    chunk_rows = max(1, LOSS_CHUNK_ELEMENTS // weight.shape[0])
    return ChunkedLinearCrossEntropy.apply(hidden, weight, shift_labels, divisor, chunk_rows)


class SimpleGPTForCausalLM(SimpleGPTPreTrainedModel, GenerationMixin):
    """SimpleGPT with the output projection: next-token logits (batch, seq, vocab) and the shifted LM loss."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    # The head is sharded on the vocabulary like the embedding it may be tied to (which transformers shards
    # `embedding_rowwise`), then gathered, so every rank gets the full logits.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    _fsdp_plan = {"lm_head": "keep_full_weight"}  # FSDP2: the head's gathered weight is reused at once; keep it

    def __init__(self, config: SimpleGPTConfig):
        super().__init__(config)
        self.model = SimpleGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        next_sequence_length: int | None = None,
        cache: Cache | None = None,
        attention_mask: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ):
        """transformers' inputs for one `generate` step; decode steps skip the model's device-reading value checks.

        The prompt (the first iteration) is checked in full. Each later step feeds one token per row that the model
        itself chose from its vocabulary, at a position that is at most the sequence's length so far minus one
        (`generate` counts real tokens). So `input_ids.shape[1] <= max_position_embeddings` (a host-side int)
        proves the step valid; only longer, left-padded sequences need their positions read.
        """
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, next_sequence_length, cache, attention_mask, inputs_embeds, is_first_iteration, **kwargs
        )
        new_ids, positions = model_inputs.get("input_ids"), model_inputs.get("position_ids")
        if is_first_iteration or new_ids is None or new_ids.shape[1] != 1 or positions is None:
            return model_inputs
        if input_ids.shape[1] > self.config.max_position_embeddings:
            self.model._check_values(None, positions)  # here, eagerly, so that a compiled decode step is covered too
        model_inputs["validate_inputs"] = False
        return model_inputs

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        skip_logits: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            labels: (batch, seq) token ids, -100 where no loss is wanted. The model shifts them (pass
                `shift_labels` (batch, seq) pre-shifted instead when the batch is packed or sharded).
            logits_to_keep: compute logits only for the last `n` positions (`generate` uses 1), or for given indices.
            skip_logits: compute the loss chunk by chunk from the hidden states and return `logits=None`, so the
                (batch, seq, vocab) float32 logits never exist at once (the same loss and gradients, a fraction of
                the memory at large vocabularies). Defaults to True in training mode when labels are given (what
                the `Trainer`'s training step needs; evaluation keeps its logits), as Liger-Kernel does; pass
                `skip_logits=False` to get both.
            other arguments: as in [`SimpleGPTModel.forward`]; `num_items_in_batch` makes gradient accumulation exact.
        Returns:
            `CausalLMOutputWithPast` with `loss`, `logits` (batch, kept positions, vocab) and `cache`.
        """
        if labels is not None and not torch.compiler.is_compiling():
            check_input_shapes(self.config, input_ids, inputs_embeds, labels=labels)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        has_labels = labels is not None or kwargs.get("shift_labels") is not None
        # The chunked loss reads lm_head.weight directly: only for a plain Linear (not a PEFT-wrapped or quantized
        # head) and transformers' own causal-LM loss (not a custom `loss_function` or `loss_type`).
        chunkable = has_labels and type(self.lm_head) is nn.Linear and self.lm_head.bias is None
        chunkable = chunkable and self.loss_function is ForCausalLMLoss
        if skip_logits is None:
            skip_logits = self.training and chunkable
        elif skip_logits and not chunkable:
            raise ValueError(
                "skip_logits=True computes the loss instead of the logits, so it needs `labels` (or `shift_labels`), "
                "a plain nn.Linear lm_head and the default causal-LM loss; pass skip_logits=False otherwise."
            )
        logits = loss = None
        if skip_logits:
            loss = chunked_causal_lm_loss(
                hidden_states,
                self.lm_head.weight,
                labels,
                kwargs.get("shift_labels"),
                kwargs.get("num_items_in_batch"),
            )
        else:
            logits = self.lm_head(hidden_states)
            if has_labels:
                loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class SimpleGPTForMaskedLM(SimpleGPTPreTrainedModel):
    """SimpleGPT with bidirectional attention for masked-LM pretraining: logits (batch, seq, vocab).

    Its config is a copy of the one given, with `is_causal = False`. Labels are -100 except at masked positions
    (no shift).
    """

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    _fsdp_plan = {"lm_head": "keep_full_weight"}

    def __init__(self, config: SimpleGPTConfig):
        # A copy: a causal model built from the same config object must stay causal.
        config = copy.deepcopy(config)
        config.is_causal = False
        config.use_cache = False
        super().__init__(config)
        self.model = SimpleGPTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> MaskedLMOutput:
        """Arguments as in [`SimpleGPTModel.forward`]; `labels` (batch, seq) hold the original ids of masked tokens."""
        if labels is not None and not torch.compiler.is_compiling():
            check_input_shapes(self.config, input_ids, inputs_embeds, labels=labels)
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
            **kwargs,
        )
        logits = self.lm_head(outputs.last_hidden_state)
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return MaskedLMOutput(
            loss=loss, logits=logits, hidden_states=outputs.hidden_states, attentions=outputs.attentions
        )


class SimpleGPTForSequenceClassification(SimpleGPTPreTrainedModel):
    """SimpleGPT scoring whole sequences from the hidden state of the last real token: logits (batch, num_labels).

    With `num_labels=1` this is the reward model of RLHF.
    """

    def __init__(self, config: SimpleGPTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.model = SimpleGPTModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutputWithPast:
        """Arguments as in [`SimpleGPTModel.forward`]; `labels` (batch,) class ids, or floats for regression."""
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        batch_size, seq_length = hidden_states.shape[:2]
        positions = torch.arange(seq_length, device=hidden_states.device)
        if attention_mask is not None and attention_mask.ndim == 2:
            # The mask is exact for left and right padding, even when the pad token is also the EOS token.
            last_token = (positions * attention_mask[:, -seq_length:].to(positions.device)).argmax(-1)
        elif self.config.pad_token_id is not None and input_ids is not None:
            last_token = (positions * (input_ids != self.config.pad_token_id)).argmax(-1)
        elif batch_size == 1:
            last_token = torch.full((1,), seq_length - 1, device=hidden_states.device)
        else:
            raise ValueError(
                f"Cannot find the last token of {batch_size} padded sequences: pass `attention_mask`, or set "
                "`model.config.pad_token_id` (e.g. to tokenizer.pad_token_id)."
            )
        pooled_logits = self.score(hidden_states[torch.arange(batch_size, device=hidden_states.device), last_token])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=pooled_logits, labels=labels, pooled_logits=pooled_logits, config=self.config
            )
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled_logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "SimpleGPTPreTrainedModel",
    "SimpleGPTModel",
    "SimpleGPTForCausalLM",
    "SimpleGPTForMaskedLM",
    "SimpleGPTForSequenceClassification",
]
