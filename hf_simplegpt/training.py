"""What every recipe shares: argument parsing (YAML + command line), launch checks, hardware defaults, logging.

The engines are transformers' `Trainer` and TRL's trainers; nothing here re-implements a training loop.
"""

from __future__ import annotations

import argparse
import contextlib
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
        if requested_engine() == "DEEPSPEED":
            # DeepSpeed runs on CPUs (its CPU accelerator) only without use_cpu: with it accelerate runs DDP. Without
            # a named backend accelerate would count 1 process in each, and none would get its own shard of data.
            return {"use_cpu": False, "ddp_backend": "gloo", "bf16": False}
        return {"use_cpu": True, "bf16": False}
    if torch.cuda.is_available():
        return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
    return {}


def requested_engine() -> str | None:
    """The sharding engine the launch asked for, "FSDP" or "DEEPSPEED" (what accelerate's config, its flags and
    TrainingArguments' --fsdp/--deepspeed set in the environment), or None."""
    for engine in ("FSDP", "DEEPSPEED"):
        if os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true":
            return engine
    return None


def check_launch(training_args: TrainingArguments) -> None:
    """Reject launches that accelerate would silently turn into something else on a machine without accelerators.

    accelerate enables FSDP only for accelerator process groups (`AcceleratorState` switches to
    `DistributedType.FSDP` from MULTI_GPU/XPU/... types, never from MULTI_CPU: a CPU launch of FSDP exits 0 having
    trained plain DDP). DeepSpeed runs on CPUs, but only without `use_cpu` (with it, DDP again). And without
    `use_cpu` a CPU machine forms no process group at all: N processes would each train their own copy.
    `check_engine` checks the engine accelerate actually set up, once the trainer exists.
    """
    if has_accelerator():
        return
    engine = requested_engine()
    if engine == "FSDP":
        raise ValueError(
            "FSDP needs GPUs (accelerate runs it only on accelerators; on a CPU it would silently run plain DDP) and "
            "this machine has none. On CPU launch data parallel instead: hf-simplegpt <job> --multi_gpu "
            "--num_processes 2 ..., or DeepSpeed ZeRO: --accelerate_config deepspeed_zero2 (or deepspeed_zero3)."
        )
    if engine == "DEEPSPEED":
        if training_args.use_cpu or training_args.ddp_backend != "gloo":
            raise ValueError(
                "DeepSpeed on a CPU needs --use_cpu false --ddp_backend gloo (the defaults when DeepSpeed is "
                "launched): with use_cpu accelerate would silently run plain DDP, and without the backend each "
                "process would count itself alone and train on the same data."
            )
        return
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not training_args.use_cpu:
        raise ValueError(
            f"{world_size} processes on a machine without accelerators need --use_cpu true (the default there); "
            "with --use_cpu false each process would train its own copy."
        )


def check_engine(accelerator) -> None:
    """Refuse to train when the engine accelerate set up is not the one the launch asked for (FSDP or DeepSpeed):
    nobody should believe their model was sharded when it was not. Called with the trainer's accelerator."""
    engine, got = requested_engine(), accelerator.distributed_type.name
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise ValueError(
            f"The launch started {launched} processes but accelerate set up {accelerator.num_processes} per process "
            f"group ({got}): each would train alone on the same data. Stopping before training."
        )
    if engine is not None and got != engine:
        raise ValueError(
            f"The launch asked for {engine} but accelerate set up {got} (on {accelerator.device.type}), which "
            f"does not shard the model; stopping before training. {engine} needs "
            f"{'GPUs' if engine == 'FSDP' else '--use_cpu false on a CPU'}; for data parallel launch --multi_gpu."
        )


class _TrackioAtStep:
    """The trackio module, with every `log` placed at one step."""

    def __init__(self, trackio, step: int):
        self._trackio, self._step = trackio, step

    def __getattr__(self, name):
        return getattr(self._trackio, name)

    def log(self, metrics: dict, step: int | None = None) -> None:
        self._trackio.log(metrics, step=self._step)


