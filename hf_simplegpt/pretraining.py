"""What only pretraining uses: its arguments, the model it builds, throughput/MFU logging, batch fingerprints,
the loss curve and the model card's numbers. The recipe is `hf_simplegpt/recipes/pretrain.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback, TrainingArguments

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ arguments


@dataclass
class PretrainingArguments(TrainingArguments):
    """`TrainingArguments` with the pretraining defaults: the reference design's optimisation (AdamW, clip 1.0, warmup
    + cosine) for the default run, 400 steps of 8 blocks of a small model (the only source of the job's defaults: the
    YAML files of recipes/configs/ state only what they change)."""

    output_dir: str | None = field(
        default="outputs/pretrain-default", metadata={"help": "Where checkpoints and the model go."}
    )
    # 10x the reference design's 1e-4: a model this small, trained for a few hundred steps, would otherwise barely move.
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule after warmup."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps (int) or fraction of training (<1)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    # 8, not 16, with twice the steps (the same tokens): 6% fewer bits per character than 16 (with dropout 0), and each
    # step costs less than half (benchmarks/results/pretrain-default-batch8-dropout0.md).
    per_device_train_batch_size: int = field(default=8, metadata={"help": "Blocks per device per step."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Blocks per device per eval step."})
    max_steps: int = field(default=400, metadata={"help": "Optimizer steps; -1 trains for --num_train_epochs."})
    num_train_epochs: float = field(default=4.0, metadata={"help": "Epochs (ignored when max_steps > 0)."})
    eval_strategy: str = field(default="steps", metadata={"help": "When to evaluate: no/steps/epoch."})
    eval_steps: float | None = field(default=50, metadata={"help": "Evaluate every N steps."})
    save_steps: float = field(default=100, metadata={"help": "Checkpoint every N steps."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
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
        default=None,
        metadata={"help": "Continue pretraining this saved model (folder or Hub id) instead of a new one."},
    )
    tokenizer_name: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; default: train one on the training text."}
    )
    objective: str = field(default="clm", metadata={"help": "clm (causal LM) or mlm (masked LM, bidirectional)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Fraction of tokens masked with --objective mlm."})
    vocab_size: int = field(default=2048, metadata={"help": "Vocabulary of the trained tokenizer and the model."})
    hidden_size: int = field(default=128, metadata={"help": "Width of the residual stream."})
    num_hidden_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(
        default=4, metadata={"help": "Attention heads (must divide hidden_size unless --head_dim is set)."}
    )
    head_dim: int | None = field(
        default=None,
        metadata={
            "help": "Width per head (default hidden_size // heads); heads x head_dim may then differ from "
            "hidden_size, as in a pruned model's shape."
        },
    )
    max_position_embeddings: int = field(default=128, metadata={"help": "Context length = packed block size."})
    intermediate_size: int | None = field(default=None, metadata={"help": "MLP width (default 4 * hidden_size)."})
    norm_position: str = field(
        default="pre", metadata={"help": "pre (GPT-2, stable) or post (the reference design's block)."}
    )
    # 0, not the reference design's 0.1: a few hundred steps over a few epochs do not overfit, and the masks cost a
    # quarter of a CPU step (benchmarks/results/pretrain-default.md).
    dropout: float = field(default=0.0, metadata={"help": "Embedding, residual and attention dropout."})
    tie_word_embeddings: bool = field(default=False, metadata={"help": "Share input and output embeddings."})
    num_sample_generations: int = field(default=3, metadata={"help": "Sample continuations printed at the end."})

    def __post_init__(self):
        if self.objective not in ("clm", "mlm"):
            raise ValueError(f"--objective {self.objective!r} is unknown; use clm (causal LM) or mlm (masked LM).")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}.")
        if self.max_position_embeddings < 2:
            raise ValueError(
                f"--max_position_embeddings {self.max_position_embeddings} must be at least 2: it is the "
                "context length and the block size (a token and the one it predicts)."
            )
        if self.num_sample_generations < 0:
            raise ValueError(f"--num_sample_generations must be >= 0 (0: none), got {self.num_sample_generations}.")
        if self.model_name_or_path is None:
            from huggingface_hub.errors import StrictDataclassError

            try:  # a shape the model cannot have fails here, before the data are prepared
                self.simplegpt_config()
            except StrictDataclassError as err:
                raise ValueError(" ".join(str(err).split()) + " (the model shape flags)") from err

    def simplegpt_config(self, vocab_size: int | None = None, **token_ids):
        """The `SimpleGPTConfig` of these flags (`vocab_size`: the tokenizer's, default `--vocab_size`)."""
        from . import SimpleGPTConfig

        return SimpleGPTConfig(
            vocab_size=vocab_size or self.vocab_size,
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            head_dim=self.head_dim,
            max_position_embeddings=self.max_position_embeddings,
            intermediate_size=self.intermediate_size,
            norm_position=self.norm_position,
            dropout=self.dropout,
            tie_word_embeddings=self.tie_word_embeddings,
            **token_ids,
        )

    @property
    def auto_class(self):
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        return AutoModelForMaskedLM if self.objective == "mlm" else AutoModelForCausalLM


def check_continued_model(model_args: ModelArguments) -> None:
    """Before any work, for `--model_name_or_path`: the block size must fit the model's position table, and a
    `--tokenizer_name` must map tokens to the ids the model learned (a tokenizer of the same size from another run
    does not: the model would train on scrambled text)."""
    from transformers import AutoConfig, AutoTokenizer

    from .tokenization import differing_tokens

    path = model_args.model_name_or_path
    positions = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    if positions is not None and model_args.max_position_embeddings > positions:
        raise ValueError(
            f"--max_position_embeddings {model_args.max_position_embeddings} (the block size) is larger than the "
            f"{positions} positions of {path}, whose position table cannot grow. Pass --max_position_embeddings "
            f"{positions} or less."
        )
    if model_args.tokenizer_name and os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        own, given = AutoTokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(model_args.tokenizer_name)
        differing = differing_tokens(own, given)
        if differing:
            raise ValueError(
                f"--tokenizer_name {model_args.tokenizer_name} maps tokens to other ids than the tokenizer {path} was "
                f"trained with (e.g. {differing}), so the model would read scrambled text. Drop --tokenizer_name to "
                "keep the model's own tokenizer."
            )


def build_model(model_args: ModelArguments, tokenizer):
    """A fresh SimpleGPT sized by `model_args` with the tokenizer's vocabulary and special ids, or the saved model
    at `model_args.model_name_or_path` (checked against the tokenizer)."""
    from .tokenization import special_token_ids

    if model_args.model_name_or_path:
        model = model_args.auto_class.from_pretrained(model_args.model_name_or_path)
        if model.config.vocab_size < len(tokenizer):
            raise ValueError(
                f"{model_args.model_name_or_path} has vocab_size {model.config.vocab_size} but the tokenizer has "
                f"{len(tokenizer)} tokens. Pass the model's own tokenizer with --tokenizer_name."
            )
        return model
    config = model_args.simplegpt_config(len(tokenizer), **special_token_ids(tokenizer))
    return model_args.auto_class.from_config(config)


def installed_trackers() -> list[str] | str:
    """The local, login-free trackers that are installed (TensorBoard, Trackio), or "none"."""
    from transformers.integrations import is_tensorboard_available, is_trackio_available

    found = [
        name for name, ok in (("tensorboard", is_tensorboard_available()), ("trackio", is_trackio_available())) if ok
    ]
    return found or "none"


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


def matmul_parameters(model: torch.nn.Module) -> int:
    """N of the 6N FLOPs rule: the weights of every matrix multiply, the output projection included even when it
    shares the token embedding's tensor (`num_parameters(exclude_embeddings=True)` drops it then, with GPT-2's tied
    head a third of the FLOPs). Embedding lookups, biases and LayerNorms do no matmul."""
    return sum(module.weight.numel() for module in model.modules() if isinstance(module, torch.nn.Linear))


def flops_per_token(num_params: int, num_layers: int, hidden_size: int, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the weight matmuls (N from `matmul_parameters`) + 12·L·H·T for attention
    scores and values (PaLM, appendix B)."""
    return 6 * num_params + 12 * num_layers * hidden_size * seq_len


class ThroughputCallback(TrainerCallback):
    """Adds `tokens_per_second` and `mfu` to every training log and `eval_perplexity` to every evaluation log.

    Args:
        tokens_per_step: tokens consumed by one optimizer step across all processes (global batch × block size).
        flops_per_token: from `flops_per_token()`.
        peak_flops: peak FLOP/s of all devices together (per device × world size).
    Install with `install_throughput_callback`, which puts it before the reporting callbacks.
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


def install_throughput_callback(trainer, model, block_size: int) -> ThroughputCallback:
    """Attach a `ThroughputCallback` sized from the trainer's global batch and the model's config."""
    args = trainer.args
    tokens_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size * block_size
    cfg = model.config
    fpt = flops_per_token(matmul_parameters(model), cfg.num_hidden_layers, cfg.hidden_size, block_size)
    peak, source = peak_flops_per_device()
    logger.info("MFU denominator: %.3g FLOP/s per device (%s) × %d process(es)", peak, source, args.world_size)
    callback = ThroughputCallback(tokens_per_step, fpt, peak * args.world_size)
    # First in line, before the reporting callbacks (TensorBoard, progress bar), so the values it adds reach them.
    trainer.callback_handler.callbacks.insert(0, callback)
    return callback


# ------------------------------------------------------------------------------------------------ results


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


def card_context(
    trainer, data_args, model_args, stats, metrics: dict, initial_eval_loss: float | None, samples: list[str]
) -> dict:
    """Values the model_cards/pretrain.md template shows besides the config (architecture) and results."""
    args = trainer.args
    global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    hyperparameters = {
        "optimizer": f"{getattr(args.optim, 'value', args.optim)} (betas {args.adam_beta1}, {args.adam_beta2}, eps {args.adam_epsilon})",
        "learning rate": f"{args.learning_rate} ({getattr(args.lr_scheduler_type, 'value', args.lr_scheduler_type)}, "
        f"warmup {args.warmup_steps})",
        "weight decay": args.weight_decay,
        "gradient clipping": args.max_grad_norm,
        "batch": f"{global_batch} blocks = {global_batch * model_args.max_position_embeddings} tokens "
        f"({args.per_device_train_batch_size} × {args.gradient_accumulation_steps} accumulation × {args.world_size} processes)",
        "steps": trainer.state.global_step,
        "dropout": model_args.dropout,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "seed": args.seed,
        "hardware": f"{args.world_size} × {args.device.type}",
    }
    return dict(
        objective=model_args.objective,
        num_parameters=f"{trainer.model.num_parameters() / 1e6:.2f}M",
        data=stats.to_dict(),
        min_chars=data_args.min_chars,
        max_chars=data_args.max_chars,
        normalization=data_args.normalization,
        near_dedup_threshold=data_args.near_dedup_threshold,
        tokenizer_trained=not (model_args.tokenizer_name or model_args.model_name_or_path),
        hyperparameters=hyperparameters,
        initial_eval_loss=initial_eval_loss,
        initial_eval_perplexity=math.exp(min(initial_eval_loss, 50.0)) if initial_eval_loss is not None else None,
        global_step=trainer.state.global_step,
        eval_loss=metrics["eval_loss"],
        eval_perplexity=metrics["eval_perplexity"],
        samples=samples,
    )
