"""Supervised fine-tuning of a SimpleGPT (or any causal LM) with TRL's SFTTrainer, optionally through LoRA / QLoRA.

    hf-simplegpt sft --config recipes/configs/sft_tiny.yaml \
        --model_name_or_path DIR --train_file data.jsonl --output_dir out/sft [--use_peft [--use_dora]] [--merge]
    accelerate launch recipes/sft.py ...                  # the same job, the same flags

Data: `messages` conversations, ShareGPT `conversations`, `prompt`/`completion`, or `instruction`/`response`
rows from a local jsonl/json/parquet/csv file (`--train_file`) or the Hub (`--dataset_name`). The loss covers the
assistant/completion tokens only unless `--train_on_all_tokens`. A few rows are held out: their loss is measured
before and after training and their prompts are answered by the fine-tuned model at the end.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, SFTConfig, SFTTrainer, is_conversational

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import adapters, data, finetuning, hub, safeguards, training
from hf_simplegpt.data import DataArguments
from hf_simplegpt.generation import check_fits_context, generate


@dataclass
class SFTScriptArguments:
    """What happens around training: the loss mask, merging, and the samples answered at the end."""

    train_on_all_tokens: bool = field(
        default=False, metadata={"help": "Put the loss on every token, not only on assistant/completion tokens."}
    )
    merge: bool = field(
        default=False, metadata={"help": "After LoRA training, merge the adapter into a standalone model."}
    )
    merged_output_dir: str | None = field(
        default=None, metadata={"help": "Where --merge writes the merged model (default: OUTPUT_DIR/merged)."}
    )
    num_sample_generations: int = field(default=3, metadata={"help": "Held-out prompts answered after training."})
    max_new_tokens: int = field(default=48, metadata={"help": "Length of each sample generation."})

    def __post_init__(self):
        if self.num_sample_generations < 0:
            raise ValueError(f"--num_sample_generations {self.num_sample_generations} must be >= 0 (0: no samples).")
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens {self.max_new_tokens} must be at least 1.")


def load_data(data_args: DataArguments, seed: int):
    """(train, held-out, format): rows converted to a shape SFTTrainer reads, both in the same format."""
    train, heldout = data.load_data(data_args, seed, check=finetuning.check_sft_dataset)
    train, fmt = finetuning.to_sft_dataset(train)
    heldout, _ = finetuning.to_sft_dataset(heldout)
    if heldout.column_names != train.column_names:
        raise ValueError(
            f"The held-out rows become {heldout.column_names} but the training rows {train.column_names}; "
            "give --eval_file the training file's format."
        )
    return train, heldout, fmt


def load_model(model_args: ModelConfig, training_args: SFTConfig):
    """The base model, quantized for QLoRA when asked (after checking a GPU and bitsandbytes are there)."""
    quantization_config = adapters.quantization_config_from_model_args(model_args)
    dtype = model_args.dtype if model_args.dtype in ("auto", None) else getattr(torch, model_args.dtype)
    kwargs = {"dtype": dtype, "trust_remote_code": training_args.trust_remote_code}
    if model_args.attn_implementation is not None:
        kwargs["attn_implementation"] = model_args.attn_implementation
    if quantization_config is not None:
        # bitsandbytes quantizes while loading onto this process's GPU.
        kwargs.update(quantization_config=quantization_config, device_map={"": training_args.local_process_index})
    return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **kwargs)


def write_card(
    output_dir, data_args, training_args, model_args, peft_config, results, rows: dict, merged: bool = False
) -> Path:
    """The model card (model_cards/sft.md) with base model, data, LoRA settings, hyperparameters and results.

    `output_dir` holds the trained model, the LoRA adapter, or (`merged=True`) the adapter merged into the base.
    """
    base = model_args.model_name_or_path
    lora = None
    if peft_config is not None:
        lora = {k: getattr(peft_config, k) for k in ("r", "lora_alpha", "lora_dropout", "use_dora", "use_rslora")}
        targets = peft_config.target_modules
        lora["target_modules"] = sorted(targets) if isinstance(targets, (set, list)) else targets
        lora["dtype"] = model_args.dtype
        if model_args.load_in_4bit or model_args.load_in_8bit:
            lora["quantization"] = (
                f"4-bit {model_args.bnb_4bit_quant_type} (bitsandbytes)" if model_args.load_in_4bit else "8-bit"
            )
    if training_args.assistant_only_loss:
        loss_on = "assistant tokens only"
    elif training_args.completion_only_loss:
        loss_on = "completion tokens only"
    else:
        loss_on = "all tokens"
    names = (
        "learning_rate",
        "lr_scheduler_type",
        "warmup_steps",
        "max_steps",
        "num_train_epochs",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "weight_decay",
        "max_grad_norm",
        "seed",
    )
    hyperparameters = {
        name: getattr(getattr(training_args, name), "value", getattr(training_args, name)) for name in names
    }
    if training_args.max_steps > 0:  # epochs are ignored then
        del hyperparameters["num_train_epochs"]
    hyperparameters["precision"] = "bf16" if training_args.bf16 else "fp16" if training_args.fp16 else "fp32"
    hyperparameters["processes"] = training_args.world_size
    source = data_args.dataset_name or os.path.basename(data_args.train_file)
    return hub.write_model_card(
        output_dir,
        "sft.md",
        base_model=None if os.path.isdir(base) else base,  # the Hub's base_model field takes a Hub id only
        datasets=[data_args.dataset_name] if data_args.dataset_name else None,
        tags=["sft", "trl"] + (["lora", "peft"] if lora else []),
        model_dir=base if lora is not None and not merged else output_dir,
        base_model_path=base,
        merged=merged,
        lora=lora,
        merged_output_dir=results.get("merged_output_dir"),
        data={"source": source, "loss_on": loss_on, "packing": training_args.packing, **rows},
        hyperparameters=hyperparameters,
        sft=results,
        example_prompt=results["samples"][0]["prompt"] if results.get("samples") else None,
    )


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    """Run SFT; returns the measured numbers (eval loss before/after, trainable parameters, paths)."""
    data_args, script_args, run_args, training_args, model_args = training.parse_job_args(
        DataArguments, SFTScriptArguments, safeguards.RunArguments, SFTConfig, ModelConfig, args=argv
    )
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required: a SimpleGPT directory or any causal LM.")
    hub.check_model_source(model_args.model_name_or_path)
    if script_args.merge and not model_args.use_peft:
        raise ValueError("--merge folds a LoRA adapter into its base model; it needs --use_peft.")
    if training_args.max_length is not None and training_args.max_length < 1:
        raise ValueError(f"--max_length {training_args.max_length} must be at least 1 (or unset: no truncation).")
    model_config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    check_fits_context(model_config, training_args.max_length, "--max_length")
    push = hub.wants_push(training_args)
    run = safeguards.start_run(training_args, run_args, inputs=[model_args.model_name_or_path])
    if script_args.merge and script_args.merged_output_dir:
        safeguards.claim_output_dir(
            script_args.merged_output_dir,
            overwrite=run_args.overwrite_output_dir,
            writer=training_args.should_save,
            flag="--merged_output_dir",
        )
    if os.path.isdir(model_args.model_name_or_path):
        # The adapter config records this path as its base model; absolute, it loads from any working directory.
        model_args.model_name_or_path = os.path.abspath(model_args.model_name_or_path)

    train_dataset, eval_dataset, fmt = load_data(data_args, training_args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path)
    for name, value in finetuning.loss_mask_args(train_dataset, script_args.train_on_all_tokens).items():
        setattr(training_args, name, value)
    if is_conversational(train_dataset[0]) and training_args.chat_template_path is None:
        finetuning.check_chat_template(tokenizer, training_args.assistant_only_loss)

    model = load_model(model_args, training_args)
    peft_config = adapters.lora_config_from_model_args(model_args, model)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    trainable, total = trainer.model.num_parameters(only_trainable=True), trainer.model.num_parameters()
    print(f"format={fmt} train_rows={len(train_dataset)} trainable_params={trainable:,} / {total:,}")

    results = {"format": fmt, "trainable_params": trainable, "total_params": total}
    results["eval_loss_before"] = trainer.evaluate()["eval_loss"]
    train_output = run.train(trainer)
    results["train_loss"] = train_output.training_loss
    training.save_trained(trainer)  # a PeftModel saves only its adapter here, with the tokenizer beside it
    results["eval_loss_after"] = trainer.evaluate()["eval_loss"]

    if not trainer.accelerator.is_main_process:  # under `accelerate launch`, one process reports and merges
        return results
    if script_args.num_sample_generations > 0:
        rows = [eval_dataset[i] for i in range(min(script_args.num_sample_generations, len(eval_dataset)))]
        prompts, references = zip(*(finetuning.prompt_and_reference(row) for row in rows))
        answers = generate(
            trainer.model,
            tokenizer,
            prompts,
            max_new_tokens=script_args.max_new_tokens,
            do_sample=True,
            temperature=0.8,
            top_k=50,
            seed=training_args.seed,
        )
        results["samples"] = []
        for prompt, reference, answer in zip(prompts, references, answers):
            shown = prompt[-1]["content"] if isinstance(prompt, list) else prompt
            print(f"--- prompt: {shown!r}\n    reference: {reference!r}\n    model: {answer!r}")
            results["samples"].append({"prompt": shown, "reference": reference, "output": answer})

    if script_args.merge:
        merged_dir = script_args.merged_output_dir or os.path.join(training_args.output_dir, "merged")
        adapters.merge_adapter(training_args.output_dir, merged_dir)
        results["merged_output_dir"] = merged_dir
        print(f"merged model written to {merged_dir}")

    Path(training_args.output_dir, "sft_results.json").write_text(json.dumps(results, indent=2))
    rows = {"format": fmt, "train_rows": len(train_dataset), "heldout_rows": len(eval_dataset)}
    card_args = (data_args, training_args, model_args, peft_config, results, rows)
    print(f"model card: {write_card(training_args.output_dir, *card_args)}")
    if script_args.merge:
        print(f"model card: {write_card(results['merged_output_dir'], *card_args, merged=True)}")
    if push:  # the trained model or adapter, with its card and results
        hub.push(training_args.output_dir, training_args, extra_files=("sft_results.json",))
    print(json.dumps({k: v for k, v in results.items() if k != "samples"}))
    return results


if __name__ == "__main__":
    main()