def use_global_step_in_trackio(trainer) -> None:
    """Make the trainer's Trackio logs use the optimizer step as their x-axis, like TensorBoard's: transformers'
    `TrackioCallback` logs without a step, so trackio counts its own calls (each evaluation adds one), and the train
    and eval curves would not line up with `global_step`. A no-op without `--report_to trackio`."""
    from transformers.integrations import TrackioCallback

    class TrackioStepCallback(TrackioCallback):
        def on_log(self, args, state, control, **kwargs):
            trackio, self._trackio = self._trackio, _TrackioAtStep(self._trackio, state.global_step)
            try:
                super().on_log(args, state, control, **kwargs)
            finally:
                self._trackio = trackio

    callbacks = trainer.callback_handler.callbacks
    for i, callback in enumerate(callbacks):
        if type(callback) is TrackioCallback:
            callbacks[i] = TrackioStepCallback()


@contextlib.contextmanager
def loading_on_one_process():
    """`from_pretrained` on the main process alone, also while DeepSpeed ZeRO-3 trains: transformers would otherwise
    partition the loaded weights across all processes (zero.Init) and wait for the others, which never come."""
    from transformers.integrations import deepspeed

    active = deepspeed._hf_deepspeed_config_weak_ref() if deepspeed._hf_deepspeed_config_weak_ref else None
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if active is not None:
            deepspeed.set_hf_deepspeed_config(active)


def check_saved_model(trainer, folder: str, input_ids: torch.Tensor) -> float | None:
    """Reload the model saved in `folder` and compare its logits on `input_ids` with the trained model in memory;
    returns the largest absolute difference (on the main process; None on the others) or raises ValueError.

    Every process must call it: under DeepSpeed ZeRO-3 or FSDP the model in memory is sharded, and its forward
    gathers the weights from all processes. A gather that went wrong at save time (a ZeRO-3 folder without
    `zero3_save_16bit_model`, a sharded state dict) would otherwise leave a folder that loads but is not the model.
    """
    model = trainer.model
    model.eval()
    with torch.no_grad():
        trained = model(input_ids.to(trainer.args.device)).logits.float().cpu()
    if not trainer.is_world_process_zero():
        return None
    with loading_on_one_process():
        saved = type(trainer.accelerator.unwrap_model(model)).from_pretrained(folder).eval()
    with torch.no_grad():
        logits = saved(input_ids).logits.float()
    difference = (logits - trained).abs().max().item()
    # float32 weights reload exactly; 16-bit ones (ZeRO-3's 16-bit save) differ by their rounding.
    tolerance = 1e-4 if saved.dtype == torch.float32 else 0.05 * trained.abs().max().item()
    if not difference <= tolerance:
        raise ValueError(
            f"The model saved in {folder} is not the trained model: its logits differ by up to {difference:.3g} "
            f"(tolerance {tolerance:.3g}). Check the engine's save settings (FSDP FULL_STATE_DICT, DeepSpeed "
            "zero3_save_16bit_model) before using this folder."
        )
    logger.info("The saved folder reproduces the trained model's logits (max |difference| %.3g)", difference)
    return difference


def bundled_configs() -> list[str]:
    """Names of the recipe configs shipped inside the package (the files of recipes/configs/)."""
    return sorted(
        p.name
        for p in resources.files("hf_simplegpt").joinpath("recipes", "configs").iterdir()
        if p.name.endswith(".yaml")
    )


def resolve_config(path: str) -> str:
    """`--config` value -> a YAML file: an existing path, or the name of a bundled config (`pretrain_tiny.yaml`), so
    that the commands of the README also work from an installed wheel, where recipes/configs/ is not at hand."""
    if os.path.isfile(path):
        return path
    name = os.path.basename(path)
    bundled = resources.files("hf_simplegpt").joinpath("recipes", "configs", name)
    if name in bundled_configs() and path in (name, os.path.join("recipes", "configs", name)):
        return str(bundled)
    raise ValueError(
        f"--config {path}: no such file. Pass a YAML file, or one of the bundled configs {bundled_configs()}."
    )


