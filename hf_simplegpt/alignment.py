"""What the alignment recipes share (reward, rl, dpo, distill): checks of their data and starting models, the reward
curve, and the metrics file and model card they write.

The trainers are TRL's (`RewardTrainer`, `GRPOTrainer`, `RLOOTrainer`, `DPOTrainer`, `DistillationTrainer`); rewards
live in `hf_simplegpt.rewards` and the held-out measurements in `hf_simplegpt.evaluation.alignment`. Data come in
TRL's two shapes: *plain* (strings) or *conversational* (lists of `{"role", "content"}` messages).
"""

import json
import os
from collections.abc import Iterable

from transformers import AutoConfig, AutoTokenizer

from .data import check_rows, text_field_problem, text_format
from .generation import context_length, encode_prompt
from .hub import check_model_source
from .tokenization import differing_tokens


def validate_preference_dataset(dataset, name: str = "preference data") -> str:
    """Check every row of `dataset` holds a preference pair; returns `"plain"` or `"conversational"`.

    Needs `chosen` and `rejected` (and optionally `prompt`), all strings or all message lists, in every row alike;
    raises ValueError naming the first row that breaks this.
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
    fmt = text_format(dataset[0]["chosen"])
    def problem(row):
        return next(filter(None, (text_field_problem(row[f], f, fmt, allow_empty=f == "prompt") for f in fields)), None)

    check_rows(dataset, fields, problem, name)
    return fmt


def validate_prompt_dataset(dataset, name: str = "prompt data") -> str:
    """Check every row has a `prompt` (a non-empty string or message list, one shape for all rows); returns
    `"plain"` or `"conversational"`."""
    if "prompt" not in dataset.column_names:
        raise ValueError(
            f"The {name} lacks the field 'prompt'; it has {list(dataset.column_names)}. Online training (GRPO, RLOO, "
            "distillation) generates from prompts only: give one `prompt` per row (a string or a list of messages)."
        )
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty.")
    fmt = text_format(dataset[0]["prompt"])
    check_rows(dataset, ["prompt"], lambda row: text_field_problem(row["prompt"], "prompt", fmt), name)
    return fmt


def check_prompts_fit(tokenizer, dataset, max_completion_length: int, config) -> None:
    """Raise ValueError when a prompt plus `--max_completion_length` new tokens exceeds the model's context: TRL
    generates from whole prompts, so training would fail at the first such prompt, possibly hours in."""
    limit = context_length(config)
    if limit is None:
        return
    lengths = [len(encode_prompt(tokenizer, prompt)) for prompt in dataset["prompt"]]
    longest = max(range(len(lengths)), key=lengths.__getitem__)
    if lengths[longest] + max_completion_length > limit:
        raise ValueError(
            f"Row {longest + 1} of the training data has a {lengths[longest]}-token prompt: with "
            f"--max_completion_length {max_completion_length} that is more than the model's {limit} positions. Lower "
            f"--max_completion_length to {max(limit - lengths[longest], 0)} or shorten the prompts."
        )


def check_full_model_folder(path: str, role: str = "model", flag: str = "--model_name_or_path") -> None:
    """Raise `ValueError` if `path` (given as `flag`) is a missing or incomplete model folder
    (`hub.check_model_source`) or a LoRA adapter folder: alignment recipes start from standalone models."""
    check_model_source(path, flag)
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
    differing = differing_tokens(*(AutoTokenizer.from_pretrained(path) for path in (student_path, teacher_path)))
    if differing:
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
