"""hf_simplegpt.corpus: the pretraining corpus pipeline (built-in corpus, cleaning, de-duplication, splitting,
tokenizer, packing, cache reuse, Hub and streaming sources); errors."""

import json

import pytest
from datasets import Dataset

from hf_simplegpt import corpus
from hf_simplegpt.corpus import (
    CorpusArguments,
    CorpusStats,
    builtin_corpus_documents,
    clean_dataset,
    load_or_train_tokenizer,
    minhash_signature,
    near_duplicate_flags,
    normalize_text,
    prepare_corpus,
    tokenize_and_pack,
)

DOCS = [
    f"Document number {i} talks about topic {i * 7 % 13} with some words, and more words to be long enough."
    for i in range(40)
]


def _args(tmp_path, **kw):
    return CorpusArguments(data_cache_dir=str(tmp_path / "cache"), **kw)


def test_invalid_corpus_options_are_rejected():
    with pytest.raises(ValueError, match="Unicode form"):
        CorpusArguments(normalization="NFX")
    with pytest.raises(ValueError, match="--streaming applies to Hub datasets"):
        CorpusArguments(streaming=True)


def test_builtin_corpus_is_offline_python_documentation():
    docs = builtin_corpus_documents()
    assert len(docs) > 150  # sections, so a 5% validation split spans many topics
    assert sum(map(len, docs)) > 300_000
    assert any("if_stmt" in d for d in docs)


# --------------------------------------------------------------------------------------------------------- cleaning


def test_normalize_text_nfkc_newlines_and_strip():
    assert normalize_text("  \ufb01ne caf\u0065\u0301\r\nok\r ", "NFKC") == "fine caf\u00e9\nok"
    assert normalize_text("\ufb01", "none") == "\ufb01"
    assert normalize_text(None, "NFC") == ""


def test_clean_dataset_counts_each_removal(tmp_path):
    near = DOCS[3].replace("more words", "more wordz")  # word 5-gram Jaccard with DOCS[3]: 0.44, kept
    docs = DOCS[:10] + [
        DOCS[0],  # exact duplicate
        "  " + DOCS[1].replace("Document", "\uff24ocument") + "\r\n",  # fullwidth D: a duplicate after NFKC + strip
        "tiny",  # shorter than min_chars
        "x" * 500,  # longer than max_chars
        DOCS[4] + " Extra.",  # near duplicate of DOCS[4] (Jaccard 0.93)
        near,
    ]
    args = _args(tmp_path, min_chars=10, max_chars=400, near_dedup_threshold=0.8)
    stats = CorpusStats()
    cleaned = clean_dataset(Dataset.from_dict({"text": docs}), args, stats)
    assert stats.documents_in == 16
    assert (stats.too_short_removed, stats.too_long_removed) == (1, 1)
    assert (stats.exact_duplicates_removed, stats.near_duplicates_removed) == (2, 1)
    assert list(cleaned["text"]) == DOCS[:10] + [near]  # first copies kept, order kept


def test_dedup_decision_is_cached(tmp_path, monkeypatch):
    ds = Dataset.from_dict({"text": DOCS + DOCS[:5]})
    args = _args(tmp_path)
    first = clean_dataset(ds, args)["text"]
    monkeypatch.setattr(corpus, "near_duplicate_flags", lambda *a: pytest.fail("dedup recomputed instead of cached"))
    stats = CorpusStats()
    assert clean_dataset(ds, args, stats)["text"] == first and stats.exact_duplicates_removed == 5


def test_near_duplicate_flags_keep_the_first_copy():
    sigs = [minhash_signature(t, 64) for t in (DOCS[0], DOCS[1], DOCS[0] + " again", DOCS[2])]
    assert near_duplicate_flags(sigs, 0.8, 64) == [False, False, True, False]


