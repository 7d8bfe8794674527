"""recipes/rl.py: GRPO and RLOO raise the held-out reward, against a reward model or a reward function, full or LoRA."""

import pytest

from hf_simplegpt.recipes import rl
from tests.conftest import metrics_of, run_recipe


def rl_args(workspace, output_dir, *extra):
    return ["--config", "rl_tiny.yaml", "--model_name_or_path", str(workspace["policy"]),
            "--train_file", str(workspace["prompts"]), "--output_dir", str(output_dir), *extra]  # fmt: skip


def test_grpo_against_the_reward_model_raises_reward_and_keyword_rate(workspace, reward_dir, tmp_path):
    out = tmp_path / "grpo"
    trainer = run_recipe("rl", *rl_args(workspace, out, "--reward_model_name_or_path", str(reward_dir),
                                        "--reward_funcs", "keyword",
                                        "--reward_weights", "1.0", "0.0", "--max_steps", "30",
                                        "--learning_rate", "3e-3"))  # fmt: skip
    metrics = metrics_of(out)
    assert metrics["heldout_reward_model_after"] > metrics["heldout_reward_model_before"] + 1.0
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"] + 0.3
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert logged[-1]["reward"] > logged[0]["reward"]
    assert all("kl" in h and "completions/mean_length" in h for h in logged)
    assert (out / "reward_curve.png").stat().st_size > 10_000


def test_rloo_with_lora_runs_from_a_reward_function(workspace, tmp_path):
    out = tmp_path / "rloo"
    trainer = run_recipe("rl", *rl_args(workspace, out, "--algorithm", "rloo", "--use_peft", "--lora_r", "8",
                                        "--reward_funcs", "keyword", "--max_steps", "10",
                                        "--learning_rate", "5e-3", "--heldout_size", "32"))  # fmt: skip
    assert type(trainer).__name__ == "RLOOTrainer"
    assert (out / "adapter_config.json").exists()
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and max(p.abs().max().item() for p in lora_b) > 0  # the adapter moved off its zero init
    metrics = metrics_of(out)
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"]


def test_grpo_with_lora_trains_the_adapter(workspace, tmp_path):
    out = tmp_path / "grpo_lora"
    trainer = run_recipe("rl", *rl_args(workspace, out, "--use_peft", "--lora_r", "8",
                                        "--reward_funcs", "keyword", "--max_steps", "10",
                                        "--learning_rate", "5e-3", "--heldout_size", "32"))  # fmt: skip
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert lora_b and max(p.abs().max().item() for p in lora_b) > 0
    metrics = metrics_of(out)
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"]


def test_rl_recipe_rejects_a_causal_lm_as_reward_model_and_a_missing_reward(workspace, tmp_path):
    with pytest.raises(ValueError, match="not a sequence-classification reward model"):
        run_recipe("rl", *rl_args(workspace, tmp_path / "a", "--reward_model_name_or_path", str(workspace["policy"])))
    with pytest.raises(ValueError, match="No reward"):
        run_recipe("rl", *rl_args(workspace, tmp_path / "b"))


def test_algorithm_is_read_from_the_command_line_or_the_yaml(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("algorithm: rloo\n")
    assert rl.selected_algorithm(["--config", str(config)]) == "rloo"
    assert rl.selected_algorithm(["--config", str(config), "--algorithm", "grpo"]) == "grpo"
    assert rl.selected_algorithm(["--algorithm=rloo"]) == "rloo"
    assert rl.selected_algorithm([]) == "grpo"
    with pytest.raises(ValueError, match="unknown"):
        rl.main(["--algorithm", "ppo"])
