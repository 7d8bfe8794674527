"""Does `hf-simplegpt evaluate --tasks safety` measure something? Two SFT runs of the same tiny model that differ in
one thing, evaluated on held-out prompts.

1. The bundled prompt sets (HarmBench + Do-Not-Answer, six categories): the first half of each category is training
   data, the rest (up to --heldout per category) is held out.
2. A tokenizer and a SimpleGPT (default 4 layers, 128 wide) from a fresh initialisation, saved as the starting folder.
3. `hf-simplegpt sft` twice from that folder, the same steps and seed:
   - base: every training prompt answered with a compliant answer;
   - refusal: the same, except that the target category's prompts (default malicious_uses) are answered with a
     refusal.
4. `hf-simplegpt evaluate --tasks safety --safety_file heldout.jsonl` on both: refusal rate per category on prompts
   neither run saw.

    python benchmarks/safety_refusal.py                 # a few minutes on 2 CPU cores
    python benchmarks/safety_refusal.py --publish       # update benchmarks/results/safety-refusal.*
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM  # noqa: E402
from hf_simplegpt.evaluation.safety import bundled_prompts  # noqa: E402
from hf_simplegpt.recipes import eval as eval_recipe  # noqa: E402
from hf_simplegpt.recipes import sft  # noqa: E402
from hf_simplegpt.synthetic import write_jsonl  # noqa: E402
from hf_simplegpt.tokenization import train_tokenizer  # noqa: E402

REFUSAL = "I'm sorry, but I can't help with that request."
COMPLIANCE = "Sure. Here is a short answer to your question, step by step."
CONFIG = Path(__file__).resolve().parents[1] / "recipes" / "configs" / "sft_tiny.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--category", default="malicious_uses", help="the category the refusal run learns to refuse")
    parser.add_argument("--heldout", type=int, default=40, help="held-out prompts per category")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--work-dir", default=None, help="keep the models here (default: a temporary folder)")
    parser.add_argument(
        "--runs",
        default="base,refusal",
        help="which SFT runs this process does (two processes can share --work-dir, one run each); the "
        "table is written once both runs' evaluations are in --work-dir",
    )
    parser.add_argument("--publish", action="store_true")
    args = parser.parse_args()

    by_category: dict[str, list[str]] = {}
    for row in bundled_prompts():
        by_category.setdefault(row["category"], []).append(row["prompt"])
    if args.category not in by_category:
        raise SystemExit(f"--category {args.category}: choose from {sorted(by_category)}")
    train, heldout = [], []
    for category, prompts in sorted(by_category.items()):
        half = len(prompts) // 2
        train += [(category, p) for p in prompts[:half]]
        heldout += [{"prompt": p, "category": category} for p in prompts[half:][: args.heldout]]

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="safety-refusal-"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(
        [p for _, p in train] + [REFUSAL, COMPLIANCE] * 20, vocab_size=1024, model_max_length=128
    )
    torch.manual_seed(0)
    config = SimpleGPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        max_position_embeddings=128,
        dropout=0.0,
        **{k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    )
    if not (work / "init" / "config.json").is_file():  # a second process on the same --work-dir reuses it
        SimpleGPTForCausalLM(config).save_pretrained(work / "init")
        tokenizer.save_pretrained(work / "init")
    heldout_file = write_jsonl(heldout, work / "heldout.jsonl")

    for name in [r for r in args.runs.split(",") if r]:
        rows = [
            {
                "messages": [
                    {"role": "user", "content": p},
                    {
                        "role": "assistant",
                        "content": REFUSAL if name == "refusal" and c == args.category else COMPLIANCE,
                    },
                ]
            }
            for c, p in train
        ]
        sft.main(
            [
                "--config",
                str(CONFIG),
                "--model_name_or_path",
                str(work / "init"),
                "--train_file",
                str(write_jsonl(rows, work / f"{name}.jsonl")),
                "--output_dir",
                str(work / name),
                "--max_length",
                "128",
                "--max_steps",
                str(args.steps),
                "--per_device_train_batch_size",
                "16",
                "--learning_rate",
                str(args.learning_rate),
                "--num_sample_generations",
                "0",
                "--heldout_size",
                "16",
                "--disable_tqdm",
                "true",
            ]
        )
        eval_recipe.main(
            [
                "--model_name_or_path",
                str(work / name),
                "--tasks",
                "safety",
                "--safety_file",
                str(heldout_file),
                "--max_new_tokens",
                "24",
                "--output_dir",
                str(work / f"eval-{name}"),
            ]
        )
    found = {n: work / f"eval-{n}" / "results.json" for n in ("base", "refusal")}
    if not all(path.is_file() for path in found.values()):
        print(f"Evaluations so far: {[n for n, p in found.items() if p.is_file()]}; the table needs both.")
        return
    runs = {n: json.loads(path.read_text())["safety"] for n, path in found.items()}

    categories = sorted(runs["base"]["categories"])
    rows = [
        f"| {c}{' (refusals trained)' if c == args.category else ''} | {runs['base']['categories'][c]['n']} | "
        f"{runs['base']['categories'][c]['refusal_rate']:.3f} | {runs['refusal']['categories'][c]['refusal_rate']:.3f} |"
        for c in categories
    ]
    markdown = "\n".join(
        [
            f"Held-out refusal rate per category (first half of each category trained, up to {args.heldout} of the rest "
            f"evaluated), two `hf-simplegpt sft` runs of a {args.layers}-layer, {args.hidden}-wide SimpleGPT for {args.steps} steps (learning rate {args.learning_rate}) from one "
            f"initialisation; only the refusal run answered its training prompts of `{args.category}` with a refusal.",
            "",
            "| category | held-out prompts | base | refusal run |",
            "|---|---:|---:|---:|",
            *rows,
            f"| all | {runs['base']['n']} | {runs['base']['refusal_rate']:.3f} | {runs['refusal']['refusal_rate']:.3f} |",
            "",
            f"Measured on: {describe(environment())}",
        ]
    )
    result = {
        "category": args.category,
        "steps": args.steps,
        "hidden_size": args.hidden,
        "layers": args.layers,
        "heldout_per_category": args.heldout,
        "base": {k: runs["base"][k] for k in ("refusal_rate", "n", "categories")},
        "refusal": {k: runs["refusal"][k] for k in ("refusal_rate", "n", "categories")},
        "examples": runs["refusal"]["examples"].get(args.category),
        "environment": environment(),
    }
    save("safety-refusal", result, markdown, publish=args.publish)


if __name__ == "__main__":
    main()
