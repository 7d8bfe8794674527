"""LoRA, DoRA and QLoRA adapters through PEFT, for every fine-tuning and alignment recipe.

List the linear layers a model has, build a `LoraConfig` whose target modules are checked against them (the
default targets every attention and MLP projection), the bitsandbytes config for QLoRA, and merge a trained adapter
into its base model so the result loads with `AutoModelForCausalLM` alone.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Sorted leaf names of every `nn.Linear` in `model` (e.g. `q_proj`, `lm_head`): what LoRA can target."""
    return sorted(
        {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}
    )


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """Leaf names of the linear layers inside the repeated transformer blocks: every attention and MLP projection.

    A block layer is recognised by an integer in its path (`model.layers.3.self_attn.q_proj`), which leaves out heads
    such as `lm_head` or a classifier `score` whatever they are called.
    """
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(part.isdigit() for part in name.split("."))
    }
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layers inside numbered blocks to put LoRA on.")
    return sorted(names)


def resolve_lora_targets(model: torch.nn.Module, target_modules: str | Sequence[str] | None) -> list[str] | str:
    """Check LoRA target modules against the model's linear layers.

    Args:
        target_modules: `None` or `"all-linear"` for `default_lora_targets`, a list of leaf names (`["q_proj"]`), or a
            regular expression PEFT full-matches against module paths.

    Returns:
        The list of leaf names, or the regular expression, to put in `LoraConfig.target_modules`.
    """
    available = linear_layer_names(model)
    if target_modules is None or target_modules == "all-linear" or list(target_modules) == ["all-linear"]:
        return default_lora_targets(model)
    if isinstance(target_modules, str) and target_modules in available:
        # TRL's ModelConfig turns a one-item `--lora_target_modules q_proj` into the string "q_proj", which PEFT would
        # read as a regular expression matching no full module path.
        return [target_modules]
    if isinstance(target_modules, str):
        linear_paths = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        if not any(re.fullmatch(target_modules, path) for path in linear_paths):
            raise ValueError(
                f"LoRA target pattern {target_modules!r} matches no linear layer of {type(model).__name__}. "
                f"Available linear layers: {available}."
            )
        return target_modules
    unknown = [t for t in target_modules if t not in available]
    if unknown:
        raise ValueError(
            f"LoRA target modules {unknown} are not linear layers of {type(model).__name__}. "
            f"Available linear layers: {available} (default: {default_lora_targets(model)})."
        )
    return list(target_modules)


def build_lora_config(
    model: torch.nn.Module,
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: str | Sequence[str] | None = None,
    use_dora: bool = False,
    use_rslora: bool = False,
    modules_to_save: Sequence[str] | None = None,
    task_type: str = "CAUSAL_LM",
):
    """A `peft.LoraConfig` for `model` with its settings checked by `check_lora_settings`.

    PEFT has no default target list for custom architectures such as SimpleGPT, so the targets are always explicit.
    """
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=check_lora_settings(model, r, target_modules, modules_to_save),
        bias="none",
        use_dora=use_dora,
        use_rslora=use_rslora,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )


def check_lora_settings(model: torch.nn.Module, r: int, target_modules, modules_to_save) -> list[str] | str:
    """Raise ValueError for a rank, target or `modules_to_save` that does not fit `model`; returns the target modules
    to put in the `LoraConfig` (`resolve_lora_targets`)."""
    if r <= 0:
        raise ValueError(f"LoRA rank must be positive, got r={r}.")
    if modules_to_save:
        # Trained in full next to the adapters, e.g. embed_tokens/lm_head when the chat tokens are new to the base.
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        unknown = [m for m in modules_to_save if m not in names]
        if unknown:
            raise ValueError(
                f"modules_to_save {unknown} are not modules of {type(model).__name__}; top-level choices include "
                f"{sorted(n for n, _ in model.named_children())} and {sorted(n for n, _ in model.base_model.named_children())}."
            )
    return resolve_lora_targets(model, target_modules)


def lora_config_from_model_args(model_args, model: torch.nn.Module):
    """TRL's `get_peft_config` (the LoRA config of `--use_peft --lora_r ... --use_dora`) with its settings checked
    against `model` first; `None` without `--use_peft`."""
    from trl import get_peft_config

    if not model_args.use_peft:
        return None
    checked = copy.copy(model_args)  # the caller's arguments keep what was given
    checked.lora_target_modules = check_lora_settings(
        model, model_args.lora_r, model_args.lora_target_modules, model_args.lora_modules_to_save
    )
    return get_peft_config(checked)


def quantization_config_from_model_args(model_args):
    """The bitsandbytes config for `--load_in_4bit` / `--load_in_8bit` (QLoRA), or `None` when neither is set.

    Raises `ValueError` before any loading when the setup cannot work: no CUDA GPU, bitsandbytes missing, or a
    quantized base without `--use_peft` (quantized weights cannot be trained directly).
    """
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
    if not torch.cuda.is_available():
        raise ValueError(
            f"{flag} (QLoRA) quantizes the base model with bitsandbytes, which needs a CUDA GPU, and none is visible "
            "on this machine. Run on a GPU, or drop the flag to train LoRA on full-precision weights."
        )
    if not model_args.use_peft:
        raise ValueError(
            f"{flag} freezes the base model in low precision; add --use_peft to train LoRA adapters on it."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ValueError(f"{flag} needs bitsandbytes: pip install 'hf-simplegpt[qlora]'.") from error
    from trl import get_quantization_config

    return get_quantization_config(model_args)


def merge_adapter(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike, **load_kwargs):
    """Fold a LoRA/DoRA adapter into its base weights and save a standalone model (and tokenizer, if present).

    The adapter's `adapter_config.json` names the base model; the merged checkpoint in `output_dir` loads with
    `AutoModelForCausalLM.from_pretrained(output_dir)` and needs no PEFT.

    Returns:
        The merged `PreTrainedModel`.
    """
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(
            f"{adapter_dir} holds no adapter_config.json; pass the directory a LoRA run saved its adapter to."
        )
    # Merge in the base model's full precision: merging into 4-bit weights would round the update away.
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype=torch.float32, **load_kwargs)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(output_dir)
    if (adapter_dir / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(output_dir)
    return merged
