"""Post-training quantization with torchao, through transformers' own switch, and how a quantized model compares.

    model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=quantization_config("int8_dynamic"))
    model.save_pretrained(out)      # safetensors + config.json["quantization_config"]
    AutoModelForCausalLM.from_pretrained(out)   # reloads quantized (torchao installed); generate/pipeline work

torchao replaces the weight of every `nn.Linear` (SimpleGPT's q/k/v/o, up/down projections and the output head) and,
by default, of the `nn.Embedding` tables with a quantized tensor subclass; LayerNorms and biases stay float. The
embeddings matter in a small model: in the default 1.3M-parameter SimpleGPT they hold 40% of the weights.

`compare_on_blocks` measures a quantized model against its float original on the same held-out token blocks, and
`measure_speed` times both, interleaved, on forward passes and greedy decoding. `quantize_folder`,
`comparison_results` and `markdown_table` are what `hf-simplegpt quantize` runs, in that order.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

from .generation import fixed_length_greedy
from .timing import interleaved_medians


@dataclass(frozen=True)
class Method:
    """A quantization method: what it stores and computes (for the model card) and where torchao can run it."""

    description: str
    needs_cuda: bool  # torchao has no CPU kernel for it (or cannot save its CPU layout)
    dtype: torch.dtype  # of the activations and of the parts left unquantized


METHODS = {
    "int8_weight_only": Method(
        "int8 weights with one float32 scale per output row (symmetric); activations stay float32, and each matmul "
        "runs in float32 on the dequantized weight (torchao `Int8WeightOnlyConfig`).",
        needs_cuda=False,
        dtype=torch.float32,
    ),
    "int8_dynamic": Method(
        "int8 weights with one float32 scale per output row, and activations quantized to int8 per token on the fly "
        "(symmetric); the matmuls multiply int8 by int8 with int32 accumulation "
        "(torchao `Int8DynamicActivationInt8WeightConfig`).",
        needs_cuda=False,
        dtype=torch.float32,
    ),
    "int4_weight_only": Method(
        "int4 weights in groups of 128 along the input dimension, each group with a bfloat16 scale and zero point, "
        "stored in tinygemm's tile-packed layout; activations in bfloat16 (torchao `Int4WeightOnlyConfig`).",
        needs_cuda=True,
        dtype=torch.bfloat16,
    ),
}


def check_method(method: str) -> Method:
    """The Method called `method`; ValueError when it is unknown or cannot run on this machine."""
    if method not in METHODS:
        raise ValueError(f"--method {method!r} is not a quantization method; choose one of {', '.join(METHODS)}.")
    spec = METHODS[method]
    if spec.needs_cuda and not torch.cuda.is_available():
        raise ValueError(
            f"--method {method} needs a CUDA GPU, and this machine has none: torchao stores int4 weights for saving "
            "only in CUDA layouts (tinygemm's tile-packed int4, whose matmul kernel aten._weight_int4pack_mm is "
            "CUDA-only); its CPU int4 layout cannot be saved in safetensors. Run the same command on a GPU machine, "
            "or use --method int8_weight_only or int8_dynamic here."
        )
    return spec


def quantized_weights(config) -> tuple[list[str], list[str]]:
    """(Linear weight names, Embedding weight names) of a SimpleGPTForCausalLM with `config`, read off a skeleton on
    the meta device (no memory, no initialisation)."""
    from .modeling_simplegpt import SimpleGPTForCausalLM

    with torch.device("meta"):
        skeleton = SimpleGPTForCausalLM(config)
    linear = [f"{name}.weight" for name, m in skeleton.named_modules() if isinstance(m, torch.nn.Linear)]
    embedding = [f"{name}.weight" for name, m in skeleton.named_modules() if isinstance(m, torch.nn.Embedding)]
    return linear, embedding


def _pattern(names: list[str]) -> str:
    """An FqnToConfig regex key matching parameters with these names' last two components (e.g. q_proj.weight)."""
    tails = sorted({re.escape(".".join(name.split(".")[-2:])) for name in names})
    return f"re:(.*\\.)?({'|'.join(tails)})"


