"""recipes/reward.py: a reward model learns the keyword preference (held-out accuracy), with and without LoRA."""

import pytest
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from tests.conftest import metrics_of, run_recipe, write_jsonl


def test_reward_model_learns_the_preference(reward_dir):
    metrics = metrics_of(reward_dir)
    assert metrics["preference_accuracy_after"] >= 0.9
    assert metrics["preference_accuracy_after"] > metrics["preference_accuracy_before"] + 0.2
    model = AutoModelForSequenceClassification.from_pretrained(reward_dir)
    assert type(model).__name__ == "SimpleGPTForSequenceClassification" and model.config.num_labels == 1
    assert (reward_dir / "README.md").read_text().count("preference_accuracy_after") == 1


def test_reward_recipe_adds_a_pad_token_when_the_tokenizer_has_none(workspace, tmp_path):
    base = tmp_path / "no_pad"
    tokenizer = AutoTokenizer.from_pretrained(workspace["policy"])
    tokenizer.pad_token = None
    tokenizer.save_pretrained(base)
    AutoModelForCausalLM.from_pretrained(workspace["policy"]).save_pretrained(base)
    out = tmp_path / "reward"
    run_recipe(
        "reward",
        "--config",
        "reward_tiny.yaml",
        "--model_name_or_path",
        str(base),
        "--train_file",
        str(workspace["pairs"]),
        "--output_dir",
        str(out),
        "--max_steps",
        "2",
    )
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.pad_token is not None and saved.pad_token_id != saved.eos_token_id
    assert AutoModelForSequenceClassification.from_pretrained(out).config.pad_token_id == saved.pad_token_id


def test_reward_recipe_with_lora_saves_a_merged_reward_model(workspace, tmp_path):
    out = tmp_path / "reward_lora"
    run_recipe(
        "reward",
        "--config",
        "reward_tiny.yaml",
        "--model_name_or_path",
        str(workspace["policy"]),
        "--train_file",
        str(workspace["pairs"]),
        "--output_dir",
        str(out),
        "--use_peft",
        "--lora_r",
        "8",
        "--max_steps",
        "30",
        "--learning_rate",
        "5e-3",
    )
    metrics = metrics_of(out)
    assert metrics["preference_accuracy_after"] > metrics["preference_accuracy_before"] + 0.2
    assert not (out / "adapter_config.json").exists()  # merged: loads without PEFT
    AutoModelForSequenceClassification.from_pretrained(out)


def test_reward_recipe_rejects_pairs_without_chosen_and_rejected(workspace, tmp_path):
    bad = write_jsonl([{"prompt": "Q", "answer": "a"}] * 80, tmp_path / "bad.jsonl")
    with pytest.raises(
        ValueError, match=r"lacks the field\(s\) \['chosen', 'rejected'\]; it has \['prompt', 'answer'\]"
    ):
        run_recipe(
            "reward",
            "--config",
            "reward_tiny.yaml",
            "--model_name_or_path",
            str(workspace["policy"]),
            "--train_file",
            bad,
            "--output_dir",
            str(tmp_path / "out"),
        )
