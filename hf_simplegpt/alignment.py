"""What the alignment recipes share (reward, grpo, rloo, dpo, distill): checks of their data and starting models, the
reward curve, the metrics file and model card they write, and the one online RL job that grpo and rloo run with
their own TRL trainer.

The trainers are TRL's (`RewardTrainer`, `GRPOTrainer`, `RLOOTrainer`, `DPOTrainer`, `DistillationTrainer`); rewards
live in `hf_simplegpt.rewards` and the held-out measurements in `hf_simplegpt.evaluation.alignment`. Data come in
TRL's two shapes: *plain* (strings) or *conversational* (lists of `{"role", "content"}` messages).
"""

import json
import os
from collections.abc import Iterable

from .data import check_rows, text_field_problem, text_format
from .generation import context_length, encode_prompt
from .hub import check_model_source


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


def save_metrics_and_card(
    output_dir: str,
    metrics: dict,
    *,
    method: str,
    base_model: str,
    summary: str,
    hyperparameters: dict,
    template: str = "model_card.md",
) -> None:
    """Write `alignment_metrics.json` and a model card (README.md) rendered from `model_cards/<template>`; both are
    published with the model (`PUBLISHED_EXTRAS`)."""
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


# Published next to the model (hub.push): the measurements the card quotes, and an RL job's logged curve.
PUBLISHED_EXTRAS = ("alignment_metrics.json", "reward_curve.png", "trainer_state.json")


def train_online_rl(argv, config_class, trainer_class) -> dict:
    """The grpo and rloo jobs, with TRL's `trainer_class` (`GRPOTrainer` or `RLOOTrainer`) configured by
    `config_class`; returns the metrics it writes (alignment_metrics.json).

    For each prompt the policy samples `num_generations` completions; each is scored by the reward model
    (`--reward_model_name_or_path`, a folder written by `hf-simplegpt reward`, wrapped in `rewards.RewardModelScorer`
    so text is formatted exactly as the reward model was trained: passed to TRL directly, plain text would be scored
    without its EOS and give an almost flat reward) and by the reward functions of `--reward_funcs`
    (`rewards.RewardArguments`); `reward_weights` combines them (weight 0 logs a function without optimising it). A
    KL penalty of strength `beta` keeps the policy near its start: a frozen copy, or under `--use_peft` the base
    model with the adapter off. The mean held-out reward is measured before and after; the reward and KL TRL logged
    are plotted (reward_curve.png) and kept (trainer_state.json).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from trl import ModelConfig

    from . import adapters, data, hub, rewards, safeguards, training
    from .evaluation import alignment_metrics

    algorithm = trainer_class.__name__.removesuffix("Trainer").upper()
    data_args, reward_args, run_args, train_args, model_args = training.parse_job_args(
        data.DataArguments, rewards.RewardArguments, safeguards.RunArguments, config_class, ModelConfig, args=argv
    )
    path = model_args.model_name_or_path
    if path is None:
        raise ValueError("Pass --model_name_or_path: the policy to optimise (e.g. the SFT output).")
    check_full_model_folder(path, "policy")
    if reward_args.reward_model_name_or_path:
        check_model_source(reward_args.reward_model_name_or_path, "--reward_model_name_or_path")
    push = hub.wants_push(train_args)
    run = safeguards.start_run(train_args, run_args, inputs=[path, reward_args.reward_model_name_or_path])
    train, heldout = data.load_data(data_args, train_args.seed, check=validate_prompt_dataset)
    reward_funcs = rewards.build_reward_funcs(reward_args, train_args.device)

    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    check_prompts_fit(tokenizer, train, train_args.max_completion_length, AutoConfig.from_pretrained(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=model_args.dtype)
    peft_config = adapters.lora_config_from_model_args(model_args, model)
    model.to(train_args.device)

    heldout_prompts = heldout["prompt"]
    names = [rewards.reward_name(f) for f in reward_funcs]

    def heldout_rewards(policy) -> dict[str, float]:
        completions = alignment_metrics.sample_completions(
            policy, tokenizer, heldout_prompts, reward_args.eval_max_new_tokens, seed=train_args.seed
        )
        return {
            name: sum(f(prompts=heldout_prompts, completions=completions)) / len(completions)
            for name, f in zip(names, reward_funcs)
        }

    before = heldout_rewards(model)
    trainer = trainer_class(
        model=model,
        reward_funcs=reward_funcs,
        args=train_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    run.train(trainer)
    training.save_trained(trainer)
    after = heldout_rewards(trainer.model)
    metrics = {"algorithm": algorithm.lower(), "heldout_prompts": len(heldout)}
    for name in before:
        metrics[f"heldout_{name}_before"] = before[name]
        metrics[f"heldout_{name}_after"] = after[name]
    if not trainer.accelerator.is_main_process:
        return metrics
    trainer.state.save_to_json(os.path.join(train_args.output_dir, "trainer_state.json"))  # the logged curve
    plot_reward_curve(
        trainer.state.log_history,
        os.path.join(train_args.output_dir, "reward_curve.png"),
        title=f"{algorithm}: reward during training",
    )
    for name in before:
        print(f"Held-out mean {name}: {before[name]:.3f} before -> {after[name]:.3f} after {algorithm}")
    save_metrics_and_card(
        train_args.output_dir,
        metrics,
        method=algorithm.lower(),
        base_model=path,
        summary=f"A SimpleGPT policy optimised with {algorithm} (TRL) against {', '.join(names)}.",
        hyperparameters={
            "learning_rate": train_args.learning_rate,
            "max_steps": train_args.max_steps,
            "beta": train_args.beta,
            "num_generations": train_args.num_generations,
            "max_completion_length": train_args.max_completion_length,
            "lora": bool(peft_config),
        },
    )
    if push:
        hub.push(train_args.output_dir, train_args, extra_files=PUBLISHED_EXTRAS)
    return metrics