def torchao_config(method: str, config, include_embeddings: bool = True):
    """transformers' `TorchAoConfig` for `method` on a SimpleGPT with `config`: every Linear weight (the output head
    included); with `include_embeddings` (int8 methods), the token and position embedding tables too, as int8
    weight-only (a lookup has no matmul to quantize). Biases and LayerNorms stay float."""
    from torchao.quantization import (
        FqnToConfig,
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
    )
    from transformers import TorchAoConfig

    check_method(method)
    linear = {
        "int8_weight_only": Int8WeightOnlyConfig,
        "int8_dynamic": Int8DynamicActivationInt8WeightConfig,
        "int4_weight_only": lambda: Int4WeightOnlyConfig(group_size=128, int4_packing_format="tile_packed_to_4d"),
    }[method]()
    linear_names, embedding_names = quantized_weights(config)
    # Keys match parameter names, not modules: a module key would quantize the Linear's bias as well.
    per_weight = {_pattern(linear_names): linear}
    if include_embeddings and method != "int4_weight_only":  # tinygemm's int4 layout has no embedding lookup
        per_weight[_pattern(embedding_names)] = Int8WeightOnlyConfig()
    # include_input_output_embeddings: otherwise transformers leaves the output head out whatever the keys say.
    return TorchAoConfig(FqnToConfig(per_weight), include_input_output_embeddings=True)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds; for a torchao tensor subclass, the sum over its inner tensors (int8/int4 data, scales,
    zero points)."""
    if is_traceable_wrapper_subclass(tensor):
        names, _ = tensor.__tensor_flatten__()
        return sum(tensor_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters (tied parameters counted once), quantized or not."""
    return sum(tensor_bytes(p) for p in model.parameters())


@torch.no_grad()
def compare_on_blocks(reference, candidate, blocks: torch.Tensor, batch_size: int = 8) -> dict:
    """The candidate (e.g. a quantized model) against the reference on token blocks (rows, length).

    Returns {"tokens": predicted positions, "reference_loss"/"candidate_loss": mean next-token cross-entropy over
    them (nats), "reference_perplexity"/"candidate_perplexity", "top1_agreement": fraction of positions where both
    models' most likely next token is the same, "max_logit_diff": the largest |difference| of any logit}.
    """
    ref_nll = cand_nll = 0.0
    agree = positions = 0
    max_diff = 0.0
    ref_device = next(reference.parameters()).device
    cand_device = next(candidate.parameters()).device
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start : start + batch_size]
        ref = reference(ids.to(ref_device)).logits[:, :-1].float().cpu()
        cand = candidate(ids.to(cand_device)).logits[:, :-1].float().cpu()
        targets = ids[:, 1:].reshape(-1)
        ref_nll += F.cross_entropy(ref.flatten(0, 1), targets, reduction="sum").item()
        cand_nll += F.cross_entropy(cand.flatten(0, 1), targets, reduction="sum").item()
        agree += (ref.argmax(-1) == cand.argmax(-1)).sum().item()
        positions += targets.numel()
        max_diff = max(max_diff, (ref - cand).abs().max().item())
    if positions == 0:
        raise ValueError("No held-out token blocks to compare on: pass more held-out text (--eval_file).")
    ref_loss, cand_loss = ref_nll / positions, cand_nll / positions
    return {
        "tokens": positions,
        "reference_loss": ref_loss,
        "candidate_loss": cand_loss,
        "reference_perplexity": math.exp(ref_loss),
        "candidate_perplexity": math.exp(cand_loss),
        "top1_agreement": agree / positions,
        "max_logit_diff": max_diff,
    }


def measure_speed(
    models: dict[str, torch.nn.Module],
    blocks: torch.Tensor,
    *,
    batch_size: int = 8,
    prompt_length: int = 16,
    new_tokens: int = 32,
    repeats: int = 5,
    warmup: int = 1,
) -> dict[str, dict[str, float]]:
    """Tokens per second of each model, the models' runs interleaved (`interleaved_medians`).

    Rows: "forward_tokens_per_s" (one forward pass over `batch_size` full blocks), "decode_tokens_per_s_batch1"
    and "decode_tokens_per_s_batch{batch_size}" (greedy `generate` of exactly `new_tokens` after the first
    `prompt_length` tokens of each block, dynamic cache). Every model must be on the same device.
    """
    device = str(next(next(iter(models.values())).parameters()).device)
    if len(blocks) < batch_size:
        blocks = blocks.repeat((batch_size + len(blocks) - 1) // len(blocks), 1)
    full = blocks[:batch_size].to(device)
    new_tokens = min(new_tokens, blocks.shape[1] - prompt_length)

    def forward(model):
        return lambda: model(full)

    def decode(model, rows):
        prompt = full[:rows, :prompt_length]
        return lambda: model.generate(prompt, **fixed_length_greedy(prompt, new_tokens))

    rows = {
        "forward_tokens_per_s": (forward, batch_size * full.shape[1]),
        "decode_tokens_per_s_batch1": (lambda m: decode(m, 1), new_tokens),
        f"decode_tokens_per_s_batch{batch_size}": (lambda m: decode(m, batch_size), batch_size * new_tokens),
    }
    result: dict[str, dict[str, float]] = {name: {} for name in models}
    with torch.inference_mode():
        for row, (make_run, tokens) in rows.items():
            seconds = interleaved_medians({name: make_run(m) for name, m in models.items()}, repeats, warmup, device)
            for name, s in seconds.items():
                result[name][row] = tokens / s
    return result


# ------------------------------------------------------------------------------------------ quantize a folder, compare


def quantize_folder(source: str, method: str, output_dir, *, include_embeddings: bool = True, device: str = "cpu"):
    """Load `source` (a float SimpleGPT folder or Hub id) quantized with `method` through `from_pretrained(...,
    quantization_config=...)`, save it to `output_dir` (safetensors + config.json with its `quantization_config` + the
    model code; the caller saves the tokenizer) and return the folder reloaded by a plain `from_pretrained`, as users
    will load it. `source` is only read."""
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = check_method(method)
    config = torchao_config(method, AutoConfig.from_pretrained(source), include_embeddings)
    quantized = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=config, dtype=spec.dtype, device_map=device
    )
    quantized.save_pretrained(output_dir)
    del quantized
    return AutoModelForCausalLM.from_pretrained(output_dir, device_map=device).eval()


