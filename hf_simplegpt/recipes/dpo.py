"""Direct preference optimisation with TRL's DPOTrainer: learn from preference pairs without a reward model.

    hf-simplegpt dpo --config recipes/configs/dpo_tiny.yaml \
        --model_name_or_path SFT_DIR --train_file pairs.jsonl --output_dir out/dpo [--use_peft]

Rows hold `chosen` and `rejected` answers (plain strings or chat messages) and usually a shared `prompt`. DPO
needs a frozen reference model, and gets it one of two ways:

- full fine-tuning: a second, frozen copy of the starting model (TRL loads it from --model_name_or_path);
- `--use_peft`: no copy; the reference is the same weights with the LoRA adapter switched off.

The chosen-over-rejected margin, mean log p(chosen | prompt) - log p(rejected | prompt), and the fraction of pairs
where the chosen answer is the more likely one are measured on held-out pairs before and after training; DPO
should raise both.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer, ModelConfig

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import adapters, alignment, data, hub, safeguards, training
from hf_simplegpt.data import DataArguments
from hf_simplegpt.evaluation import alignment_metrics
from hf_simplegpt.generation import check_fits_context


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    """Run DPO; returns the held-out margins before and after (alignment_metrics.json)."""
    data_args, run_args, train_args, model_args = training.parse_job_args(
        DataArguments, safeguards.RunArguments, DPOConfig, ModelConfig, args=argv
    )
    path = model_args.model_name_or_path
    if path is None:
        raise ValueError("Pass --model_name_or_path: the causal LM (e.g. the SFT output) to align.")
    alignment.check_full_model_folder(path, "policy")
    check_fits_context(AutoConfig.from_pretrained(path), train_args.max_length, "--max_length")
    push = hub.wants_push(train_args)
    run = safeguards.start_run(train_args, run_args, inputs=[path])
    train, heldout = data.load_data(data_args, train_args.seed, check=alignment.validate_preference_dataset)
    fmt = alignment.text_format(train[0]["chosen"])

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=model_args.dtype)
    peft_config = adapters.lora_config_from_model_args(model_args, model)
    model.to(train_args.device)
    rows = heldout.to_list()
    if "prompt" not in heldout.column_names:
        raise ValueError("The held-out pairs need a `prompt` to measure the chosen-over-rejected margin.")
    before = alignment_metrics.preference_logp_gaps(model, tokenizer, rows)

    # ref_model=None: TRL loads the frozen copy from the model's path, or under LoRA disables the adapter.
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=train_args,
        train_dataset=train,
        eval_dataset=heldout,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    run.train(trainer)
    training.save_trained(trainer)
    after = alignment_metrics.preference_logp_gaps(trainer.model, tokenizer, rows)
    reference = "the base model with the LoRA adapter disabled" if peft_config else "a frozen copy of the model"
    metrics = {"data_format": fmt, "heldout_pairs": len(rows), "reference_model": reference}
    for name, gaps in (("before", before), ("after", after)):
        metrics[f"logp_margin_{name}"] = gaps.mean().item()
        metrics[f"chosen_more_likely_fraction_{name}"] = (gaps > 0).float().mean().item()
    if not trainer.accelerator.is_main_process:
        return metrics
    print(
        f"Held-out mean log p(chosen) - log p(rejected): {metrics['logp_margin_before']:.3f} before -> "
        f"{metrics['logp_margin_after']:.3f} after DPO; chosen more likely in "
        f"{metrics['chosen_more_likely_fraction_before']:.1%} -> {metrics['chosen_more_likely_fraction_after']:.1%}"
        " of pairs"
    )
    alignment.save_metrics_and_card(
        train_args.output_dir,
        metrics,
        method="dpo",
        base_model=path,
        summary="A SimpleGPT aligned to preference pairs with direct preference optimisation (TRL DPOTrainer).",
        hyperparameters={
            "learning_rate": train_args.learning_rate,
            "max_steps": train_args.max_steps,
            "beta": train_args.beta,
            "loss_type": train_args.loss_type,
            "per_device_train_batch_size": train_args.per_device_train_batch_size,
            "lora": bool(peft_config),
        },
    )
    if push:
        hub.push(train_args.output_dir, train_args, extra_files=alignment.PUBLISHED_EXTRAS)
    return metrics


if __name__ == "__main__":
    main()
