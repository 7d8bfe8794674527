"""Pretrain a SimpleGPT from scratch with the transformers Trainer.

    hf-simplegpt pretrain                                 # built-in offline corpus, small model, CPU ok
    hf-simplegpt pretrain --config recipes/configs/pretrain_tiny.yaml --train_file data.txt --output_dir out
    accelerate launch recipes/pretrain.py ...             # the same job, the same flags
    hf-simplegpt pretrain --accelerate_config multi_gpu --num_processes 8 --config ...

Every field of CorpusArguments, ModelArguments and PretrainingArguments (all TrainingArguments flags) can be set in
the YAML given to --config and overridden on the command line.
"""

import json
import logging
import math
import os

import torch
from transformers import DataCollatorForLanguageModeling, Trainer, set_seed

from hf_simplegpt import hub, safeguards
from hf_simplegpt.corpus import CorpusArguments, load_or_train_tokenizer, prepare_corpus, tokenize_and_pack
from hf_simplegpt.generation import SAMPLING_DEFAULTS, generate, set_sampling_defaults
from hf_simplegpt.hub import check_model_source, write_model_card
from hf_simplegpt.pretraining import (
    BatchFingerprintCallback,
    ModelArguments,
    PretrainingArguments,
    build_model,
    card_context,
    check_continued_model,
    install_throughput_callback,
    plot_loss_curve,
)
from hf_simplegpt.training import check_saved_model, loading_on_one_process, parse_job_args, ready_for_inference

logger = logging.getLogger("hf_simplegpt.pretrain")

# Published next to the model, card and code (hub.hub_files): the training record the card refers to.
PUBLISHED_EXTRAS = ("loss_curve.png", "trainer_state.json", "all_results.json")
SAMPLE_PROMPTS = ["The ", "A function", "In Python, "]


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, run_args, training_args = parse_job_args(
        CorpusArguments, ModelArguments, safeguards.RunArguments, PretrainingArguments, args=argv
    )
    if data_args.streaming and training_args.max_steps <= 0:
        raise ValueError(
            "A streamed dataset has no length, so epochs are undefined: pass --max_steps N with --streaming."
        )
    if model_args.model_name_or_path:
        check_model_source(model_args.model_name_or_path)
        check_continued_model(model_args)
    push = hub.wants_push(training_args)
    # Fail before any work: bad flags, a folder holding another run's work or in use, an unusable checkpoint.
    run = safeguards.start_run(training_args, run_args)
    resume = run.resume_from_checkpoint
    set_seed(training_args.seed)  # before the model is built, so its initial weights are reproducible
    logger.info("Seed: %d", training_args.seed)
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
        stats.block_size, stats.train_blocks, stats.validation_blocks = (
            block_size,
            len(train_dataset),
            len(eval_dataset),
        )
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
        trainer.accelerator.distributed_type,
        training_args.world_size,
        training_args.device.type,
        training_args.per_device_train_batch_size
        * training_args.gradient_accumulation_steps
        * training_args.world_size,
        block_size,
    )
    install_throughput_callback(trainer, model, block_size)
    if training_args.record_batch_fingerprints:
        trainer.add_callback(BatchFingerprintCallback())

    train_result = run.train(trainer)
    ready_for_inference(trainer.model)
    if not model_args.model_name_or_path:  # a continued model keeps its folder's decoding
        set_sampling_defaults(trainer.model)
    trainer.save_model()  # model (safetensors) + custom code + tokenizer + generation config
    trainer.save_state()  # trainer_state.json with the full log history
    # Under every engine (DDP, DeepSpeed ZeRO-2/3, FSDP) the folder must hold the trained model: check on real blocks.
    probe = torch.tensor([row["input_ids"] for _, row in zip(range(2), eval_dataset)])
    saved_difference = check_saved_model(trainer, training_args.output_dir, probe)
    # Reuse the evaluation of the last step when the schedule already ran it.
    last_eval = next((h for h in reversed(trainer.state.log_history) if "eval_loss" in h), None)
    if last_eval is None or last_eval["step"] != trainer.state.global_step:
        last_eval = trainer.evaluate()
    metrics = {
        **train_result.metrics,
        "eval_loss": last_eval["eval_loss"],
        "saved_model_max_logit_difference": saved_difference,
    }
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
        with loading_on_one_process():
            saved = model_args.auto_class.from_pretrained(out).to(training_args.device)
        prompts = SAMPLE_PROMPTS[: model_args.num_sample_generations]
        continuations = generate(saved, tokenizer, prompts, max_new_tokens=40, seed=0, **SAMPLING_DEFAULTS)
        samples = [prompt + text for prompt, text in zip(prompts, continuations)]
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
        hub.push(out, training_args, extra_files=PUBLISHED_EXTRAS)
    return metrics


if __name__ == "__main__":
    main()
