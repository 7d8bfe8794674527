"""Does contrastive training make a SimpleGPT a better retriever? Held-out pair retrieval, four ways.

1. Tiny Shakespeare's passages (blank-line separated) are split: every 10th is held out. `hf-simplegpt pretrain`
   trains a 4-layer, 128-wide SimpleGPT (2048-token BPE, context 64: the lines are short) on the other passages
   (`--pretrain-steps` of 16 blocks: 6000 is about 19 epochs).
2. `hf-simplegpt make-pairs`' rule gives (line, next line) pairs within each passage: the training pairs from the
   training passages (all 16,915, or a seeded sample of `--train-pairs`); from the held-out passages (never seen in
   any training), `--heldout-pairs` test pairs and as many other validation pairs.
   `--dataset mmlu`: `make-pairs --mmlu_dir`'s (question, correct answer) pairs of MMLU's test split, shuffled; the
   first 2 x `--heldout-pairs` are the test and validation pairs, the rest the training pairs, less any that share a
   question, an answer or a passage with a held-out pair; the model (context 128: questions are longer) is
   pretrained on the training pairs' texts only.
3. Retrieval on the test pairs (sentence-transformers' InformationRetrievalEvaluator: each anchor ranks every test
   positive; recall@1, recall@10, MRR@10) of:
   (a) the pretrained model mean-pooled, before any contrastive step (its own causal attention, and switched to
       bidirectional);
   (b) `hf-simplegpt contrastive` from (a), one epoch over the training pairs, for each pooling x attention; the
       best on the validation pairs trained for `--epochs`;
   (c) a lexical baseline: scikit-learn's TF-IDF (word 1-2 grams), idf fitted on the training pairs' texts;
   (d) `hf-simplegpt contrastive --from_scratch true`: (b)'s encoder, same pairs and steps, from random weights
       (at (b)'s learning rate and at 5x it; the better on the validation pairs is reported).
   Every choice is made on the validation pairs; the test pairs are only measured.

    python benchmarks/contrastive_compare.py                 # about 30 minutes on 2 shared CPU cores
    python benchmarks/contrastive_compare.py --publish       # update benchmarks/results/contrastive-compare-*
    python benchmarks/contrastive_compare.py --dataset mmlu  # MMLU question -> correct answer pairs instead

Writes benchmarks/out/contrastive-compare-<dataset>.json and .md (`--publish`: benchmarks/results/; a
`--batch-size` other than 64 adds `-batch<N>` to the name). On a CPU shared with other jobs, run it with
OMP_NUM_THREADS=1: torch's threads otherwise spin waiting for each other (a pretraining step of this model took
3.4 s with 2 threads and 0.44 s with 1 under a load average of 10).
"""

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
import sentence_transformers
import torch
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import record  # noqa: E402

from hf_simplegpt import contrastive
from hf_simplegpt.recipes import contrastive as contrastive_recipe
from hf_simplegpt.recipes import pretrain
from hf_simplegpt.synthetic import write_jsonl

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
RESULTS_DIR = REPO / "benchmarks" / "results"
QUIET = ["--report_to", "none", "--disable_tqdm", "true"]
COMBOS = [(p, a) for a in contrastive.ATTENTION for p in contrastive.POOLING]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("shakespeare", "mmlu"), default="shakespeare")
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "out" / "contrastive-compare"))
    parser.add_argument(
        "--context", type=int, default=None, help="the model's context in tokens (default: 64 shakespeare, 128 mmlu)"
    )
    parser.add_argument("--pretrain-steps", type=int, default=6000, help="steps of 16 blocks of --context tokens")
    parser.add_argument("--heldout-pairs", type=int, default=300, help="test pairs, and as many validation pairs")
    parser.add_argument(
        "--train-pairs", type=int, default=None, help="a seeded sample of the training pairs (default: all)"
    )
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--epochs", type=float, default=4.0, help="contrastive epochs of the final (b) and of (d)")
    parser.add_argument("--grid-epochs", type=float, default=1.0, help="contrastive epochs of each pooling x attention")
    parser.add_argument(
        "--scratch-lr-factors", type=float, nargs="+", default=[1.0, 5.0], help="(d)'s learning rates, x (b)'s"
    )
    parser.add_argument("--batch-size", type=int, default=64, help="pairs per batch: batch - 1 negatives each")
    parser.add_argument(
        "--mini-batch-size", type=int, default=None, help="CachedMultipleNegativesRankingLoss in mini-batches of this"
    )
    parser.add_argument("--reuse", action="store_true", help="reuse trained folders in --output-dir")
    parser.add_argument(
        "--publish", action="store_true", help="write benchmarks/results/contrastive-compare-<dataset>.*"
    )
    args = parser.parse_args(argv)
    args.context = args.context or {"shakespeare": 64, "mmlu": 128}[args.dataset]
    return args


