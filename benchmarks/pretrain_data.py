"""Time the pretraining data pipeline on the built-in corpus: a cold run (empty caches) and a warm rerun.

    python benchmarks/pretrain_data.py            # prints one JSON line per run

Cold: load, normalize, dedup, split, train the tokenizer, tokenize and pack, with fresh datasets and
hf_simplegpt caches. Warm: the same call again, which must reuse every cached step.
"""

import json
import os
import tempfile
import time


def run(cache: str) -> dict:
    from hf_simplegpt.corpus import CorpusArguments, load_or_train_tokenizer, prepare_corpus, tokenize_and_pack

    args = CorpusArguments(data_cache_dir=cache)
    start = time.perf_counter()
    splits, stats = prepare_corpus(args, seed=42)
    tokenizer = load_or_train_tokenizer(None, splits["train"], 2048, 128, args)
    train = tokenize_and_pack(splits["train"], tokenizer, 128, args)
    val = tokenize_and_pack(splits["validation"], tokenizer, 128, args, "validation")
    return {"seconds": round(time.perf_counter() - start, 2), "train_blocks": len(train), "validation_blocks": len(val),
            **{k: v for k, v in stats.to_dict().items() if k.endswith("removed") or k.endswith("documents")}}  # fmt: skip


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_DATASETS_CACHE"] = os.path.join(tmp, "datasets")  # read when datasets is imported
        for name in ("cold", "warm"):
            print(json.dumps({"run": name, **run(os.path.join(tmp, "hf_simplegpt"))}))
