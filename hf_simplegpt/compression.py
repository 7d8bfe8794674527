"""Structured pruning of a SimpleGPT (Minitron-style) and the checks of a draft model for speculative decoding.

Pruning removes whole attention heads, MLP neurons and, optionally, whole blocks, so the pruned model runs smaller
dense matmuls (zeroing weights, as magnitude pruning does, leaves the matmuls as large as before). It follows
Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge Distillation" (Minitron), as NVIDIA's
Model Optimizer implements it:

1. `collect_importance`: forward passes over a calibration sample of the training text (no gradients) record
   - per head: the head's attention output (the input of `o_proj`), |activation| averaged over the sequence, then the
     L2 norm over the calibration samples, then the L2 norm over the head's `head_dim` channels;
   - per MLP neuron: the activation after the non-linearity (the input of `down_proj`), aggregated the same way;
   - per block (depth): 1 - cosine(block input, block output), averaged over tokens (the "block importance" of
     ShortGPT that Minitron also ranks layers by): a block that barely turns the residual stream matters little.
2. `select_units`: the same number of heads and neurons is kept in every block (the most important ones), so the
   pruned config stays uniform, and the `drop_layers` least important blocks go.
3. `prune_model`: slices q/k/v rows and o_proj columns per kept head (`head_dim` is unchanged, so
   heads x head_dim may now differ from hidden_size), up_proj rows and down_proj columns per kept neuron, and drops
   blocks. The result is an ordinary `SimpleGPTConfig` + weights: it saves, loads, serves and fine-tunes like any
   SimpleGPT. Each kept unit computes exactly what it computed before.

Recovery (distillation from the unpruned model) is in `hf_simplegpt/recipes/prune.py`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .configuration_simplegpt import SimpleGPTConfig


@dataclass
class Importance:
    """Activation-based importance of every unit of a SimpleGPT (higher is more important).

    heads: (layers, heads); neurons: (layers, intermediate_size); layers: (layers,); samples: calibration blocks.
    """

    heads: torch.Tensor
    neurons: torch.Tensor
    layers: torch.Tensor
    samples: int


@dataclass
class PruningPlan:
    """What a pruned model keeps, as indices into the original model (ascending).

    layers: the kept blocks; heads[i] and neurons[i]: the heads and MLP neurons kept in block layers[i] (the same
    number in every block).
    """

    layers: list[int]
    heads: list[list[int]]
    neurons: list[list[int]]

    def to_dict(self) -> dict:
        return asdict(self)


def kept_count(total: int, ratio: float) -> int:
    """Units kept out of `total` at `ratio`: rounded to the nearest whole unit (halves round up)."""
    return int(total * ratio + 0.5)


def pruned_shape(
    config: SimpleGPTConfig, attention_keep_ratio: float, mlp_keep_ratio: float, drop_layers: int
) -> dict[str, int]:
    """The pruned model's {num_attention_heads, intermediate_size, num_hidden_layers}, or a ValueError naming the
    flag to change when the pruning would leave no head, no neuron or no block."""
    kept = {}
    for field, units, flag, ratio in (
        ("num_attention_heads", "attention heads", "--attention_keep_ratio", attention_keep_ratio),
        ("intermediate_size", "MLP neurons", "--mlp_keep_ratio", mlp_keep_ratio),
    ):
        if not 0 < ratio <= 1:
            raise ValueError(f"{flag} (or --keep_ratio) must be in (0, 1], got {ratio}: it is the fraction kept.")
        total = getattr(config, field)
        kept[field] = kept_count(total, ratio)
        if kept[field] < 1:
            raise ValueError(
                f"Keeping {ratio} of {total} {units} per layer keeps 0; every layer needs at least one. "
                f"Raise {flag} (or --keep_ratio) to at least {0.5 / total:.3g}."
            )
    if not 0 <= drop_layers < config.num_hidden_layers:
        raise ValueError(
            f"--drop_layers {drop_layers}: the model has {config.num_hidden_layers} layers and at least one must stay; "
            f"pass a number in 0..{config.num_hidden_layers - 1}."
        )
    return {**kept, "num_hidden_layers": config.num_hidden_layers - drop_layers}


@torch.no_grad()
def collect_importance(model, blocks: torch.Tensor, batch_size: int = 16) -> Importance:
    """Importance of every head, MLP neuron and block of `model` (a SimpleGPT) on calibration `blocks`.

    blocks: (samples, seq) token ids, full blocks without padding. See the module docstring for the definitions.
    """
    if blocks.ndim != 2 or blocks.shape[0] == 0:
        raise ValueError(
            f"Calibration needs a (samples, seq) tensor of token ids with samples >= 1, got {tuple(blocks.shape)}."
        )
    config, base = model.config, model.get_decoder()
    n_layers, n_heads, head_dim = config.num_hidden_layers, config.num_attention_heads, config.head_dim
    # Sums over samples of (per-sample mean |activation| over the sequence)^2; the square root is taken at the end.
    channel_sq = torch.zeros(n_layers, n_heads * head_dim, dtype=torch.float64)
    neuron_sq = torch.zeros(n_layers, config.intermediate_size, dtype=torch.float64)
    turn = torch.zeros(n_layers, dtype=torch.float64)  # sum over samples of the mean 1 - cosine(in, out)
    block_inputs: dict[int, torch.Tensor] = {}

    def sample_norms(activation: torch.Tensor) -> torch.Tensor:  # (batch, seq, units) -> (units,)
        return activation.float().abs().mean(dim=1).pow(2).sum(dim=0).double().cpu()

    def record_input_norms(sums: torch.Tensor, i: int):  # the input of o_proj (heads) or down_proj (neurons)
        def hook(module, args):
            sums[i] += sample_norms(args[0])

        return hook

    def record_block_input(i):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if module.embedding_dropout is not None:  # the first block adds the positions: they are its input too
                hidden = hidden + kwargs["position_embeddings"]
            block_inputs[i] = hidden

        return hook

    def record_block_output(i):
        def hook(module, args, kwargs, output):
            cosine = nn.functional.cosine_similarity(block_inputs.pop(i).float(), output.float(), dim=-1)
            turn[i] += (1 - cosine).mean(dim=1).sum().double().cpu()  # mean over tokens, summed over samples

        return hook

    handles = []
    for i, layer in enumerate(base.layers):
        handles += [
            layer.self_attn.o_proj.register_forward_pre_hook(record_input_norms(channel_sq, i)),
            layer.mlp.down_proj.register_forward_pre_hook(record_input_norms(neuron_sq, i)),
            layer.register_forward_pre_hook(record_block_input(i), with_kwargs=True),
            layer.register_forward_hook(record_block_output(i), with_kwargs=True),
        ]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        for start in range(0, blocks.shape[0], batch_size):
            base(input_ids=blocks[start : start + batch_size].to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    samples = blocks.shape[0]
    heads = channel_sq.sqrt().view(n_layers, n_heads, head_dim).norm(dim=-1)
    return Importance(
        heads=heads.float(), neurons=neuron_sq.sqrt().float(), layers=(turn / samples).float(), samples=samples
    )


def _top(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the k largest scores, ascending (ties go to the lower index)."""
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    return sorted(order.tolist())


