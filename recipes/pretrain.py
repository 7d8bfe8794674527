"""Pretrain a SimpleGPT from scratch with the transformers Trainer.

    accelerate launch recipes/pretrain.py                              # built-in offline corpus, small model, CPU ok
    accelerate launch recipes/pretrain.py --config recipes/configs/pretrain_tiny.yaml \\
        --train_file data.txt --output_dir out --max_steps 100
    accelerate launch --config_file recipes/accelerate/multi_gpu.yaml recipes/pretrain.py --config ...

Every field of DataArguments, ModelArguments and PretrainingArguments (all TrainingArguments flags) can be set in
the YAML given to --config and overridden on the command line.
"""

import json
import logging
import math
import os
import sys

from transformers import DataCollatorForLanguageModeling, Trainer

from hf_simplegpt.data import DataArguments, load_or_train_tokenizer, prepare_corpus, tokenize_and_pack
from hf_simplegpt.hub import push_to_hub, write_model_card
from hf_simplegpt.training import (
    BatchFingerprintCallback,
    ModelArguments,
    PretrainingArguments,
    build_model,
    check_launch,
    install_throughput_callback,
    parse_args,
    plot_loss_curve,
    resolve_resume_checkpoint,
    sample_generations,
    seed_everything,
    setup_logging,
)

logger = logging.getLogger("pretrain")

# Without --config, this YAML supplies the defaults: the small offline run the README's Quickstart launches.
DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "pretrain_default.yaml")
# Published next to the model, card and code (hub.hub_files): the training record the card refers to.
PUBLISHED_EXTRAS = ("loss_curve.png", "trainer_state.json", "all_results.json")
SAMPLE_PROMPTS = ["The ", "A function", "In Python, "]


def card_context(trainer, data_args, model_args, stats, metrics, initial_eval_loss, samples) -> dict:
    """Values the model_cards/pretrain.md template shows besides the config (architecture) and results."""
    args = trainer.args
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
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
        "precision": precision,
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


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--config" not in argv:
        argv = ["--config", DEFAULT_CONFIG, *argv]
    data_args, model_args, training_args = parse_args(DataArguments, ModelArguments, PretrainingArguments, args=argv)
    setup_logging(training_args, logger.name)
    check_launch(training_args)
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError("A streamed dataset has no length, so epochs are undefined: pass --max_steps N with --streaming.")
    # Fail before any work when the checkpoint to resume from is unusable.
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    # One upload at the end, of exactly the published files (hub.hub_files): the Trainer's own pushes would send
    # checkpoints mid-run and replace our model card with its own.
    push, training_args.push_to_hub = training_args.push_to_hub, False
    if push and not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id <user>/<model-name>.")
    seed_everything(training_args.seed)
    block_size = model_args.max_position_embeddings

    # The main process cleans, tokenizes and caches first; the others then read its cache (same tokenizer too).
    with training_args.main_process_first(desc="data preparation"):
        splits, stats = prepare_corpus(data_args, seed=training_args.seed)
        # A resumed run or a continued model keeps its own tokenizer; otherwise one is trained on the corpus.
        tokenizer_source = resume or model_args.tokenizer_name or model_args.model_name_or_path
        tokenizer = load_or_train_tokenizer(
            tokenizer_source, splits["train"], model_args.vocab_size, block_size, data_args
        )
        train_dataset = tokenize_and_pack(splits["train"], tokenizer, block_size, data_args, "train")
        eval_dataset = tokenize_and_pack(splits["validation"], tokenizer, block_size, data_args, "validation")
    if not data_args.streaming:
        stats.block_size, stats.train_blocks, stats.validation_blocks = block_size, len(train_dataset), len(eval_dataset)
    logger.info("Data: %s", json.dumps(stats.to_dict()))

    model = build_model(model_args, tokenizer)
    logger.info("Model: %s, %.2fM parameters", model.__class__.__name__, model.num_parameters() / 1e6)
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=DataCollatorForLanguageModeling(
            tokenizer, mlm=model_args.objective == "mlm", mlm_probability=model_args.mlm_probability
        ),
        processing_class=tokenizer,
    )
    logger.info(
        "Launch: %s, %d process(es) on %s; global batch %d blocks of %d tokens",
        trainer.accelerator.distributed_type, training_args.world_size, training_args.device.type,
        training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size,
        block_size,
    )  # fmt: skip
    install_throughput_callback(trainer, model, block_size)
    if training_args.record_batch_fingerprints:
        trainer.add_callback(BatchFingerprintCallback())

    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()  # model (safetensors) + custom code + tokenizer + generation config
    trainer.save_state()  # trainer_state.json with the full log history
    # Reuse the evaluation of the last step when the schedule already ran it.
    last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last_eval is None or last_eval["step"] != trainer.state.global_step:
        last_eval = trainer.evaluate()
    metrics = {**train_result.metrics, "eval_loss": last_eval["eval_loss"]}
    metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
    trainer.save_metrics("all", metrics)
    if not trainer.is_world_process_zero():
        return metrics

    out = training_args.output_dir
    plot_loss_curve(trainer.state.log_history, os.path.join(out, "loss_curve.png"), title="SimpleGPT pretraining")
    # The untrained baseline exists when --eval_on_start ran (the default), also in a resumed run's history.
    first_eval = next((h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h and h["step"] == 0), None)
    samples = []
    if model_args.objective == "clm" and model_args.num_sample_generations:
        # Reload from the output folder: the samples then also prove the saved model works on its own.
        saved = model_args.auto_class.from_pretrained(out).to(training_args.device)
        samples = sample_generations(saved, tokenizer, SAMPLE_PROMPTS[: model_args.num_sample_generations])
        for text in samples:
            print(f"--- sample ---\n{text}")
    write_model_card(
        out,
        "pretrain.md",
        results={
            "perplexity": {
                "dataset": f"held-out validation split of the {stats.source}",
                "perplexity": metrics["eval_perplexity"],
                "num_tokens": stats.validation_blocks * block_size if stats.validation_blocks else "n/a",
            }
        },
        repo_id=training_args.hub_model_id or os.path.basename(os.path.abspath(out)),
        tags=["pretraining", "fill-mask" if model_args.objective == "mlm" else "causal-lm"],
        **card_context(trainer, data_args, model_args, stats, metrics, first_eval, samples),
    )
    logger.info(
        "Done: validation loss %s -> %.4f (perplexity %.2f); model folder %s",
        f"{first_eval:.4f}" if first_eval is not None else "n/a",
        metrics["eval_loss"],
        metrics["eval_perplexity"],
        out,
    )
    if push:
        url = push_to_hub(
            out,
            training_args.hub_model_id,
            private=training_args.hub_private_repo,
            token=training_args.hub_token,
            extra_files=PUBLISHED_EXTRAS,
        )
        logger.info("Pushed to %s", url)
    return metrics


if __name__ == "__main__":
    main()
