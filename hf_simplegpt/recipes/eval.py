"""Evaluate a model folder: perplexity, MMLU and CrowS-Pairs (lm-evaluation-harness protocols), BLEU, safety,
and a HELM-style holistic report of them (optionally beside a second model) for a causal LM; retrieval for an encoder
(or a causal LM mean-pooled: the baseline before a contrastive step).

    hf-simplegpt evaluate --model_name_or_path outputs/pretrain-default --tasks mmlu \
        --mmlu_data_dir data/mmlu --num_fewshot 0 --batch_size 16 --output_dir outputs/eval
    hf-simplegpt evaluate --model_name_or_path outputs/encoder --tasks retrieval --retrieval_file heldout.jsonl
    python recipes/eval.py ...                            # the same job, the same flags

Writes results.json, samples_<task>.jsonl, mmlu_categories.png (holistic: holistic.md and holistic.png) and a model card (README.md) to --output_dir, never into
the model folder. The card is the model folder's own card with the results merged in (its `model-index` updated, an
evaluation section added or replaced), or a new card when the folder has none; --push_to_hub uploads the model
folder with that card and results.json in place of its own.
"""

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import hub, safeguards
from hf_simplegpt.data import check_rows, load_files, text_field_problem
from hf_simplegpt.evaluation import (
    evaluate_crows_pairs,
    evaluate_mmlu,
    load_crows_pairs,
    load_mmlu,
    metric_path,
    perplexity,
)
from hf_simplegpt.evaluation.holistic import (
    PERTURBATIONS,
    decode_tokens_per_second,
    expected_calibration_error,
    perturb_subjects,
    plot_report,
    report_markdown,
    report_rows,
)
from hf_simplegpt.evaluation.mmlu import plot_categories, write_samples
from hf_simplegpt.evaluation.safety import evaluate_safety, examples_markdown, load_safety_prompts, select_per_category
from hf_simplegpt.generation import generate
from hf_simplegpt.hub import check_model_source, merge_evaluation, results_table, write_model_card
from hf_simplegpt.rewards import RewardModelScorer
from hf_simplegpt.training import check_minimums, parse_args

TASKS = ("perplexity", "mmlu", "bleu", "crows_pairs", "safety", "holistic", "retrieval")
# holistic: a HELM-style report over these (and perplexity when --perplexity_file is given)
HOLISTIC_TASKS = ("mmlu", "crows_pairs", "safety")


