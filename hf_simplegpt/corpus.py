"""The pretraining corpus pipeline: load (Hub | local files | built-in corpus) -> clean -> dedup -> split ->
tokenize -> pack, and the tokenizer trained on it.

`CorpusArguments` adds cleaning and de-duplication flags to the data flags every job takes (`data.DataArguments`).
Every step on a map-style dataset goes through `datasets.map` / `select` with deterministic fingerprints, so a second
run with the same inputs reuses the Arrow cache files instead of recomputing (the de-duplication decision is cached
as a small JSON file next to them). Streaming (`--streaming`) corpora are cleaned lazily, document by document.

The built-in corpus is the Python reference documentation shipped inside every CPython installation
(`pydoc_data.topics`): about 460k characters of English prose and code in ~200 sections, available with no network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from itertools import chain
from typing import Any

import datasets
import numpy as np
from datasets import Dataset, IterableDataset

from .data import DataArguments, check_rows, load_files, load_sources, split_heldout
from .hub import is_local_path

logger = logging.getLogger(__name__)

_NORMALIZATION_FORMS = ("NFC", "NFKC", "NFD", "NFKD", "none")
_CACHE_VERSION = "1"  # bump when a cached transform changes meaning
# datasketch >= 2 needs the permutation scheme to rebuild a MinHash from stored hash values.
_MINHASH_SCHEME = "affine32"


@dataclass
class CorpusArguments(DataArguments):
    """Pretraining data: the common data flags (no source: the built-in corpus) plus cleaning and de-duplication."""

    heldout_size: float = field(
        default=0.05,
        metadata={
            "help": "Documents held out for validation when there is no --eval_file or validation split: a "
            "fraction (< 1) or a count (>= 1; with --streaming, a count of the first documents)."
        },
    )
    text_column: str = field(default="text", metadata={"help": "Column holding the documents."})
    streaming: bool = field(default=False, metadata={"help": "Stream the Hub dataset instead of downloading it."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many documents."})
    normalization: str = field(
        default="NFKC", metadata={"help": f"Unicode normalization form, one of {_NORMALIZATION_FORMS}."}
    )
    min_chars: int = field(default=20, metadata={"help": "Drop documents shorter than this (after normalization)."})
    max_chars: int | None = field(default=None, metadata={"help": "Drop documents longer than this (None: no limit)."})
    dedup: bool = field(default=True, metadata={"help": "Remove exact duplicates (hash of the normalized text)."})
    near_dedup_threshold: float | None = field(
        default=0.85,
        metadata={"help": "MinHash-LSH Jaccard threshold over word 5-grams for near-duplicate removal; None disables."},
    )
    minhash_num_perm: int = field(default=128, metadata={"help": "MinHash permutations (signature length)."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for datasets.map (default: min(4, CPUs) from 20k documents up)."}
    )
    data_cache_dir: str | None = field(
        default=None, metadata={"help": "Cache folder for built-in corpus and Arrow files (default: datasets cache)."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.normalization not in _NORMALIZATION_FORMS:
            raise ValueError(
                f"--normalization {self.normalization!r} is not a Unicode form; use one of {_NORMALIZATION_FORMS}."
            )
        if self.near_dedup_threshold is not None and not 0 < self.near_dedup_threshold <= 1:
            raise ValueError(
                f"--near_dedup_threshold must be in (0, 1] (or None to disable), got {self.near_dedup_threshold}."
            )
        if self.streaming and not self.dataset_name:
            raise ValueError("--streaming applies to Hub datasets; add --dataset_name or drop --streaming.")
        from .training import check_minimums

        check_minimums(
            self,
            {
                "max_train_samples": 1,
                "min_chars": 0,
                "max_chars": max(self.min_chars, 1),
                "minhash_num_perm": 2,
                "preprocessing_num_workers": 1,
            },
        )


@dataclass
class CorpusStats:
    """Document counts through the cleaning pipeline (reported in the logs and the model card)."""

    source: str = ""
    documents_in: int | None = None
    too_short_removed: int | None = None
    too_long_removed: int | None = None
    exact_duplicates_removed: int | None = None
    near_duplicates_removed: int | None = None
    validation_overlap_removed: int | None = None
    train_documents: int | None = None
    validation_documents: int | None = None
    train_blocks: int | None = None
    validation_blocks: int | None = None
    block_size: int | None = None

    @property
    def train_tokens(self) -> int | None:
        return None if self.train_blocks is None else self.train_blocks * self.block_size

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "train_tokens": self.train_tokens}


# A blank line followed by an underlined heading starts a new section of a pydoc topic.
_SECTION_BREAK = re.compile(r"\n\n(?=[^\n]+\n[=\-*~^]{3,}\n)")


def builtin_corpus_documents() -> list[str]:
    """The built-in offline corpus: CPython's reference documentation (`pydoc_data.topics`), one document per
    section (~200), so that the held-out validation documents are spread over many topics."""
    from pydoc_data.topics import topics

    return [section for name in sorted(topics) for section in _SECTION_BREAK.split(topics[name])]


def cache_dir(args: CorpusArguments) -> str:
    path = args.data_cache_dir or os.path.join(datasets.config.HF_DATASETS_CACHE, "hf_simplegpt")
    os.makedirs(path, exist_ok=True)
    return path


def _load_builtin(args: CorpusArguments) -> Dataset:
    """Write the built-in corpus once as JSON lines so that every later step is file-backed and cached."""
    version = f"py{sys.version_info.major}{sys.version_info.minor}"
    path = os.path.join(cache_dir(args), f"builtin_pydoc_sections-{_CACHE_VERSION}-{version}.jsonl")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in builtin_corpus_documents():
                f.write(json.dumps({"text": doc}) + "\n")
        os.replace(tmp, path)  # atomic: concurrent processes never read a half-written file
    return datasets.load_dataset("json", data_files={"train": path}, split="train")


def _select_text_column(ds: Dataset | IterableDataset, column: str, source: str):
    columns = ds.column_names
    if columns is None:  # some streaming datasets only know their columns once iterated
        columns = list(next(iter(ds)).keys())
    if column not in columns:
        raise ValueError(
            f"{source} has no column {column!r}; its columns are {columns}. Pass --text_column <one of them>."
        )
    feature = (ds.features or {}).get(column)
    if feature is not None and getattr(feature, "dtype", None) not in ("string", "large_string"):

        def problem(row):
            value = row[column]
            if not isinstance(value, (str, type(None))):
                return f"{column!r} holds {value!r:.60} ({type(value).__name__}), not text."
            return None

        check_rows(ds, [column], problem, source)
        raise ValueError(
            f"{source}: column {column!r} holds {feature}, not text; pass --text_column naming a text column."
        )
    ds = ds.select_columns([column])
    return ds.rename_column(column, "text") if column != "text" else ds


def load_raw_datasets(args: CorpusArguments) -> tuple[dict[str, Dataset | IterableDataset | None], str]:
    """Load the train (and validation, if one exists) documents as datasets with a single `text` column.

    Returns ({"train": ds, "validation": ds_or_None}, human readable source).
    """
    if args.dataset_name or args.train_file:
        train, validation, source = load_sources(args, streaming=args.streaming)
    else:
        source = "built-in corpus: Python reference documentation (pydoc_data.topics)"
        train, validation = _load_builtin(args), load_files(args.eval_file, "--eval_file") if args.eval_file else None
        args.text_column = "text"
    raw = {"train": train, "validation": validation}
    raw = {
        k: None if v is None else _select_text_column(v, args.text_column, f"{source} [{k}]") for k, v in raw.items()
    }
    if args.max_train_samples is not None:
        train = raw["train"]
        raw["train"] = (
            train.take(args.max_train_samples)
            if isinstance(train, IterableDataset)
            else train.select(range(min(args.max_train_samples, len(train))))
        )
    return raw, source


# -------------------------------------------------------------------------------------------------------------- clean


def normalize_text(text: str | None, form: str) -> str:
    """Unicode-normalize, unify line endings and strip surrounding whitespace (None -> "")."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    if form != "none":
        text = unicodedata.normalize(form, text)
    return text.strip()


