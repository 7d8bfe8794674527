"""hf_simplegpt.finetuning: chat data formats, loss masks, packing isolation, LoRA config building, merging."""

import copy
import json

import pytest
import torch
from datasets import Dataset
from peft import AutoPeftModelForCausalLM, get_peft_model
from transformers import AutoModelForCausalLM
from trl import ModelConfig, SFTConfig, SFTTrainer

from hf_simplegpt import SimpleGPTForCausalLM, finetuning

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
    alpaca = Dataset.from_list(
        [{"instruction": "Translate to French.", "input": "cat", "output": "chat", "id": 7}]
    )
    converted, fmt = finetuning.to_sft_dataset(alpaca)
    assert fmt == finetuning.INSTRUCTION
    assert converted.column_names == ["messages"]
    assert converted[0]["messages"] == [
        {"role": "user", "content": "Translate to French.\n\ncat"},
        {"role": "assistant", "content": "chat"},
    ]

    sharegpt = Dataset.from_list([{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}])
    converted, fmt = finetuning.to_sft_dataset(sharegpt)
    assert fmt == finetuning.SHAREGPT
    assert converted[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_malformed_messages_are_rejected():
    with pytest.raises(ValueError, match="'role' and 'content'"):
        finetuning.to_sft_dataset(Dataset.from_list([{"messages": [{"speaker": "user", "text": "hi"}]}]))


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


def expected_lora_params(config, r: int) -> int:
    """r * (in + out) for q/k/v/o (hidden -> hidden) and up/down (hidden <-> intermediate), per layer."""
    hidden, intermediate = config.hidden_size, config.intermediate_size
    per_layer = 4 * r * (hidden + hidden) + 2 * r * (hidden + intermediate)
    return config.num_hidden_layers * per_layer


def test_default_lora_targets_every_attention_and_mlp_projection(tiny_model):
    lora_config = finetuning.build_lora_config(tiny_model, r=4, lora_alpha=8)
    assert sorted(lora_config.target_modules) == ["down_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    peft_model = get_peft_model(tiny_model, lora_config)
    trainable = {n: p.numel() for n, p in peft_model.named_parameters() if p.requires_grad}
    assert all("lora_" in name for name in trainable)
    assert sum(trainable.values()) == expected_lora_params(tiny_model.config, r=4)


def test_dora_adds_a_magnitude_vector_per_target(tiny_model):
    lora_config = finetuning.build_lora_config(tiny_model, r=4, target_modules=["q_proj", "v_proj"], use_dora=True)
    peft_model = get_peft_model(tiny_model, lora_config)
    magnitudes = [n for n, p in peft_model.named_parameters() if p.requires_grad and "lora_magnitude_vector" in n]
    assert len(magnitudes) == 2 * tiny_model.config.num_hidden_layers


def test_unknown_lora_target_lists_the_available_linear_layers(tiny_model):
    with pytest.raises(ValueError) as error:
        finetuning.build_lora_config(tiny_model, target_modules=["query", "q_proj"])
    message = str(error.value)
    assert "['query']" in message
    for name in ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "lm_head"):
        assert name in message
    with pytest.raises(ValueError, match="matches no linear layer"):
        finetuning.build_lora_config(tiny_model, target_modules=r".*\.attn_proj")


def test_model_config_arguments_build_the_same_lora_config(tiny_model):
    # TRL's ModelConfig turns a one-item target list into a bare string; it must still mean that module.
    model_args = ModelConfig(use_peft=True, lora_r=8, lora_alpha=16, lora_target_modules=["q_proj"])
    lora_config = finetuning.lora_config_from_model_args(model_args, tiny_model)
    assert (lora_config.r, lora_config.lora_alpha, set(lora_config.target_modules)) == (8, 16, {"q_proj"})
    assert finetuning.lora_config_from_model_args(ModelConfig(use_peft=False), tiny_model) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given on machines without a GPU")
def test_qlora_without_gpu_stops_with_a_clear_message():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        finetuning.quantization_config_from_model_args(ModelConfig(use_peft=True, load_in_4bit=True))


def test_merged_model_matches_the_peft_model_and_reloads(tmp_path, tiny_model, tiny_tokenizer):
    base_dir, adapter_dir, merged_dir = tmp_path / "base", tmp_path / "adapter", tmp_path / "merged"
    tiny_model.save_pretrained(base_dir)
    tiny_tokenizer.save_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    peft_model = get_peft_model(base, finetuning.build_lora_config(base, r=4, lora_alpha=8, lora_dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA's B starts at zero; a random B makes the adapter change the outputs
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)
    peft_model.save_pretrained(adapter_dir)
    tiny_tokenizer.save_pretrained(adapter_dir)

    ids = torch.tensor([tiny_tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]])
    reloaded = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir)).eval()
    merged_in_memory = finetuning.merge_adapter(adapter_dir, merged_dir)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    with torch.no_grad():
        peft_logits = reloaded(input_ids=ids).logits
        merged_logits = merged(input_ids=ids).logits
        base_logits = tiny_model(input_ids=ids).logits
    assert isinstance(merged, SimpleGPTForCausalLM) and not hasattr(merged, "peft_config")
    assert not (merged_dir / "adapter_config.json").exists()
    assert set(json.loads((adapter_dir / "adapter_config.json").read_text())["target_modules"]) >= {"q_proj"}
    torch.testing.assert_close(merged_logits, peft_logits, atol=1e-5, rtol=0)
    assert (peft_logits - base_logits).abs().max() > 1e-2  # the adapter really changed the model
    assert merged_in_memory.config.model_type == "simplegpt"


def test_merge_adapter_rejects_a_directory_without_adapter(tmp_path):
    with pytest.raises(ValueError, match="adapter_config.json"):
        finetuning.merge_adapter(tmp_path, tmp_path / "merged")


def test_load_dataset_source_reads_local_files_and_dataset_folders(tmp_path):
    rows = [{"prompt": "a", "completion": "b"}, {"prompt": "c", "completion": "d"}]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    Dataset.from_list(rows).to_parquet(tmp_path / "rows.parquet")
    assert finetuning.load_dataset_source(train_file=str(tmp_path / "data" / "train.jsonl"))["prompt"] == ["a", "c"]
    assert finetuning.load_dataset_source(train_file=str(tmp_path / "rows.parquet"))["completion"] == ["b", "d"]
    # --dataset_name takes a Hub id or, as here, a folder laid out like a Hub dataset repository
    assert len(finetuning.load_dataset_source(dataset_name=str(tmp_path / "data"))) == 2
    with pytest.raises(ValueError, match="exactly one"):
        finetuning.load_dataset_source()
    with pytest.raises(ValueError, match="suffix '.txt'"):
        (tmp_path / "notes.txt").write_text("hi")
        finetuning.load_dataset_source(train_file=str(tmp_path / "notes.txt"))


def test_modules_to_save_train_in_full_next_to_the_adapters(tiny_model):
    lora_config = finetuning.build_lora_config(tiny_model, r=4, modules_to_save=["embed_tokens", "lm_head"])
    peft_model = get_peft_model(tiny_model, lora_config)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    config = tiny_model.config
    assert trainable == expected_lora_params(config, r=4) + 2 * config.vocab_size * config.hidden_size
    with pytest.raises(ValueError, match=r"\['embeddings'\] are not modules"):
        finetuning.build_lora_config(tiny_model, modules_to_save=["embeddings"])
