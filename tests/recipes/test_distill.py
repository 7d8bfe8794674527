"""recipes/distill.py: on-policy distillation lowers the student's held-out divergence from the teacher."""

import pytest

from hf_simplegpt.tokenization import train_tokenizer
from tests.conftest import KeywordTask, largest_lora_b, make_model, metrics_of, run_recipe


def distill_args(workspace, output_dir, *extra):
    return ["--config", "distill_tiny.yaml", "--model_name_or_path", str(workspace["student"]),
            "--teacher_model_name_or_path", str(workspace["policy"]), "--train_file", str(workspace["prompts"]),
            "--output_dir", str(output_dir), "--max_steps", "20", *extra]  # fmt: skip


def test_distillation_lowers_the_students_divergence_from_the_teacher(workspace, tmp_path):
    out = tmp_path / "distill"
    run_recipe("distill", *distill_args(workspace, out, "--learning_rate", "1e-2"))
    metrics = metrics_of(out)
    assert metrics["kl_teacher_student_after"] < 0.8 * metrics["kl_teacher_student_before"]
    assert metrics["student_parameters"] < metrics["teacher_parameters"]


def test_distillation_with_lora_trains_the_adapter(workspace, tmp_path):
    # LoRA cannot touch the embeddings and the LM head, where most of a 16-wide student's capacity to reshape its
    # next-token distribution lives, so on this toy the divergence barely moves: check the adapter trains and does
    # no harm.
    out = tmp_path / "distill_lora"
    run_recipe("distill", *distill_args(workspace, out, "--use_peft", "--lora_r", "8", "--max_steps", "6"))
    assert largest_lora_b(out) > 0
    metrics = metrics_of(out)
    assert metrics["kl_teacher_student_after"] < 1.05 * metrics["kl_teacher_student_before"]
    assert (out / "adapter_config.json").exists()


def test_distillation_rejects_a_teacher_with_another_vocabulary(workspace, tmp_path):
    other = train_tokenizer(KeywordTask(seed=5).texts(300), vocab_size=300, model_max_length=64)
    teacher = tmp_path / "teacher"
    make_model(other).save_pretrained(teacher)
    other.save_pretrained(teacher)
    with pytest.raises(ValueError, match=r"has vocab_size \d+ but the teacher .* has 300\. .*same tokenizer"):
        run_recipe("distill", "--config", "distill_tiny.yaml", "--model_name_or_path",
                   str(workspace["student"]), "--teacher_model_name_or_path", str(teacher), "--train_file",
                   str(workspace["prompts"]), "--output_dir", str(tmp_path / "out"))  # fmt: skip
