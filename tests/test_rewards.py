"""hf_simplegpt.rewards: reward functions by name (dotted paths only when allowed), the reward-model scorer."""

import pytest
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

from hf_simplegpt import rewards
from tests.conftest import KeywordTask


def test_reward_functions_come_from_the_registry_unless_custom_code_is_allowed():
    func = rewards.load_reward_function("keyword", {"keyword": "red"})
    assert func(completions=["a red fox", "a blue fox"]) == [1.0, 0.0]
    assert rewards.reward_name(func) == "keyword_reward"
    assert rewards.load_reward_function("keyword") is rewards.keyword_reward
    with pytest.raises(
        ValueError, match=r"not one of the project's \(\['keyword'\]\).*--allow_custom_reward_funcs true"
    ):
        rewards.load_reward_function("os.system")
    assert (
        rewards.load_reward_function("hf_simplegpt.rewards:keyword_reward", allow_custom=True) is rewards.keyword_reward
    )
    with pytest.raises(ValueError, match="Cannot import reward function"):
        rewards.load_reward_function("hf_simplegpt.rewards.no_such_reward", allow_custom=True)
    with pytest.raises(ValueError, match="dotted path"):
        rewards.load_reward_function("keyword_reward", allow_custom=True)


@pytest.mark.parametrize("conversational", [False, True])
def test_scorer_encodes_exactly_as_reward_trainer_trained(workspace, conversational):
    """The reward model must be scored on the token sequences it was trained on (plain text: with the EOS)."""
    tokenizer = AutoTokenizer.from_pretrained(workspace["policy"])
    model = AutoModelForSequenceClassification.from_pretrained(workspace["policy"], num_labels=1)
    rows = KeywordTask(conversational=conversational, seed=3).preference_pairs(4)
    args = RewardConfig(
        output_dir=str(workspace["root"] / "unused"),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
    )
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    scorer = rewards.RewardModelScorer(model, tokenizer)
    for row, prepared in zip(rows, trainer.train_dataset, strict=True):
        assert scorer.encode(row["prompt"], row["chosen"]) == prepared["chosen_ids"]
        assert scorer.encode(row["prompt"], row["rejected"]) == prepared["rejected_ids"]
    if not conversational:
        assert prepared["chosen_ids"][-1] == tokenizer.eos_token_id


def test_distinct_pad_token_is_added_when_missing_or_equal_to_eos(workspace):
    tokenizer = AutoTokenizer.from_pretrained(workspace["policy"])
    model = AutoModelForSequenceClassification.from_pretrained(workspace["policy"], num_labels=1)
    assert not rewards.add_distinct_pad_token(model, tokenizer)  # the project's tokenizer has one
    tokenizer.pad_token = tokenizer.eos_token
    assert rewards.add_distinct_pad_token(model, tokenizer)
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id
    assert model.get_input_embeddings().num_embeddings >= len(tokenizer)
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="no pad token"):
        rewards.RewardModelScorer(model, tokenizer)


def test_reward_model_folder_must_be_a_sequence_classifier(workspace):
    with pytest.raises(ValueError, match="not a sequence-classification reward model"):
        rewards.load_reward_model(str(workspace["policy"]))
