"""Supervised fine-tuning pieces shared by the SFT and alignment recipes.

Three jobs live here, each configuring a real engine rather than replacing it:

- chat data: load a local jsonl/json/parquet file or a Hub dataset, recognise its format (conversational
  `messages`, ShareGPT `conversations`, `prompt`/`completion`, or `instruction`/`response` fields) and bring it to
  one of the two shapes TRL trainers take (`messages`, or `prompt` + `completion`);
- LoRA through PEFT: list the linear layers a model has, build a `LoraConfig` whose target modules are checked
  against them (the default targets every attention and MLP projection), and the bitsandbytes config for QLoRA;
- merging a trained adapter into its base model so the result loads with `AutoModelForCausalLM` alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset, load_dataset
from trl.chat_template_utils import has_generation_markers

# Dataset formats, as returned by `detect_sft_format`.
CONVERSATIONAL = "conversational"  # `messages`: [{"role", "content"}, ...]
SHAREGPT = "sharegpt"  # `conversations`: [{"from", "value"}, ...]
PROMPT_COMPLETION = "prompt_completion"  # `prompt` + `completion` (strings, or message lists)
INSTRUCTION = "instruction"  # `instruction` (+ optional `input`) + `response` or `output`

RESPONSE_FIELDS = ("response", "output")
EXPECTED_FIELDS = (
    "'messages' (a list of {role, content} dicts), 'conversations' (ShareGPT {from, value} turns), "
    "'prompt' + 'completion', or 'instruction' (+ optional 'input') + 'response' or 'output'"
)
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


def load_dataset_source(
    train_file: str | None = None,
    dataset_name: str | None = None,
    dataset_config: str | None = None,
    split: str = "train",
) -> Dataset:
    """Load a dataset from a local file (`.jsonl`, `.json`, `.parquet`, `.csv`) or from the Hub by name.

    Exactly one of `train_file` and `dataset_name` must be given.
    """
    if (train_file is None) == (dataset_name is None):
        raise ValueError("Give exactly one data source: --train_file PATH (jsonl/json/parquet/csv) or --dataset_name.")
    if dataset_name is not None:
        return load_dataset(dataset_name, dataset_config, split=split)
    path = Path(train_file)
    if not path.is_file():
        raise ValueError(f"--train_file {train_file} does not exist or is not a file.")
    builder = _LOCAL_FORMATS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(
            f"--train_file {train_file} has suffix {path.suffix!r}; expected one of {sorted(_LOCAL_FORMATS)}."
        )
    return load_dataset(builder, data_files=str(path), split="train")


def detect_sft_format(column_names: Sequence[str]) -> str:
    """Name the SFT format a dataset's columns follow: one of the module's format constants.

    Raises `ValueError` listing the fields found and the ones expected when no format matches.
    """
    columns = set(column_names)
    if "messages" in columns:
        return CONVERSATIONAL
    if "conversations" in columns:
        return SHAREGPT
    if {"prompt", "completion"} <= columns:
        return PROMPT_COMPLETION
    if "instruction" in columns and columns & set(RESPONSE_FIELDS):
        return INSTRUCTION
    raise ValueError(
        f"The dataset has fields {sorted(columns)}, which match no supported SFT format. Expected {EXPECTED_FIELDS}. "
        "Rename the columns to one of these (plain 'text' corpora belong to recipes/pretrain.py)."
    )


def _check_messages(messages: Any, field: str) -> None:
    if not (isinstance(messages, list) and messages and all(isinstance(m, dict) for m in messages)):
        raise ValueError(f"'{field}' must hold a non-empty list of message dicts, got {type(messages).__name__}.")
    missing = [m for m in messages if not {"role", "content"} <= m.keys()]
    if missing:
        raise ValueError(f"Every message in '{field}' needs 'role' and 'content' keys; found {sorted(missing[0])}.")


def _sharegpt_to_messages(example: dict) -> dict:
    messages = []
    for turn in example["conversations"]:
        role = _SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise ValueError(f"ShareGPT turn has 'from'={turn.get('from')!r}; expected one of {sorted(_SHAREGPT_ROLES)}.")
        messages.append({"role": role, "content": turn["value"]})
    return {"messages": messages}


def _instruction_to_messages(example: dict, response_field: str) -> dict:
    # The optional Alpaca-style `input` is context for the instruction, so it joins the user turn.
    user = example["instruction"]
    if example.get("input"):
        user = f"{user}\n\n{example['input']}"
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": example[response_field]}]}


def to_sft_dataset(dataset: Dataset) -> tuple[Dataset, str]:
    """Bring `dataset` to a shape TRL's trainers read: a `messages` column, or `prompt` + `completion` columns.

    ShareGPT and instruction/response rows become `messages` (a user then an assistant turn), so they are rendered
    by the chat template exactly as conversations are at inference. Other columns are dropped.

    Returns:
        `(dataset, format)`: the converted dataset and the format detected in the input.
    """
    fmt = detect_sft_format(dataset.column_names)
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")
    first = dataset[0]
    if fmt == CONVERSATIONAL:
        _check_messages(first["messages"], "messages")
        keep = ["messages"]
    elif fmt == SHAREGPT:
        dataset = dataset.map(_sharegpt_to_messages)
        keep = ["messages"]
    elif fmt == INSTRUCTION:
        response_field = next(f for f in RESPONSE_FIELDS if f in dataset.column_names)
        dataset = dataset.map(_instruction_to_messages, fn_kwargs={"response_field": response_field})
        keep = ["messages"]
    else:
        if isinstance(first["prompt"], list):
            _check_messages(first["prompt"], "prompt")
            _check_messages(first["completion"], "completion")
        elif not (isinstance(first["prompt"], str) and isinstance(first["completion"], str)):
            raise ValueError("'prompt' and 'completion' must both be strings or both be lists of message dicts.")
        keep = ["prompt", "completion"]
    return dataset.select_columns(keep), fmt


def is_conversational_dataset(dataset: Dataset) -> bool:
    """True when rows are rendered with the chat template (`messages`, or prompt/completion message lists)."""
    first = dataset[0]
    return "messages" in first or isinstance(first.get("prompt"), list)


def check_chat_template(tokenizer, assistant_only_loss: bool) -> None:
    """Fail early, with the fix, when conversational data cannot be rendered or masked with `tokenizer`."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "The tokenizer has no chat template, so conversational/instruction data cannot be rendered. Use a tokenizer "
            "from hf_simplegpt.tokenization.train_tokenizer (it ships one), or pass --chat_template_path FILE.jinja."
        )
    # {% generation %} marks assistant text; TRL builds the assistant-only mask from it.
    if assistant_only_loss and not has_generation_markers(tokenizer.chat_template):
        raise ValueError(
            "The tokenizer's chat template has no {% generation %} ... {% endgeneration %} markers around assistant "
            "turns, so the assistant-only loss mask cannot be built. Add the markers to the template, or train on "
            "all tokens (--train_on_all_tokens)."
        )


