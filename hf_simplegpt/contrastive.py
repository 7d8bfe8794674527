"""Contrastive learning: a SimpleGPT as a sentence encoder, usable from sentence-transformers.

    encoder = build_encoder("outputs/pretrain-default", pooling="mean", attention="causal")
    pairs = load_pairs(data_args, seed=42)                   # (train, held-out) rows of anchor, positive[, negative]
    metrics = retrieval_metrics(encoder, heldout_rows)         # recall@1, recall@10, mrr@10 (InformationRetrievalEvaluator)

The encoder is an ordinary `SentenceTransformer`: sentence-transformers' `Transformer` module holding the bare
SimpleGPTModel, then `Pooling` and `Normalize`. Training (`hf-simplegpt contrastive`) is sentence-transformers'
`SentenceTransformerTrainer` with `MultipleNegativesRankingLoss`: every other positive in the batch is a negative.

- Attention: "bidirectional" sets `config.is_causal = False`, the switch `SimpleGPTForMaskedLM` uses (transformers'
  `create_causal_mask` then builds a padding-only mask); "causal" keeps the language model's attention. The saved
  config.json records it, so a loaded encoder attends as it was trained.
- Pooling: "mean" averages the last hidden states of the real tokens; "last-token" appends the EOS token to every
  text (the tokenizer's post-processor, saved in tokenizer.json) and takes its hidden state, which under causal
  attention is the only position that has seen the whole text (E5-Mistral, GTE-Qwen).

Pair data comes from jsonl/csv/Hub datasets with `anchor`, `positive` and optionally `negative` columns, or from
`make_text_pairs` (consecutive lines or sentences of a passage) and `make_mmlu_pairs` (question -> correct answer).
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re

import numpy as np

from .data import DataArguments, check_rows, load_data, text_field_problem

logger = logging.getLogger(__name__)

POOLING = {"mean": "mean", "last-token": "lasttoken"}  # our flag value -> sentence-transformers' pooling mode
ATTENTION = ("bidirectional", "causal")
PAIR_COLUMNS = ("anchor", "positive", "negative")


def is_encoder_folder(path: str | os.PathLike) -> bool:
    """True for a sentence-transformers folder (it has modules.json), such as `hf-simplegpt contrastive` writes."""
    return os.path.isfile(os.path.join(path, "modules.json"))


def check_choices(pooling: str, attention: str) -> None:
    if pooling not in POOLING:
        raise ValueError(f"--pooling {pooling!r}: choose one of {', '.join(POOLING)}.")
    if attention not in ATTENTION:
        raise ValueError(f"--attention {attention!r}: choose one of {', '.join(ATTENTION)}.")


def build_encoder(
    model_name_or_path: str,
    pooling: str = "mean",
    attention: str = "causal",
    from_scratch: bool = False,
    max_seq_length: int | None = None,
    device: str | None = None,
):
    """A `SentenceTransformer` (Transformer -> Pooling -> Normalize) around the SimpleGPT at `model_name_or_path`.

    `from_scratch` keeps the folder's shape and tokenizer but starts from fresh random weights (seed them first).
    `max_seq_length` defaults to the model's context.
    """
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoModel

    import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)

    check_choices(pooling, attention)
    transformer = Transformer(model_name_or_path, config_kwargs={"is_causal": attention == "causal"})
    config = transformer.model.config
    if from_scratch:
        transformer.model = AutoModel.from_config(config)
    tokenizer = transformer.tokenizer
    if pooling == "last-token":
        if tokenizer.eos_token is None:
            raise ValueError(
                f"--pooling last-token appends the EOS token, and the tokenizer of {model_name_or_path} "
                "has none. Use --pooling mean, or a tokenizer with an eos_token."
            )
        tokenizer.add_eos_token = True  # rewrites the post-processor: every text ends in EOS, kept by truncation
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    transformer.max_seq_length = min(max_seq_length or config.max_position_embeddings, config.max_position_embeddings)
    modules = [transformer, Pooling(config.hidden_size, POOLING[pooling]), Normalize()]
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return SentenceTransformer(modules=modules, device=device, similarity_fn_name="cosine")


def load_encoder(path: str, device: str | None = None):
    """The encoder of `path`: a sentence-transformers folder as saved, or a plain SimpleGPT folder mean-pooled with its
    own attention (the baseline before any contrastive step)."""
    from sentence_transformers import SentenceTransformer

    import hf_simplegpt  # noqa: F401

    if is_encoder_folder(path):
        return SentenceTransformer(path, device=device, trust_remote_code=True)
    import json

    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        causal = json.load(f).get("is_causal", True)
    return build_encoder(path, "mean", "causal" if causal else "bidirectional", device=device)


# ------------------------------------------------------------------------------------------------------- pair data


def _key(text: str) -> str:
    return " ".join(text.split())


def check_pairs(dataset, name: str = "pair data") -> list[str]:
    """Check every row of `dataset` is a usable pair; returns the pair columns present (anchor, positive[, negative]).

    Raises ValueError naming the first row with an empty or non-string text, an anchor equal to its positive, or a
    pair (anchor, positive) that an earlier row already holds: in-batch negatives would score the copy as a negative.
    """
    columns = [c for c in PAIR_COLUMNS if c in dataset.column_names]
    missing = [c for c in ("anchor", "positive") if c not in columns]
    if missing:
        raise ValueError(
            f"The {name} lacks the column(s) {missing}; it has {list(dataset.column_names)}. Contrastive "
            "training needs `anchor` and `positive` texts (and optionally a hard `negative`) in every row; "
            "`hf-simplegpt make-pairs` writes such a jsonl from a text file or an MMLU folder."
        )
    seen: dict[tuple[str, str], int] = {}
    row_number = [0]

    def problem(row):
        row_number[0] += 1
        for column in columns:
            bad = text_field_problem(row[column], column, "plain")
            if bad:
                return bad
        pair = (_key(row["anchor"]), _key(row["positive"]))
        if pair[0] == pair[1]:
            return "'anchor' and 'positive' are the same text: nothing to learn from it. Drop the row."
        if pair in seen:
            return (
                f"it repeats the pair of row {seen[pair]} (same anchor and positive): a copy in the same batch "
                "would be scored as a negative of its own anchor. Remove duplicate pairs."
            )
        seen[pair] = row_number[0]
        return None

    check_rows(dataset, columns, problem, name)
    return columns


def load_pairs(data_args: DataArguments, seed: int):
    """(train, held-out) pair datasets from `--train_file`/`--dataset_name` (`data.load_data`), every row checked, only
    the pair columns kept (in the order anchor, positive[, negative], the order the loss reads them in)."""
    train, heldout = load_data(data_args, seed, check=check_pairs)
    columns = [c for c in PAIR_COLUMNS if c in train.column_names]
    if "negative" in columns and "negative" not in heldout.column_names:
        raise ValueError(
            "The training pairs have a 'negative' column and the held-out pairs have none; give both the same columns."
        )
    return train.select_columns(columns), heldout.select_columns(columns)


# A sentence ends at . ! ? (optionally followed by closing quotes/brackets) before whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")


def passage_units(passage: str, unit: str, min_words: int) -> list[str]:
    """The lines (unit "line") or sentences (unit "sentence") of one passage with at least `min_words` words.
    Short units (a speaker's name, a heading) carry no meaning of their own and are dropped."""
    if unit == "line":
        pieces = passage.splitlines()
    else:
        pieces = _SENTENCE_END.split(" ".join(passage.split()))
    return [p.strip() for p in pieces if len(p.split()) >= min_words]


def make_text_pairs(text: str, unit: str = "line", min_words: int = 3) -> list[dict]:
    """(anchor, positive) pairs of consecutive units within each blank-line separated passage of `text`: neighbours
    share a speaker, a topic, a thought, which is the similarity an encoder should learn. Pairs never cross passages;
    repeated pairs are kept once."""
    if unit not in ("line", "sentence"):
        raise ValueError(f"--unit {unit!r}: choose line or sentence.")
    pairs, seen = [], set()
    for passage in re.split(r"\n\s*\n", text):
        units = passage_units(passage, unit, min_words)
        for anchor, positive in zip(units, units[1:]):
            key = (_key(anchor), _key(positive))
            if key[0] != key[1] and key not in seen:
                seen.add(key)
                pairs.append({"anchor": anchor, "positive": positive})
    return pairs


def make_mmlu_pairs(folder: str, split: str = "test", min_words: int = 3) -> list[dict]:
    """(question, correct answer) pairs from an MMLU folder (`split`/<subject>_<split>.csv, Hendrycks' layout, with or
    without a header row, answers as letters or 0-3). Answers shorter than `min_words` words ("4", "True, False") are
    skipped: they answer many questions alike, so they could not single one out."""
    files = sorted(glob.glob(os.path.join(folder, split, f"*_{split}.csv")))
    if not files:
        raise ValueError(
            f"--mmlu_dir {folder}: no {split}/*_{split}.csv files. Pass a folder with MMLU's {split}/ "
            "CSVs (question, 4 choices, answer)."
        )
    pairs, seen = [], set()
    for path in files:
        with open(path, newline="", encoding="utf-8") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if row == ["question", "choice0", "choice1", "choice2", "choice3", "answer"]:
                    continue
                if len(row) != 6:
                    raise ValueError(f"{path} line {line}: {len(row)} fields, expected question, 4 choices, answer.")
                answer = row[5].strip()
                if answer not in ("A", "B", "C", "D", "0", "1", "2", "3"):
                    raise ValueError(f"{path} line {line}: answer {answer!r} is not one of A-D or 0-3.")
                index = "ABCD".index(answer) if answer.isalpha() else int(answer)
                question, positive = row[0].strip(), row[1 + index].strip()
                key = (_key(question), _key(positive))
                if question and len(positive.split()) >= min_words and key[0] != key[1] and key not in seen:
                    seen.add(key)
                    pairs.append({"anchor": question, "positive": positive})
    return pairs


# ---------------------------------------------------------------------------------------------------------- retrieval

RETRIEVAL_METRICS = {"recall@1": "recall@1", "recall@10": "recall@10", "mrr@10": "mrr@10", "ndcg@10": "ndcg@10"}


def retrieval_evaluator(rows: list[dict], name: str = "heldout", batch_size: int = 32):
    """sentence-transformers' `InformationRetrievalEvaluator` over held-out pairs: every distinct anchor is a query,
    every distinct positive (and negative, as a distractor) a document, and a query's relevant documents are its
    positives. Retrieval ranks the whole corpus, so the task gets harder as the held-out set grows."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    queries, corpus, relevant = {}, {}, {}
    for row in rows:
        qid = queries.setdefault(_key(row["anchor"]), f"q{len(queries)}")
        for column in ("positive", "negative"):
            if row.get(column):
                corpus.setdefault(_key(row[column]), f"d{len(corpus)}")
        relevant.setdefault(qid, set()).add(corpus[_key(row["positive"])])
    return InformationRetrievalEvaluator(
        queries={qid: text for text, qid in queries.items()},
        corpus={cid: text for text, cid in corpus.items()},
        relevant_docs=relevant,
        mrr_at_k=[10],
        ndcg_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[1, 10],
        map_at_k=[10],
        batch_size=batch_size,
        name=name,
        write_csv=False,
    )


def summarize(metrics: dict, evaluator) -> dict:
    """recall@1, recall@10, mrr@10, ndcg@10 (and the numbers of queries and documents) out of an evaluator's dict."""
    found = {}
    for ours, theirs in RETRIEVAL_METRICS.items():
        key = next(k for k in metrics if k.endswith("_" + theirs))
        found[ours] = float(metrics[key])
    return {**found, "queries": len(evaluator.queries), "documents": len(evaluator.corpus)}


def retrieval_metrics(encoder, rows: list[dict], batch_size: int = 32) -> dict:
    """recall@1, recall@10, mrr@10 and ndcg@10 of `encoder` retrieving each held-out anchor's positive."""
    evaluator = retrieval_evaluator(rows, batch_size=batch_size)
    return summarize(evaluator(encoder), evaluator)


def encoder_scores(encoder, evaluator) -> np.ndarray:
    """(queries x corpus) similarities of a `SentenceTransformer`, encoded and scored as the evaluator does it."""
    queries = evaluator.embed_inputs(encoder, evaluator.queries, encode_fn_name="query")
    corpus = evaluator.embed_inputs(encoder, evaluator.corpus, encode_fn_name="document")
    return encoder.similarity(queries, corpus).float().cpu().numpy()


def tfidf_scores(evaluator, fit_texts: list[str] | None = None) -> np.ndarray:
    """(queries x corpus) cosine similarities of scikit-learn's TF-IDF (word unigrams and bigrams, sublinear tf), the
    lexical baseline; `fit_texts` (default: the corpus) sets the idf."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(fit_texts or evaluator.corpus)
    return (vectorizer.transform(evaluator.queries) @ vectorizer.transform(evaluator.corpus).T).toarray()


def scored_retrieval(scores: np.ndarray, evaluator, top: int = 100) -> tuple[dict, np.ndarray]:
    """The metrics of a (queries x corpus) score matrix, by the evaluator's own metric code, and each query's
    recall@10 under the same ranking (score descending, ties by corpus id, as the evaluator breaks them): their mean
    is the metrics' recall@10, and two rankers' arrays pair up query by query."""
    results = [
        sorted(
            ({"corpus_id": cid, "score": float(score)} for cid, score in zip(evaluator.corpus_ids, row)),
            key=lambda hit: (-hit["score"], hit["corpus_id"]),
        )[:top]
        for row in scores
    ]
    computed = evaluator.compute_metrics(results)
    metrics = {
        f"scores_{name.replace('@k', '@' + str(k))}": v for name, values in computed.items() for k, v in values.items()
    }
    relevant = [evaluator.relevant_docs[qid] for qid in evaluator.queries_ids]
    recalls = [len({hit["corpus_id"] for hit in hits[:10]} & docs) / len(docs) for hits, docs in zip(results, relevant)]
    return summarize(metrics, evaluator), np.array(recalls)
