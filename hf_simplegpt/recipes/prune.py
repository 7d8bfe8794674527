"""Structured pruning (Minitron-style) of a SimpleGPT, then recovery by logit distillation from the unpruned model.

    hf-simplegpt prune --model_name_or_path outputs/pretrain-default --train_file my_corpus.txt --keep_ratio 0.5 \
        --recovery_steps 200 --output_dir outputs/pruned [--drop_layers 1] [--config recipes/configs/prune.yaml]
    accelerate launch recipes/prune.py ...                # the same job, the same flags

1. Calibrate: forward passes over `--calibration_samples` blocks of the training text score every attention head,
   MLP neuron and block by its activations (`hf_simplegpt.compression`).
2. Prune: keep the most important `--keep_ratio` of the heads and of the MLP neurons in every layer (or
   `--attention_keep_ratio` / `--mlp_keep_ratio` apiece) and drop the `--drop_layers` least important blocks; the
   weights are sliced, so the result is an ordinary, smaller SimpleGPT folder.
3. Recover for `--recovery_steps` steps (0: none) by distillation from the unpruned model on the training text:
   the student matches the teacher's full next-token distribution at every position of each text block (forward
   KL, logits only, no ground-truth loss), Minitron's recovery. It runs on TRL's `GKDTrainer` with `lmbda=0`
   (no on-policy generation: the text is the data) and `beta=0` (forward KL). `hf-simplegpt distill` is the
   on-policy alternative over prompts (TRL's DistillationTrainer), for a pruned model to be tuned to a task.

The text is cleaned, split and packed exactly as `hf-simplegpt pretrain` does (same flags and seed, same held-out
split), so the held-out losses in the card compare directly with the pretraining run's. The source folder is only
read. Writes the model, tokenizer, `pruning.json` (kept units, importance scores, losses) and a model card.
"""

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass, field

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, set_seed
from trl.import_utils import TRLExperimentalWarning

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import compression, hub, safeguards
from hf_simplegpt.alignment import check_full_model_folder
from hf_simplegpt.corpus import CorpusArguments, blocks_tensor, prepare_corpus, tokenize_and_pack
from hf_simplegpt.hub import write_model_card
from hf_simplegpt.training import parse_job_args, ready_for_inference

with warnings.catch_warnings():
    # GKDTrainer lives in trl.experimental: chosen on purpose (the one TRL trainer for off-policy logit distillation
    # on given text); the import would otherwise warn on every run.
    warnings.simplefilter("ignore", TRLExperimentalWarning)
    from trl.experimental.gkd import GKDConfig, GKDTrainer

logger = logging.getLogger("hf_simplegpt.prune")


