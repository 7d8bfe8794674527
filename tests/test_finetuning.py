"""hf_simplegpt.finetuning: chat data formats, loss masks, packing isolation."""

import copy

import pytest
import torch
from datasets import Dataset
from trl import SFTConfig, SFTTrainer

from hf_simplegpt import finetuning

CONVERSATIONS = [
    [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome is the capital of Italy."},
    ],
    [
        {"role": "user", "content": "Name a color."},
        {"role": "assistant", "content": "Blue."},
    ],
]

SHORT_CONVERSATIONS = [  # tokenized lengths sum to at most the tiny model's 64 positions
    [{"role": "user", "content": "Name a color."}, {"role": "assistant", "content": "Blue."}],
    [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi there."}],
]


def cpu_sft_config(tmp_path, **overrides) -> SFTConfig:
    kwargs = dict(
        output_dir=str(tmp_path / "out"),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        save_strategy="no",
        max_length=64,
    )
    kwargs.update(overrides)
    return SFTConfig(**kwargs)


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        (["messages", "id"], finetuning.CONVERSATIONAL),
        (["conversations"], finetuning.SHAREGPT),
        (["prompt", "completion"], finetuning.PROMPT_COMPLETION),
        (["instruction", "input", "output"], finetuning.INSTRUCTION),
        (["instruction", "response"], finetuning.INSTRUCTION),
    ],
)
def test_detect_sft_format(columns, expected):
    assert finetuning.detect_sft_format(columns) == expected


def test_unrecognised_format_names_found_and_expected_fields():
    with pytest.raises(ValueError) as error:
        finetuning.detect_sft_format(["question", "label"])
    message = str(error.value)
    assert "['label', 'question']" in message
    assert "'messages'" in message and "'prompt' + 'completion'" in message and "'instruction'" in message


