"""Plumbing every training recipe shares: argument parsing (YAML + CLI), CPU/GPU defaults, seeding, throughput/MFU
logging, checkpoint validation, loss plots and sample generations.

The engines are transformers' `Trainer` and TRL's trainers; nothing here re-implements a training loop.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import torch
from transformers import TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ arguments & devices


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
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    for engine in ("FSDP", "DEEPSPEED"):
        if os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true":
            raise ValueError(
                f"{engine} needs GPUs (accelerate runs it only on accelerators) and this machine has none. On CPU "
                f"launch data parallel instead: accelerate launch --multi_gpu --num_processes 2 recipes/<recipe>.py ..."
            )
    if world_size > 1 and not training_args.use_cpu:
        raise ValueError(
            f"{world_size} processes on a machine without accelerators need --use_cpu true (the default there); "
            f"with --use_cpu false each process would train its own copy."
        )


def parse_args(*dataclass_types: type, args: Sequence[str] | None = None) -> tuple:
    """Parse `--config file.yaml` plus CLI flags into one instance per dataclass type.

    Precedence: command line > YAML > hardware defaults (`hardware_defaults`) > field defaults. Uses TRL's
    `TrlParser`, so every `TrainingArguments` flag works on the command line and in the YAML; unknown flags or
    YAML keys raise an error.
    """
    from trl import TrlParser

    args = list(sys.argv[1:] if args is None else args)
    parser = TrlParser(list(dataclass_types))
    fields = {f for t in dataclass_types for f in t.__dataclass_fields__}
    defaults = {k: v for k, v in hardware_defaults().items() if k in fields}
    if _given_keys(args) & {"bf16", "fp16"}:
        # The user chose a precision: a hardware bf16 default next to their --fp16 would be a conflict.
        defaults = {k: v for k, v in defaults.items() if k not in ("bf16", "fp16")}
    parser.set_defaults(**defaults)
    return parser.parse_args_and_config(args=args)


def _given_keys(args: Sequence[str]) -> set[str]:
    """Field names set on the command line or in the `--config` YAML."""
    import yaml

    keys = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    if "--config" in args and args.index("--config") + 1 < len(args):
        with open(args[args.index("--config") + 1]) as f:
            keys |= set(yaml.safe_load(f) or {})
    return keys


@dataclass
class PretrainingArguments(TrainingArguments):
    """`TrainingArguments` with the pretraining defaults of the seed (AdamW lr 1e-4, clip 1.0, warmup + cosine) and
    a small, fast default run (evaluation, checkpoints and logs every few hundred steps)."""

    output_dir: str | None = field(default="outputs/pretrain", metadata={"help": "Where checkpoints and the model go."})
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak AdamW learning rate."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule after warmup."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps (int) or fraction of training (<1)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Blocks per device per step."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Blocks per device per eval step."})
    num_train_epochs: float = field(default=4.0, metadata={"help": "Epochs (ignored when max_steps > 0)."})
    eval_strategy: str = field(default="steps", metadata={"help": "When to evaluate: no/steps/epoch."})
    eval_steps: float | None = field(default=100, metadata={"help": "Evaluate every N steps."})
    save_steps: float = field(default=200, metadata={"help": "Checkpoint every N steps."})
    logging_steps: float = field(default=20, metadata={"help": "Log every N steps."})
    logging_first_step: bool = field(default=True, metadata={"help": "Log the first step too."})
    eval_on_start: bool = field(default=True, metadata={"help": "Evaluate the untrained model first (the baseline)."})
    report_to: None | str | list[str] = field(
        default_factory=lambda: installed_trackers(),
        metadata={"help": "Trackers to log to (default: TensorBoard and Trackio where installed); 'none' for none."},
    )
    seed: int = field(default=42, metadata={"help": "Seed for model init, data order and dropout."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every SimpleGPT parameter gets a gradient, so DDP can skip the search."}
    )
    record_batch_fingerprints: bool = field(
        default=False,
        metadata={"help": "Write a hash of every training batch per process to output_dir/batch_fingerprints/."},
    )


@dataclass
class ModelArguments:
    """The model to pretrain: a fresh SimpleGPT of the given shape, or `--model_name_or_path` to continue one."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Continue pretraining this saved model (folder or Hub id) instead of a new one."}
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; default: train one on the training text."}
    )
    objective: str = field(default="clm", metadata={"help": "clm (causal LM) or mlm (masked LM, bidirectional)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens masked with --objective mlm."})
    vocab_size: int = field(default=4096, metadata={"help": "Vocabulary of the trained tokenizer and the model."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the residual stream."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads (must divide hidden_size)."})
    max_position_embeddings: int = field(default=128, metadata={"help": "Context length = packed block size."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width (default 4 * hidden_size)."})
    norm_position: str = field(default="pre", metadata={"help": "pre (GPT-2, stable) or post (the seed's block)."})
    dropout: float = field(default=0.1, metadata={"help": "Embedding, residual and attention dropout."})
    tie_word_embeddings: bool = field(default=False, metadata={"help": "Share input and output embeddings."})
    num_sample_generations: int = field(default=3, metadata={"help": "Sample continuations printed at the end."})

    def __post_init__(self):
        if self.objective not in ("clm", "mlm"):
            raise ValueError(f"--objective {self.objective!r} is unknown; use clm (causal LM) or mlm (masked LM).")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}.")

    @property
    def auto_class(self):
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        return AutoModelForMaskedLM if self.objective == "mlm" else AutoModelForCausalLM


def build_model(model_args: ModelArguments, tokenizer):
    """A fresh SimpleGPT sized by `model_args` with the tokenizer's vocabulary and special ids, or the saved model
    at `model_args.model_name_or_path` (checked against the tokenizer)."""
    from . import SimpleGPTConfig
    from .tokenization import special_token_ids

    if model_args.model_name_or_path:
        model = model_args.auto_class.from_pretrained(model_args.model_name_or_path)
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(
                f"{model_args.model_name_or_path} has vocab_size {model.config.vocab_size} but the tokenizer has "
                f"{len(tokenizer)} tokens. Pass the model's own tokenizer with --tokenizer_name."
            )
        return model
    config = SimpleGPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=model_args.hidden_size,
        num_hidden_layers=model_args.num_hidden_layers,
        num_attention_heads=model_args.num_attention_heads,
        max_position_embeddings=model_args.max_position_embeddings,
        intermediate_size=model_args.intermediate_size,
        norm_position=model_args.norm_position,
        dropout=model_args.dropout,
        tie_word_embeddings=model_args.tie_word_embeddings,
        **special_token_ids(tokenizer),
    )
    return model_args.auto_class.from_config(config)