def select_units(importance: Importance, num_heads: int, num_neurons: int, drop_layers: int = 0) -> PruningPlan:
    """Keep the `num_heads` most important heads and `num_neurons` most important neurons of every block, and all
    but the `drop_layers` least important blocks."""
    n_layers = importance.layers.shape[0]
    layers = _top(importance.layers, n_layers - drop_layers)
    return PruningPlan(
        layers=layers,
        heads=[_top(importance.heads[i], num_heads) for i in layers],
        neurons=[_top(importance.neurons[i], num_neurons) for i in layers],
    )


_LAYER_KEY = re.compile(r"^(.*\blayers)\.(\d+)\.(.+)$")


@torch.no_grad()
def prune_model(model, plan: PruningPlan):
    """A new model of the same class holding only the units `plan` keeps, sliced from `model` (left untouched).

    q/k/v lose the rows of dropped heads and o_proj the matching columns; up_proj loses the rows of dropped neurons and
    down_proj the matching columns; dropped blocks go and the kept ones are renumbered. Embeddings, norms and the
    head are copied. Same dtype and device as `model`.
    """
    config = model.config
    uniform = len({len(h) for h in plan.heads}) == 1 and len({len(n) for n in plan.neurons}) == 1
    if not uniform or not len(plan.heads) == len(plan.neurons) == len(plan.layers) > 0:
        raise ValueError(
            "A pruning plan keeps at least one layer, and the same number of heads and of neurons in "
            "every kept layer (the config describes every layer at once)."
        )
    new_config = config.__class__.from_dict(
        {
            **config.to_dict(),
            "num_hidden_layers": len(plan.layers),
            "num_attention_heads": len(plan.heads[0]),
            "head_dim": config.head_dim,  # explicit: heads x head_dim need no longer equal hidden_size
            "intermediate_size": len(plan.neurons[0]),
        }
    )
    head_dim = config.head_dim
    channels = [torch.tensor([h * head_dim + d for h in heads for d in range(head_dim)]) for heads in plan.heads]
    neurons = [torch.tensor(kept) for kept in plan.neurons]
    new_index = {old: new for new, old in enumerate(plan.layers)}

    state = {}
    for key, tensor in model.state_dict().items():
        match = _LAYER_KEY.match(key)
        if match is None:
            state[key] = tensor.clone()
            continue
        prefix, old, name = match.group(1), int(match.group(2)), match.group(3)
        if old not in new_index:
            continue
        i = new_index[old]
        if name.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
            tensor = tensor.index_select(0, channels[i].to(tensor.device))
        elif name == "self_attn.o_proj.weight":
            tensor = tensor.index_select(1, channels[i].to(tensor.device))
        elif name.startswith("mlp.up_proj."):
            tensor = tensor.index_select(0, neurons[i].to(tensor.device))
        elif name == "mlp.down_proj.weight":
            tensor = tensor.index_select(1, neurons[i].to(tensor.device))
        state[f"{prefix}.{i}.{name}"] = tensor.clone()

    parameter = next(model.parameters())
    pruned = model.__class__(new_config).to(device=parameter.device, dtype=parameter.dtype)
    pruned.load_state_dict(state, strict=True)
    pruned.generation_config = model.generation_config
    return pruned.train(model.training)