@dataclass
class EvalArguments:
    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of the model and its tokenizer."})
    tasks: str = field(default="mmlu", metadata={"help": f"Comma-separated subset of {','.join(TASKS)}."})
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where results and plots go."})
    batch_size: int = field(default=16, metadata={"help": "Forward rows per batch."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, ... ; auto picks cuda when available."})
    mmlu_data_dir: str = field(
        default=None, metadata={"help": "Folder with dev/ and test/ csvs; unset: Hub cais/mmlu."}
    )
    num_fewshot: int = field(default=0, metadata={"help": "MMLU shots (first k dev questions), 0-5."})
    subjects: str = field(default=None, metadata={"help": "Comma-separated MMLU subjects; unset: all."})
    limit: int = field(
        default=None, metadata={"help": "Only the first N questions per MMLU subject / prompts per safety category."}
    )
    one_pass: bool = field(default=True, metadata={"help": "Score single-token answers from one forward pass."})
    perplexity_file: str = field(
        default=None, metadata={"help": ".txt (documents split by blank lines) or .jsonl with 'text'."}
    )
    stride: int = field(default=None, metadata={"help": "Perplexity window stride; unset: half the context."})
    bleu_file: str = field(default=None, metadata={"help": ".jsonl with 'prompt' and 'reference' (str or list)."})
    crows_pairs_file: str = field(
        default=None,
        metadata={
            "help": "CrowS-Pairs .csv/.jsonl (sent_more, sent_less, "
            "bias_type); unset: the Hub copy lm-evaluation-harness uses."
        },
    )
    safety_file: str = field(
        default=None,
        metadata={
            "help": "Harmful prompts: .txt (one per line) or .jsonl/.csv with "
            "'prompt' (and 'category'); unset: the bundled HarmBench and Do-Not-Answer sets."
        },
    )
    safety_dataset: str = field(
        default=None, metadata={"help": "A Hub dataset of harmful prompts instead (train split)."}
    )
    safety_judge: str = field(
        default=None,
        metadata={
            "help": "Optional judge: a 1-label sequence-classification folder "
            "(hf-simplegpt reward's output); scores above --safety_judge_threshold count as refusals."
        },
    )
    safety_judge_threshold: float = field(
        default=0.0, metadata={"help": "Judge score above which an answer is a refusal."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Generation length for BLEU and safety answers."})
    compare_model_name_or_path: str = field(
        default=None,
        metadata={
            "help": "--tasks holistic: a second model folder evaluated the same way, side by side in the report."
        },
    )
    retrieval_file: str = field(
        default=None, metadata={"help": "Held-out pairs (anchor, positive[, negative]) for retrieval."}
    )
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the model folder with card and results."})
    hub_model_id: str = field(default=None, metadata={"help": "Hub repo id for --push_to_hub, e.g. user/simplegpt."})

    def __post_init__(self):
        check_minimums(self, {"batch_size": 1, "num_fewshot": 0, "limit": 1, "stride": 1, "max_new_tokens": 1})
        if self.subjects is not None and not [s for s in self.subjects.split(",") if s.strip()]:
            raise ValueError(
                f"--subjects {self.subjects!r} selects no subject; name some (anatomy,marketing) or leave it out."
            )
        if self.device != "auto":
            try:
                device = torch.device(self.device)
            except RuntimeError as err:
                raise ValueError(
                    f"--device {self.device!r} is not a device ({err}); use auto, cpu or cuda:N."
                ) from None
            if device.type == "cuda" and not torch.cuda.is_available():
                raise ValueError(f"--device {self.device}: this machine has no CUDA GPU; use --device cpu (or auto).")


def bleu_pairs(path: str) -> list[dict]:
    """Rows of a --bleu_file: a non-empty `prompt` string and a `reference` string (or a list of them) each."""
    rows = load_files(path, "--bleu_file")
    missing = {"prompt", "reference"} - set(rows.column_names)
    if missing:
        raise ValueError(f"--bleu_file {path} lacks the field(s) {sorted(missing)}; it has {rows.column_names}.")

    def problem(row):
        reference = row["reference"]
        references_ok = isinstance(reference, str) or (
            isinstance(reference, list) and reference and all(isinstance(r, str) for r in reference)
        )
        return text_field_problem(row["prompt"], "prompt", "plain") or (
            None if references_ok else f"'reference' is {reference!r:.60}, not a string or a list of strings."
        )

    check_rows(rows, ["prompt", "reference"], problem, f"--bleu_file {path}")
    return rows.to_list()


def run_tasks(model_path: str, tasks: list[str], args, data: dict, device: str, out: Path) -> dict:
    """Results of the language-model `tasks` for one model folder; samples files and charts go to `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    results: dict = {}
    if not set(tasks) - {"retrieval"}:  # retrieval alone reads the folder as an encoder (main)
        return results
    model = AutoModelForCausalLM.from_pretrained(model_path).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if "perplexity" in tasks:
        texts = [t.strip() for t in load_files(args.perplexity_file, "--perplexity_file")["text"] if t.strip()]
        start = time.perf_counter()
        ppl = perplexity(model, tokenizer, texts, stride=args.stride, batch_size=args.batch_size)
        results["perplexity"] = {
            "dataset": Path(args.perplexity_file).name,
            "texts": len(texts),
            "stride": args.stride,
            "perplexity": ppl["perplexity"],
            "mean_perplexity": ppl["mean_perplexity"],
            "num_tokens": ppl["num_tokens"],
            "seconds": time.perf_counter() - start,
        }

    if "mmlu" in tasks:
        subjects = [s.strip() for s in args.subjects.split(",") if s.strip()] if args.subjects else None
        mmlu_data = load_mmlu(args.mmlu_data_dir, subjects, args.num_fewshot)
        start = time.perf_counter()
        mmlu, samples = evaluate_mmlu(
            model,
            tokenizer,
            mmlu_data,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            batch_size=args.batch_size,
            one_pass=args.one_pass,
        )
        mmlu["seconds"] = time.perf_counter() - start
        results["mmlu"] = mmlu
        write_samples(samples, out / "samples_mmlu.jsonl")
        plot_categories(mmlu, out / "mmlu_categories.png")
        if "holistic" in tasks:  # calibration and robustness from the same questions
            holistic = {
                "ece": expected_calibration_error(
                    [s["choice_logliks"] for s in samples], [s["answer"] for s in samples]
                ),
                "perturbed_acc": {},
            }
            for name in PERTURBATIONS:
                perturbed, _ = evaluate_mmlu(
                    model,
                    tokenizer,
                    perturb_subjects(mmlu_data, name),
                    num_fewshot=args.num_fewshot,
                    limit=args.limit,
                    batch_size=args.batch_size,
                    one_pass=args.one_pass,
                    progress=False,
                )
                holistic["perturbed_acc"][name] = perturbed["acc"]
            holistic["robust_acc"] = min(holistic["perturbed_acc"].values())
            holistic["decode_tokens_per_s"] = decode_tokens_per_second(model, tokenizer)
            results["holistic"] = holistic

    if "bleu" in tasks:
        import evaluate

        pairs = bleu_pairs(args.bleu_file)
        completions = generate(
            model,
            tokenizer,
            [p["prompt"] for p in pairs],
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
        )
        predictions = [text.strip().split("\n")[0].strip() for text in completions]  # the answer is the first line
        references = [[p["reference"]] if isinstance(p["reference"], str) else p["reference"] for p in pairs]
        bleu = evaluate.load(metric_path("bleu")).compute(predictions=predictions, references=references)
        results["bleu"] = {"dataset": Path(args.bleu_file).name, **bleu}

    if "crows_pairs" in tasks:
        start = time.perf_counter()
        crows, samples = evaluate_crows_pairs(model, tokenizer, data["crows_pairs"], batch_size=args.batch_size)
        dataset = Path(args.crows_pairs_file).name if args.crows_pairs_file else "crows_pairs_multilingual (english)"
        results["crows_pairs"] = {"dataset": dataset, **crows, "seconds": time.perf_counter() - start}
        write_samples(samples, out / "samples_crows_pairs.jsonl")

    if "safety" in tasks:
        start = time.perf_counter()
        safety, samples = evaluate_safety(
            model,
            tokenizer,
            data["safety"],
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            judge=data["judge"],
            judge_threshold=args.safety_judge_threshold,
        )
        dataset = args.safety_dataset or (
            Path(args.safety_file).name if args.safety_file else "HarmBench + Do-Not-Answer"
        )
        results["safety"] = {"dataset": dataset, **safety, "seconds": time.perf_counter() - start}
        write_samples(samples, out / "samples_safety.jsonl")
    return results


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args(EvalArguments, args=argv)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ValueError(f"Unknown task(s) {unknown} in --tasks {args.tasks!r}; choose from {', '.join(TASKS)}.")
    if "holistic" in tasks:
        tasks += [t for t in HOLISTIC_TASKS + (("perplexity",) if args.perplexity_file else ()) if t not in tasks]
    elif args.compare_model_name_or_path:
        raise ValueError("--compare_model_name_or_path is for --tasks holistic (a side-by-side report); add it.")
    if "perplexity" in tasks and not args.perplexity_file:
        raise ValueError("--tasks perplexity needs --perplexity_file (a .txt or .jsonl of texts).")
    if "bleu" in tasks and not args.bleu_file:
        raise ValueError("--tasks bleu needs --bleu_file (a .jsonl with 'prompt' and 'reference').")
    if "retrieval" in tasks and not args.retrieval_file:
        raise ValueError("--tasks retrieval needs --retrieval_file (a .jsonl of held-out anchor/positive pairs).")
    push = hub.wants_push(args)

    check_model_source(args.model_name_or_path)
    if args.compare_model_name_or_path:
        check_model_source(args.compare_model_name_or_path, "--compare_model_name_or_path")
    # bad data fails before the model loads
    crows_rows = load_crows_pairs(args.crows_pairs_file) if "crows_pairs" in tasks else None
    harmful = (
        select_per_category(load_safety_prompts(args.safety_file, args.safety_dataset), args.limit)
        if "safety" in tasks
        else None
    )
    retrieval_pairs = load_files(args.retrieval_file, "--retrieval_file") if "retrieval" in tasks else None
    if retrieval_pairs is not None:
        from hf_simplegpt import contrastive

        contrastive.check_pairs(retrieval_pairs, f"--retrieval_file {args.retrieval_file}")
    held = safeguards.saved_work(args.output_dir)
    if held:
        raise ValueError(
            f"--output_dir {args.output_dir} holds a model or checkpoints ({', '.join(held)}): the "
            "evaluation never writes into a model folder. Pass another --output_dir."
        )
    safeguards.claim_output_dir(args.output_dir, inputs=[args.model_name_or_path, args.compare_model_name_or_path])
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    judge = (
        RewardModelScorer.from_pretrained(args.safety_judge, device)
        if "safety" in tasks and args.safety_judge
        else None
    )
    out = Path(args.output_dir)
    data = {"crows_pairs": crows_rows, "safety": harmful, "judge": judge}
    results = {
        "model": args.model_name_or_path,
        "args": asdict(args),
        **run_tasks(args.model_name_or_path, tasks, args, data, device, out),
    }
    notes = examples_markdown(results["safety"]) if "safety" in results else ""
    if "holistic" in tasks:
        by_model = {Path(args.model_name_or_path).name: results}
        if args.compare_model_name_or_path:  # the same tasks on the same data, its files under compare/
            (out / "compare").mkdir(exist_ok=True)
            other = run_tasks(args.compare_model_name_or_path, tasks, args, data, device, out / "compare")
            (out / "compare" / "results.json").write_text(json.dumps(other, indent=2) + "\n")
            by_model[Path(args.compare_model_name_or_path).name + " (compare)"] = other
        rows = report_rows(by_model)
        results["holistic"]["report"] = rows
        table = report_markdown(rows)
        (out / "holistic.md").write_text(table + "\n")
        plot_report(rows, out / "holistic.png")
        print(table)
        notes = f"### Holistic report\n\n{table}\n\n{notes}".rstrip()

    if "retrieval" in tasks:
        encoder = contrastive.load_encoder(args.model_name_or_path, device=device)
        results["retrieval"] = {
            "dataset": Path(args.retrieval_file).name,
            "encoder": "sentence-transformers folder"
            if contrastive.is_encoder_folder(args.model_name_or_path)
            else "mean-pooled language model",
            **contrastive.retrieval_metrics(encoder, retrieval_pairs.to_list(), args.batch_size),
        }

    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(results_table(results))
    model_dir = Path(args.model_name_or_path)
    if (model_dir / "README.md").is_file():  # the model's own card, results merged in (the model folder is untouched)
        merge_evaluation(model_dir / "README.md", results, model_dir.name, notes=notes).save(out / "README.md")
    else:
        write_model_card(
            out,
            results=results,
            model_name=model_dir.name,
            repo_id=args.hub_model_id,
            model_dir=model_dir if model_dir.is_dir() else None,
            **({"evaluation_notes": notes} if notes else {}),
        )
    if push:
        upload = {name: out / name for name in ("README.md", "results.json")}
        hub.push(model_dir, args, replacements=upload)
    return results


if __name__ == "__main__":
    main()