def comparison_results(
    reference,
    model,
    method: str,
    blocks: torch.Tensor,
    *,
    batch_size: int = 8,
    prompt_length: int = 16,
    new_tokens: int = 32,
    repeats: int = 5,
) -> dict:
    """`model` (quantized with `method`) against its float32 `reference` on held-out `blocks`: {"method",
    "description", "torchao_version", "float32": {...}, "quantized": {...}, "setup": {...}} with the rows of
    `markdown_table`."""
    import torchao

    comparison = compare_on_blocks(reference, model, blocks, batch_size)
    speed = measure_speed(
        {"float32": reference, method: model},
        blocks,
        batch_size=batch_size,
        prompt_length=prompt_length,
        new_tokens=new_tokens,
        repeats=repeats,
    )
    device = next(model.parameters()).device
    return {
        "method": method,
        "description": METHODS[method].description,
        "torchao_version": torchao.__version__,
        "float32": {
            "weight_bytes": weight_bytes(reference),
            "parameters": reference.num_parameters(),
            "loss": comparison["reference_loss"],
            "perplexity": comparison["reference_perplexity"],
            **speed["float32"],
        },
        "quantized": {
            "weight_bytes": weight_bytes(model),
            "parameters": model.num_parameters(),  # a quantized weight counts its elements
            "loss": comparison["candidate_loss"],
            "perplexity": comparison["candidate_perplexity"],
            "top1_agreement": comparison["top1_agreement"],
            "max_logit_diff": comparison["max_logit_diff"],
            **speed[method],
        },
        "setup": {
            "tokens": comparison["tokens"],
            "blocks": len(blocks),
            "block_size": blocks.shape[1],
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "threads": torch.get_num_threads(),
            "repeats": repeats,
            "batch_size": batch_size,
            "prompt_length": prompt_length,
            "new_tokens": min(new_tokens, blocks.shape[1] - prompt_length),
        },
    }


def table_rows(batch_size: int) -> list[tuple[str, str, str, bool]]:
    """(key, label, format, show the quantized/float32 ratio) of each row of the comparison table."""
    return [
        ("weight_bytes", "weight bytes", "{:,}", True),
        ("parameters", "parameters", "{:,}", True),
        ("loss", "held-out loss (nats/token)", "{:.4f}", False),
        ("perplexity", "held-out perplexity", "{:.3f}", False),
        ("top1_agreement", "next-token top-1 agreement with float32", "{:.2%}", False),
        ("max_logit_diff", "max logit difference from float32", "{:.4f}", False),
        ("forward_tokens_per_s", f"forward tokens/s (batch {batch_size})", "{:,.0f}", True),
        ("decode_tokens_per_s_batch1", "decode tokens/s (batch 1)", "{:,.1f}", True),
        (f"decode_tokens_per_s_batch{batch_size}", f"decode tokens/s (batch {batch_size})", "{:,.1f}", True),
    ]


def markdown_table(results: dict, heldout: str) -> str:
    """The float32 original and the quantized model side by side (from `comparison_results`), then how it was
    measured; `heldout` names the held-out text."""
    method, ref, quant, s = results["method"], results["float32"], results["quantized"], results["setup"]
    lines = [f"| | float32 | {method} | {method} / float32 |", "|---|---:|---:|---:|"]
    for key, label, fmt, ratio in table_rows(s["batch_size"]):
        left = fmt.format(ref[key]) if key in ref else "–"
        lines.append(
            f"| {label} | {left} | {fmt.format(quant[key])} | " + (f"{quant[key] / ref[key]:.2f}x |" if ratio else "|")
        )
    threads = f", {s['threads']} thread{'s' if s['threads'] != 1 else ''}" if s["device"] == "cpu" else ""
    lines += [
        "",
        f"Held-out: {s['tokens']:,} predicted tokens in {s['blocks']} blocks of {s['block_size']} ({heldout}). "
        f"Speed on {s['device']}{threads}: medians of {s['repeats']} interleaved runs; forward = one pass over "
        f"{s['batch_size']} blocks; decode = greedy `generate` of {s['new_tokens']} tokens after "
        f"{s['prompt_length']}, dynamic cache.",
    ]
    return "\n".join(lines)
