"""Where every job's data comes from: the same data flags for every recipe, loaded and checked row by row.

Every recipe takes the same data flags (`DataArguments`): `--train_file` (a file, folder or glob of .txt, .json,
.jsonl, .csv or .parquet) or `--dataset_name` (a Hub dataset, or a local folder laid out like one), and the rows
held out to measure on: `--eval_file`, the Hub dataset's validation split, or `--heldout_size` rows split off.
The pretraining corpus pipeline (cleaning, de-duplication, packing, tokenizer training) is in `corpus.py`.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any

import datasets
from datasets import Dataset, IterableDataset

from .hub import is_connection_error, is_local_path

# File extension -> `datasets` packaged builder.
BUILDERS = {".txt": "text", ".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
FORMAT_NAMES = {"text": "plain text", "json": "JSON", "csv": "CSV", "parquet": "Parquet"}
HELDOUT_SPLITS = ("validation", "valid", "dev", "test")  # a Hub dataset's held-out split, in order of preference


@dataclass
class DataArguments:
    """Where a job's data comes from and which rows it holds out to measure on: the same flags for every recipe."""

    train_file: str | None = field(
        default=None,
        metadata={
            "help": "Local training data: a .txt (documents separated by blank lines), .json/.jsonl, .csv or "
            ".parquet file, a folder of them, or a glob."
        },
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "Local held-out data in the same formats; default: --heldout_size rows."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Hub dataset id (or a local folder laid out like one), instead of --train_file."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split of --dataset_name to train on."})
    dataset_test_split: str | None = field(
        default=None,
        metadata={"help": f"Held-out split of --dataset_name; default: the first of {HELDOUT_SPLITS} it has."},
    )
    heldout_size: float = field(
        default=64,
        metadata={
            "help": "Rows held out when there is no --eval_file or held-out split: a count (>= 1) or a "
            "fraction of the training rows (< 1)."
        },
    )

    def __post_init__(self):
        if self.dataset_name and self.train_file:
            raise ValueError("Pass either --dataset_name or --train_file, not both.")
        if not self.heldout_size > 0 or (self.heldout_size >= 1 and self.heldout_size != int(self.heldout_size)):
            raise ValueError(
                f"--heldout_size {self.heldout_size} must be a number of rows (1, 2, ...) or a fraction in (0, 1)."
            )


def resolve_data_files(pattern: str, flag: str) -> tuple[str, list[str]]:
    """Expand a file, folder or glob into (builder name, sorted files); raise ValueError when nothing usable matches."""
    if os.path.isdir(pattern):
        files = [os.path.join(root, f) for root, _, names in os.walk(pattern) for f in names]
        files = [f for f in files if os.path.splitext(f)[1].lower() in BUILDERS]
    else:
        files = [f for f in glob.glob(os.path.expanduser(pattern), recursive=True) if os.path.isfile(f)]
    if not files:
        raise ValueError(
            f"{flag} {pattern!r}: no such file, or no {'/'.join(BUILDERS)} file in that folder/glob. "
            f"Pass an existing file, folder or glob pattern."
        )
    extensions = {os.path.splitext(f)[1].lower() for f in files}
    unknown = extensions - set(BUILDERS)
    if unknown:
        raise ValueError(
            f"{flag} {pattern!r}: unsupported extension(s) {sorted(unknown)}; use one of {list(BUILDERS)}."
        )
    builders = {BUILDERS[e] for e in extensions}
    if len(builders) > 1:
        raise ValueError(f"{flag} {pattern!r} mixes formats {sorted(extensions)}; point it at files of one format.")
    return builders.pop(), sorted(files)


def load_files(pattern: str, flag: str = "--train_file") -> Dataset:
    """The rows of a local file, folder or glob; plain text gives one `text` row per blank-line separated paragraph.

    An empty or binary file is refused before loading; a file `datasets` cannot parse is then scanned to name the
    problem and its line (not UTF-8, malformed JSON, a field whose type changes, a CSV row of the wrong width).
    """
    builder, files = resolve_data_files(pattern, flag)
    for path in files:
        problem = quick_file_problem(path, builder)
        if problem:
            raise ValueError(f"{flag} {path} {problem}")
    # Plain text: one document per paragraph (a line is too short to be a document).
    extra = {"sample_by": "paragraph"} if builder == "text" else {}
    try:
        rows = datasets.load_dataset(builder, data_files={"train": files}, split="train", **extra)
    except Exception as err:  # datasets reports a parse error as DatasetGenerationError, far from its cause
        for path in files:
            problem = file_problem(path, builder)
            if problem:
                raise ValueError(f"{flag} {path}: {problem}") from err
        cause = err.__cause__ or err
        raise ValueError(f"{flag} {pattern}: datasets could not read it ({type(cause).__name__}: {cause}).") from err
    if len(rows) == 0:
        raise ValueError(f"{flag} {pattern} holds no rows (only blank lines?). Pass a file with data.")
    return rows