@dataclass
class PruningArguments:
    """What to prune, how to score it, and how long to recover."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The SimpleGPT folder to prune (only read)."}
    )
    keep_ratio: float = field(
        default=0.5, metadata={"help": "Fraction of the attention heads and of the MLP neurons kept in every layer."}
    )
    attention_keep_ratio: float | None = field(
        default=None, metadata={"help": "Fraction of the heads kept per layer (default: --keep_ratio)."}
    )
    mlp_keep_ratio: float | None = field(
        default=None, metadata={"help": "Fraction of the MLP neurons kept per layer (default: --keep_ratio)."}
    )
    drop_layers: int = field(default=0, metadata={"help": "Least important blocks to remove (depth pruning)."})
    calibration_samples: int = field(
        default=256, metadata={"help": "Training blocks (of the model's context length) the importance is measured on."}
    )
    recovery_steps: int = field(
        default=200,
        metadata={"help": "Distillation steps from the unpruned model after pruning; 0: the pruned model alone."},
    )

    def __post_init__(self):
        self.attention_keep_ratio = self.keep_ratio if self.attention_keep_ratio is None else self.attention_keep_ratio
        self.mlp_keep_ratio = self.keep_ratio if self.mlp_keep_ratio is None else self.mlp_keep_ratio
        for flag in ("keep_ratio", "attention_keep_ratio", "mlp_keep_ratio"):
            value = getattr(self, flag)
            if not 0 < value <= 1:
                raise ValueError(f"--{flag} {value}: the fraction of units kept must be in (0, 1] (1 keeps them all).")
        if self.calibration_samples < 1:
            raise ValueError(f"--calibration_samples {self.calibration_samples}: measure on at least one block.")
        if self.recovery_steps < 0:
            raise ValueError(f"--recovery_steps {self.recovery_steps}: pass 0 (no recovery) or a number of steps.")


@dataclass
class RecoveryConfig(GKDConfig):
    """TRL's GKDConfig with the recovery's defaults: logit distillation on the text (lmbda 0, forward KL), a
    pretraining-like schedule, float32 on CPU, no checkpoints. Every TrainingArguments flag still applies."""

    output_dir: str | None = field(default="outputs/pruned", metadata={"help": "Where the pruned model goes."})
    lmbda: float = field(default=0.0, metadata={"help": "Must stay 0: recovery distils on the training text."})
    beta: float = field(default=0.0, metadata={"help": "Generalised JSD: 0 forward KL (Minitron), 1 reverse KL."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate of the recovery."})
    lr_scheduler_type: str = field(default="cosine", metadata={"help": "Schedule after warmup."})
    warmup_steps: float = field(default=0.05, metadata={"help": "Warmup steps (int) or fraction of the recovery (<1)."})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Blocks per device per step."})
    per_device_eval_batch_size: int = field(
        default=32, metadata={"help": "Blocks per forward in calibration and evaluation."}
    )
    activation_checkpointing: bool | None = field(
        default=False, metadata={"help": "Recompute activations (saves memory)."}
    )
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints during recovery: no/steps/epoch."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Trackers to log to."})
    seed: int = field(
        default=42, metadata={"help": "Seed: the held-out split (as in pretraining), calibration, data order."}
    )


def check_arguments(pruning: PruningArguments, data: CorpusArguments, recovery: RecoveryConfig) -> None:
    """Everything that can be wrong with the flags, checked before any data or weights are read."""
    source = pruning.model_name_or_path
    if source is None:
        raise ValueError("Pass --model_name_or_path: the SimpleGPT folder to prune.")
    check_full_model_folder(source, "model to prune")
    if not (data.train_file or data.dataset_name):
        raise ValueError(
            "Pass --train_file (or --dataset_name): the text the importance is measured on and the "
            "recovery trains on, ideally the model's pretraining text."
        )
    if data.streaming:
        raise ValueError(
            "--streaming is not supported by prune: it samples calibration blocks from the whole corpus. "
            "Drop --streaming (the dataset is then downloaded and cached)."
        )
    if recovery.max_steps != -1:
        raise ValueError(f"--max_steps {recovery.max_steps}: the recovery length is --recovery_steps.")
    if recovery.lmbda != 0 or recovery.seq_kd:
        raise ValueError(
            "Recovery distils on the training text (--lmbda 0, --seq_kd false). For on-policy "
            "distillation over prompts, run `hf-simplegpt distill` on the pruned folder."
        )
    config = AutoConfig.from_pretrained(source)
    if config.model_type != "simplegpt":
        raise ValueError(
            f"{source} holds a {config.model_type!r} model; prune works on SimpleGPT folders "
            "(`hf-simplegpt convert` turns a GPT-2 into one)."
        )
    compression.pruned_shape(config, pruning.attention_keep_ratio, pruning.mlp_keep_ratio, pruning.drop_layers)


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    data_args, pruning, run_args, recovery = parse_job_args(
        CorpusArguments, PruningArguments, safeguards.RunArguments, RecoveryConfig, args=argv
    )
    check_arguments(pruning, data_args, recovery)
    push = hub.wants_push(recovery)
    run = safeguards.start_run(recovery, run_args, inputs=[pruning.model_name_or_path])
    recovery.max_steps = max(pruning.recovery_steps, 1)  # the Trainer is not built at 0
    source, out = pruning.model_name_or_path, recovery.output_dir
    set_seed(recovery.seed)

    tokenizer = AutoTokenizer.from_pretrained(source)
    teacher = AutoModelForCausalLM.from_pretrained(source).to(recovery.device).eval()
    block_size = teacher.config.max_position_embeddings
    with recovery.main_process_first(desc="data preparation"):
        splits, stats = prepare_corpus(data_args, seed=recovery.seed)
        train = tokenize_and_pack(splits["train"], tokenizer, block_size, data_args, "train")
        heldout = blocks_tensor(tokenize_and_pack(splits["validation"], tokenizer, block_size, data_args, "validation"))

    batch = recovery.per_device_eval_batch_size
    calibration = blocks_tensor(train, pruning.calibration_samples, recovery.seed)
    importance = compression.collect_importance(teacher, calibration, batch)
    shape = compression.pruned_shape(
        teacher.config, pruning.attention_keep_ratio, pruning.mlp_keep_ratio, pruning.drop_layers
    )
    plan = compression.select_units(
        importance, shape["num_attention_heads"], shape["intermediate_size"], pruning.drop_layers
    )
    student = compression.prune_model(teacher, plan)
    losses = {
        "source": compression.language_model_loss(teacher, heldout, batch),
        "pruned": compression.language_model_loss(student, heldout, batch),
    }
    logger.info(
        "Pruned %s -> %s parameters; held-out loss %.4f -> %.4f",
        f"{teacher.num_parameters():,}",
        f"{student.num_parameters():,}",
        losses["source"],
        losses["pruned"],
    )

    recovery_tokens = 0
    if pruning.recovery_steps:
        trainer = GKDTrainer(
            model=student,
            teacher_model=teacher,
            args=recovery,
            train_dataset=train,
            data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
            processing_class=tokenizer,
        )
        run.train(trainer)
        student = trainer.accelerator.unwrap_model(trainer.model)
        global_batch = recovery.per_device_train_batch_size * recovery.gradient_accumulation_steps * recovery.world_size
        recovery_tokens = trainer.state.global_step * global_batch * block_size
        losses["recovered"] = compression.language_model_loss(student, heldout, batch)
        logger.info(
            "Recovered for %d steps (%s tokens): held-out loss %.4f",
            trainer.state.global_step,
            f"{recovery_tokens:,}",
            losses["recovered"],
        )
        if not trainer.is_world_process_zero():
            return {}

    ready_for_inference(student)
    student.save_pretrained(out)
    tokenizer.save_pretrained(out)
    report = {
        "source": source,
        "parameters": {"source": teacher.num_parameters(), "pruned": student.num_parameters()},
        "shape": shape,
        "kept": plan.to_dict(),
        "importance": {
            "heads": importance.heads.tolist(),
            "neurons_sum_per_layer": importance.neurons.sum(-1).tolist(),
            "layers": importance.layers.tolist(),
            "calibration_blocks": importance.samples,
        },
        "recovery": {
            "steps": pruning.recovery_steps,
            "tokens": recovery_tokens,
            "learning_rate": recovery.learning_rate,
            "beta": recovery.beta,
        },
        "heldout_loss": losses,
        "heldout_tokens": heldout.shape[0] * (block_size - 1),
    }
    with open(os.path.join(out, "pruning.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    write_model_card(
        out,
        "prune.md",
        base_model=source,
        tags=["pruning", "distillation", "causal-lm"],
        repo_id=recovery.hub_model_id or os.path.basename(os.path.abspath(out)),
        report=report,
        data_source=stats.source,
        source_config={
            k: getattr(teacher.config, k)
            for k in ("num_hidden_layers", "num_attention_heads", "head_dim", "intermediate_size", "hidden_size")
        },
        perplexity={k: math.exp(min(v, 50.0)) for k, v in losses.items()},
        calibration_blocks=importance.samples,
        block_size=block_size,
        recovery=recovery,
    )
    if push:
        hub.push(out, recovery, extra_files=("pruning.json",))
    return report


if __name__ == "__main__":
    main()