@torch.no_grad()
def language_model_loss(model, blocks: torch.Tensor, batch_size: int = 16) -> float:
    """Mean next-token cross-entropy (nats/token) of `model` over `blocks` (samples, seq) of full token blocks: the
    pretraining recipe's validation loss."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, blocks.shape[0], batch_size):
        batch = blocks[start : start + batch_size].to(device)
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        tokens = batch.shape[0] * (batch.shape[1] - 1)
        total, count = total + loss.item() * tokens, count + tokens
    model.train(was_training)
    return total / count


# ------------------------------------------------------------------------------------------ speculative decoding


def check_draft(draft_path: str, target_path: str) -> None:
    """Raise ValueError unless the draft at `draft_path` can assist the target at `target_path`: assisted decoding
    hands the draft's token ids to the target as they are, so both need the same vocabulary and token mapping."""
    from .tokenization import check_same_vocabulary

    check_same_vocabulary(
        draft_path,
        target_path,
        roles=("draft", "target"),
        why="Speculative decoding hands the draft's token ids to the target unchanged",
    )


def load_draft(draft_path: str, target: str, **kwargs):
    """The model at `draft_path`, checked (before loading its weights) to share the tokenizer of the target model
    folder `target`, for `target_model.generate(..., assistant_model=draft)`. kwargs go to `from_pretrained`."""
    from transformers import AutoModelForCausalLM

    from .hub import check_model_source

    check_model_source(draft_path, "draft")
    check_model_source(target, "target")
    check_draft(draft_path, target)
    return AutoModelForCausalLM.from_pretrained(draft_path, **kwargs).eval()