def test_prepare_corpus_holds_out_a_disjoint_validation_split(tmp_path):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(DOCS))
    args = _args(tmp_path, train_file=str(path), heldout_size=0.1)
    splits, stats = prepare_corpus(args, seed=0)
    train, val = list(splits["train"]["text"]), list(splits["validation"]["text"])
    assert (len(train), len(val)) == (36, 4) == (stats.train_documents, stats.validation_documents)
    assert not set(train) & set(val) and sorted(train + val) == sorted(DOCS)
    again, _ = prepare_corpus(args, seed=0)
    assert list(again["validation"]["text"]) == val  # the split is a function of the seed


def test_eval_file_overlap_with_train_is_removed(tmp_path):
    (tmp_path / "t.txt").write_text("\n\n".join(DOCS[:30]))
    (tmp_path / "v.txt").write_text("\n\n".join(DOCS[28:]))  # 2 of its 12 documents are training documents
    args = _args(tmp_path, train_file=str(tmp_path / "t.txt"), eval_file=str(tmp_path / "v.txt"))
    splits, stats = prepare_corpus(args)
    assert stats.validation_overlap_removed == 2 and splits["validation"]["text"] == DOCS[30:]
    assert len(splits["train"]) == 30


def test_corpus_with_one_document_cannot_be_split(tmp_path):
    (tmp_path / "t.txt").write_text(DOCS[0])
    with pytest.raises(ValueError, match="would hold out 1 of 1 rows, leaving 0 to train on.*--eval_file"):
        prepare_corpus(_args(tmp_path, train_file=str(tmp_path / "t.txt")))


# ---------------------------------------------------------------------------------------------- tokenizer + packing


def test_tokenizer_is_trained_once_then_loaded_from_cache(tmp_path):
    args = _args(tmp_path)
    ds = Dataset.from_dict({"text": DOCS})
    tok = load_or_train_tokenizer(None, ds, vocab_size=300, model_max_length=32, args=args)
    assert len(tok) <= 300 and tok.eos_token == "<|endoftext|>" and tok.model_max_length == 32
    cached = load_or_train_tokenizer(None, ds, vocab_size=300, model_max_length=32, args=args)
    assert cached.get_vocab() == tok.get_vocab()
    assert len(list((tmp_path / "cache" / "tokenizers").iterdir())) == 1


def test_vocab_smaller_than_special_tokens_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=8 is too small"):
        load_or_train_tokenizer(None, Dataset.from_dict({"text": DOCS}), 8, 32, _args(tmp_path))


def test_missing_tokenizer_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--tokenizer_name .*no such folder"):
        load_or_train_tokenizer(str(tmp_path / "tok"), Dataset.from_dict({"text": DOCS}), 300, 32, _args(tmp_path))


def _file_dataset(tmp_path, docs):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return corpus.datasets.load_dataset("json", data_files=str(path), split="train")


def test_packing_puts_eos_between_documents_in_full_blocks(tmp_path, tiny_tokenizer):
    docs = DOCS[:12]
    packed = tokenize_and_pack(_file_dataset(tmp_path, docs), tiny_tokenizer, 16, _args(tmp_path))
    blocks = packed["input_ids"]
    assert all(len(b) == 16 for b in blocks)
    stream = [
        t for d in docs for t in tiny_tokenizer(d, add_special_tokens=False).input_ids + [tiny_tokenizer.eos_token_id]
    ]
    assert [t for b in blocks for t in b] == stream[: len(blocks) * 16]  # order kept, only the tail dropped
    assert len(stream) - len(blocks) * 16 < 16
    assert sum(b.count(tiny_tokenizer.eos_token_id) for b in blocks) >= len(docs) - 1


def test_packing_is_cached_on_rerun(tmp_path, tiny_tokenizer, monkeypatch):
    ds = _file_dataset(tmp_path, DOCS)
    first = tokenize_and_pack(ds, tiny_tokenizer, 16, _args(tmp_path))
    monkeypatch.setattr(corpus, "_tokenize_batch", lambda *a, **k: pytest.fail("tokenized again instead of cached"))
    monkeypatch.setattr(corpus, "_pack_batch", lambda *a, **k: pytest.fail("packed again instead of cached"))
    again = tokenize_and_pack(ds, tiny_tokenizer, 16, _args(tmp_path))
    assert again["input_ids"] == first["input_ids"] and again.cache_files == first.cache_files


