"""Train a reward model on preference pairs with TRL's RewardTrainer.

    hf-simplegpt reward --config recipes/configs/reward_tiny.yaml \
        --model_name_or_path SFT_DIR --train_file pairs.jsonl --output_dir out/reward [--use_peft]

Rows hold `chosen` and `rejected` answers (plain strings or chat messages), optionally with a shared `prompt`.
The model is a `SimpleGPTForSequenceClassification` with one label whose body is initialised from the causal LM
at --model_name_or_path (its `score` head starts random). Preference accuracy (chosen scored above rejected) is
measured on held-out pairs before and after training. The output folder loads with
`AutoModelForSequenceClassification` and holds the tokenizer, which is what `hf-simplegpt grpo`/`rloo` score with; a LoRA
run is merged into the model before saving so that this stays true.
"""

import logging

from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed
from trl import ModelConfig, RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import suppress_seqcls_warning

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import adapters, alignment, data, hub, rewards, safeguards, training
from hf_simplegpt.data import DataArguments
from hf_simplegpt.evaluation import alignment_metrics
from hf_simplegpt.generation import check_fits_context

logger = logging.getLogger("hf_simplegpt.reward")


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    """Train the reward model; returns the held-out preference accuracy before and after (alignment_metrics.json)."""
    data_args, run_args, train_args, model_args = training.parse_job_args(
        DataArguments, safeguards.RunArguments, RewardConfig, ModelConfig, args=argv
    )
    path = model_args.model_name_or_path
    if path is None:
        raise ValueError("Pass --model_name_or_path: the causal LM (e.g. the SFT output) the reward model starts from.")
    alignment.check_full_model_folder(path)
    check_fits_context(AutoConfig.from_pretrained(path), train_args.max_length, "--max_length")
    push = hub.wants_push(train_args)
    run = safeguards.start_run(train_args, run_args, inputs=[path])
    train, heldout = data.load_data(data_args, train_args.seed, check=alignment.validate_preference_dataset)
    fmt = alignment.text_format(train[0]["chosen"])

    set_seed(train_args.seed)  # the score head is initialised randomly
    tokenizer = AutoTokenizer.from_pretrained(path)
    # TRL's scope for the expected load report of a causal LM read as a classifier (lm_head unused, score new).
    with suppress_seqcls_warning():
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=model_args.dtype)
    if rewards.add_distinct_pad_token(model, tokenizer):
        logger.warning(
            "The tokenizer had no pad token distinct from EOS; added %r for the reward model.", tokenizer.pad_token
        )
    if model_args.use_peft:
        # The score head is new, so it is trained in full next to the adapters.
        model_args.lora_task_type = "SEQ_CLS"
        model_args.lora_modules_to_save = sorted({*(model_args.lora_modules_to_save or []), "score"})
    peft_config = adapters.lora_config_from_model_args(model_args, model)

    before = alignment_metrics.preference_accuracy(rewards.RewardModelScorer(model, tokenizer), heldout.to_list())
    trainer = RewardTrainer(
        model=model,
        args=train_args,
        train_dataset=train,
        eval_dataset=heldout,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    run.train(trainer)

    model = trainer.model.merge_and_unload() if peft_config is not None else trainer.model
    metrics = {"data_format": fmt, "heldout_pairs": len(heldout), "preference_accuracy_before": before}
    if not trainer.accelerator.is_main_process:
        return metrics
    model.save_pretrained(train_args.output_dir)
    tokenizer.save_pretrained(train_args.output_dir)
    # Measured on the saved folder: what hf-simplegpt grpo/rloo will load, through the same checks.
    scorer = rewards.RewardModelScorer.from_pretrained(train_args.output_dir, device=train_args.device)
    metrics["preference_accuracy_after"] = alignment_metrics.preference_accuracy(scorer, heldout.to_list())
    print(
        f"Held-out preference accuracy: {before:.3f} before -> {metrics['preference_accuracy_after']:.3f} after training"
    )
    alignment.save_metrics_and_card(
        train_args.output_dir,
        metrics,
        method="reward",
        base_model=path,
        template="reward_model.md",
        summary="A SimpleGPT reward model: a sequence classifier with one output, the reward, trained on "
        "preference pairs so that preferred answers score higher.",
        hyperparameters={
            "learning_rate": train_args.learning_rate,
            "max_steps": train_args.max_steps,
            "per_device_train_batch_size": train_args.per_device_train_batch_size,
            "lora": bool(peft_config),
        },
    )
    if push:
        hub.push(train_args.output_dir, train_args, extra_files=alignment.PUBLISHED_EXTRAS)
    return metrics


if __name__ == "__main__":
    main()
