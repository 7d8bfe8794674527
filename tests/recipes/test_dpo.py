"""recipes/dpo.py: DPO raises the held-out chosen-over-rejected margin, with either kind of reference model."""

import pytest

from hf_simplegpt.hub import TOKENIZER_FILES
from tests.conftest import metrics_of, run_recipe


@pytest.mark.parametrize("lora", [False, True], ids=["frozen-copy-reference", "adapter-disabled-reference"])
def test_dpo_raises_the_chosen_over_rejected_margin(workspace, tmp_path, lora):
    out = tmp_path / "dpo"
    extra = ["--use_peft", "--lora_r", "8", "--learning_rate", "1e-2"] if lora else []
    run_recipe(
        "dpo",
        "--config",
        "dpo_tiny.yaml",
        "--model_name_or_path",
        str(workspace["policy"]),
        "--train_file",
        str(workspace["pairs"]),
        "--output_dir",
        str(out),
        "--max_steps",
        "20",
        *extra,
    )
    metrics = metrics_of(out)
    assert metrics["logp_margin_after"] > metrics["logp_margin_before"] + 1.0
    assert metrics["reference_model"] == (
        "the base model with the LoRA adapter disabled" if lora else "a frozen copy of the model"
    )
    assert (out / "adapter_config.json").exists() == lora


def test_push_uploads_exactly_the_model_card_and_metrics_once_after_the_card(workspace, tmp_path, fake_hub):
    out = tmp_path / "dpo"
    args = [
        "--config",
        "dpo_tiny.yaml",
        "--model_name_or_path",
        str(workspace["policy"]),
        "--train_file",
        str(workspace["pairs"]),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
        "--push_to_hub",
        "true",
    ]
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        run_recipe("dpo", *args)
    assert not out.exists()  # refused before any work
    run_recipe("dpo", *args, "--hub_model_id", "me/tiny-dpo")
    (commit,) = fake_hub  # one upload, by the job; the Trainer's own pushes would have failed the test
    tokenizer = {name for name in TOKENIZER_FILES if (out / name).exists()}
    assert commit["repo_id"] == "me/tiny-dpo" and {"tokenizer.json", "tokenizer_config.json"} <= tokenizer
    assert (
        set(commit["files"])
        == {
            "model.safetensors",
            "config.json",
            "configuration_simplegpt.py",
            "modeling_simplegpt.py",
            "generation_config.json",
            "README.md",
            "alignment_metrics.json",
        }
        | tokenizer
    )
    assert all(path == str(out / name) for name, path in commit["files"].items())
    assert (out / "training_args.bin").exists()  # in the folder, never uploaded
    assert "hf-simplegpt dpo" in commit["card"] and commit["card"] == (out / "README.md").read_text()