def test_multiprocess_pipeline_matches_the_single_process_one(tmp_path, tiny_tokenizer, monkeypatch):
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(DOCS + DOCS[:4]))
    results = []
    for workers in (1, 2):
        monkeypatch.setattr(corpus.datasets.config, "HF_DATASETS_CACHE", str(tmp_path / f"hf{workers}"))  # no reuse
        args = _args(tmp_path / f"w{workers}", train_file=str(path), preprocessing_num_workers=workers)
        splits, stats = prepare_corpus(args, seed=0)
        packed = tokenize_and_pack(splits["train"], tiny_tokenizer, 16, args)
        results.append((stats.exact_duplicates_removed, list(splits["validation"]["text"]), list(packed["input_ids"])))
    (dups1, val1, blocks1), (dups2, val2, blocks2) = results
    assert (dups1, val1) == (dups2, val2) and dups1 == 4
    # Each of the 2 shards drops its own partial last block: at most one block fewer, all full, same start.
    assert 0 <= len(blocks1) - len(blocks2) <= 1 and blocks1[0] == blocks2[0]
    assert all(len(b) == 16 for b in blocks2)


def test_corpus_smaller_than_one_block_is_a_clear_error(tmp_path, tiny_tokenizer):
    with pytest.raises(ValueError, match=r"fewer tokens than one block of 4096.*lower --max_position_embeddings"):
        tokenize_and_pack(_file_dataset(tmp_path, DOCS[:2]), tiny_tokenizer, 4096, _args(tmp_path))


# ------------------------------------------------------------------------------------- Hub datasets (offline stand-in)


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """`datasets.load_dataset("fake/corpus")` served from local JSON files (train + validation), streaming or not."""
    folder = tmp_path / "hub"
    folder.mkdir()
    rows = lambda docs: "".join(json.dumps({"body": d, "meta": i}) + "\n" for i, d in enumerate(docs))  # noqa: E731
    (folder / "train.jsonl").write_text(rows(DOCS[:30] + DOCS[:3]))  # 3 exact duplicates
    (folder / "validation.jsonl").write_text(rows(DOCS[30:]))
    real = corpus.datasets.load_dataset

    def load_dataset(name, config=None, streaming=False, **kw):
        if name != "fake/corpus":
            return real(name, config, streaming=streaming, **kw)
        files = {s: str(folder / f"{s}.jsonl") for s in ("train", "validation")}
        return real("json", data_files=files, streaming=streaming)

    monkeypatch.setattr(corpus.datasets, "load_dataset", load_dataset)


def test_hub_dataset_uses_its_validation_split_and_text_column(tmp_path, fake_hub):
    splits, stats = prepare_corpus(_args(tmp_path, dataset_name="fake/corpus", text_column="body"))
    assert stats.source == "Hub dataset fake/corpus" and stats.exact_duplicates_removed == 3
    assert list(splits["validation"]["text"]) == DOCS[30:] and len(splits["train"]) == 30
    with pytest.raises(ValueError, match=r"no column 'text'; its columns are \['body', 'meta'\]"):
        prepare_corpus(_args(tmp_path, dataset_name="fake/corpus"))


def test_streaming_hub_dataset_is_cleaned_lazily_and_packed(tmp_path, fake_hub, tiny_tokenizer):
    args = _args(tmp_path, dataset_name="fake/corpus", text_column="body", streaming=True)
    splits, stats = prepare_corpus(args)
    train = list(row["text"] for row in splits["train"])
    assert train == DOCS[:30]  # exact duplicates dropped on the fly, order kept
    assert stats.train_documents is None  # not countable up front
    packed = tokenize_and_pack(splits["train"], tiny_tokenizer, 16, args)
    blocks = [row["input_ids"] for row in packed]
    assert blocks and all(len(b) == 16 for b in blocks)
