"""Every bad input we know a user can give, one row each: the job, what is wrong, and what the error must say (issue 13).

Each case runs the job as a user would (its `main` in-process, or the model API) and must end in a `ValueError`
whose message contains the expected text, naming the problem and the fix, before any training starts; warning cases
must log their warning and go on. A case that ran silently, or failed with another error, fails this suite. The
README's Reliability table counts these rows and the tests of tests/test_faults.py, and docs/reliability.md lists the
rows; the last two tests keep both in step with this file (`python -m tests.test_bad_inputs` prints the table).
"""

import importlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_simplegpt.checkpoints import write_manifest
from hf_simplegpt.cli import JOBS
from hf_simplegpt.synthetic import KeywordTask
from hf_simplegpt.tokenization import train_tokenizer
from tests.conftest import PRETRAIN_TINY, REPO_ROOT, TINY_CORPUS, WORDS, make_model, write_mmlu_fixture


@dataclass(frozen=True)
class Case:
    group: str  # data files | numeric flags | model inputs | combinations | evaluation | output paths
    job: str  # an hf-simplegpt job, or "model" for the model API
    input: str  # what is wrong, as the docs table shows it
    args: tuple = ()  # the job's flags ({name} is a file or folder of the `paths` fixture), or a call for "model"
    says: str = ""  # text the error message (or, with warns, the warning) must contain
    warns: bool = False


def ids(*values):
    return torch.tensor([list(values)])