def group(anchor: str) -> str:
    """An MMLU question's group: several questions share one passage ("This question refers to the following
    information." + passage + the question on its last line); a single-line question is its own group."""
    lines = anchor.strip().splitlines()
    return contrastive._key("\n".join(lines[:-1]) if len(lines) > 1 else anchor)


def split_data(
    dataset: str, out: Path, heldout_pairs: int, train_pairs: int
) -> tuple[Path, Path, list[dict], list[dict], list[dict], int]:
    """(pretraining text file, training pairs file, training pairs, validation pairs, test pairs, training pairs
    dropped for sharing a text with a held-out pair). The validation pairs choose (b)'s pooling x attention and
    (d)'s learning rate; the test pairs are only measured."""
    if dataset == "shakespeare":
        passages = re.split(r"\n\s*\n", (SHARED / "tinyshakespeare.txt").read_text(encoding="utf-8"))
        train_passages = [p for i, p in enumerate(passages) if i % 10]
        heldout_passages = [p for i, p in enumerate(passages) if not i % 10]
        train = contrastive.make_text_pairs("\n\n".join(train_passages))
        pool = contrastive.make_text_pairs("\n\n".join(heldout_passages))
        text = "\n\n".join(train_passages)
        dropped = 0
    else:
        pairs = contrastive.make_mmlu_pairs(str(SHARED / "mmlu"), "test")
        random.Random(0).shuffle(pairs)
        pool, train = pairs[: 2 * heldout_pairs], pairs[2 * heldout_pairs :]
        # No held-out question, answer or shared passage is seen in training or pretraining: MMLU repeats some
        # questions across subjects, some answers across questions, and a passage across its questions.
        seen = {contrastive._key(t) for p in pool for t in (p["anchor"], p["positive"])} | {
            group(p["anchor"]) for p in pool
        }
        kept = [
            p
            for p in train
            if not {contrastive._key(p["anchor"]), contrastive._key(p["positive"]), group(p["anchor"])} & seen
        ]
        train, dropped = kept, len(train) - len(kept)
        text = "\n\n".join(f"{p['anchor']}\n{p['positive']}" for p in train)
    test = random.Random(0).sample(pool, min(heldout_pairs, len(pool)))
    chosen = {id(p) for p in test}
    rest = [p for p in pool if id(p) not in chosen]
    validation = random.Random(2).sample(rest, min(heldout_pairs, len(rest)))
    train = random.Random(1).sample(train, min(train_pairs or len(train), len(train)))
    text_file = out / "pretrain.txt"
    text_file.write_text(text + "\n", encoding="utf-8")
    return text_file, write_jsonl(train, out / "train_pairs.jsonl"), train, validation, test, dropped