def quick_file_problem(path: str, builder: str) -> str | None:
    """What makes `path` unusable at a glance (an empty file, a binary file for a text format), else None."""
    if os.path.getsize(path) == 0:
        return "is empty. Pass a file with data."
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if builder == "parquet":
        return None if head[:4] == b"PAR1" else "is not a Parquet file (it does not start with PAR1)."
    nul = head.find(b"\0")
    if nul >= 0:
        return f"looks binary (a NUL byte at offset {nul}). Pass a UTF-8 {FORMAT_NAMES[builder]} file."
    return None


def file_problem(path: str, builder: str) -> str | None:
    """Scan a text-format data file for the first line that breaks its format; None if none does (or Parquet)."""
    if builder == "parquet":
        return None
    with open(path, "rb") as f:
        raw = f.read()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        return (
            f"line {line} is not UTF-8 (byte {raw[err.start]:#04x} at offset {err.start}). Save the file as UTF-8, "
            "e.g. iconv -f latin1 -t utf-8."
        )
    if builder == "json":
        return _json_problem(text)
    if builder == "csv":
        widths = [(n, len(row)) for n, row in enumerate(csv.reader(io.StringIO(text)), start=1) if row]
        bad = next(((n, w) for n, w in widths if w != widths[0][1]), None)
        if bad:
            line, width = bad
            return f"line {line} has {width} fields where the header has {widths[0][1]}; quote fields holding commas."
    return None


def _json_problem(text: str) -> str | None:
    """The first malformed line of a JSON-lines file (or the error of a JSON document), or a field whose type changes
    between rows (Arrow needs one type per column)."""
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            return f"line {err.lineno} is not valid JSON ({err.msg})."
        numbered = list(enumerate(rows if isinstance(rows, list) else [rows], start=1))
        where = "item"
    else:
        numbered = []
        for n, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    numbered.append((n, json.loads(line)))
                except json.JSONDecodeError as err:
                    return f"line {n} is not valid JSON ({err.msg} at column {err.colno}); write one object a line."
        where = "line"
    types: dict[str, tuple[str, int]] = {}
    for n, row in numbered:
        if not isinstance(row, dict):
            return f"{where} {n} is a JSON {type(row).__name__}, not an object with named fields."
        for key, value in row.items():
            kind = type(value).__name__
            if value is not None and types.setdefault(key, (kind, n))[0] != kind:
                first_kind, first = types[key]
                return f"{where} {n}: field {key!r} is {kind} where {where} {first} has {first_kind}; use one type."
    return None


CHAT_ROLES = ("system", "user", "assistant")


def message_problem(messages: Any, field: str, need_assistant: bool = False) -> str | None:
    """What is wrong with a chat conversation (a non-empty list of {"role", "content": str} messages), or None."""
    if not isinstance(messages, list) or not messages:
        return f"{field!r} is {messages!r:.60}, not a non-empty list of messages."
    for message in messages:
        if not (isinstance(message, dict) and all(isinstance(message.get(k), str) for k in ("role", "content"))):
            return f"{field!r} holds {message!r:.80}: every message needs a 'role' and a string 'content'."
        if message["role"] not in CHAT_ROLES:
            return f"{field!r} has a message with role {message['role']!r}; use one of {CHAT_ROLES}."
    if need_assistant and not any(m["role"] == "assistant" for m in messages):
        return f"{field!r} has no assistant message, so there is nothing to learn from it."
    return None


def text_format(value: Any) -> str | None:
    """TRL's two shapes of a text field: "plain" (a string) or "conversational" (a list of messages); else None."""
    return "plain" if isinstance(value, str) else "conversational" if isinstance(value, list) else None


def text_field_problem(value: Any, field: str, fmt: str | None = None, allow_empty: bool = False) -> str | None:
    """What is wrong with one text field of a row (a non-empty string, or a conversation), or None. `fmt` requires
    the shape of the first row, since a trainer renders every row one way."""
    kind = text_format(value)
    if kind is None:
        return f"{field!r} is {value!r:.60} ({type(value).__name__}), not a string or a list of messages."
    if fmt is not None and kind != fmt:
        return f"{field!r} is {kind} where the first row's fields are {fmt}; use one format for every row and field."
    if kind == "conversational":
        return message_problem(value, field)
    return None if allow_empty or value.strip() else f"{field!r} is an empty string."


def check_rows(ds: Dataset, columns: list[str], check, name: str, batch_size: int = 1024) -> None:
    """Raise ValueError naming the first row of `ds` (counting from 1, in file order) for which `check(row)` returns a
    problem. Every row is checked, a batch of rows at a time (Arrow -> Python), so memory stays small."""
    view = ds.select_columns(columns)
    for start in range(0, len(view), batch_size):
        batch = view[start : start + batch_size]
        for i, values in enumerate(zip(*batch.values())):
            problem = check(dict(zip(batch, values)))
            if problem:
                raise ValueError(f"Row {start + i + 1} of the {name}: {problem}")