def text_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def shingles(text: str, n: int = 5) -> set[bytes]:
    """Lower-cased word n-grams: the sets whose Jaccard similarity MinHash estimates."""
    words = text.lower().split()
    if len(words) <= n:
        return {" ".join(words).encode("utf-8")}
    return {" ".join(words[i : i + n]).encode("utf-8") for i in range(len(words) - n + 1)}


def minhash_signature(text: str, num_perm: int) -> np.ndarray:
    """MinHash signature of the word 5-grams, shape (num_perm,) uint32."""
    from datasketch import MinHash

    mh = MinHash(num_perm=num_perm, scheme=_MINHASH_SCHEME)
    mh.update_batch(list(shingles(text)))
    return mh.hashvalues


def _minhash(hashvalues: np.ndarray, num_perm: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, hashvalues=hashvalues, scheme=_MINHASH_SCHEME)


def _normalize_batch(batch: dict[str, list], form: str, num_perm: int | None) -> dict[str, list]:
    texts = [normalize_text(t, form) for t in batch["text"]]
    out = {"text": texts, "hash": [text_hash(t) for t in texts]}
    if num_perm:
        out["minhash"] = [minhash_signature(t, num_perm).tolist() for t in texts]
    return out


def near_duplicate_flags(signatures: Iterable[np.ndarray], threshold: float, num_perm: int) -> list[bool]:
    """True for each signature whose estimated Jaccard with an earlier kept one is >= threshold (first copy wins)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[int, MinHash] = {}
    flags = []
    for i, sig in enumerate(signatures):
        mh = _minhash(np.asarray(sig, dtype=np.uint32), num_perm)
        # LSH returns candidates; confirm with the estimated Jaccard to drop band collisions.
        dup = any(kept[j].jaccard(mh) >= threshold for j in lsh.query(mh))
        flags.append(dup)
        if not dup:
            lsh.insert(i, mh)
            kept[i] = mh
    return flags


def _num_proc(args: CorpusArguments, n_rows: int) -> int | None:
    """Processes for datasets.map: --preprocessing_num_workers when given, else min(4, CPUs) for large corpora only
    (process start-up costs more than it saves on small ones)."""
    if args.preprocessing_num_workers is not None:
        return args.preprocessing_num_workers if args.preprocessing_num_workers > 1 else None
    n = min(4, os.cpu_count() or 1)
    return n if n > 1 and n_rows >= 20_000 else None


def clean_dataset(ds: Dataset, args: CorpusArguments, stats: CorpusStats | None = None) -> Dataset:
    """Normalize, length-filter, exact- and near-dedup a map-style `text` dataset; counts go into `stats`."""
    stats = stats if stats is not None else CorpusStats()
    stats.documents_in = len(ds)
    num_perm = args.minhash_num_perm if args.near_dedup_threshold is not None else None
    ds = ds.map(
        _normalize_batch,
        batched=True,
        fn_kwargs={"form": args.normalization, "num_perm": num_perm},
        num_proc=_num_proc(args, len(ds)),
        desc="Normalizing + hashing",
    )
    lengths = np.array([len(t) for t in ds["text"]])
    too_short = lengths < max(args.min_chars, 1)
    too_long = lengths > args.max_chars if args.max_chars is not None else np.zeros_like(too_short)
    stats.too_short_removed, stats.too_long_removed = int(too_short.sum()), int((too_long & ~too_short).sum())

    decision_path = os.path.join(
        cache_dir(args),
        f"dedup-{_CACHE_VERSION}-{ds._fingerprint}-{args.min_chars}-{args.max_chars}-{args.dedup}-"
        f"{args.near_dedup_threshold}.json",
    )
    if os.path.exists(decision_path):
        with open(decision_path) as f:
            decision = json.load(f)
    else:
        candidates = np.flatnonzero(~(too_short | too_long))
        exact_removed, keep = 0, candidates.tolist()
        if args.dedup:
            seen, keep = set(), []
            hashes = ds["hash"]
            for i in candidates:
                if hashes[i] in seen:
                    exact_removed += 1
                else:
                    seen.add(hashes[i])
                    keep.append(int(i))
        near_removed = 0
        if args.near_dedup_threshold is not None and keep:
            flags = near_duplicate_flags(ds.select(keep)["minhash"], args.near_dedup_threshold, args.minhash_num_perm)
            near_removed = sum(flags)
            keep = [i for i, dup in zip(keep, flags) if not dup]
        decision = {"keep": keep, "exact": exact_removed, "near": near_removed}
        tmp = f"{decision_path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(decision, f)
        os.replace(tmp, decision_path)
    stats.exact_duplicates_removed, stats.near_duplicates_removed = decision["exact"], decision["near"]
    return ds.select(decision["keep"])


def clean_stream(ds: IterableDataset, args: CorpusArguments) -> IterableDataset:
    """Lazy version of `clean_dataset` for streaming corpora (stateful filters; counts are not known upfront)."""

    def generate(source: IterableDataset) -> Iterator[dict[str, str]]:
        seen: set[str] = set()
        lsh = None
        if args.near_dedup_threshold is not None:
            from datasketch import MinHashLSH

            lsh = MinHashLSH(threshold=args.near_dedup_threshold, num_perm=args.minhash_num_perm)
        for i, row in enumerate(source):
            text = normalize_text(row["text"], args.normalization)
            if len(text) < max(args.min_chars, 1) or (args.max_chars is not None and len(text) > args.max_chars):
                continue
            if args.dedup:
                h = text_hash(text)
                if h in seen:
                    continue
                seen.add(h)
            if lsh is not None:
                mh = _minhash(minhash_signature(text, args.minhash_num_perm), args.minhash_num_perm)
                if lsh.query(mh):
                    continue
                lsh.insert(i, mh)
            yield {"text": text}

    return IterableDataset.from_generator(generate, gen_kwargs={"source": ds})


def prepare_corpus(args: CorpusArguments, seed: int = 42) -> tuple[dict[str, Dataset | IterableDataset], CorpusStats]:
    """Load, clean and split: returns ({"train", "validation"} text datasets, stats)."""
    raw, source = load_raw_datasets(args)
    stats = CorpusStats(source=source)
    train, validation = raw["train"], raw["validation"]
    if isinstance(train, IterableDataset):
        train = clean_stream(train, args)
        if validation is None:
            if args.heldout_size < 1:
                raise ValueError(
                    "A streamed corpus has no length to take a fraction of: pass --heldout_size N (the first N "
                    "documents are held out), or a dataset with a validation split, or --eval_file."
                )
            validation = train.take(int(args.heldout_size))
            train = train.skip(int(args.heldout_size))
        else:
            validation = clean_stream(validation, args)
        logger.info("Streaming %s: cleaning and de-duplication run lazily; counts are not reported.", source)
        return {"train": train, "validation": validation}, stats

    train = clean_dataset(train, args, stats)
    if len(train) == 0:
        raise ValueError(
            f"{source}: none of its {stats.documents_in} documents survived cleaning ({stats.too_short_removed} "
            f"shorter than --min_chars {args.min_chars}, {stats.too_long_removed} longer than --max_chars, "
            f"{stats.exact_duplicates_removed} duplicates). Check the data, or lower --min_chars."
        )
    if validation is None:
        train, validation = split_heldout(train, args.heldout_size, seed)
    else:
        val_stats = CorpusStats()
        validation = clean_dataset(validation, args, val_stats)
        # Validation documents that also occur in the training data would make the validation loss optimistic.
        train_hashes = set(train["hash"])
        keep = [i for i, h in enumerate(validation["hash"]) if h not in train_hashes]
        stats.validation_overlap_removed = len(validation) - len(keep)
        validation = validation.select(keep)
    stats.train_documents, stats.validation_documents = len(train), len(validation)
    if len(validation) == 0:
        raise ValueError(f"{source}: the validation split is empty after cleaning; pass a larger --eval_file.")
    logger.info("Corpus %s", json.dumps(stats.to_dict()))
    return {"train": train.select_columns(["text"]), "validation": validation.select_columns(["text"])}, stats


# ------------------------------------------------------------------------------------------------------- tokenize+pack


def _tokenize_batch(batch: dict[str, list], tokenizer, eos_token_id: int) -> dict[str, list]:
    ids = tokenizer(batch["text"], add_special_tokens=False)["input_ids"]
    return {"input_ids": [x + [eos_token_id] for x in ids]}


def _pack_batch(batch: dict[str, list], block_size: int) -> dict[str, list]:
    """Concatenate the token lists of a batch of documents and cut them into full blocks (the remainder is dropped)."""
    flat = list(chain.from_iterable(batch["input_ids"]))
    n = len(flat) // block_size * block_size
    return {"input_ids": [flat[i : i + block_size] for i in range(0, n, block_size)]}


def tokenizer_fingerprint(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()[:16]


def tokenize_and_pack(
    ds: Dataset | IterableDataset, tokenizer, block_size: int, args: CorpusArguments, split: str = "train"
) -> Dataset | IterableDataset:
    """Documents -> token ids with EOS after each document -> blocks of `block_size` tokens.

    Returns a dataset with one column `input_ids` of shape (block_size,) per row.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "The tokenizer has no eos_token; packing needs one between documents. Set tokenizer.eos_token."
        )
    tok_kwargs = {"tokenizer": tokenizer, "eos_token_id": tokenizer.eos_token_id}
    if isinstance(ds, IterableDataset):
        ds = ds.map(_tokenize_batch, batched=True, fn_kwargs=tok_kwargs, remove_columns=["text"])
        return ds.map(_pack_batch, batched=True, fn_kwargs={"block_size": block_size})
    # Explicit fingerprints: hashing a tokenizer object is not stable across processes, its JSON is.
    key = hashlib.sha256(
        f"{_CACHE_VERSION}|{ds._fingerprint}|{tokenizer_fingerprint(tokenizer)}|{block_size}".encode()
    ).hexdigest()[:16]
    num_proc = _num_proc(args, len(ds))
    ds = ds.map(
        _tokenize_batch,
        batched=True,
        fn_kwargs=tok_kwargs,
        remove_columns=ds.column_names,
        num_proc=num_proc,
        new_fingerprint=f"tok-{key}",
        desc=f"Tokenizing {split}",
    )
    ds = ds.map(
        _pack_batch,
        batched=True,
        fn_kwargs={"block_size": block_size},
        num_proc=num_proc,
        new_fingerprint=f"pack-{key}",
        desc=f"Packing {split} into blocks of {block_size}",
    )
    if len(ds) == 0:
        raise ValueError(
            f"The {split} split has fewer tokens than one block of {block_size} (max_position_embeddings). "
            f"Add more text, or lower --max_position_embeddings."
        )
    return ds


