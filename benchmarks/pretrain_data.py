"""Time the pretraining data pipeline on the built-in corpus: a cold run (empty caches) and a warm rerun.

    python benchmarks/pretrain_data.py [--publish]     # results/pretrain-data.{json,md}

Cold: load, normalize, dedup, split, train the tokenizer, tokenize and pack, with fresh datasets and
hf_simplegpt caches. Warm: the same call again, which must reuse every cached step.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402


def run(cache: str) -> dict:
    from hf_simplegpt.corpus import CorpusArguments, load_or_train_tokenizer, prepare_corpus, tokenize_and_pack

    args = CorpusArguments(data_cache_dir=cache)
    start = time.perf_counter()
    splits, stats = prepare_corpus(args, seed=42)
    tokenizer = load_or_train_tokenizer(None, splits["train"], 2048, 128, args)
    train = tokenize_and_pack(splits["train"], tokenizer, 128, args)
    val = tokenize_and_pack(splits["validation"], tokenizer, 128, args, "validation")
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "train_blocks": len(train),
        "validation_blocks": len(val),
        **{k: v for k, v in stats.to_dict().items() if k.endswith("removed") or k.endswith("documents")},
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_DATASETS_CACHE"] = os.path.join(tmp, "datasets")  # read when datasets is imported
        runs = {name: run(os.path.join(tmp, "hf_simplegpt")) for name in ("cold", "warm")}
    result = {"runs": runs, "environment": environment()}
    rows = "\n".join(
        f"| {name} | {r['seconds']} | {r['train_blocks']} | {r['validation_blocks']} |" for name, r in runs.items()
    )
    markdown = (
        f"{describe(result['environment'])}\n\n| run | seconds | train blocks | validation blocks |\n"
        f"|---|---:|---:|---:|\n{rows}\n"
    )
    save("pretrain-data", result, markdown, args.publish)
    return result


if __name__ == "__main__":
    main()
