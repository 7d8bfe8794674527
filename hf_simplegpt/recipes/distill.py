"""On-policy knowledge distillation with TRL's DistillationTrainer: a small student learns from a larger teacher.

    hf-simplegpt distill --config recipes/configs/distill_tiny.yaml --model_name_or_path STUDENT_DIR \
        --teacher_model_name_or_path TEACHER_DIR --train_file prompts.jsonl --output_dir out/distill [--use_peft]

Rows hold a `prompt` (a string or chat messages). For each prompt the student samples a completion and is trained
to match the teacher's next-token distribution on it with the generalised Jensen-Shannon divergence (`beta`: 0 is
forward KL, 1 reverse KL). Teacher and student must share the tokenizer; this is checked before any training.
The divergence KL(teacher || student) per completion token is measured on held-out prompts, with completions
sampled once from the teacher, before and after training; distillation should lower it.
"""

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from trl import DistillationConfig, DistillationTrainer, ModelConfig

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import adapters, alignment, data, hub, safeguards, tokenization, training
from hf_simplegpt.data import DataArguments
from hf_simplegpt.evaluation import alignment_metrics
from hf_simplegpt.generation import context_length


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    """Run on-policy distillation; returns the held-out KL before and after (alignment_metrics.json)."""
    data_args, run_args, train_args, model_args = training.parse_job_args(
        DataArguments, safeguards.RunArguments, DistillationConfig, ModelConfig, args=argv
    )
    student_path, teacher_path = model_args.model_name_or_path, train_args.teacher_model_name_or_path
    if student_path is None or teacher_path is None:
        raise ValueError("Pass --model_name_or_path STUDENT_DIR and --teacher_model_name_or_path TEACHER_DIR.")
    alignment.check_full_model_folder(student_path, "student")
    alignment.check_full_model_folder(teacher_path, "teacher", "--teacher_model_name_or_path")
    tokenization.check_same_vocabulary(student_path, teacher_path)
    push = hub.wants_push(train_args)
    run = safeguards.start_run(train_args, run_args, inputs=[student_path, teacher_path])
    train, heldout = data.load_data(data_args, train_args.seed, check=alignment.validate_prompt_dataset)

    tokenizer = AutoTokenizer.from_pretrained(student_path, padding_side="left")
    # Both models see every prompt and completion: the shorter context of the two bounds them (prompts tokenized once).
    configs = [AutoConfig.from_pretrained(model_path) for model_path in (student_path, teacher_path)]
    shorter = min(configs, key=lambda config: context_length(config) or float("inf"))
    alignment.check_prompts_fit(tokenizer, train, train_args.max_completion_length, shorter)
    student = AutoModelForCausalLM.from_pretrained(student_path, dtype=model_args.dtype).to(train_args.device)
    teacher = AutoModelForCausalLM.from_pretrained(teacher_path, dtype=model_args.dtype).to(train_args.device).eval()
    peft_config = adapters.lora_config_from_model_args(model_args, student)

    prompts = heldout["prompt"]
    completions = alignment_metrics.sample_completions(
        teacher, tokenizer, prompts, train_args.max_completion_length, seed=train_args.seed
    )
    before = alignment_metrics.completion_kl(teacher, student, tokenizer, prompts, completions)
    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=train_args,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    run.train(trainer)
    training.save_trained(trainer)
    after = alignment_metrics.completion_kl(teacher, trainer.model, tokenizer, prompts, completions)
    n_student, n_teacher = student.num_parameters(), teacher.num_parameters()
    metrics = {
        "heldout_prompts": len(prompts),
        "student_parameters": n_student,
        "teacher_parameters": n_teacher,
        "kl_teacher_student_before": before,
        "kl_teacher_student_after": after,
    }
    if not trainer.accelerator.is_main_process:
        return metrics
    print(f"Held-out KL(teacher || student) per token: {before:.4f} before -> {after:.4f} after distillation")
    alignment.save_metrics_and_card(
        train_args.output_dir,
        metrics,
        method="distill",
        base_model=student_path,
        summary=f"A SimpleGPT student ({n_student:,} parameters) distilled on-policy from the teacher "
        f"`{teacher_path}` ({n_teacher:,} parameters) with TRL's DistillationTrainer.",
        hyperparameters={
            "learning_rate": train_args.learning_rate,
            "max_steps": train_args.max_steps,
            "beta (JSD interpolation)": train_args.beta,
            "temperature": train_args.temperature,
            "max_completion_length": train_args.max_completion_length,
            "lora": bool(peft_config),
        },
    )
    if push:
        hub.push(train_args.output_dir, train_args, extra_files=alignment.PUBLISHED_EXTRAS)
    return metrics


if __name__ == "__main__":
    main()