def heldout_blocks(args: CorpusArguments, tokenizer, block_size: int, seed: int = 42, max_blocks: int | None = None):
    """Token blocks (a LongTensor of shape (blocks, block_size)) of held-out text to measure a model on: the
    documents of `--eval_file` as given, else those that a pretraining run with the same data flags and seed held out
    (cleaned, de-duplicated and split as `prepare_corpus` does), packed as pretraining packs them; the first
    `max_blocks` of them when given."""
    if args.eval_file:
        heldout = _select_text_column(load_files(args.eval_file, "--eval_file"), args.text_column, args.eval_file)
    else:
        heldout = prepare_corpus(args, seed)[0]["validation"]
    blocks = tokenize_and_pack(heldout, tokenizer, block_size, args, split="held-out")
    if max_blocks is not None:
        blocks = blocks.select(range(min(max_blocks, len(blocks))))
    return blocks_tensor(blocks)


def blocks_tensor(dataset: Dataset, count: int | None = None, seed: int | None = None):
    """(blocks, block_size) token ids (a LongTensor) of a packed dataset: all of it, or `count` blocks sampled with
    `seed`."""
    import torch

    if count is not None and count < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(count))
    return torch.tensor(dataset["input_ids"], dtype=torch.long)


# ---------------------------------------------------------------------------------------------------------- tokenizer