def load_hub_dataset(args: DataArguments, streaming: bool = False) -> tuple[Dataset | IterableDataset, Any]:
    """(train split, held-out split or None) of `--dataset_name`."""
    name = args.dataset_name
    if is_local_path(name) and not os.path.isdir(os.path.expanduser(name)):
        raise ValueError(
            f"--dataset_name {name}: no such folder (and not a Hub id). Pass an existing folder or a Hub id."
        )
    try:
        loaded = datasets.load_dataset(name, args.dataset_config, streaming=streaming)
    except Exception as err:
        if not isinstance(
            err, (FileNotFoundError, datasets.exceptions.DatasetNotFoundError)
        ) and not is_connection_error(err):
            raise
        raise ValueError(
            f"Could not load --dataset_name {name!r}: {err}. Check the name/config (and network), "
            f"or pass local files with --train_file."
        ) from err
    if args.dataset_train_split not in loaded:
        raise ValueError(
            f"--dataset_name {name} has no split {args.dataset_train_split!r} (splits: {list(loaded)}); "
            "pass --dataset_train_split <one of them>."
        )
    if args.dataset_test_split is not None and args.dataset_test_split not in loaded:
        raise ValueError(
            f"--dataset_name {name} has no split {args.dataset_test_split!r} (splits: {list(loaded)}); "
            "pass --dataset_test_split <one of them>, or drop it to hold out --heldout_size rows."
        )
    test_split = args.dataset_test_split or next((s for s in HELDOUT_SPLITS if s in loaded), None)
    return loaded[args.dataset_train_split], loaded[test_split] if test_split else None


def load_sources(args: DataArguments, streaming: bool = False) -> tuple[Any, Any, str]:
    """(train, held-out or None, a description of the source) from `--dataset_name` or `--train_file`/`--eval_file`."""
    if args.dataset_name:
        train, heldout = load_hub_dataset(args, streaming)
        source = f"Hub dataset {args.dataset_name}" + (f" ({args.dataset_config})" if args.dataset_config else "")
    elif args.train_file:
        train, heldout, source = load_files(args.train_file), None, f"--train_file {args.train_file}"
    else:
        raise ValueError("No data: pass --train_file PATH (a file, folder or glob) or --dataset_name NAME.")
    if args.eval_file:
        heldout = load_files(args.eval_file, "--eval_file")
    return train, heldout, source


def split_heldout(train: Dataset, heldout_size: float, seed: int) -> tuple[Dataset, Dataset]:
    """(train, held-out): `heldout_size` rows (a count, or a fraction < 1) split off at random, seeded."""
    count = max(1, round(len(train) * heldout_size)) if heldout_size < 1 else int(heldout_size)
    if not 0 < count < len(train):
        raise ValueError(
            f"--heldout_size {heldout_size} would hold out {count} of {len(train)} rows, leaving "
            f"{len(train) - count} to train on. Lower it, add data, or pass --eval_file."
        )
    split = train.train_test_split(test_size=count, seed=seed)
    return split["train"], split["test"]


def _check_file_rows(rows: Dataset, name: str, check, pattern: str | None, flag: str) -> None:
    """`check(rows, name)`; when it finds a bad row of a local file, first look for a cause in the file itself: a JSON
    field whose type changes between lines is converted by the loader (" 4" may become 4), which misplaces the row."""
    try:
        check(rows, name)
    except ValueError as err:
        if pattern:
            builder, files = resolve_data_files(pattern, flag)
            for path in files:
                problem = file_problem(path, builder)
                if problem:
                    raise ValueError(f"{flag} {path}: {problem}") from err
        raise


def load_data(args: DataArguments, seed: int, check=None) -> tuple[Dataset, Dataset]:
    """(train, held-out) rows for a fine-tuning or alignment job; see `load_sources` and `split_heldout`.

    `check(dataset, name)` validates every row (raising ValueError naming the first bad one) before the held-out rows
    are split off, so that row numbers are those of the file.
    """
    train, heldout, source = load_sources(args)
    if len(train) == 0:
        raise ValueError(f"The training data ({source}) has no rows.")
    if check is not None:
        _check_file_rows(train, f"training data ({source})", check, args.train_file, "--train_file")
        if heldout is not None:
            name = f"held-out data ({f'--eval_file {args.eval_file}' if args.eval_file else source})"
            _check_file_rows(heldout, name, check, args.eval_file, "--eval_file")
    if heldout is None:
        return split_heldout(train, args.heldout_size, seed)
    return train, heldout
