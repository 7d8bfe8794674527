"""Which shape and schedule should the Quickstart's `hf-simplegpt pretrain` (no flags: the field defaults of
`ModelArguments` and `PretrainingArguments`) use to reach the lowest validation loss in the same time on a CPU?

Each candidate changes the defaults before issue 20 (`BASELINE`) in one or more of: learning rate, batch, width,
dropout and tokenizer size. On a shared machine wall time is not a fair judge, so:

1. Equal tokens: every candidate reads the default's number of training tokens (steps x batch x block), so a
   smaller batch takes more, smaller steps; its training FLOPs (6N + attention, per token) are reported next to it.
   Losses depend on steps, not on the clock, so the runs may share the machine (--jobs, one torch thread each).
2. Timing: one training step (forward + backward + AdamW) of every candidate's shape, on random tokens, runs
   interleaved with the others (A B C A B C ...; `hf_simplegpt.timing`) and each gets its median seconds per step;
   steps x that median is the candidate's training time, to compare with the default's.
3. Judge: the validation split of the built-in corpus (the same documents for every candidate). The loss is per
   token, and tokenizers of different sizes cut the text into different numbers of tokens, so the table also gives
   bits per character (loss x tokens / characters of the validation text / ln 2), the number to compare.

    python benchmarks/pretrain_default.py --jobs 2 --publish  # benchmarks/results/pretrain-default.{json,md}
    python benchmarks/pretrain_default.py --only baseline,chosen
    python benchmarks/pretrain_default.py --combine '{"mine": {"dropout": 0.0}}' --only mine --name pretrain-mine

Writes benchmarks/out/pretrain-default.{json,md} (`--publish`: benchmarks/results/). 'chosen' is the current field
defaults, when they differ from BASELINE.
"""

import argparse
import dataclasses
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import transformers

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.corpus import CorpusArguments, prepare_corpus
from hf_simplegpt.pretraining import ModelArguments, PretrainingArguments, flops_per_token
from hf_simplegpt.recipes import pretrain
from hf_simplegpt.timing import interleaved_medians

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import OUT_DIR, describe, environment, save  # noqa: E402

# The defaults before this benchmark (issue 20): the baseline every candidate is compared with.
BASELINE = {
    "vocab_size": 2048,
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "max_position_embeddings": 128,
    "dropout": 0.1,
    "per_device_train_batch_size": 16,
    "learning_rate": 1.0e-3,
    "max_steps": 200,
}
# name -> overrides of BASELINE: one factor at a time, and the cheap ones together (--combine adds more).
CANDIDATES = {
    "baseline": {},
    "lr 3e-3": {"learning_rate": 3e-3},
    "vocab 1024": {"vocab_size": 1024},
    "batch 8": {"per_device_train_batch_size": 8},
    "dropout 0": {"dropout": 0.0},
    "lr 3e-3 + vocab 1024 + batch 8 + dropout 0": {
        "learning_rate": 3e-3,
        "vocab_size": 1024,
        "per_device_train_batch_size": 8,
        "dropout": 0.0,
    },
}
QUIET = [
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--num_sample_generations",
    "0",
    "--eval_on_start",
    "false",
    "--save_strategy",
    "no",
    "--logging_steps",
    "1000",
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=OUT_DIR / "pretrain_default", help="the runs' folders")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated candidate names ('chosen': the current "
        "field defaults); default: all of CANDIDATES and 'chosen'",
    )
    parser.add_argument("--combine", default="", help="extra candidates: JSON {name: {flag: value}} over BASELINE")
    parser.add_argument("--steps", type=int, default=BASELINE["max_steps"], help="the baseline's steps (the budget)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds of one step per candidate (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the timing and of --jobs 1 runs")
    parser.add_argument("--jobs", type=int, default=1, help="candidates trained at once (one torch thread each)")
    parser.add_argument("--train-file", default=None, help="train on this text instead of the built-in corpus")
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/ (default benchmarks/out/)")
    parser.add_argument("--name", default="pretrain-default", help="the results files' name (NAME.json, NAME.md)")
    return parser.parse_args(argv)


def chosen_config() -> dict:
    """The current defaults of `hf-simplegpt pretrain` (its dataclasses' fields), as overrides of BASELINE."""
    fields = {f.name: f.default for cls in (ModelArguments, PretrainingArguments) for f in dataclasses.fields(cls)}
    return {k: fields[k] for k in BASELINE if fields[k] != BASELINE[k]}


