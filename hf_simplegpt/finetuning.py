"""What supervised fine-tuning uses: chat data formats, loss masks, prompts for samples. The recipe is
`hf_simplegpt/recipes/sft.py`; its engine is TRL's `SFTTrainer`.

Rows come in four formats (conversational `messages`, ShareGPT `conversations`, `prompt`/`completion`, or
`instruction`/`response`) and are brought to one of the two shapes TRL trainers take (`messages`, or `prompt` +
`completion`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from datasets import Dataset
from trl.chat_template_utils import has_generation_markers

from .data import check_rows, message_problem, text_field_problem, text_format

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
        "Rename the columns to one of these (plain 'text' corpora belong to hf-simplegpt pretrain)."
    )


def _sharegpt_problem(turns: Any) -> str | None:
    if not isinstance(turns, list) or not turns:
        return f"'conversations' is {turns!r:.60}, not a non-empty list of turns."
    for turn in turns:
        if not (isinstance(turn, dict) and turn.get("from") in _SHAREGPT_ROLES and isinstance(turn.get("value"), str)):
            roles = sorted(_SHAREGPT_ROLES)
            return f"'conversations' holds {turn!r:.80}: a turn needs 'from' (one of {roles}) and a string 'value'."
    return None


def check_sft_dataset(dataset: Dataset, name: str = "dataset") -> str:
    """Check every row of an SFT dataset in its format (see `detect_sft_format`); returns the format.

    Raises ValueError naming the first bad row: a conversation that is empty, lacks a role or string content, or has
    no assistant message; a prompt/completion that is not a string or conversation (or differs in shape from the
    first row's); an instruction or response that is not a non-empty string.
    """
    fmt = detect_sft_format(dataset.column_names)
    if len(dataset) == 0:
        raise ValueError(f"The {name} is empty.")
    if fmt == CONVERSATIONAL:
        columns, problem = ["messages"], lambda row: message_problem(row["messages"], "messages", need_assistant=True)
    elif fmt == SHAREGPT:
        columns, problem = ["conversations"], lambda row: _sharegpt_problem(row["conversations"])
    elif fmt == PROMPT_COMPLETION:
        shape = text_format(dataset[0]["prompt"])
        columns = ["prompt", "completion"]

        def problem(row):
            return text_field_problem(row["prompt"], "prompt", shape, allow_empty=True) or text_field_problem(
                row["completion"], "completion", shape
            )
    else:
        response = next(f for f in RESPONSE_FIELDS if f in dataset.column_names)
        columns = ["instruction", response] + (["input"] if "input" in dataset.column_names else [])

        def problem(row):
            bad_input = not isinstance(row.get("input"), (str, type(None)))
            return (
                text_field_problem(row["instruction"], "instruction", "plain")
                or text_field_problem(row[response], response, "plain")
                or ("'input' is not a string." if bad_input else None)
            )

    check_rows(dataset, columns, problem, name)
    return fmt


def _sharegpt_to_messages(example: dict) -> dict:
    messages = []
    for turn in example["conversations"]:
        role = _SHAREGPT_ROLES.get(turn.get("from"))
        if role is None:
            raise ValueError(
                f"ShareGPT turn has 'from'={turn.get('from')!r}; expected one of {sorted(_SHAREGPT_ROLES)}."
            )
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
    by the chat template exactly as conversations are at inference. Other columns are dropped. The rows must pass
    `check_sft_dataset` (`data.load_data(..., check=check_sft_dataset)` runs it on the files, before the split).

    Returns:
        `(dataset, format)`: the converted dataset and the format detected in the input.
    """
    fmt = detect_sft_format(dataset.column_names)
    if len(dataset) == 0:
        raise ValueError("The dataset is empty.")
    if fmt == CONVERSATIONAL:
        keep = ["messages"]
    elif fmt == SHAREGPT:
        dataset = dataset.map(_sharegpt_to_messages)
        keep = ["messages"]
    elif fmt == INSTRUCTION:
        response_field = next(f for f in RESPONSE_FIELDS if f in dataset.column_names)
        dataset = dataset.map(_instruction_to_messages, fn_kwargs={"response_field": response_field})
        keep = ["messages"]
    else:
        keep = ["prompt", "completion"]
    return dataset.select_columns(keep), fmt


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