def setup_logging(training_args: TrainingArguments, *names: str) -> None:
    """INFO logs from hf_simplegpt and the given loggers on the main process (warnings only on the others);
    transformers and datasets follow `--log_level` / `--log_level_replica`."""
    import datasets
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
    ours = logging.INFO if training_args.should_log else logging.WARNING
    for name in ("hf_simplegpt", *names):
        logging.getLogger(name).setLevel(ours)
    level = training_args.get_process_log_level()
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def installed_trackers() -> list[str] | str:
    """The local, login-free trackers that are installed (TensorBoard, Trackio), or "none"."""
    from transformers.integrations import is_tensorboard_available, is_trackio_available

    found = [name for name, ok in (("tensorboard", is_tensorboard_available()), ("trackio", is_trackio_available())) if ok]
    return found or "none"


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) before the model is built, so initial weights are reproducible."""
    set_seed(seed)
    logger.info("Seed: %d", seed)


# ------------------------------------------------------------------------------------------------ throughput and MFU

# Dense bf16/fp16 tensor-core peak FLOP/s per device, by substring of torch.cuda.get_device_name().
_GPU_PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "A100": 312e12,
    "A10G": 125e12,
    "L40S": 362e12,
    "L4": 121e12,
    "A6000": 155e12,
    "4090": 165e12,
    "3090": 71e12,
    "V100": 125e12,
    "T4": 65e12,
}


def measure_matmul_flops(size: int = 512, seconds: float = 0.3, device: str = "cpu") -> float:
    """Achieved float32 matmul FLOP/s on this device: the denominator of MFU where no spec-sheet peak is known."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b  # warm-up (thread pool, kernels)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    if device != "cpu":
        torch.accelerator.synchronize()
    return 2 * size**3 * n / (time.perf_counter() - start)


def peak_flops_per_device() -> tuple[float, str]:
    """(peak FLOP/s of one device, where the number comes from). Override with env HF_SIMPLEGPT_PEAK_FLOPS."""
    if os.environ.get("HF_SIMPLEGPT_PEAK_FLOPS"):
        return float(os.environ["HF_SIMPLEGPT_PEAK_FLOPS"]), "HF_SIMPLEGPT_PEAK_FLOPS"
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name()
        for key, flops in _GPU_PEAK_FLOPS.items():
            if key in name:
                return flops, f"{name} spec sheet (dense bf16)"
        return measure_matmul_flops(4096, device="cuda"), f"{name} measured fp32 matmul"
    # A CPU has no meaningful spec-sheet number: measure what one process (its share of the threads) achieves.
    return measure_matmul_flops(), "measured fp32 matmul on this CPU"