def settings(overrides: dict) -> dict:
    return {**BASELINE, **overrides}


def build(s: dict, vocab: int | None = None) -> SimpleGPTForCausalLM:
    config = SimpleGPTConfig(
        vocab_size=vocab or s["vocab_size"],
        hidden_size=s["hidden_size"],
        num_hidden_layers=s["num_hidden_layers"],
        num_attention_heads=s["num_attention_heads"],
        max_position_embeddings=s["max_position_embeddings"],
        dropout=s["dropout"],
    )
    return SimpleGPTForCausalLM(config)


def step_runner(s: dict):
    """One training step of shape `s` on random tokens: what a Trainer step costs, without data loading."""
    torch.manual_seed(0)
    model = build(s).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=False)
    ids = torch.randint(0, s["vocab_size"], (s["per_device_train_batch_size"], s["max_position_embeddings"]))

    def run():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return run


def flags(s: dict, steps: int) -> list[str]:
    keys = (
        "vocab_size",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "max_position_embeddings",
        "dropout",
        "per_device_train_batch_size",
        "learning_rate",
    )
    out = ["--max_steps", str(steps), "--eval_steps", str(steps)]
    for key in keys:
        out += [f"--{key}", str(s[key])]
    return out


def bits_per_char(folder: Path, eval_loss: float, validation_texts: list[str]) -> tuple[float, float]:
    """(bits per character, tokens per character) of the validation text under this run's tokenizer; every
    document ends in one EOS token, counted as one character (the document break)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    tokens = sum(len(ids) + 1 for ids in tokenizer(validation_texts, add_special_tokens=False)["input_ids"])
    chars = sum(len(text) + 1 for text in validation_texts)
    return eval_loss * tokens / chars / math.log(2), tokens / chars


def sample(folder: Path, prompt: str = "The for statement") -> dict[str, str]:
    """What the README's pipeline example prints with this model: its greedy and its sampled continuation."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    inputs = tokenizer(prompt, return_tensors="pt")
    out = {}
    for name, kwargs in (("greedy", {"do_sample": False}), ("sampled", {"do_sample": True})):
        torch.manual_seed(0)
        ids = model.generate(**inputs, max_new_tokens=30, **kwargs)[0]
        out[name] = tokenizer.decode(ids, skip_special_tokens=True)
    return out


