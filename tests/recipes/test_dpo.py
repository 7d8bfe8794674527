"""recipes/dpo.py: DPO raises the held-out chosen-over-rejected margin, with either kind of reference model."""

import pytest

from tests.conftest import metrics_of, run_recipe


@pytest.mark.parametrize("lora", [False, True], ids=["frozen-copy-reference", "adapter-disabled-reference"])
def test_dpo_raises_the_chosen_over_rejected_margin(workspace, tmp_path, lora):
    out = tmp_path / "dpo"
    extra = ["--use_peft", "--lora_r", "8", "--learning_rate", "1e-2"] if lora else []
    run_recipe("dpo", "--config", "dpo_tiny.yaml", "--model_name_or_path", str(workspace["policy"]),
               "--train_file", str(workspace["pairs"]), "--output_dir", str(out), "--max_steps", "20", *extra)  # fmt: skip
    metrics = metrics_of(out)
    assert metrics["logp_margin_after"] > metrics["logp_margin_before"] + 1.0
    assert metrics["reference_model"] == ("the base model with the LoRA adapter disabled" if lora else
                                          "a frozen copy of the model")  # fmt: skip
    assert (out / "adapter_config.json").exists() == lora
