"""recipes/grpo.py: GRPO raises the held-out reward, against a reward model or a reward function, full or LoRA."""

import pytest

from tests.conftest import largest_lora_b, log_history, metrics_of, run_recipe


def grpo_args(workspace, output_dir, *extra, job="grpo"):
    return [
        "--config",
        f"{job}_tiny.yaml",
        "--model_name_or_path",
        str(workspace["policy"]),
        "--train_file",
        str(workspace["prompts"]),
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def test_grpo_against_the_reward_model_raises_reward_and_keyword_rate(workspace, reward_dir, tmp_path):
    out = tmp_path / "grpo"
    returned = run_recipe(
        "grpo",
        *grpo_args(
            workspace,
            out,
            "--reward_model_name_or_path",
            str(reward_dir),
            "--reward_funcs",
            "keyword",
            "--reward_weights",
            "1.0",
            "0.0",
            "--max_steps",
            "30",
            "--learning_rate",
            "3e-3",
        ),
    )
    metrics = metrics_of(out)
    assert returned == metrics and metrics["algorithm"] == "grpo"
    assert metrics["heldout_reward_model_after"] > metrics["heldout_reward_model_before"] + 1.0
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"] + 0.3
    logged = [h for h in log_history(out) if "reward" in h]
    assert logged[-1]["reward"] > logged[0]["reward"]
    assert all("kl" in h and "completions/mean_length" in h for h in logged)
    assert (out / "reward_curve.png").stat().st_size > 10_000


def test_grpo_with_lora_trains_the_adapter(workspace, tmp_path):
    out = tmp_path / "grpo_lora"
    run_recipe(
        "grpo",
        *grpo_args(
            workspace,
            out,
            "--use_peft",
            "--lora_r",
            "8",
            "--reward_funcs",
            "keyword",
            "--max_steps",
            "10",
            "--learning_rate",
            "5e-3",
            "--heldout_size",
            "32",
        ),
    )
    assert largest_lora_b(out) > 0  # the adapter moved off its zero init
    metrics = metrics_of(out)
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"]


def test_grpo_rejects_a_causal_lm_as_reward_model_and_a_missing_reward(workspace, tmp_path):
    with pytest.raises(ValueError, match="not a sequence-classification reward model"):
        run_recipe(
            "grpo", *grpo_args(workspace, tmp_path / "a", "--reward_model_name_or_path", str(workspace["policy"]))
        )
    with pytest.raises(ValueError, match="No reward"):
        run_recipe("grpo", *grpo_args(workspace, tmp_path / "b"))