CASES = [
    # ------------------------------------------------------------------------------------------------ data files
    Case("data files", "pretrain", "an empty .txt", ("--train_file", "{empty_txt}"), "empty.txt is empty"),
    Case(
        "data files",
        "pretrain",
        "a binary file named .txt",
        ("--train_file", "{binary_txt}"),
        "looks binary (a NUL byte at offset",
    ),
    Case(
        "data files",
        "pretrain",
        "Latin-1 text, not UTF-8",
        ("--train_file", "{latin1_txt}"),
        "line 5 is not UTF-8 (byte 0xe9",
    ),
    Case(
        "data files",
        "pretrain",
        "a .txt of blank lines only",
        ("--train_file", "{blank_txt}"),
        "none of its 1 documents survived cleaning (1 shorter than --min_chars",
    ),
    Case(
        "data files",
        "pretrain",
        "a .jsonl with a broken line 2",
        ("--train_file", "{broken_jsonl}"),
        "line 2 is not valid JSON",
    ),
    Case(
        "data files",
        "pretrain",
        "a .jsonl whose text is a number in row 3",
        ("--train_file", "{number_text_jsonl}"),
        "'text' holds 5 (int), not text",
    ),
    Case(
        "data files",
        "pretrain",
        "a JSON line that is a list, not an object",
        ("--train_file", "{list_line_jsonl}"),
        "line 2 is a JSON list, not an object",
    ),
    Case(
        "data files",
        "pretrain",
        "a .csv row of the wrong width",
        ("--train_file", "{ragged_csv}"),
        "line 3 has 3 fields where the header has 2",
    ),
    Case(
        "data files",
        "pretrain",
        "a .parquet that is not Parquet",
        ("--train_file", "{fake_parquet}"),
        "is not a Parquet file",
    ),
    Case(
        "data files", "pretrain", "a folder mixing .txt and .jsonl", ("--train_file", "{mixed_folder}"), "mixes formats"
    ),
    Case("data files", "pretrain", "a missing --train_file", ("--train_file", "{missing}/corpus.txt"), "no such file"),
    Case(
        "data files",
        "pretrain",
        "--text_column that is not there",
        ("--train_file", "{text_jsonl}", "--text_column", "body"),
        "has no column 'body'",
    ),
    Case(
        "data files",
        "pretrain",
        "an empty --eval_file",
        ("--eval_file", "{empty_txt}"),
        "--eval_file {empty_txt} is empty",
    ),
    Case("data files", "sft", "an empty .jsonl", ("--train_file", "{empty_jsonl}"), "empty.jsonl is empty"),
    Case("data files", "sft", "a binary .jsonl", ("--train_file", "{binary_jsonl}"), "looks binary"),
    Case(
        "data files",
        "sft",
        "a malformed JSON line 3",
        ("--train_file", "{sft_broken_jsonl}"),
        "line 3 is not valid JSON",
    ),
    Case(
        "data files",
        "sft",
        "row 9: a message without a role",
        ("--train_file", "{sft_no_role}"),
        "Row 9 of the training data (--train_file",
    ),
    Case(
        "data files",
        "sft",
        "row 9: an empty conversation",
        ("--train_file", "{sft_empty_messages}"),
        "Row 9 of the training data (--train_file {sft_empty_messages}): 'messages' is [], not a non-empty list",
    ),
    Case(
        "data files",
        "sft",
        "row 9: no assistant message",
        ("--train_file", "{sft_no_assistant}"),
        "has no assistant message",
    ),
    Case(
        "data files",
        "sft",
        "row 9: an unknown role",
        ("--train_file", "{sft_robot}"),
        "has a message with role 'robot'",
    ),
    Case(
        "data files",
        "sft",
        "row 9: a completion that is a number",
        ("--train_file", "{sft_number_completion}"),
        "line 9: field 'completion' is int where line 1 has str",
    ),
    Case(
        "data files",
        "sft",
        "row 9: an empty completion",
        ("--train_file", "{sft_empty_completion}"),
        "Row 9 of the training data (--train_file {sft_empty_completion}): 'completion' is an empty string",
    ),
    Case(
        "data files",
        "sft",
        "row 9: a null response (instruction format)",
        ("--train_file", "{sft_null_response}"),
        "'response' is None",
    ),
    Case(
        "data files",
        "sft",
        "row 9: a ShareGPT turn from 'bot'",
        ("--train_file", "{sft_sharegpt_bot}"),
        "a turn needs 'from'",
    ),
    Case(
        "data files",
        "sft",
        "columns of no SFT format",
        ("--train_file", "{text_jsonl}"),
        "match no supported SFT format",
    ),
    Case(
        "data files",
        "sft",
        "row 2 of --eval_file broken",
        ("--eval_file", "{sft_bad_eval}"),
        "Row 2 of the held-out data (--eval_file",
    ),
    Case(
        "data files",
        "reward",
        "row 9: chosen is null",
        ("--train_file", "{pairs_null_chosen}"),
        "Row 9 of the training data",
    ),
    Case(
        "data files",
        "reward",
        "no rejected column",
        ("--train_file", "{pairs_no_rejected}"),
        "lacks the field(s) ['rejected']",
    ),
    Case(
        "data files",
        "dpo",
        "row 9: a conversational answer among plain ones",
        ("--train_file", "{pairs_mixed}"),
        "line 9: field 'rejected' is list where line 1 has str",
    ),
    Case(
        "data files",
        "dpo",
        "row 9: an empty chosen answer",
        ("--train_file", "{pairs_empty_chosen}"),
        "'chosen' is an empty string",
    ),
    Case(
        "data files",
        "grpo",
        "row 9: a prompt that is a number",
        ("--train_file", "{prompts_number}"),
        "line 9: field 'prompt' is int where line 1 has str",
    ),
    Case(
        "data files",
        "rloo",
        "row 9: an empty prompt",
        ("--train_file", "{prompts_empty}"),
        "'prompt' is an empty string",
    ),
    Case("data files", "grpo", "no prompt column", ("--train_file", "{text_jsonl}"), "lacks the field 'prompt'"),
    Case("data files", "distill", "row 9: a null prompt", ("--train_file", "{prompts_null}"), "'prompt' is None"),
    Case(
        "data files",
        "evaluate",
        "an empty --perplexity_file",
        ("--tasks", "perplexity", "--perplexity_file", "{empty_txt}"),
        "--perplexity_file {empty_txt} is empty",
    ),
    Case(
        "data files",
        "evaluate",
        "a --bleu_file with a broken line 2",
        ("--tasks", "bleu", "--bleu_file", "{bleu_broken}"),
        "line 2 is not valid JSON",
    ),
    Case(
        "data files",
        "evaluate",
        "a --bleu_file row without reference",
        ("--tasks", "bleu", "--bleu_file", "{bleu_no_ref}"),
        "Row 2 of the --bleu_file {bleu_no_ref}: 'reference' is None",
    ),
    # --------------------------------------------------------------------------------------------- numeric flags
    Case(
        "numeric flags", "pretrain", "--learning_rate -1", ("--learning_rate", "-1"), "--learning_rate -1.0 must be > 0"
    ),
    Case("numeric flags", "pretrain", "--learning_rate 0", ("--learning_rate", "0"), "(0 trains nothing)"),
    Case(
        "numeric flags",
        "pretrain",
        "--per_device_train_batch_size 0",
        ("--per_device_train_batch_size", "0"),
        "--per_device_train_batch_size 0 must be at least 1",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--gradient_accumulation_steps 0",
        ("--gradient_accumulation_steps", "0"),
        "--gradient_accumulation_steps 0 must be at least 1",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "zero training steps",
        ("--max_steps", "0", "--num_train_epochs", "0"),
        "give zero training steps",
    ),
    Case("numeric flags", "pretrain", "--save_steps 0", ("--save_steps", "0"), "--save_steps 0.0 must be > 0"),
    Case(
        "numeric flags", "pretrain", "--logging_steps 0", ("--logging_steps", "0"), "requires non-zero --logging_steps"
    ),
    Case(
        "numeric flags", "pretrain", "--warmup_steps -3", ("--warmup_steps", "-3"), "Expected value warmup_steps >= 0"
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--max_grad_norm -1",
        ("--max_grad_norm", "-1"),
        "--max_grad_norm -1.0 must be >= 0",
    ),
    Case("numeric flags", "pretrain", "--seed -1", ("--seed", "-1"), "--seed -1 must be in [0, 2**32)"),
    Case(
        "numeric flags",
        "pretrain",
        "--weight_decay -0.1",
        ("--weight_decay", "-0.1"),
        "--weight_decay -0.1 must be >= 0",
    ),
    Case("numeric flags", "pretrain", "--adam_beta2 1.5", ("--adam_beta2", "1.5"), "must be in [0, 1)"),
    Case(
        "numeric flags",
        "pretrain",
        "--save_total_limit 0",
        ("--save_total_limit", "0"),
        "--save_total_limit 0 must be at least 1",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--dataloader_num_workers -1",
        ("--dataloader_num_workers", "-1"),
        "--dataloader_num_workers -1 must be >= 0",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--hidden_size 0",
        ("--hidden_size", "0"),
        "field 'hidden_size': ValueError: Value must be greater or equal to 1, got 0.",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--num_attention_heads 3 for width 64",
        ("--num_attention_heads", "3"),
        "must be divisible by num_attention_heads (3)",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--dropout 1.5",
        ("--dropout", "1.5"),
        "field 'embedding_dropout': ValueError: Value must be greater or equal to 0 and smaller than 1, got 1.5.",
    ),
    Case("numeric flags", "pretrain", "--vocab_size 100", ("--vocab_size", "100"), "vocab_size=100 is too small"),
    Case(
        "numeric flags",
        "pretrain",
        "--max_position_embeddings 1",
        ("--max_position_embeddings", "1"),
        "--max_position_embeddings 1 must be at least 2",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--max_position_embeddings beyond the data",
        ("--max_position_embeddings", "100000"),
        "fewer tokens than one block of 100000",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--mlm_probability 1",
        ("--mlm_probability", "1"),
        "--mlm_probability must be in (0, 1)",
    ),
    Case("numeric flags", "pretrain", "--objective rlhf", ("--objective", "rlhf"), "use clm (causal LM) or mlm"),
    Case(
        "numeric flags",
        "pretrain",
        "--heldout_size 0",
        ("--heldout_size", "0"),
        "--heldout_size 0.0 must be a number of rows",
    ),
    Case(
        "numeric flags",
        "pretrain",
        "--max_train_samples 0",
        ("--max_train_samples", "0"),
        "--max_train_samples 0 must be at least 1",
    ),
    Case("numeric flags", "pretrain", "--near_dedup_threshold 2", ("--near_dedup_threshold", "2"), "must be in (0, 1]"),
    Case(
        "numeric flags",
        "pretrain",
        "--num_sample_generations -1",
        ("--num_sample_generations", "-1"),
        "--num_sample_generations must be >= 0",
    ),
    Case("numeric flags", "sft", "--max_length 0", ("--max_length", "0"), "--max_length 0 must be at least 1"),
    Case(
        "numeric flags", "sft", "--max_new_tokens 0", ("--max_new_tokens", "0"), "--max_new_tokens 0 must be at least 1"
    ),
    Case(
        "numeric flags",
        "sft",
        "--num_sample_generations -1",
        ("--num_sample_generations", "-1"),
        "--num_sample_generations -1 must be >= 0",
    ),
    Case(
        "numeric flags", "grpo", "--num_generations 1", ("--num_generations", "1"), "at least 2 generations per prompt"
    ),
    Case(
        "numeric flags",
        "rloo",
        "--eval_max_new_tokens 0",
        ("--eval_max_new_tokens", "0"),
        "--eval_max_new_tokens 0 must be at least 1",
    ),
    Case("numeric flags", "evaluate", "--batch_size 0", ("--batch_size", "0"), "--batch_size 0 must be at least 1"),
    Case(
        "numeric flags", "evaluate", "--num_fewshot -1", ("--num_fewshot", "-1"), "--num_fewshot -1 must be at least 0"
    ),
    Case("numeric flags", "evaluate", "--limit 0", ("--limit", "0"), "--limit 0 must be at least 1"),
    Case("numeric flags", "evaluate", "--stride 0", ("--stride", "0"), "--stride 0 must be at least 1"),
    Case(
        "numeric flags",
        "evaluate",
        "--max_new_tokens 0",
        ("--max_new_tokens", "0"),
        "--max_new_tokens 0 must be at least 1",
    ),
    Case("numeric flags", "evaluate", "--device tpu9", ("--device", "tpu9"), "--device 'tpu9' is not a device"),
    # ---------------------------------------------------------------------------------------------- model inputs
    Case(
        "model inputs",
        "model",
        "float input_ids",
        lambda m: m(torch.ones(2, 5)),
        "integer token ids; got shape (2, 5), dtype torch.float32",
    ),
    Case(
        "model inputs",
        "model",
        "1-D input_ids",
        lambda m: m(torch.ones(5, dtype=torch.long)),
        "batch dimension: input_ids[None]",
    ),
    Case(
        "model inputs",
        "model",
        "3-D input_ids",
        lambda m: m(torch.ones(2, 5, 1, dtype=torch.long)),
        "got shape (2, 5, 1)",
    ),
    Case(
        "model inputs",
        "model",
        "an empty sequence",
        lambda m: m(torch.ones(2, 0, dtype=torch.long)),
        "The input is empty (shape (2, 0))",
    ),
    Case(
        "model inputs",
        "model",
        "a token id beyond the vocabulary",
        lambda m: m(ids(1, 999)),
        "Token id 999 is outside the vocabulary",
    ),
    Case(
        "model inputs", "model", "a negative token id", lambda m: m(ids(1, -3)), "Token id -3 is outside the vocabulary"
    ),
    Case(
        "model inputs",
        "model",
        "a sequence longer than the context",
        lambda m: m(torch.ones(1, 65, dtype=torch.long)),
        "Sequence too long: position 64 is beyond max_position_embeddings=64",
    ),
    Case(
        "model inputs",
        "model",
        "labels shorter than the input",
        lambda m: m(ids(1, 2, 3), labels=ids(1, 2)),
        "labels must be integer token ids of the input's shape (1, 3)",
    ),
    Case(
        "model inputs",
        "model",
        "float labels",
        lambda m: m(ids(1, 2, 3), labels=ids(1, 2, 3).float()),
        "dtype torch.float32",
    ),
    Case(
        "model inputs",
        "model",
        "a 1-D attention mask",
        lambda m: m(ids(1, 2, 3), attention_mask=torch.ones(3)),
        "attention_mask must be (batch, seq)",
    ),
    Case(
        "model inputs",
        "model",
        "an attention mask shorter than the input",
        lambda m: m(ids(1, 2, 3), attention_mask=torch.ones(1, 2)),
        "attention_mask has shape (1, 2), expected (batch_size=1, past + current length=3)",
    ),
    Case(
        "model inputs",
        "model",
        "an attention mask holding 2s",
        lambda m: m(ids(1, 2, 3), attention_mask=ids(1, 2, 1)),
        "attention_mask holds [2]: it must hold 1 for tokens to attend to and 0 for padding",
    ),
    Case(
        "model inputs",
        "model",
        "a float attention mask of 0.5s, training",
        lambda m: m(ids(1, 2, 3), attention_mask=torch.full((1, 3), 0.5), labels=ids(1, 2, 3)),
        "attention_mask holds [0.5]",
    ),
    Case(
        "model inputs",
        "model",
        "position_ids of another length",
        lambda m: m(ids(1, 2, 3), position_ids=torch.arange(2)[None]),
        "position_ids must have shape (batch or 1, seq=3)",
    ),
    Case(
        "model inputs",
        "model",
        "negative position_ids",
        lambda m: m(ids(1, 2, 3), position_ids=torch.tensor([[-1, 0, 1]])),
        "position_ids hold -1",
    ),
    Case(
        "model inputs",
        "model",
        "inputs_embeds of the wrong width",
        lambda m: m(inputs_embeds=torch.ones(1, 3, 7)),
        "inputs_embeds must have shape (batch, seq, hidden_size=32)",
    ),
    Case(
        "model inputs",
        "model",
        "both input_ids and inputs_embeds",
        lambda m: m(ids(1), inputs_embeds=torch.ones(1, 1, 32)),
        "Pass exactly one of `input_ids` or `inputs_embeds`",
    ),
    # ---------------------------------------------------------------------------------------------- combinations
    Case(
        "combinations",
        "pretrain",
        "--tokenizer_name of the same size from another run",
        ("--model_name_or_path", "{model}", "--tokenizer_name", "{other_tokenizer}", "--max_position_embeddings", "64"),
        "maps tokens to other ids than the tokenizer",
    ),
    Case(
        "combinations",
        "pretrain",
        "--max_position_embeddings larger than the model's table",
        ("--model_name_or_path", "{model}", "--max_position_embeddings", "128"),
        "larger than the 64 positions of",
    ),
    Case(
        "combinations",
        "pretrain",
        "--model_name_or_path that does not exist",
        ("--model_name_or_path", "{missing}/model"),
        "no such folder",
    ),
    Case(
        "combinations",
        "pretrain",
        "--resume_from_checkpoint that does not exist",
        ("--resume_from_checkpoint", "{missing}/checkpoint-9"),
        "no such checkpoint",
    ),
    Case(
        "combinations",
        "pretrain",
        "--resume_from_checkpoint true without checkpoints",
        ("--resume_from_checkpoint", "true"),
        "holds no checkpoint-N folder",
    ),
    Case(
        "combinations",
        "pretrain",
        "resume from a checkpoint that --overwrite_output_dir would remove",
        ("--output_dir", "{resumable}", "--resume_from_checkpoint", "true", "--overwrite_output_dir", "true"),
        "--overwrite_output_dir would remove",
    ),
    Case(
        "combinations",
        "pretrain",
        "a YAML list where an integer goes",
        ("--config", "{list_yaml}"),
        "max_steps: [1, 2] is not an integer, which --max_steps takes",
    ),
    Case(
        "combinations",
        "pretrain",
        "a YAML word where a number goes",
        ("--config", "{word_yaml}"),
        "learning_rate: 'fast' is not a number, which --learning_rate takes",
    ),
    Case(
        "combinations",
        "pretrain",
        "a --model_name_or_path with a truncated tokenizer.json",
        ("--model_name_or_path", "{truncated_tokenizer}", "--max_position_embeddings", "64"),
        "{truncated_tokenizer}/tokenizer.json is not a readable tokenizer",
    ),
    Case(
        "combinations",
        "pretrain",
        "a --tokenizer_name whose tokenizer.json is garbage",
        ("--tokenizer_name", "{garbage_tokenizer}"),
        "{garbage_tokenizer}/tokenizer.json is not a readable tokenizer",
    ),
    Case(
        "combinations",
        "pretrain",
        "--streaming without --dataset_name",
        ("--streaming", "true"),
        "--streaming applies to Hub datasets",
    ),
    Case(
        "combinations",
        "pretrain",
        "--dataset_name and --train_file",
        ("--dataset_name", "wikitext"),
        "either --dataset_name or --train_file",
    ),
    Case(
        "combinations",
        "sft",
        "--max_length beyond the model's positions",
        ("--max_length", "128"),
        "--max_length 128 is longer than the model's 64 learned positions",
    ),
    Case("combinations", "sft", "--merge without --use_peft", ("--merge", "true"), "it needs --use_peft"),
    Case(
        "combinations",
        "reward",
        "--max_length beyond the model's positions",
        ("--max_length", "128"),
        "--max_length 128 is longer than the model's 64",
    ),
    Case(
        "combinations",
        "dpo",
        "a LoRA adapter folder as the model",
        ("--model_name_or_path", "{adapter}"),
        "is a LoRA adapter, not a standalone model",
    ),
    Case(
        "combinations",
        "grpo",
        "prompts + --max_completion_length beyond the context",
        ("--max_completion_length", "60"),
        "with --max_completion_length 60 that is more than the model's 64 positions",
    ),
    Case(
        "combinations",
        "rloo",
        "a causal LM as the reward model",
        ("--reward_model_name_or_path", "{model}"),
        "not a sequence-classification reward model",
    ),
    Case(
        "combinations",
        "grpo",
        "a dotted reward function without the flag",
        ("--reward_funcs", "os.system"),
        "is not one of the project's",
    ),
    Case(
        "combinations",
        "grpo",
        "a config that turns on custom reward code",
        ("--config", "{custom_reward_yaml}"),
        "sets allow_custom_reward_funcs, which runs Python code from outside the project; a config file cannot",
    ),
    Case(
        "combinations",
        "distill",
        "a teacher with another tokenizer of the same size",
        ("--teacher_model_name_or_path", "{other_model}"),
        "same size but map tokens differently",
    ),
    # ------------------------------------------------------------------------------------------------ evaluation
    Case("evaluation", "evaluate", "--subjects that select nothing", ("--subjects", ","), "selects no subject"),
    Case(
        "evaluation",
        "evaluate",
        "an unknown subject",
        ("--subjects", "astrology"),
        "Unknown MMLU subject(s) ['astrology']",
    ),
    Case(
        "evaluation",
        "evaluate",
        "an MMLU csv row of 5 columns",
        ("--mmlu_data_dir", "{mmlu_5_columns}"),
        "marketing_test.csv:2: expected 6 columns",
    ),
    Case(
        "evaluation",
        "evaluate",
        "an MMLU csv not in UTF-8",
        ("--mmlu_data_dir", "{mmlu_latin1}"),
        "marketing_test.csv:2: not UTF-8",
    ),
    Case(
        "evaluation",
        "evaluate",
        "an empty MMLU test csv",
        ("--mmlu_data_dir", "{mmlu_empty}"),
        "marketing_test.csv holds no questions",
    ),
    Case(
        "evaluation",
        "evaluate",
        "an MMLU answer 'E'",
        ("--mmlu_data_dir", "{mmlu_answer_e}"),
        "answer 'E' is neither a letter A-D",
    ),
    Case(
        "evaluation",
        "evaluate",
        "--mmlu_data_dir without test/",
        ("--mmlu_data_dir", "{empty_dir}"),
        "No MMLU test files",
    ),
    Case("evaluation", "evaluate", "more shots than dev questions", ("--num_fewshot", "4"), "has only 3 dev questions"),
    Case(
        "evaluation",
        "evaluate",
        "a folder that holds no model",
        ("--model_name_or_path", "{empty_dir}"),
        "the folder holds no model (no config.json)",
    ),
    Case(
        "evaluation",
        "evaluate",
        "a model folder without weights",
        ("--model_name_or_path", "{no_weights}"),
        "holds a config.json but no weights",
    ),
    Case(
        "evaluation",
        "evaluate",
        "a model folder that does not exist",
        ("--model_name_or_path", "{missing}/model"),
        "no such folder",
    ),
    Case(
        "evaluation",
        "evaluate",
        "a config.json claiming more layers than the weights hold",
        ("--model_name_or_path", "{more_layers}"),
        "its config.json and its weights disagree: config.json describes 16 weight(s) the file lacks "
        "(model.layers.2.attention_norm.bias",
    ),
    Case(
        "evaluation",
        "evaluate",
        "a config.json claiming fewer layers than the weights hold",
        ("--model_name_or_path", "{fewer_layers}"),
        "the file holds 16 weight(s) the model of config.json has no place for (model.layers.1.attention_norm.bias",
    ),
    Case(
        "evaluation",
        "evaluate",
        "a tokenizer_config.json that is not JSON",
        ("--model_name_or_path", "{broken_tokenizer_config}"),
        "{broken_tokenizer_config}/tokenizer_config.json is not valid JSON",
    ),
    Case(
        "evaluation",
        "evaluate",
        "a context too short for the prompts (a warning)",
        ("--model_name_or_path", "{short_model}", "--num_fewshot", "1"),
        "20 of 20 scored requests are longer than the model's 16-token context",
        warns=True,
    ),
    Case("evaluation", "evaluate", "an unknown task", ("--tasks", "mmlu,rouge"), "Unknown task(s) ['rouge']"),
    Case("evaluation", "evaluate", "perplexity without a file", ("--tasks", "perplexity"), "needs --perplexity_file"),
    Case(
        "evaluation",
        "evaluate",
        "--push_to_hub without --hub_model_id",
        ("--push_to_hub", "true"),
        "needs --hub_model_id",
    ),
    # ---------------------------------------------------------------------------------------------- output paths
    Case(
        "output paths",
        "pretrain",
        "--output_dir that is a file",
        ("--output_dir", "{empty_txt}"),
        "is a file, not a folder",
    ),
    Case(
        "output paths",
        "pretrain",
        "--output_dir under a file",
        ("--output_dir", "{empty_txt}/out"),
        "is not a writable folder (Not a directory)",
    ),
    Case(
        "output paths",
        "pretrain",
        "--output_dir that cannot be created",
        ("--output_dir", "/proc/hf_simplegpt_out"),
        "/proc/hf_simplegpt_out is not a writable folder",
    ),
    Case(
        "output paths",
        "pretrain",
        "--output_dir holding a finished model",
        ("--output_dir", "{finished}"),
        "already holds a model or checkpoints (config.json, model.safetensors)",
    ),
    Case(
        "output paths",
        "pretrain",
        "--output_dir holding checkpoints",
        ("--output_dir", "{resumable}"),
        "already holds a model or checkpoints (checkpoint-4)",
    ),
    Case(
        "output paths",
        "pretrain",
        "--output_dir in use by a running job",
        ("--output_dir", "{locked}"),
        "is in use by another run (pid",
    ),
    Case(
        "output paths",
        "pretrain",
        "a lock path that is a folder",
        ("--output_dir", "{lock_is_a_folder}"),
        ".hf_simplegpt.lock is a folder, where this job keeps its lock file",
    ),
    Case(
        "output paths",
        "sft",
        "--output_dir = the source model folder",
        ("--output_dir", "{model}", "--overwrite_output_dir", "true"),
        "is the folder this job reads its model from",
    ),
    Case(
        "output paths",
        "sft",
        "--merged_output_dir holding a model",
        ("--use_peft", "true", "--merge", "true", "--merged_output_dir", "{finished}"),
        "--merged_output_dir {finished} already holds a model",
    ),
    Case(
        "output paths",
        "evaluate",
        "--output_dir = the model folder",
        ("--output_dir", "{model}"),
        "the evaluation never writes into a model folder",
    ),
    Case(
        "output paths",
        "evaluate",
        "--output_dir that is a file",
        ("--output_dir", "{empty_txt}"),
        "is a file, not a folder",
    ),
    Case(
        "output paths",
        "convert",
        "--output_dir holding a model",
        ("--output_dir", "{finished}"),
        "already holds a model",
    ),
    Case(
        "output paths",
        "convert",
        "a --gpt2 folder that does not exist",
        ("--gpt2", "{missing}/gpt2"),
        "--gpt2 {missing}/gpt2: no such folder",
    ),
    # ------------------------------------------------------------------------------- inference and compression jobs
    Case(
        "numeric flags",
        "quantize",
        "an unknown --method",
        ("--method", "int3"),
        "--method 'int3' is not a quantization method",
    ),
    Case(
        "output paths",
        "quantize",
        "--output_dir holding a model",
        ("--output_dir", "{finished}"),
        "already holds a model",
    ),
    Case(
        "combinations",
        "quantize",
        "a LoRA adapter folder instead of a model",
        ("--model_name_or_path", "{adapter}"),
        "is a LoRA adapter, not a whole model",
    ),
    Case(
        "numeric flags",
        "export",
        "an unknown --format",
        ("--format", "onnx"),
        "--format 'onnx' is not an export format",
    ),
    Case(
        "output paths",
        "export",
        "--output_dir holding a model",
        ("--output_dir", "{finished}"),
        "already holds a model",
    ),
    Case(
        "model inputs",
        "export",
        "--format gguf of a post-norm model",
        ("--format", "gguf"),
        "llama.cpp has no post-norm decoder graph",
    ),
    Case(
        "model inputs",
        "export",
        "--format gguf of a model with pruned heads",
        ("--format", "gguf", "--model_name_or_path", "{pruned_prenorm}"),
        "not hidden_size 32 (pruned heads)",
    ),
    Case(
        "combinations",
        "export",
        "--format gguf of a LoRA adapter folder",
        ("--format", "gguf", "--model_name_or_path", "{adapter}"),
        "is a LoRA adapter, not a whole model",
    ),
    Case(
        "output paths",
        "export",
        "--format gguf, --output_dir holding a model",
        ("--format", "gguf", "--model_name_or_path", "{prenorm}", "--output_dir", "{finished}"),
        "already holds a model",
    ),
    Case(
        "numeric flags",
        "prune",
        "--keep_ratio 0",
        ("--keep_ratio", "0"),
        "--keep_ratio 0.0: the fraction of units kept must be in (0, 1]",
    ),
    Case(
        "numeric flags",
        "prune",
        "--drop_layers as many as the model has",
        ("--drop_layers", "2"),
        "--drop_layers 2: the model has 2 layers and at least one must stay",
    ),
    Case(
        "output paths",
        "prune",
        "--output_dir = the source model folder",
        ("--output_dir", "{model}"),
        "is the folder this job reads its model from",
    ),
    Case("combinations", "serve", "MODEL_DIR that does not exist", ("{missing}/model",), "no such folder"),
    Case(
        "combinations",
        "serve",
        "MODEL_DIR whose config.json claims more layers",
        ("{more_layers}",),
        "its config.json and its weights disagree",
    ),
    Case(
        "combinations",
        "sft",
        "a config.json whose MLP width is not the weights'",
        ("--model_name_or_path", "{wider_config}"),
        "weight(s) have another shape than config.json gives (file vs config: model.layers.0.mlp.down_proj.weight",
    ),
    Case(
        "combinations",
        "quantize",
        "a config.json claiming fewer layers",
        ("--model_name_or_path", "{fewer_layers}"),
        "its config.json and its weights disagree",
    ),
    Case(
        "data files",
        "contrastive",
        "text rows, not pairs",
        ("--train_file", "{text_jsonl}"),
        "lacks the column(s) ['anchor', 'positive']",
    ),
    Case(
        "data files",
        "contrastive",
        "row 9: an empty positive",
        ("--train_file", "{anchors_empty_positive}"),
        "Row 9 of the training data",
    ),
    Case(
        "data files",
        "contrastive",
        "row 9 repeats row 1's pair (a false negative)",
        ("--train_file", "{anchors_duplicate}"),
        "repeats the pair of row 1",
    ),
    Case("combinations", "contrastive", "--pooling cls", ("--pooling", "cls"), "choose one of mean, last-token"),
    Case(
        "combinations",
        "evaluate",
        "--tasks retrieval without --retrieval_file",
        ("--tasks", "retrieval"),
        "--tasks retrieval needs --retrieval_file",
    ),
    Case(
        "numeric flags",
        "contrastive",
        "--mini_batch_size 0",
        ("--mini_batch_size", "0"),
        "--mini_batch_size 0 must be at least 1",
    ),
]