def check_minimums(args, minimums: Mapping[str, int]) -> None:
    """Raise ValueError naming the first of `args`' integer flags (a dataclass instance) below its minimum; a flag
    that is None (unset) passes. The message says "(or unset)" for flags whose default is None."""
    defaults = {f.name: f.default for f in dataclasses.fields(args)}
    for name, least in minimums.items():
        value = getattr(args, name)
        if value is not None and value < least:
            unset = " (or unset)" if defaults.get(name) is None else ""
            raise ValueError(f"--{name} {value} must be at least {least}{unset}.")


# Flags that let a job run code from outside the project: a config file someone handed over must not be able to turn
# them on unseen, so parse_args takes them from the command line only.
COMMAND_LINE_ONLY = ("allow_custom_reward_funcs",)


def check_config_types(parser, config: Mapping[str, Any], path: str) -> None:
    """Raise ValueError naming the key and the flag when a YAML value cannot be what an int, float or bool flag
    takes (a list, a mapping, text). The parser takes YAML values as they are (only command-line strings are
    converted), so without this check a `max_steps: [1, 2]` fails much later in a comparison that names nothing."""
    # By the converter's name: TRL's parser has its own string_to_bool, and wraps `T | None` converters (same name).
    kinds = {"int": "an integer", "float": "a number", "string_to_bool": "true or false"}
    for action in parser._actions:
        value, kind = config.get(action.dest), kinds.get(getattr(action.type, "__name__", None))
        if value is None or kind is None:
            continue
        values = value if isinstance(value, list) and action.nargs in ("+", "*") else [value]
        for item in values:
            try:
                if isinstance(item, (list, dict)) or (kind != kinds["string_to_bool"] and isinstance(item, bool)):
                    raise ValueError
                action.type(str(item))
            except (ValueError, TypeError, argparse.ArgumentTypeError):
                raise ValueError(
                    f"--config {path}: {action.dest}: {value!r} is not {kind}, which --{action.dest} "
                    "takes. Fix that line of the YAML file."
                ) from None


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
            raise ValueError(
                f"--config {args[at]} must hold a YAML mapping of flag: value, got {type(config).__name__}."
            )
        only_given = sorted(name for name in COMMAND_LINE_ONLY if config.get(name))
        if only_given:
            flags = " ".join(f"--{name} true" for name in only_given)
            raise ValueError(
                f"--config {args[at]} sets {', '.join(only_given)}, which runs Python code from outside "
                f"the project; a config file cannot turn that on. Pass {flags} on the command line if "
                "you trust that code."
            )
        given |= set(config)
    parser = TrlParser(list(dataclass_types))
    # --config is read above, before the parser; the help still names it first, as every documented command uses it.
    parser.usage = "%(prog)s [--config FILE.yaml] [--flag value ...]"
    parser.description = (
        f"--config FILE.yaml: flags from a YAML file (flag: value), or one of the bundled configs "
        f"({', '.join(bundled_configs())}); flags on the command line win. The defaults below are the fields' own; "
        "the hardware changes some: without a GPU, use_cpu true and bf16 false; on a GPU, bf16 (fp16 where bf16 is "
        "unsupported)."
    )
    if "--config" in args:
        check_config_types(parser, config, args[args.index("--config") + 1])
    if {"-h", "--help"} & set(args):  # the help is the same on every machine (job_parsers.json): no hardware defaults
        return parser.parse_args_and_config(args=args)
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


def save_trained(trainer) -> None:
    """The trained model, ready for inference, saved in --output_dir with its tokenizer (the trainer's
    processing_class): the first thing after training, before anything else can fail."""
    ready_for_inference(trainer.model)
    trainer.save_model(trainer.args.output_dir)
