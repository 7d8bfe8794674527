"""What the alignment recipes share (reward, rl, dpo, distill): checks of their data and starting models, the reward
curve, and the metrics file and model card they write.

The trainers are TRL's (`RewardTrainer`, `GRPOTrainer`, `RLOOTrainer`, `DPOTrainer`, `DistillationTrainer`); rewards
live in `hf_simplegpt.rewards` and the held-out measurements in `hf_simplegpt.evaluation.alignment`. Data come in
TRL's two shapes: *plain* (strings) or *conversational* (lists of `{"role", "content"}` messages).
"""

import json
import os
from collections.abc import Iterable
from typing import Any

from transformers import AutoConfig, AutoTokenizer


def _format_of(value: Any) -> str | None:
    if isinstance(value, str):
        return "plain"
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return "conversational"
    return None


def validate_preference_dataset(dataset, name: str = "preference data") -> str:
    """Check `dataset` holds preference pairs; returns `"plain"` or `"conversational"`.

    Needs `chosen` and `rejected` (and optionally `prompt`), all strings or all message lists.
    """
    columns = list(dataset.column_names)
    missing = [c for c in ("chosen", "rejected") if c not in columns]
    if missing:
        raise ValueError(
            f"The {name} lacks the field(s) {missing}; it has {columns}. Preference data needs `chosen` and "
            "`rejected` (the preferred and the dispreferred answer), optionally with a shared `prompt`."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty.")
    fields = [c for c in ("prompt", "chosen", "rejected") if c in columns]
    formats = {c: _format_of(dataset[0][c]) for c in fields}
    if None in formats.values() or len(set(formats.values())) != 1:
        raise ValueError(
            f"The {name} mixes or misshapes formats: {formats}. Use strings for every field (plain), or lists of "
            "{'role', 'content'} messages for every field (conversational)."
        )
    return formats["chosen"]


def validate_prompt_dataset(dataset, name: str = "prompt data") -> str:
    """Check `dataset` has a `prompt` column of strings or message lists; returns `"plain"` or `"conversational"`."""
    if "prompt" not in dataset.column_names:
        raise ValueError(
            f"The {name} lacks the field 'prompt'; it has {list(dataset.column_names)}. Online training (GRPO, RLOO, "
            "distillation) generates from prompts only: give one `prompt` per row (a string or a list of messages)."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty.")
    fmt = _format_of(dataset[0]["prompt"])
    if fmt is None:
        raise ValueError(f"The {name} has a `prompt` that is neither a string nor a list of messages.")
    return fmt


def check_full_model_folder(path: str, role: str = "model") -> None:
    """Raise `ValueError` if `path` is a LoRA adapter folder: alignment recipes start from standalone models."""
    if os.path.isfile(os.path.join(path, "adapter_config.json")):
        raise ValueError(
            f"The {role} at {path!r} is a LoRA adapter, not a standalone model. Merge it into its base first "
            "(hf-simplegpt sft ... --merge, or hf_simplegpt.adapters.merge_adapter) and pass the merged folder; "
            "add --use_peft to train a new adapter on top."
        )


def check_same_vocabulary(student_path: str, teacher_path: str, roles: tuple[str, str] = ("student", "teacher"),
                          why: str = "Distillation matches the teacher's next-token distribution token by token") -> None:
    """Raise `ValueError` unless the two model folders share a vocabulary: the same `vocab_size` and the same token
    to id mapping. `roles` name the two folders in the message and `why` says what needs it (distillation by default,
    speculative decoding for a draft and its target)."""
    first, second = roles
    student, teacher = AutoConfig.from_pretrained(student_path), AutoConfig.from_pretrained(teacher_path)
    if student.vocab_size != teacher.vocab_size:
        raise ValueError(
            f"The {first} ({student_path}) has vocab_size {student.vocab_size} but the {second} ({teacher_path}) has "
            f"{teacher.vocab_size}. {why}, so both must use the same tokenizer: build the {first} with the "
            f"{second}'s tokenizer."
        )
    student_vocab = AutoTokenizer.from_pretrained(student_path).get_vocab()
    teacher_vocab = AutoTokenizer.from_pretrained(teacher_path).get_vocab()
    if student_vocab != teacher_vocab:
        differing = sorted(set(student_vocab.items()) ^ set(teacher_vocab.items()))[:5]
        raise ValueError(
            f"The {first} ({student_path}) and {second} ({teacher_path}) tokenizers have the same size but map tokens "
            f"differently (e.g. {differing}). {why}: build the {first} with the {second}'s tokenizer."
        )


def plot_reward_curve(log_history: Iterable[dict], path: str, title: str = "Reward during RL") -> str:
    """Save a PNG of the logged reward (total, and each `rewards/<name>/mean` if several) and KL against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = list(log_history)
    per_function = sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")})
    # With one reward function the total is that function's reward: no second panel for it.
    keys = ["reward", *(per_function if len(per_function) > 1 else []), "kl"]
    series = {k: [(h["step"], h[k]) for h in history if k in h] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise ValueError("The log history has no reward entries to plot; was logging_steps larger than max_steps?")
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.5), squeeze=False)
    for ax, (key, points) in zip(axes[0], series.items()):
        ax.plot(*zip(*points), "o-")
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_metrics_and_card(output_dir: str, metrics: dict, *, method: str, base_model: str, summary: str,
                          hyperparameters: dict, template: str = "model_card.md") -> None:
    """Write `alignment_metrics.json` and a model card (README.md) rendered from `model_cards/<template>`."""
    from .hub import write_model_card

    with open(os.path.join(output_dir, "alignment_metrics.json"), "w", encoding="utf-8") as f:
        json.dump(metrics, f, indent=2)
    measured = "\n".join(f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}" for k, v in metrics.items())
    write_model_card(
        output_dir,
        template,
        base_model=base_model,
        tags=["trl", method],
        model_summary=summary,
        training_procedure=f"Trained with `hf-simplegpt {method}` (TRL). Measured on held-out data:\n\n{measured}",
        hyperparameters=hyperparameters,
    )