# ----------------------------------------------------------------------------------------------------- the inputs


def _chat(user: str, assistant: str | None = "an answer") -> dict:
    turns = [{"role": "user", "content": user}] + ([{"role": "assistant", "content": assistant}] if assistant else [])
    return {"messages": turns}


def _rows_then(good: dict, bad: dict, n: int = 8) -> list[dict]:
    """`n` good rows, then the bad one (row n + 1): only a check of every row finds it."""
    return [good] * n + [bad]


@pytest.fixture(scope="module")
def paths(tmp_path_factory, corpus):
    """Every file and folder the cases name, made once: tiny models, bad data files, occupied output folders."""
    root = tmp_path_factory.mktemp("bad_inputs")
    p = {"missing": str(root / "missing"), "corpus": corpus, "cache": str(Path(corpus).parent / "cache")}

    def file(name: str, content: str | bytes) -> str:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
        return str(path)

    def jsonl(name: str, rows: list) -> str:
        return file(name, "".join(json.dumps(row) + "\n" for row in rows))

    task = KeywordTask(seed=0)
    tokenizer = train_tokenizer(task.texts(300) + TINY_CORPUS, vocab_size=420, model_max_length=64)
    other = train_tokenizer(
        [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 20 + TINY_CORPUS * 3,
        vocab_size=len(tokenizer),
        model_max_length=64,
    )
    assert len(other) == len(tokenizer)  # the same size, other tokens
    shapes = {
        "model": (tokenizer, {}),
        "other_model": (other, {}),
        "short_model": (tokenizer, {"max_position_embeddings": 16}),
        "prenorm": (tokenizer, {"norm_position": "pre"}),
        "pruned_prenorm": (tokenizer, {"norm_position": "pre", "head_dim": 4}),
    }
    for name, (tok, shape) in shapes.items():
        make_model(tok, **shape).save_pretrained(root / name)
        tok.save_pretrained(root / name)
        p[name] = str(root / name)
    other.save_pretrained(root / "other_tokenizer")
    p["other_tokenizer"] = str(root / "other_tokenizer")
    p["finished"] = str(shutil.copytree(root / "model", root / "finished"))  # a folder holding a finished model
    p["no_weights"] = str(root / "no_weights")
    os.makedirs(p["no_weights"])
    shutil.copy(root / "model" / "config.json", p["no_weights"])
    # Folders whose config.json and weights disagree, and damaged tokenizer files.
    for name, edit in (
        ("more_layers", {"num_hidden_layers": 3}),
        ("fewer_layers", {"num_hidden_layers": 1}),
        ("wider_config", {"intermediate_size": 64}),
    ):
        folder = shutil.copytree(root / "model", root / name)
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **edit}))
        p[name] = str(folder)
    for name, damaged, content in (
        ("truncated_tokenizer", "tokenizer.json", None),
        ("garbage_tokenizer", "tokenizer.json", "not a tokenizer"),
        ("broken_tokenizer_config", "tokenizer_config.json", '{"model_max_length": 64,'),
    ):
        folder = shutil.copytree(root / "model", root / name)
        text = (folder / damaged).read_text()
        (folder / damaged).write_text(text[: len(text) // 2] if content is None else content)
        p[name] = str(folder)
    p["list_yaml"] = file("list.yaml", Path(PRETRAIN_TINY).read_text().replace("max_steps: 10", "max_steps: [1, 2]"))
    p["word_yaml"] = file(
        "word.yaml", re.sub(r"(?m)^learning_rate:.*\n", "", Path(PRETRAIN_TINY).read_text()) + "learning_rate: fast\n"
    )
    p["adapter"] = file("adapter/adapter_config.json", "{}").rsplit("/", 1)[0]
    p["empty_dir"] = str(root / "empty_dir")
    os.makedirs(p["empty_dir"])

    # A folder with a valid checkpoint-4 (the files the Trainer writes, and the manifest).
    checkpoint = root / "resumable" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4, "log_history": []}))
    save_file({"w": torch.zeros(4)}, str(checkpoint / "model.safetensors"))
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.save({}, checkpoint / name)
    write_manifest(str(checkpoint))
    p["resumable"] = str(root / "resumable")

    # Data files.
    p["empty_txt"] = file("empty.txt", "")
    p["empty_jsonl"] = file("empty.jsonl", "")
    p["binary_txt"] = file("binary.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    p["binary_jsonl"] = file("binary.jsonl", bytes(range(256)) * 4)
    p["latin1_txt"] = file("latin1.txt", "Tea time.\n\nA long line.\n\nCaf\xe9 au lait.\n".encode("latin-1"))
    p["blank_txt"] = file("blank.txt", "\n\n   \n\n")
    p["text_jsonl"] = jsonl("text.jsonl", [{"text": t} for t in TINY_CORPUS])
    p["broken_jsonl"] = file("broken.jsonl", '{"text": "fine"}\n{"text": "cut off\n{"text": "fine"}\n')
    p["number_text_jsonl"] = jsonl("number_text.jsonl", [{"text": "words here"}, {"text": "more words"}, {"text": 5}])
    p["list_line_jsonl"] = file("list_line.jsonl", '{"text": "fine"}\n["a", "list"]\n')
    p["ragged_csv"] = file("ragged.csv", "text,source\nhello world,a\nhello, world,b\n")
    p["fake_parquet"] = file("fake.parquet", "text\nnot parquet at all\n")
    file("mixed/a.txt", "some text here\n")
    p["mixed_folder"] = file("mixed/b.jsonl", '{"text": "some text"}\n').rsplit("/", 1)[0]
    good_chat = _chat("What is 2 + 2?", "4")
    p["sft_broken_jsonl"] = file("sft_broken.jsonl", json.dumps(good_chat) + "\n" + json.dumps(good_chat) + "\n{oops\n")
    p["sft_no_role"] = jsonl("sft_no_role.jsonl", _rows_then(good_chat, {"messages": [{"content": "hi"}]}))
    p["sft_empty_messages"] = jsonl("sft_empty_messages.jsonl", _rows_then(good_chat, {"messages": []}))
    p["sft_no_assistant"] = jsonl("sft_no_assistant.jsonl", _rows_then(good_chat, _chat("hello?", None)))
    p["sft_robot"] = jsonl(
        "sft_robot.jsonl", _rows_then(good_chat, {"messages": [{"role": "robot", "content": "beep"}]})
    )
    pc = {"prompt": "2 + 2 =", "completion": " 4"}
    p["sft_number_completion"] = jsonl("sft_number.jsonl", _rows_then(pc, {"prompt": "3 + 2 =", "completion": 5}))
    p["sft_empty_completion"] = jsonl(
        "sft_empty_completion.jsonl", _rows_then(pc, {"prompt": "3 + 2 =", "completion": ""})
    )
    instruction = {"instruction": "Add 2 and 2.", "response": "4"}
    p["sft_null_response"] = jsonl(
        "sft_null.jsonl", _rows_then(instruction, {"instruction": "Add 1 and 2.", "response": None})
    )
    share = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    p["sft_sharegpt_bot"] = jsonl(
        "sft_share.jsonl", _rows_then(share, {"conversations": [{"from": "bot", "value": "hi"}]})
    )
    p["sft_good"] = jsonl("sft_good.jsonl", task.sft_examples(16))
    p["sft_bad_eval"] = jsonl(
        "sft_bad_eval.jsonl", [task.sft_examples(1)[0], {"prompt": task.prompts(1)[0]["prompt"], "completion": []}]
    )
    pair = {"prompt": "Tell me about the fox.", "chosen": " the fox is blue .", "rejected": " the fox is red ."}
    p["pairs_good"] = jsonl("pairs_good.jsonl", KeywordTask(conversational=False).preference_pairs(16))
    p["pairs_null_chosen"] = jsonl("pairs_null.jsonl", _rows_then(pair, {**pair, "chosen": None}))
    p["pairs_no_rejected"] = jsonl("pairs_no_rejected.jsonl", [{"prompt": "a", "chosen": " b"}] * 9)
    p["pairs_mixed"] = jsonl(
        "pairs_mixed.jsonl", _rows_then(pair, {**pair, "rejected": [{"role": "assistant", "content": "red"}]})
    )
    p["pairs_empty_chosen"] = jsonl("pairs_empty.jsonl", _rows_then(pair, {**pair, "chosen": ""}))
    anchors = [{"anchor": f"line {i} of a passage", "positive": f"the line after line {i}"} for i in range(8)]
    p["anchors_good"] = jsonl("anchors_good.jsonl", anchors)
    p["anchors_empty_positive"] = jsonl("anchors_empty.jsonl", anchors + [{"anchor": "one more line", "positive": ""}])
    p["anchors_duplicate"] = jsonl("anchors_duplicate.jsonl", anchors + [dict(anchors[0])])
    p["prompts_good"] = jsonl("prompts_good.jsonl", task.prompts(16))
    prompt = {"prompt": "Tell me about the fox."}
    p["prompts_number"] = jsonl("prompts_number.jsonl", _rows_then(prompt, {"prompt": 7}))
    p["prompts_empty"] = jsonl("prompts_empty.jsonl", _rows_then(prompt, {"prompt": ""}))
    p["prompts_null"] = jsonl("prompts_null.jsonl", _rows_then(prompt, {"prompt": None}))
    p["bleu_broken"] = file("bleu_broken.jsonl", '{"prompt": "a", "reference": "b"}\n{oops}\n')
    p["bleu_no_ref"] = jsonl("bleu_no_ref.jsonl", [{"prompt": "a", "reference": "b"}, {"prompt": "c"}])

    # MMLU folders: the fixture, and copies with one broken marketing test file.
    p["mmlu"] = str(write_mmlu_fixture(root / "mmlu"))
    broken = {
        "mmlu_5_columns": b"question,a,b,c,d,answer\nWhich?,a,b,c,A\n",
        "mmlu_latin1": b"question,a,b,c,d,answer\nCaf\xe9?,a,b,c,d,A\n",
        "mmlu_empty": b"",
        "mmlu_answer_e": b"Which?,a,b,c,d,A\nWhich?,a,b,c,d,E\n",
    }
    for name, content in broken.items():
        folder = shutil.copytree(root / "mmlu", root / name)
        (folder / "test" / "marketing_test.csv").write_bytes(content)
        p[name] = str(folder)

    # A folder where the lock file should be is a folder; a config that switches custom reward code on by itself.
    os.makedirs(root / "lock_is_a_folder" / ".hf_simplegpt.lock")
    p["lock_is_a_folder"] = str(root / "lock_is_a_folder")
    grpo_tiny = (REPO_ROOT / "recipes" / "configs" / "grpo_tiny.yaml").read_text()
    p["custom_reward_yaml"] = file(
        "custom_reward.yaml",
        grpo_tiny + "\nallow_custom_reward_funcs: true\nreward_funcs: [hf_simplegpt.rewards.keyword_reward]\n",
    )
    # A folder whose lock a live process holds (as a running job would).
    p["locked"] = str(root / "locked")
    os.makedirs(p["locked"])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, os.path.join(p["locked"], ".hf_simplegpt.lock")],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    yield p
    holder.kill()
    holder.wait()