def train_candidate(item) -> dict:
    """Train one candidate for `steps` with the recipe (`hf-simplegpt pretrain`), then measure it."""
    name, s, steps, overrides, validation_texts, args = item
    torch.set_num_threads(1 if args.jobs > 1 else args.threads)
    folder = args.output_dir / name.replace(" ", "_").replace(".", "p")
    data = ["--data_cache_dir", str(args.output_dir / "cache")] + (
        ["--train_file", args.train_file] if args.train_file else []
    )
    start = time.perf_counter()
    pretrain.main([*flags(s, steps), "--output_dir", str(folder), "--overwrite_output_dir", "true", *data, *QUIET])
    wall = time.perf_counter() - start
    results = json.loads((folder / "all_results.json").read_text())
    state = json.loads((folder / "trainer_state.json").read_text())
    model = build(s, vocab=json.loads((folder / "config.json").read_text())["vocab_size"])
    tokens = steps * s["per_device_train_batch_size"] * s["max_position_embeddings"]
    fpt = flops_per_token(
        model.num_parameters(exclude_embeddings=True),
        s["num_hidden_layers"],
        s["hidden_size"],
        s["max_position_embeddings"],
    )
    bpc, tpc = bits_per_char(folder, results["eval_loss"], validation_texts)
    row = {
        "name": name,
        "overrides": overrides,
        "steps": steps,
        "tokens": tokens,
        "epochs": round(state["epoch"], 2),
        "parameters": model.num_parameters(),
        "seconds_per_step": None,
        "train_flops": fpt * tokens,
        "eval_loss": round(results["eval_loss"], 4),
        "bits_per_char": round(bpc, 4),
        "tokens_per_char": round(tpc, 4),
        "wall_seconds": round(wall, 1),
        "sample": sample(folder),
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    candidates = dict(CANDIDATES)
    candidates.update(json.loads(args.combine) if args.combine else {})
    if chosen_config() or "chosen" in args.only.split(","):
        candidates["chosen"] = chosen_config()
    if args.only:
        candidates = {name: candidates[name] for name in args.only.split(",")}
    baseline = settings({**BASELINE, "max_steps": args.steps})
    shapes = {name: settings(over) for name, over in candidates.items()}
    corpus_args = CorpusArguments(data_cache_dir=str(args.output_dir / "cache"), train_file=args.train_file)
    validation_texts = list(prepare_corpus(corpus_args)[0]["validation"]["text"])
    start_all = time.perf_counter()
    # Equal tokens: every candidate reads the baseline's number of training tokens (steps x batch x block), unless
    # it sets its own max_steps. The losses depend on the steps, not on the clock, so the runs may share the machine
    # (--jobs, one thread each) while this process times one step of every shape, interleaved.
    tokens = baseline["max_steps"] * baseline["per_device_train_batch_size"] * baseline["max_position_embeddings"]
    steps = {
        name: s["max_steps"]
        if "max_steps" in candidates[name]
        else max(1, round(tokens / (s["per_device_train_batch_size"] * s["max_position_embeddings"])))
        for name, s in shapes.items()
    }
    work = [(name, s, steps[name], candidates[name], validation_texts, args) for name, s in shapes.items()]
    shapes_timed = {"baseline": baseline, **shapes}
    timer = lambda: interleaved_medians({n: step_runner(s) for n, s in shapes_timed.items()}, args.repeats, 1)  # noqa: E731
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = pool.map(train_candidate, work)
            seconds = timer()
            rows = list(futures)
    else:
        rows = [train_candidate(item) for item in work]
        seconds = timer()
    print(json.dumps({"seconds_per_step": seconds}), flush=True)
    budget = baseline["max_steps"] * seconds["baseline"]
    for row in rows:
        row["seconds_per_step"] = round(seconds[row["name"]], 4)
        row["training_seconds"] = round(row["steps"] * seconds[row["name"]], 1)  # at the interleaved median
    result = {
        "setup": {
            "baseline": baseline,
            "budget_seconds": round(budget, 1),
            "threads": args.threads,
            "jobs": args.jobs,
            "repeats": args.repeats,
            "train_file": args.train_file or "built-in corpus",
            "validation_documents": len(validation_texts),
        },
        "environment_at_end": environment(),
        "rows": rows,
        "total_wall_seconds": round(time.perf_counter() - start_all, 1),
    }
    save(args.name, result, markdown(result), args.publish)
    return result


def markdown(result: dict) -> str:
    setup = result["setup"]
    header = ["candidate", "changes", "steps", "tokens", "s/step", "training s", "train PFLOP", "val loss", "bits/char"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    for r in result["rows"]:
        changes = ", ".join(f"{k} {v}" for k, v in r["overrides"].items()) or "-"
        lines.append(
            f"| {r['name']} | {changes} | {r['steps']} | {r['tokens']:,} | {r['seconds_per_step']:.3f} | "
            f"{r['training_seconds']} | {r['train_flops'] / 1e15:.3f} | {r['eval_loss']:.4f} | {r['bits_per_char']:.4f} |"
        )
    samples = [
        f"- {r['name']}, sampled: {r['sample']['sampled']!r}; greedy: {r['sample']['greedy']!r}" for r in result["rows"]
    ]
    return "\n\n".join(
        [
            "# The default pretraining run: lower validation loss in the same time",
            f"Baseline {json.dumps(setup['baseline'])}; every candidate reads the baseline's tokens (unless it sets "
            f"its steps) on the {setup['train_file']}; s/step is the median of {setup['repeats']} interleaved rounds of "
            f"one training step ({setup['threads']} torch thread(s)), training s = steps x s/step (the baseline: "
            f"{setup['budget_seconds']} s); the training runs went {setup['jobs']} at a time. Judged on the {setup['validation_documents']} "
            f"validation documents; float32. At the end: {describe(result['environment_at_end'])} Bits per character "
            "compare tokenizers of different sizes; the loss is per token of each run's own tokenizer.",
            "\n".join(lines),
            'What `pipeline(...)("The for statement", max_new_tokens=30)` gives (seed 0; sampled with the model\'s '
            "generation_config):",
            "\n".join(samples),
            f"Total wall clock: {result['total_wall_seconds']} s.",
        ]
    )


if __name__ == "__main__":
    main()
