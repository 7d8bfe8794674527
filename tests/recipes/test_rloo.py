"""recipes/rloo.py: RLOO raises the held-out reward of a reward function, through LoRA."""

from tests.conftest import largest_lora_b, metrics_of, run_recipe
from tests.recipes.test_grpo import grpo_args


def test_rloo_with_lora_runs_from_a_reward_function(workspace, tmp_path):
    out = tmp_path / "rloo"
    run_recipe(
        "rloo",
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
            job="rloo",
        ),
    )
    metrics = metrics_of(out)
    assert metrics["algorithm"] == "rloo" and "hf-simplegpt rloo" in (out / "README.md").read_text()
    assert (out / "adapter_config.json").exists() and largest_lora_b(out) > 0  # the adapter moved off its zero init
    assert metrics["heldout_keyword_reward_after"] > metrics["heldout_keyword_reward_before"]