# What a running job does to its output folder (safeguards.lock_output_dir), without importing torch.
HOLD_LOCK = """import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": "here", "started": "now", "command": "train"}).encode())
print("locked", flush=True)
time.sleep(600)
"""


def base_args(job: str, p: dict, out: str) -> list[str]:
    """A working command for `job` (the case's flags come after it and win)."""
    quiet = [
        "--disable_tqdm",
        "true",
        "--report_to",
        "none",
        "--output_dir",
        out,
        "--heldout_size",
        "2",
        "--max_steps",
        "1",
    ]
    return {
        "pretrain": [
            "--config",
            PRETRAIN_TINY,
            "--train_file",
            p["corpus"],
            "--data_cache_dir",
            p["cache"],
            "--num_sample_generations",
            "0",
            *quiet,
            "--heldout_size",
            "0.05",
        ],
        "sft": [
            "--config",
            "sft_tiny.yaml",
            "--model_name_or_path",
            p["model"],
            "--train_file",
            p["sft_good"],
            "--num_sample_generations",
            "0",
            *quiet,
        ],
        "reward": [
            "--config",
            "reward_tiny.yaml",
            "--model_name_or_path",
            p["model"],
            "--train_file",
            p["pairs_good"],
            *quiet,
        ],
        "dpo": [
            "--config",
            "dpo_tiny.yaml",
            "--model_name_or_path",
            p["model"],
            "--train_file",
            p["pairs_good"],
            *quiet,
        ],
        **{
            job: [
                "--config",
                f"{job}_tiny.yaml",
                "--model_name_or_path",
                p["model"],
                "--train_file",
                p["prompts_good"],
                "--reward_funcs",
                "keyword",
                *quiet,
            ]
            for job in ("grpo", "rloo")
        },
        "distill": [
            "--config",
            "distill_tiny.yaml",
            "--model_name_or_path",
            p["model"],
            "--teacher_model_name_or_path",
            p["model"],
            "--train_file",
            p["prompts_good"],
            *quiet,
        ],
        "evaluate": [
            "--model_name_or_path",
            p["model"],
            "--tasks",
            "mmlu",
            "--mmlu_data_dir",
            p["mmlu"],
            "--output_dir",
            out,
        ],
        "convert": ["--gpt2", p["model"], "--output_dir", out],
        "quantize": ["--model_name_or_path", p["model"], "--method", "int8_weight_only", "--output_dir", out],
        "export": ["--model_name_or_path", p["model"], "--format", "executorch", "--output_dir", out],
        "prune": [
            "--config",
            "prune_tiny.yaml",
            "--model_name_or_path",
            p["model"],
            "--train_file",
            p["corpus"],
            "--data_cache_dir",
            p["cache"],
            "--output_dir",
            out,
            "--report_to",
            "none",
        ],
        "serve": [],
        "contrastive": ["--model_name_or_path", p["model"], "--train_file", p["anchors_good"], *quiet],
    }[job]