def load_or_train_tokenizer(
    name_or_path: str | None,
    train: Dataset | IterableDataset,
    vocab_size: int,
    model_max_length: int,
    args: CorpusArguments,
    max_documents: int = 200_000,
):
    """Load `name_or_path`, or train a byte-level BPE of `vocab_size` on (at most `max_documents` of) `train`.

    A trained tokenizer is cached by the corpus fingerprint, so reruns and the other data-parallel processes
    (which wait for the main process) load the very same tokenizer instead of training their own.
    """
    from transformers import AutoTokenizer

    from .tokenization import check_tokenizer_files, train_tokenizer

    if name_or_path:
        if is_local_path(name_or_path) and not os.path.exists(name_or_path):
            raise ValueError(
                f"--tokenizer_name {name_or_path!r}: no such folder. Pass a saved tokenizer folder or a Hub id."
            )
        if os.path.isdir(name_or_path):
            check_tokenizer_files(name_or_path, "--tokenizer_name")
        return AutoTokenizer.from_pretrained(name_or_path, model_max_length=model_max_length)
    if isinstance(train, IterableDataset):
        texts = (row["text"] for row in train.take(max_documents))
        path = None  # a stream has no fingerprint to cache by
    else:
        texts = (row["text"] for row in train.select(range(min(max_documents, len(train)))))
        key = f"{_CACHE_VERSION}-{train._fingerprint}-{vocab_size}-{model_max_length}-{max_documents}"
        path = os.path.join(cache_dir(args), "tokenizers", hashlib.sha256(key.encode()).hexdigest()[:16])
        if os.path.isdir(path):
            return AutoTokenizer.from_pretrained(path)
    tokenizer = train_tokenizer(texts, vocab_size=vocab_size, model_max_length=model_max_length)
    if path is not None:
        tmp = f"{path}.{os.getpid()}.tmp"
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, path)  # atomic, so a concurrent reader never sees half a tokenizer
        except OSError:  # another process saved it first
            shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer
