"""Evaluate a causal LM folder: perplexity, MMLU (lm-evaluation-harness protocol) and BLEU.

    hf-simplegpt evaluate --model_name_or_path outputs/pretrain-default --tasks mmlu \
        --mmlu_data_dir data/mmlu --num_fewshot 0 --batch_size 16 --output_dir outputs/eval
    python recipes/eval.py ...                            # the same job, the same flags

Writes results.json, samples_mmlu.jsonl, mmlu_categories.png and a model card (README.md) to --output_dir;
--push_to_hub also copies the card and results into the model folder and uploads it.
"""

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt.data import load_files
from hf_simplegpt.evaluation import evaluate_mmlu, load_mmlu, metric_path, perplexity
from hf_simplegpt.evaluation.mmlu import plot_categories, write_samples
from hf_simplegpt.generation import generate
from hf_simplegpt.hub import check_model_source, push_to_hub, results_table, write_model_card
from hf_simplegpt.training import parse_args

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

    check_model_source(args.model_name_or_path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"model": args.model_name_or_path, "args": asdict(args)}

    if "perplexity" in tasks:
        texts = [t.strip() for t in load_files(args.perplexity_file, "--perplexity_file")["text"] if t.strip()]
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

        pairs = [json.loads(line) for line in open(args.bleu_file, encoding="utf-8") if line.strip()]
        completions = generate(model, tokenizer, [p["prompt"] for p in pairs], max_new_tokens=args.max_new_tokens,
                               batch_size=args.batch_size)  # fmt: skip
        predictions = [text.strip().split("\n")[0].strip() for text in completions]  # the answer is the first line
        references = [[p["reference"]] if isinstance(p["reference"], str) else p["reference"] for p in pairs]
        bleu = evaluate.load(metric_path("bleu")).compute(predictions=predictions, references=references)
        results["bleu"] = {"dataset": Path(args.bleu_file).name, **bleu}

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(results_table(results))
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
