"""Evaluate a causal LM folder: perplexity, MMLU (lm-evaluation-harness protocol) and BLEU.

    PYTHONPATH=. python recipes/evaluate.py --model_name_or_path outputs/pretrain --tasks mmlu \
        --mmlu_data_dir ../shared/data/mmlu --num_fewshot 0 --batch_size 16 --output_dir outputs/eval

Writes results.json, samples_mmlu.jsonl, mmlu_categories.png and a model card (README.md) to
--output_dir; --push_to_hub also copies the card and results into the model folder and uploads it.
"""

import sys
from pathlib import Path

# This file is named like the `evaluate` library; drop its folder from the import path so that
# `import evaluate` anywhere below finds the library, not this script.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402

import torch  # noqa: E402

import hf_simplegpt  # noqa: E402,F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt.evaluation import evaluate_mmlu, load_mmlu, perplexity  # noqa: E402
from hf_simplegpt.evaluation.generation import generate_completions  # noqa: E402
from hf_simplegpt.evaluation.mmlu import CATEGORIES, write_samples  # noqa: E402
from hf_simplegpt.hub import push_to_hub, write_model_card  # noqa: E402
from hf_simplegpt.training import parse_args  # noqa: E402

TASKS = ("perplexity", "mmlu", "bleu")


@dataclass
class EvalArguments:
    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of the model and its tokenizer."})
    tasks: str = field(default="mmlu", metadata={"help": f"Comma-separated subset of {','.join(TASKS)}."})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where results and plots go."})
    batch_size: int = field(default=16, metadata={"help": "Forward rows per batch."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, ... ; auto picks cuda when available."})
    mmlu_data_dir: str = field(default=None, metadata={"help": "Folder with dev/ and test/ csvs; unset: Hub cais/mmlu."})
    num_fewshot: int = field(default=0, metadata={"help": "MMLU shots (first k dev questions), 0-5."})
    subjects: str = field(default=None, metadata={"help": "Comma-separated MMLU subjects; unset: all."})
    limit: int = field(default=None, metadata={"help": "Score only the first N test questions per subject."})
    one_pass: bool = field(default=True, metadata={"help": "Score single-token answers from one forward pass."})
    perplexity_file: str = field(default=None, metadata={"help": ".txt (documents split by blank lines) or .jsonl with 'text'."})
    stride: int = field(default=None, metadata={"help": "Perplexity window stride; unset: half the context."})
    bleu_file: str = field(default=None, metadata={"help": ".jsonl with 'prompt' and 'reference' (str or list)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation length for BLEU."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the model folder with card and results."})
    hub_model_id: str = field(default=None, metadata={"help": "Hub repo id for --push_to_hub, e.g. user/simplegpt."})


def read_texts(path: str) -> list[str]:
    if path.endswith(".jsonl"):
        return [json.loads(line)["text"] for line in open(path, encoding="utf-8") if line.strip()]
    return [doc.strip() for doc in Path(path).read_text(encoding="utf-8").split("\n\n") if doc.strip()]


def print_table(results: dict) -> None:
    rows = []
    if "perplexity" in results:
        p = results["perplexity"]
        rows.append(("perplexity", p["dataset"], f"{p['perplexity']:.3f}", p["num_tokens"]))
    if "mmlu" in results:
        m = results["mmlu"]
        rows.append((f"mmlu {m['num_fewshot']}-shot acc", "all", f"{m['acc']:.4f} ± {m['acc_stderr']:.4f}", m["n"]))
        rows += [("", c, f"{v['acc']:.4f}", v["n"]) for c, v in m["categories"].items()]
    if "bleu" in results:
        b = results["bleu"]
        rows.append(("bleu", b["dataset"], f"{b['bleu']:.2f}", b["translation_length"]))
    header = ("task", "scope", "value", "n")
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths)] + rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)))


def plot_categories(mmlu: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in CATEGORIES if c in mmlu["categories"]] + ["overall"]
    values = [mmlu["categories"][c]["acc"] for c in names[:-1]] + [mmlu["acc"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, values, color=["tab:blue"] * (len(names) - 1) + ["tab:gray"])
    ax.axhline(0.25, color="tab:red", linestyle="--", label="chance (0.25)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"MMLU {mmlu['num_fewshot']}-shot accuracy per category ({mmlu['n']} questions)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    (args,) = parse_args(EvalArguments, args=argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"Unknown task(s) {unknown} in --tasks {args.tasks!r}; choose from {', '.join(TASKS)}.")
    if "perplexity" in tasks and not args.perplexity_file:
        raise ValueError("--tasks perplexity needs --perplexity_file (a .txt or .jsonl of texts).")
    if "bleu" in tasks and not args.bleu_file:
        raise ValueError("--tasks bleu needs --bleu_file (a .jsonl with 'prompt' and 'reference').")
    if args.push_to_hub and not args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/simplegpt-small).")

    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"model": args.model_name_or_path, "args": asdict(args)}

    if "perplexity" in tasks:
        texts = read_texts(args.perplexity_file)
        start = time.perf_counter()
        ppl = perplexity(model, tokenizer, texts, stride=args.stride, batch_size=args.batch_size)
        results["perplexity"] = {
            "dataset": Path(args.perplexity_file).name, "texts": len(texts), "stride": args.stride,
            "perplexity": ppl["perplexity"], "mean_perplexity": ppl["mean_perplexity"],
            "num_tokens": ppl["num_tokens"], "seconds": time.perf_counter() - start,
        }  # fmt: skip

    if "mmlu" in tasks:
        subjects = args.subjects.split(",") if args.subjects else None
        data = load_mmlu(args.mmlu_data_dir, subjects, args.num_fewshot)
        start = time.perf_counter()
        mmlu, samples = evaluate_mmlu(
            model, tokenizer, data, num_fewshot=args.num_fewshot, limit=args.limit,
            batch_size=args.batch_size, one_pass=args.one_pass,
        )  # fmt: skip
        mmlu["seconds"] = time.perf_counter() - start
        results["mmlu"] = mmlu
        write_samples(samples, out / "samples_mmlu.jsonl")
        plot_categories(mmlu, out / "mmlu_categories.png")

    if "bleu" in tasks:
        import evaluate

        from hf_simplegpt.evaluation import metric_path

        pairs = [json.loads(line) for line in open(args.bleu_file, encoding="utf-8") if line.strip()]
        predictions = generate_completions(
            model, tokenizer, [p["prompt"] for p in pairs], max_new_tokens=args.max_new_tokens, batch_size=args.batch_size
        )
        references = [[p["reference"]] if isinstance(p["reference"], str) else p["reference"] for p in pairs]
        bleu = evaluate.load(metric_path("bleu")).compute(predictions=predictions, references=references)
        results["bleu"] = {"dataset": Path(args.bleu_file).name, **bleu}

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    write_model_card(
        out, results=results, model_name=Path(args.model_name_or_path).name, repo_id=args.hub_model_id,
        model_dir=args.model_name_or_path if Path(args.model_name_or_path).is_dir() else None,
    )
    if args.push_to_hub:
        model_dir = Path(args.model_name_or_path)
        for name in ("README.md", "results.json"):
            shutil.copy2(out / name, model_dir / name)
        print("Pushed:", push_to_hub(model_dir, args.hub_model_id))
    return results


if __name__ == "__main__":
    main()