def flops_per_token(num_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weight matmuls + 12·L·H·T for attention scores (PaLM, appendix B)."""
    return 6 * num_params + 12 * num_layers * hidden_size * seq_len


class ThroughputCallback(TrainerCallback):
    """Adds `tokens_per_second` and `mfu` to every training log and `eval_perplexity` to every evaluation log.

    Args:
        tokens_per_step: tokens consumed by one optimizer step across all processes (global batch × block size).
        flops_per_token: from `flops_per_token()`.
        peak_flops: peak FLOP/s of all devices together (per device × world size).
    Install with `install_callback_first` so that the printed logs and TensorBoard/Trackio see the added values.
    """

    def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float):
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_flops = peak_flops
        self._last: tuple[int, float] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (state.global_step, time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        extra = {}
        if "eval_loss" in logs:
            extra["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        elif "loss" in logs and self._last is not None:
            step, start = self._last
            now = time.perf_counter()
            if state.global_step > step and now > start:
                tps = (state.global_step - step) * self.tokens_per_step / (now - start)
                extra["tokens_per_second"] = round(tps, 1)
                extra["mfu"] = round(tps * self.flops_per_token / self.peak_flops, 5)
            self._last = (state.global_step, now)
        logs.update(extra)
        # Trainer.log appended a copy of `logs` to the history just before calling us: keep both in sync.
        if state.log_history and extra:
            state.log_history[-1].update(extra)

    def on_evaluate(self, args, state, control, **kwargs):
        # Evaluation time is not training throughput: restart the clock.
        if self._last is not None:
            self._last = (state.global_step, time.perf_counter())


class BatchFingerprintCallback(TrainerCallback):
    """Records a short hash of every training batch each process feeds its model, to
    `output_dir/batch_fingerprints/rank{R}.json` (proof that data-parallel processes see different shards)."""

    def __init__(self):
        self.fingerprints: list[str] = []
        self._handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        def hook(module, module_args, module_kwargs):
            input_ids = module_kwargs.get("input_ids", module_args[0] if module_args else None)
            if module.training and input_ids is not None:
                data = input_ids.detach().cpu().numpy().tobytes()
                self.fingerprints.append(hashlib.sha1(data).hexdigest()[:16])

        self._handle = model.register_forward_pre_hook(hook, with_kwargs=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self._handle is not None:
            self._handle.remove()
        folder = os.path.join(args.output_dir, "batch_fingerprints")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"rank{args.process_index}.json"), "w") as f:
            json.dump(self.fingerprints, f)


def install_callback_first(trainer, callback: TrainerCallback) -> None:
    """Put `callback` before the reporting callbacks (TensorBoard, progress bar), so values it adds in `on_log`
    reach them."""
    trainer.callback_handler.callbacks.insert(0, callback)


def install_throughput_callback(trainer, model, block_size: int) -> ThroughputCallback:
    """Attach a `ThroughputCallback` sized from the trainer's global batch and the model's config."""
    args = trainer.args
    tokens_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size * block_size
    cfg = model.config
    fpt = flops_per_token(model.num_parameters(exclude_embeddings=True), cfg.num_hidden_layers, cfg.hidden_size, block_size)
    peak, source = peak_flops_per_device()
    logger.info("MFU denominator: %.3g FLOP/s per device (%s) × %d process(es)", peak, source, args.world_size)
    callback = ThroughputCallback(tokens_per_step, fpt, peak * args.world_size)
    install_callback_first(trainer, callback)
    return callback


# -------------------------------------------------------------------------------------------------------- checkpoints


def _check_torch_file(path: str) -> str | None:
    """Problem with a torch.save file (a zip archive), or None."""
    if not zipfile.is_zipfile(path):
        return f"{os.path.basename(path)} is not a valid torch archive"
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
    return f"{os.path.basename(path)} has a corrupted entry {bad}" if bad else None


def checkpoint_problems(path: str) -> list[str]:
    """Everything that would stop `path` from resuming a run exactly (empty list: it is usable)."""
    if not os.path.isdir(path):
        return [f"{path} is not a directory"]
    problems = []
    files = set(os.listdir(path))
    state_file = os.path.join(path, "trainer_state.json")
    try:
        with open(state_file) as f:
            if "global_step" not in json.load(f):
                problems.append("trainer_state.json has no global_step")
    except FileNotFoundError:
        problems.append("trainer_state.json is missing")
    except json.JSONDecodeError as err:
        problems.append(f"trainer_state.json is not valid JSON ({err})")
    weights = sorted(f for f in files if f.endswith(".safetensors"))
    if not weights and "pytorch_model.bin" not in files:
        problems.append("no model weights (model.safetensors)")
    for name in weights:
        from safetensors import safe_open

        try:
            with safe_open(os.path.join(path, name), framework="pt") as f:
                keys = list(f.keys())
                if keys:  # the header parses; reading a tensor checks the data is all there
                    f.get_tensor(keys[-1])
        except Exception as err:  # safetensors raises its own error types for truncated/garbled files
            problems.append(f"{name} is unreadable ({err})")
    # FSDP and DeepSpeed write optimizer state in their own layouts (folders); check plain torch files only.
    if not any(f.startswith("optimizer") or f.startswith("global_step") for f in files):
        problems.append("optimizer state (optimizer.pt) is missing")
    for name in ("optimizer.pt", "scheduler.pt"):
        if name in files:
            problem = _check_torch_file(os.path.join(path, name))
            if problem:
                problems.append(problem)
    return problems


def resolve_resume_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """Turn `--resume_from_checkpoint` (a path, or true/last for the newest checkpoint in output_dir) into a
    validated checkpoint path. Raises ValueError instead of ever silently restarting from scratch."""
    if resume_from_checkpoint in (None, False, "", "false", "False"):
        return None
    if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() in ("true", "last", "latest"):
        return _newest_valid_checkpoint(output_dir)
    path = str(resume_from_checkpoint)
    if not os.path.exists(path):
        raise ValueError(
            f"--resume_from_checkpoint {path}: no such checkpoint. Pass an existing {PREFIX_CHECKPOINT_DIR}-N "
            f"folder (or 'true' for the newest one in --output_dir)."
        )
    problems = checkpoint_problems(path)
    if problems:
        raise ValueError(
            f"--resume_from_checkpoint {path} is corrupted or incomplete: {'; '.join(problems)}. "
            f"Resume from an earlier {PREFIX_CHECKPOINT_DIR}-N folder instead."
        )
    return path


def _newest_valid_checkpoint(output_dir: str) -> str:
    """The newest complete checkpoint in output_dir (a run killed while saving leaves a partial newest one)."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    steps = sorted((int(n[len(prefix) :]) for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()), reverse=True)
    if not steps:
        raise ValueError(
            f"--resume_from_checkpoint asked for the last checkpoint, but {output_dir} holds no "
            f"{PREFIX_CHECKPOINT_DIR}-N folder. Pass the checkpoint path, or drop the flag to start a new run."
        )
    skipped = []
    for step in steps:
        path = os.path.join(output_dir, f"{prefix}{step}")
        problems = checkpoint_problems(path)
        if not problems:
            for bad, why in skipped:
                logger.warning("Skipping incomplete checkpoint %s: %s", bad, "; ".join(why))
            return path
        skipped.append((path, problems))
    raise ValueError(
        f"Every checkpoint in {output_dir} is corrupted or incomplete ("
        + " | ".join(f"{p}: {'; '.join(w)}" for p, w in skipped)
        + "). Start a new run with a fresh --output_dir."
    )


# --------------------------------------------------------------------------------------------------- results & samples


def plot_loss_curve(log_history: Iterable[dict], path: str, title: str = "Loss") -> str:
    """Save a PNG of training loss and validation loss against the optimizer step; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = list(log_history)
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    fig, ax = plt.subplots(figsize=(6, 4))
    for points, label, style in ((train, "train", "-"), (val, "validation", "o-")):
        if points:
            ax.plot(*zip(*points), style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


@torch.no_grad()
def sample_generations(
    model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 40, seed: int = 0, temperature: float = 0.8
) -> list[str]:
    """Sampled continuations (prompt included) of each prompt; deterministic for a given seed."""
    model.eval()
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
        out = model.generate(
            ids,
            max_new_tokens=max_new_tokens,
            do_sample=True,
            temperature=temperature,
            top_k=50,
            pad_token_id=tokenizer.pad_token_id,
        )
        outputs.append(tokenizer.decode(out[0], skip_special_tokens=True))
    return outputs