def shared_words(pairs: list[dict]) -> dict:
    """How lexical the held-out task is: the fraction of pairs whose anchor and positive share a word (scikit-learn's
    word tokens, lowercased), and a word outside its English stop words."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    words = CountVectorizer().build_analyzer()
    shared = [set(words(p["anchor"])) & set(words(p["positive"])) for p in pairs]
    return {
        "any_word": sum(map(bool, shared)) / len(pairs),
        "non_stop_word": sum(bool(s - ENGLISH_STOP_WORDS) for s in shared) / len(pairs),
    }


def paired_difference(ours: np.ndarray, theirs: np.ndarray, resamples: int = 10_000) -> dict:
    """Is one ranker's recall@10 above another's on the same queries beyond noise? The mean difference of their
    per-query recall@10, a 95% interval from a seeded paired bootstrap over the queries, the queries each ranks
    better, and the two-sided sign test's p-value on those."""
    from scipy.stats import binomtest

    difference = ours - theirs
    draws = np.random.default_rng(0).integers(0, len(difference), (resamples, len(difference)))
    low, high = np.percentile(difference[draws].mean(axis=1), [2.5, 97.5])
    better, worse = int((difference > 0).sum()), int((difference < 0).sum())
    return {
        "difference": float(difference.mean()),
        "ci95": [float(low), float(high)],
        "queries_better": better,
        "queries_worse": worse,
        "sign_test_p": float(binomtest(better, better + worse).pvalue) if better + worse else 1.0,
    }