# How each case ended in this process, by its id: "clear" (the documented error, nothing written), "silent" (no
# error), "unclear" (an error that does not say it) or "data lost" (the job wrote a model anyway). The README's
# counts are checked against these verdicts, not written by hand.
VERDICTS: dict[str, str] = {}
CASE_IDS = [f"{c.job}: {c.input}" for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_input_gets_a_clear_error(case, paths, tiny_tokenizer, tmp_path, caplog):
    key, says = f"{case.job}: {case.input}", case.says.format(**paths)
    VERDICTS[key] = "unclear"  # until the documented error is seen: an unexpected exception leaves it so
    if case.job == "model":
        with pytest.raises(ValueError) as error:
            VERDICTS[key] = "silent"
            case.args(make_model(tiny_tokenizer).eval())
    else:
        args = base_args(case.job, paths, str(tmp_path / "out"))
        if "--config" in case.args:  # the case's config replaces the job's own
            at = args.index("--config")
            del args[at : at + 2]
        args += [a.format(**paths) for a in case.args]
        main = importlib.import_module(JOBS[case.job].module).main
        if case.warns:
            with caplog.at_level(logging.WARNING):
                VERDICTS[key] = "silent"
                main(args)
            VERDICTS[key] = "clear" if says in caplog.text else "silent"
            assert says in caplog.text
            return
        with pytest.raises(ValueError) as error:
            VERDICTS[key] = "silent"
            main(args)
    out = tmp_path / "out"
    data_lost = (out / "model.safetensors").exists()
    assert not (out.is_dir() and not any(out.iterdir())), "the failed job left an empty output folder"
    VERDICTS[key] = "unclear" if says not in str(error.value) else "data lost" if data_lost else "clear"
    assert says in str(error.value), f"expected {says!r} in:\n{error.value}"
    assert not data_lost  # failed before any training


# -------------------------------------------------------------------------------------------------- the documents


def markdown_table() -> str:
    """docs/reliability.md's table of the cases."""
    rows = ["| # | Group | Job | Bad input | The error says |", "|---|---|---|---|---|"]
    for i, case in enumerate(CASES, start=1):
        says = re.sub(r"\{(\w+)\}", r"<\1>", case.says) + (" (warning)" if case.warns else "")
        code = f"`` {says} ``" if "`" in says else f"`{says}`"
        rows.append(f"| {i} | {case.group} | {case.job} | {case.input} | {code} |")
    return "\n".join(rows)


def test_docs_reliability_lists_every_case():
    text = (REPO_ROOT / "docs" / "reliability.md").read_text()
    table = text.split("<!-- bad inputs: generated by `python -m tests.test_bad_inputs` -->\n", 1)[1].split("\n\n", 1)[
        0
    ]
    assert table == markdown_table(), "docs/reliability.md is out of date: paste in `python -m tests.test_bad_inputs`"


def readme_row(tried: str, handled: int, total: int) -> str:
    """The README's reliability row: how many of `total` cases this run handled as documented."""
    return f"| {tried} | {total} | {handled} ({handled / total:.0%}) | {total - handled} |"


def test_readme_counts_are_this_runs_verdicts():  # keep last in the module: it reads the verdicts of the cases above
    if set(VERDICTS) != set(CASE_IDS):
        pytest.skip("the README's counts are checked when every case ran in this process (the whole module)")
    verdicts = [VERDICTS[key] for key in CASE_IDS]
    row = readme_row("Bad inputs ([table](docs/reliability.md))", verdicts.count("clear"), len(verdicts))
    not_clear = {key: verdict for key, verdict in VERDICTS.items() if verdict != "clear"}
    assert row in (REPO_ROOT / "README.md").read_text(), f"README.md's row should read:\n{row}\n{not_clear}"


if __name__ == "__main__":
    print(markdown_table())
