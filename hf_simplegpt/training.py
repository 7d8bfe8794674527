"""What every recipe shares: argument parsing (YAML + command line), launch checks, hardware defaults, logging.

The engines are transformers' `Trainer` and TRL's trainers; nothing here re-implements a training loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import torch
from transformers import TrainingArguments

logger = logging.getLogger(__name__)


def has_accelerator() -> bool:
    """True when torch sees a GPU (CUDA/ROCm), XPU, MPS or other accelerator."""
    return torch.accelerator.is_available()


def hardware_defaults() -> dict[str, Any]:
    """TrainingArguments defaults for the hardware at hand (YAML and CLI values still win).

    Without an accelerator, `use_cpu=True` is what makes `accelerate launch --multi_gpu --num_processes N` form a
    gloo (CPU) process group instead of failing to find GPUs. On a GPU, bf16 if supported, else fp16.
    """
    if not has_accelerator():
        # TRL's configs turn bf16 on unless told otherwise (None -> True): slow autocast on a CPU, so say no.
        return {"use_cpu": True, "bf16": False}
    if torch.cuda.is_available():
        return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
    return {}


def check_launch(training_args: TrainingArguments) -> None:
    """Reject launches that accelerate would silently turn into something else on a machine without accelerators.

    accelerate 1.15 enables FSDP/DeepSpeed only for accelerator process groups (`AcceleratorState` switches to
    `DistributedType.FSDP` from MULTI_GPU/XPU/... types, never from MULTI_CPU), and without `use_cpu` it forms no
    process group at all on a CPU machine: N processes would each train their own copy into the same folder.
    """
    if has_accelerator():
        return
    for engine in ("FSDP", "DEEPSPEED"):
        if os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true":
            raise ValueError(
                f"{engine} needs GPUs (accelerate runs it only on accelerators) and this machine has none. On CPU "
                "launch data parallel instead: hf-simplegpt <job> --multi_gpu --num_processes 2 ..."
            )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not training_args.use_cpu:
        raise ValueError(
            f"{world_size} processes on a machine without accelerators need --use_cpu true (the default there); "
            "with --use_cpu false each process would train its own copy."
        )


def bundled_configs() -> list[str]:
    """Names of the recipe configs shipped inside the package (the files of recipes/configs/)."""
    return sorted(p.name for p in resources.files("hf_simplegpt").joinpath("recipes", "configs").iterdir()
                  if p.name.endswith(".yaml"))  # fmt: skip


def resolve_config(path: str) -> str:
    """`--config` value -> a YAML file: an existing path, or the name of a bundled config (`pretrain_tiny.yaml`), so
    that the commands of the README also work from an installed wheel, where recipes/configs/ is not at hand."""
    if os.path.isfile(path):
        return path
    name = os.path.basename(path)
    bundled = resources.files("hf_simplegpt").joinpath("recipes", "configs", name)
    if name in bundled_configs() and path in (name, os.path.join("recipes", "configs", name)):
        return str(bundled)
    raise ValueError(f"--config {path}: no such file. Pass a YAML file, or one of the bundled configs {bundled_configs()}.")


def check_minimums(args, minimums: Mapping[str, int]) -> None:
    """Raise ValueError naming the first of `args`' integer flags (a dataclass instance) below its minimum; a flag
    that is None (unset) passes. The message says "(or unset)" for flags whose default is None."""
    defaults = {f.name: f.default for f in dataclasses.fields(args)}
    for name, least in minimums.items():
        value = getattr(args, name)
        if value is not None and value < least:
            unset = " (or unset)" if defaults.get(name) is None else ""
            raise ValueError(f"--{name} {value} must be at least {least}{unset}.")


def parse_args(*dataclass_types: type, args: Sequence[str] | None = None) -> tuple:
    """Parse `--config file.yaml` plus command-line flags into one instance per dataclass type.

    Precedence: command line > YAML > hardware defaults (`hardware_defaults`) > field defaults. Uses TRL's
    `TrlParser`, so every `TrainingArguments` flag works on the command line and in the YAML; unknown flags or
    YAML keys raise an error.
    """
    import yaml
    from trl import TrlParser

    args = list(sys.argv[1:] if args is None else args)
    given = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    if "--config" in args:
        at = args.index("--config") + 1
        if at == len(args):
            raise ValueError("--config needs a YAML file after it.")
        args[at] = resolve_config(args[at])
        with open(args[at], encoding="utf-8") as f:
            config = yaml.safe_load(f) or {}
        if not isinstance(config, dict):
            raise ValueError(f"--config {args[at]} must hold a YAML mapping of flag: value, got {type(config).__name__}.")
        given |= set(config)
    parser = TrlParser(list(dataclass_types))
    fields = {f for t in dataclass_types for f in t.__dataclass_fields__}
    defaults = {k: v for k, v in hardware_defaults().items() if k in fields}
    if given & {"bf16", "fp16"}:
        # The user chose a precision: a hardware bf16 default next to their --fp16 would be a conflict.
        defaults = {k: v for k, v in defaults.items() if k not in ("bf16", "fp16")}
    parser.set_defaults(**defaults)
    return parser.parse_args_and_config(args=args)


def parse_job_args(*dataclass_types: type, args: Sequence[str] | None = None) -> tuple:
    """How every training job starts: its flags parsed (`parse_args`), logging set up (`setup_logging`) and the launch
    checked (`check_launch`). One of `dataclass_types` must be a `TrainingArguments`."""
    parsed = parse_args(*dataclass_types, args=args)
    training_args = next(a for a in parsed if isinstance(a, TrainingArguments))
    setup_logging(training_args)
    check_launch(training_args)
    return parsed


def setup_logging(training_args: TrainingArguments | None = None) -> None:
    """INFO logs from hf_simplegpt (the jobs log as `hf_simplegpt.<job>`) on the main process, warnings only on the
    others; transformers and datasets follow `--log_level` / `--log_level_replica`. Jobs without `TrainingArguments`
    run in one process: INFO."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    ours = logging.INFO if training_args is None or training_args.should_log else logging.WARNING
    logging.getLogger("hf_simplegpt").setLevel(ours)
    if training_args is not None:
        level = training_args.get_process_log_level()
        datasets.utils.logging.set_verbosity(level)
        transformers.utils.logging.set_verbosity(level)


def ready_for_inference(model) -> None:
    """Turn the KV cache back on in the config a job saves: the Trainer sets `config.use_cache` from
    `TrainingArguments.use_cache` (off while training), and a saved folder is for inference, where `generate`,
    serving and exporters (transformers' ExecuTorch recipe refuses a model without it) expect the cache."""
    model.config.use_cache = True