def train_encoder(out: Path, name: str, source: Path, pairs: Path, args, epochs: float, *extra) -> dict:
    folder = out / name
    if not (args.reuse and (folder / "contrastive.json").is_file()):
        start = time.perf_counter()
        contrastive_recipe.main(
            [
                "--model_name_or_path",
                str(source),
                "--train_file",
                str(pairs),
                "--output_dir",
                str(folder),
                "--overwrite_output_dir",
                "true",
                "--heldout_size",
                "64",
                "--num_train_epochs",
                str(epochs),
                "--learning_rate",
                str(args.learning_rate),
                "--per_device_train_batch_size",
                str(args.batch_size),
                *(["--mini_batch_size", str(args.mini_batch_size)] if args.mini_batch_size else []),
                *QUIET,
                *map(str, extra),
            ]
        )
        (folder / "seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    return json.loads((folder / "contrastive.json").read_text())


def pretrain_base(out: Path, text_file: Path, args) -> Path:
    """(a): `hf-simplegpt pretrain` on the training passages (kept and reused with --reuse)."""
    torch.manual_seed(0)
    base = out / "pretrained"
    steps_file = base / "pretrain_steps.txt"  # --reuse only a base pretrained for as many steps
    done = f"{args.pretrain_steps} steps, context {args.context}"
    if not (args.reuse and steps_file.is_file() and steps_file.read_text().strip() == done):
        pretrain.main(
            [
                "--train_file",
                str(text_file),
                "--output_dir",
                str(base),
                "--overwrite_output_dir",
                "true",
                "--max_position_embeddings",
                str(args.context),
                # the batch and dropout the published base was trained with (the job's defaults until issue 20)
                "--per_device_train_batch_size",
                "16",
                "--dropout",
                "0.1",
                "--max_steps",
                str(args.pretrain_steps),
                "--eval_steps",
                str(args.pretrain_steps),
                "--save_steps",
                str(args.pretrain_steps),
                "--num_sample_generations",
                "0",
                "--data_cache_dir",
                str(out / "cache"),
                *QUIET,
            ]
        )
        steps_file.write_text(done + "\n")
    return base


def main(argv=None) -> dict:
    args = parse_args(argv)
    # Another batch size is another experiment: its own folders and results files, the default's kept.
    run = args.dataset + (f"-batch{args.batch_size}" if args.batch_size != 64 else "")
    out = Path(args.output_dir) / run
    out.mkdir(parents=True, exist_ok=True)
    text_file, pairs_file, train, validation, test, dropped = split_data(
        args.dataset, out, args.heldout_pairs, args.train_pairs
    )
    torch.manual_seed(0)

    base = pretrain_base(out, text_file, args)
    # The encoders see each text's first --context tokens (TF-IDF sees all of it).
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    over_context = sum(len(tokenizer(p["anchor"])["input_ids"]) > args.context for p in test) / len(test)

    rows, per_query = [], {}  # per_query: each test query's recall@10, by row, for the paired comparisons
    test_evaluator, validation_evaluator = map(contrastive.retrieval_evaluator, (test, validation))

    def measure(label: str, score, **facts) -> dict:
        """Test metrics, and the validation recall@10 that choices are made on; `score(evaluator)` ranks."""
        metrics, per_query[label] = contrastive.scored_retrieval(score(test_evaluator), test_evaluator)
        chosen_on = contrastive.scored_retrieval(score(validation_evaluator), validation_evaluator)[0]["recall@10"]
        rows.append({"model": label, **facts, **metrics, "validation_recall@10": chosen_on})
        print(f"{label}: recall@10 {metrics['recall@10']:.3f} (validation {chosen_on:.3f})", flush=True)
        return rows[-1]

    def encoder_ranker(encoder):
        return lambda evaluator: contrastive.encoder_scores(encoder, evaluator)

    for attention in ("causal", "bidirectional"):
        encoder = contrastive.build_encoder(str(base), "mean", attention)
        label = f"(a) pretrained, mean pooling, {attention}"
        measure(label, encoder_ranker(encoder), kind="a", pooling="mean", attention=attention)

    reports = {}

    def contrastive_row(name: str, pooling: str, attention: str, epochs: float, *extra, **facts) -> dict:
        reports[name] = report = train_encoder(
            out, name, base, pairs_file, args, epochs, "--pooling", pooling, "--attention", attention, *extra
        )
        kind = "d" if "--from_scratch" in extra else "b"
        what = "from scratch" if kind == "d" else "pretrained"
        return measure(
            f"({kind}) {what} + contrastive, {pooling} pooling, {attention}, {epochs:g} epoch{'s' * (epochs != 1)}",
            encoder_ranker(contrastive.load_encoder(str(out / name))),
            kind=kind,
            pooling=pooling,
            attention=attention,
            epochs=epochs,
            learning_rate=report["learning_rate"],
            steps=report["steps"],
            train_pairs=report["train_pairs"],
            train_tokens=report["train_tokens_per_epoch"],
            **facts,
        )

    # Pooling x attention, each --grid-epochs from (a); the best is trained --epochs as the (b) the goal is about.
    grid = [contrastive_row(f"contrastive-{p}-{a}", p, a, args.grid_epochs, grid=True) for p, a in COMBOS]
    choice = max(grid, key=lambda r: r["validation_recall@10"])
    pooling, attention = choice["pooling"], choice["attention"]
    if args.epochs == args.grid_epochs:
        best = choice
    else:
        best = contrastive_row(f"contrastive-{pooling}-{attention}-{args.epochs:g}ep", pooling, attention, args.epochs)

    fit = [t for p in train for t in (p["anchor"], p["positive"])]
    measure(
        "(c) TF-IDF (scikit-learn, word 1-2 grams)",
        lambda evaluator: contrastive.tfidf_scores(evaluator, fit),
        kind="c",
    )

    # (d): (b)'s encoder, pairs, epochs and steps from random weights, at (b)'s learning rate and multiples of it.
    scratch = [
        contrastive_row(
            f"scratch-{pooling}-{attention}-lr{factor:g}x-{args.epochs:g}ep",
            pooling,
            attention,
            args.epochs,
            "--from_scratch",
            "true",
            "--learning_rate",
            args.learning_rate * factor,
        )
        for factor in args.scratch_lr_factors
    ]
    rows[:] = [r for r in rows if r["kind"] != "d"] + [max(scratch, key=lambda r: r["validation_recall@10"])]
    print(f"(d) from scratch: recall@10 {rows[-1]['recall@10']:.3f}", flush=True)

    others = [r for r in rows if r["kind"] in ("a", "c", "d")]
    paired = {r["model"]: paired_difference(per_query[best["model"]], per_query[r["model"]]) for r in others}
    seconds = {name: float((out / name / "seconds.txt").read_text()) for name in reports}
    results = {
        "dataset": args.dataset,
        "train_pairs": len(train),
        "heldout_pairs": len(test),
        "validation_pairs": len(validation),
        "heldout_pairs_sharing": shared_words(test),
        "context": args.context,
        "train_pairs_dropped_as_overlapping_heldout": dropped,
        "test_anchors_over_context": over_context,
        "pretrain_steps": args.pretrain_steps,
        "contrastive": {
            "epochs": args.epochs,
            "grid_epochs": args.grid_epochs,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "mini_batch_size": args.mini_batch_size,
            "seconds": seconds,
        },
        "best": best["model"],
        "goal_met": all(best["recall@10"] > r["recall@10"] for r in others),
        "goal_met_beyond_noise": all(c["ci95"][0] > 0 for c in paired.values()),
        "paired": paired,
        "rows": rows,
        "scratch_runs": scratch,
        "environment": {
            **record.environment(),
            "sentence_transformers": sentence_transformers.__version__,
            "torch_threads": torch.get_num_threads(),
        },
    }
    table = ["| model | recall@1 | recall@10 | MRR@10 | validation recall@10 |", "|---|---:|---:|---:|---:|"]
    table += [
        f"| {r['model']} | {r['recall@1']:.3f} | {r['recall@10']:.3f} | {r['mrr@10']:.3f} "
        f"| {r['validation_recall@10']:.3f} |"
        for r in rows
    ]
    md = "\n".join(
        [
            f"Contrastive retrieval, {args.dataset}: {len(test)} held-out test pairs ({len(validation)} more validate "
            f"the choices), {len(train)} training pairs"
            + (
                f" ({dropped} dropped for sharing a question, answer or passage with a held-out pair)"
                if dropped
                else ""
            )
            + f", context {args.context} tokens ({over_context:.0%} of the test anchors are longer and truncated). "
            f"{results['heldout_pairs_sharing']['any_word']:.0%} of the held-out pairs share a word, "
            f"{results['heldout_pairs_sharing']['non_stop_word']:.0%} a word other than a stop word.",
            "",
            *table,
            "",
            f"The (b) rows of {args.grid_epochs:g} epoch(s) are the pooling x attention grid; its best on the "
            f"validation pairs is the (b) compared: {best['model']}. (d) is the better on the validation pairs of "
            f"learning rates "
            f"{', '.join(f'{args.learning_rate * f:g}' for f in args.scratch_lr_factors)}. "
            f"Goal (b) > (a), (c), (d) on recall@10: {'met' if results['goal_met'] else 'not met'}; beyond noise "
            f"(the 95% interval of each difference above 0): {'yes' if results['goal_met_beyond_noise'] else 'no'}.",
            "",
            f"(b) against each, query by query on the {len(test)} test pairs: the difference in recall@10, its 95% "
            "interval (paired bootstrap over the queries), the queries (b) ranks better and worse at 10, and the sign "
            "test's p-value.",
            "",
            "| (b) against | difference | 95% interval | queries better | queries worse | sign test p |",
            "|---|---:|---|---:|---:|---:|",
            *(
                f"| {model} | {c['difference']:+.3f} | [{c['ci95'][0]:+.3f}, {c['ci95'][1]:+.3f}] "
                f"| {c['queries_better']} | {c['queries_worse']} | {c['sign_test_p']:.2g} |"
                for model, c in paired.items()
            ),
            "",
            record.describe(results["environment"]),
        ]
    )
    record.save(f"contrastive-compare-{run}", results, md, publish=args.publish)
    return results


if __name__ == "__main__":
    main()