def loss_mask_args(dataset: Dataset, train_on_all_tokens: bool) -> dict[str, bool]:
    """The `SFTConfig` fields that put the loss on assistant/completion tokens only, or on every token.

    Conversations (`messages`) mask with the chat template's generation markers (`assistant_only_loss`);
    prompt-completion rows mask the prompt (`completion_only_loss`).
    """
    if train_on_all_tokens:
        return {"assistant_only_loss": False, "completion_only_loss": False}
    if "messages" in dataset.column_names:
        return {"assistant_only_loss": True, "completion_only_loss": False}
    return {"assistant_only_loss": False, "completion_only_loss": True}


def prompt_and_reference(example: dict) -> tuple[str | list[dict], str]:
    """Split a converted SFT row into what the model is prompted with and the reference answer.

    A conversation is cut before its last assistant turn; a prompt-completion row gives its prompt.
    """
    if "messages" in example:
        messages = example["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None:
            raise ValueError("A conversation without an assistant turn cannot be used as a sample prompt.")
        return messages[:last], messages[last]["content"]
    completion = example["completion"]
    reference = completion[-1]["content"] if isinstance(completion, list) else completion
    return example["prompt"], reference


def render_prompt(tokenizer, prompt: str | list[dict]) -> str:
    """A prompt as the trainer renders it: chat-templated up to the assistant header, or the plain text as is."""
    if isinstance(prompt, list):
        return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    return prompt


# --------------------------------------------------------------------------------------------------------------------
# LoRA / QLoRA through PEFT


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Sorted leaf names of every `nn.Linear` in `model` (e.g. `q_proj`, `lm_head`): what LoRA can target."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)})


def default_lora_targets(model: torch.nn.Module) -> list[str]:
    """Leaf names of the linear layers inside the repeated transformer blocks: every attention and MLP projection.

    A block layer is recognised by an integer in its path (`model.layers.3.self_attn.q_proj`), which leaves out heads
    such as `lm_head` or a classifier `score` whatever they are called.
    """
    names = {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(part.isdigit() for part in name.split("."))
    }
    if not names:
        raise ValueError(f"{type(model).__name__} has no linear layers inside numbered blocks to put LoRA on.")
    return sorted(names)


def resolve_lora_targets(model: torch.nn.Module, target_modules: str | Sequence[str] | None) -> list[str] | str:
    """Check LoRA target modules against the model's linear layers.

    Args:
        target_modules: `None` or `"all-linear"` for `default_lora_targets`, a list of leaf names (`["q_proj"]`), or a
            regular expression PEFT full-matches against module paths.

    Returns:
        The list of leaf names, or the regular expression, to put in `LoraConfig.target_modules`.
    """
    available = linear_layer_names(model)
    if target_modules is None or target_modules == "all-linear" or list(target_modules) == ["all-linear"]:
        return default_lora_targets(model)
    if isinstance(target_modules, str) and target_modules in available:
        # TRL's ModelConfig turns a one-item `--lora_target_modules q_proj` into the string "q_proj", which PEFT would
        # read as a regular expression matching no full module path.
        return [target_modules]
    if isinstance(target_modules, str):
        linear_paths = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
        if not any(re.fullmatch(target_modules, path) for path in linear_paths):
            raise ValueError(
                f"LoRA target pattern {target_modules!r} matches no linear layer of {type(model).__name__}. "
                f"Available linear layers: {available}."
            )
        return target_modules
    unknown = [t for t in target_modules if t not in available]
    if unknown:
        raise ValueError(
            f"LoRA target modules {unknown} are not linear layers of {type(model).__name__}. "
            f"Available linear layers: {available} (default: {default_lora_targets(model)})."
        )
    return list(target_modules)


def build_lora_config(
    model: torch.nn.Module,
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: str | Sequence[str] | None = None,
    use_dora: bool = False,
    use_rslora: bool = False,
    modules_to_save: Sequence[str] | None = None,
    task_type: str = "CAUSAL_LM",
):
    """A `peft.LoraConfig` for `model` with target modules checked by `resolve_lora_targets`.

    PEFT has no default target list for custom architectures such as SimpleGPT, so the targets are always explicit.
    """
    from peft import LoraConfig

    if r <= 0:
        raise ValueError(f"LoRA rank must be positive, got r={r}.")
    if modules_to_save:
        # Trained in full next to the adapters, e.g. embed_tokens/lm_head when the chat tokens are new to the base.
        names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
        unknown = [m for m in modules_to_save if m not in names]
        if unknown:
            raise ValueError(
                f"modules_to_save {unknown} are not modules of {type(model).__name__}; top-level choices include "
                f"{sorted(n for n, _ in model.named_children())} and {sorted(n for n, _ in model.base_model.named_children())}."
            )
    return LoraConfig(
        task_type=task_type,
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=resolve_lora_targets(model, target_modules),
        bias="none",
        use_dora=use_dora,
        use_rslora=use_rslora,
        modules_to_save=list(modules_to_save) if modules_to_save else None,
    )


def lora_config_from_model_args(model_args, model: torch.nn.Module):
    """`build_lora_config` from TRL's `ModelConfig` (`--use_peft --lora_r ... --use_dora`); `None` without `--use_peft`."""
    if not model_args.use_peft:
        return None
    return build_lora_config(
        model,
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=model_args.lora_target_modules,
        use_dora=model_args.use_dora,
        use_rslora=model_args.use_rslora,
        modules_to_save=model_args.lora_modules_to_save,
        task_type=model_args.lora_task_type,
    )


def quantization_config_from_model_args(model_args):
    """The bitsandbytes config for `--load_in_4bit` / `--load_in_8bit` (QLoRA), or `None` when neither is set.

    Raises `ValueError` before any loading when the setup cannot work: no CUDA GPU, bitsandbytes missing, or a
    quantized base without `--use_peft` (quantized weights cannot be trained directly).
    """
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return None
    flag = "--load_in_4bit" if model_args.load_in_4bit else "--load_in_8bit"
    if not torch.cuda.is_available():
        raise ValueError(
            f"{flag} (QLoRA) quantizes the base model with bitsandbytes, which needs a CUDA GPU, and none is visible "
            "on this machine. Run on a GPU, or drop the flag to train LoRA on full-precision weights."
        )
    if not model_args.use_peft:
        raise ValueError(f"{flag} freezes the base model in low precision; add --use_peft to train LoRA adapters on it.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as error:
        raise ValueError(f"{flag} needs bitsandbytes: pip install 'hf-simplegpt[qlora]'.") from error
    from trl import get_quantization_config

    return get_quantization_config(model_args)


def merge_adapter(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike, **load_kwargs):
    """Fold a LoRA/DoRA adapter into its base weights and save a standalone model (and tokenizer, if present).

    The adapter's `adapter_config.json` names the base model; the merged checkpoint in `output_dir` loads with
    `AutoModelForCausalLM.from_pretrained(output_dir)` and needs no PEFT.

    Returns:
        The merged `PreTrainedModel`.
    """
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} holds no adapter_config.json; pass the directory a LoRA run saved its adapter to.")
    # Merge in the base model's full precision: merging into 4-bit weights would round the update away.
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype=torch.float32, **load_kwargs)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(output_dir)
    if (adapter_dir / "tokenizer_config.json").is_file():
        AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(output_dir)
    return merged
