"""hf_simplegpt.alignment: the checks every alignment recipe runs on its data and starting model."""

import pytest
from datasets import Dataset

from hf_simplegpt import alignment
from tests.conftest import KeywordTask, run_recipe


def test_preference_data_validation_names_the_fields_found():
    assert alignment.validate_preference_dataset(Dataset.from_list(KeywordTask().preference_pairs(2))) == (
        "conversational"
    )
    bad = Dataset.from_list([{"prompt": "Q", "good": "a", "bad": "b"}])
    with pytest.raises(ValueError, match=r"\['chosen', 'rejected'\].*\['prompt', 'good', 'bad'\]"):
        alignment.validate_preference_dataset(bad)
    mixed = Dataset.from_list([{"prompt": "Q", "chosen": [{"role": "assistant", "content": "a"}], "rejected": "b"}])
    with pytest.raises(
        ValueError,
        match="Row 1 of the preference data: 'prompt' is plain where the first row's fields are conversational",
    ):
        alignment.validate_preference_dataset(mixed)
    rows = KeywordTask(conversational=False).preference_pairs(5)
    rows[3]["rejected"] = None  # every row is checked, not only the first
    with pytest.raises(ValueError, match="Row 4 of the preference data: 'rejected' is None"):
        alignment.validate_preference_dataset(Dataset.from_list(rows))
    with pytest.raises(ValueError, match="lacks the field 'prompt'.*'text'"):
        alignment.validate_prompt_dataset(Dataset.from_list([{"text": "hello"}]))


def test_alignment_recipes_refuse_an_adapter_folder_as_the_starting_model(workspace, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ValueError, match="LoRA adapter, not a standalone model"):
        run_recipe(
            "dpo",
            "--config",
            "dpo_tiny.yaml",
            "--model_name_or_path",
            str(adapter),
            "--train_file",
            str(workspace["pairs"]),
            "--output_dir",
            str(tmp_path / "out"),
        )