def test_to_sft_dataset_turns_instruction_and_sharegpt_rows_into_messages():
    alpaca = Dataset.from_list([{"instruction": "Translate to French.", "input": "cat", "output": "chat", "id": 7}])
    converted, fmt = finetuning.to_sft_dataset(alpaca)
    assert fmt == finetuning.INSTRUCTION
    assert converted.column_names == ["messages"]
    assert converted[0]["messages"] == [
        {"role": "user", "content": "Translate to French.\n\ncat"},
        {"role": "assistant", "content": "chat"},
    ]

    sharegpt = Dataset.from_list(
        [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
    )
    converted, fmt = finetuning.to_sft_dataset(sharegpt)
    assert fmt == finetuning.SHAREGPT
    assert converted[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_every_row_is_checked_and_the_first_bad_one_named():
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    assert finetuning.check_sft_dataset(Dataset.from_list([good] * 3)) == finetuning.CONVERSATIONAL
    bad_rows = [
        ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant message"),
        ({"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "x"}]}, "string 'content'"),
        ({"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]}, "role 'robot'"),
    ]
    for bad, problem in bad_rows:
        with pytest.raises(ValueError, match=f"Row 3 of the dataset: .*{problem}"):
            finetuning.check_sft_dataset(Dataset.from_list([good, good, bad, good]))
    pairs = [{"prompt": "a", "completion": " b"}, {"prompt": "c", "completion": ""}]
    with pytest.raises(ValueError, match="Row 2 of the dataset: 'completion' is an empty string"):
        finetuning.check_sft_dataset(Dataset.from_list(pairs))


def test_missing_chat_template_and_missing_generation_markers(tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        finetuning.check_chat_template(tokenizer, assistant_only_loss=True)

    tokenizer.chat_template = tiny_tokenizer.chat_template.replace("{% generation %}", "").replace(
        "{% endgeneration %}", ""
    )
    with pytest.raises(ValueError, match="generation"):
        finetuning.check_chat_template(tokenizer, assistant_only_loss=True)
    finetuning.check_chat_template(tokenizer, assistant_only_loss=False)  # renders fine when all tokens train
    finetuning.check_chat_template(tiny_tokenizer, assistant_only_loss=True)


def _label_runs(labels: list[int]) -> list[list[int]]:
    """Contiguous stretches of labels that are not -100."""
    runs, current = [], []
    for label in labels:
        if label == -100:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return runs + ([current] if current else [])


def test_assistant_only_mask_covers_exactly_the_assistant_tokens(tmp_path, tiny_model, tiny_tokenizer):
    dataset = Dataset.from_list([{"messages": m} for m in CONVERSATIONS])
    masks = finetuning.loss_mask_args(dataset, train_on_all_tokens=False)
    args = cpu_sft_config(tmp_path, max_length=None, **masks)
    trainer = SFTTrainer(model=tiny_model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    for row, messages in zip(trainer.train_dataset, CONVERSATIONS):
        expected = [
            tiny_tokenizer(m["content"] + tiny_tokenizer.eos_token)["input_ids"]
            for m in messages
            if m["role"] == "assistant"
        ]
        assert _label_runs(row["labels"]) == expected
        assert sum(label != -100 for label in row["labels"]) < len(row["input_ids"])  # the prompt is masked


def test_train_on_all_tokens_keeps_every_label(tmp_path, tiny_model, tiny_tokenizer):
    dataset = Dataset.from_list([{"messages": m} for m in CONVERSATIONS])
    args = cpu_sft_config(tmp_path, **finetuning.loss_mask_args(dataset, train_on_all_tokens=True))
    trainer = SFTTrainer(model=tiny_model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    row = trainer.train_dataset[0]
    assert row["labels"] == row["input_ids"]


def test_completion_only_mask_for_prompt_completion_rows(tmp_path, tiny_model, tiny_tokenizer):
    dataset = Dataset.from_list([{"prompt": "Question: 2+2? Answer:", "completion": " four"}])
    args = cpu_sft_config(tmp_path, **finetuning.loss_mask_args(dataset, train_on_all_tokens=False))
    trainer = SFTTrainer(model=tiny_model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    row = trainer.train_dataset[0]
    prompt_length = len(tiny_tokenizer("Question: 2+2? Answer:")["input_ids"])
    assert row["labels"][:prompt_length] == [-100] * prompt_length
    assert _label_runs(row["labels"]) == [tiny_tokenizer(" four" + tiny_tokenizer.eos_token)["input_ids"]]


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_packed_documents_give_the_same_logits_as_alone(tmp_path, tiny_model, tiny_tokenizer, attn_implementation):
    """TRL's bfd packing feeds one row with restarting position_ids and no attention mask (padding-free)."""
    tiny_model.set_attn_implementation(attn_implementation)
    dataset = Dataset.from_list([{"messages": m} for m in SHORT_CONVERSATIONS])
    args = cpu_sft_config(tmp_path, packing=True, max_length=64, per_device_train_batch_size=1)
    trainer = SFTTrainer(model=tiny_model, args=args, train_dataset=dataset, processing_class=tiny_tokenizer)
    assert len(trainer.train_dataset) == 1
    row = trainer.train_dataset[0]
    assert len(row["seq_lengths"]) == 2
    batch = trainer.data_collator([row])
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape
    inputs = {k: v for k, v in batch.items() if k != "labels"}  # cu_seq_lens_*, max_length_*, seq_idx too
    with torch.no_grad():
        packed = tiny_model(**inputs).logits[0]
        unmasked = tiny_model(input_ids=batch["input_ids"]).logits[0]
        start = 0
        for length in row["seq_lengths"]:
            alone = tiny_model(input_ids=torch.tensor([row["input_ids"][start : start + length]])).logits[0]
            torch.testing.assert_close(packed[start : start + length], alone, atol=1e-5, rtol=0)
            start += length
    second = slice(row["seq_lengths"][0], start)
    # Without the position ids the second document would see the first one: the check above is not vacuous.
    assert (unmasked[second] - packed[second]).abs().max() > 1e-3
