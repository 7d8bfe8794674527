"""The fine-tuning table of docs/fine-tuning.md: the four `hf-simplegpt sft` runs it prints, on the Quickstart model.

    hf-simplegpt pretrain                                   # the base: outputs/pretrain-default
    python benchmarks/sft_table.py [--publish]              # results/sft-table.{json,md}

Writes the toy arithmetic set with `hf-simplegpt make-sft-data`, then runs full fine-tuning, packed full fine-tuning,
LoRA, and LoRA with the embeddings and output layer trained in full (then merged), one after another, each as the
docs print it (fresh output folders under --work_dir). Records each run's `sft_results.json` (trainable parameters,
held-out loss before and after, sampled answers), its wall clock and the size of the weights file it saved.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402

RUNS = {
    "full fine-tuning": [],
    "LoRA r=8, α=16, all six projections": ["--use_peft", "--learning_rate", "3e-3"],
    "LoRA r=8 + `embed_tokens`, `lm_head` in full, then `--merge`": [
        *("--use_peft", "--learning_rate", "3e-3", "--lora_modules_to_save", "embed_tokens", "lm_head", "--merge"),
    ],
    "full fine-tuning, `--packing true`": ["--packing", "true"],
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="outputs/pretrain-default", help="the model to fine-tune")
    parser.add_argument("--work_dir", default="benchmarks/out/sft-table", help="data and the runs' folders")
    parser.add_argument("--max_steps", type=int, default=200)
    parser.add_argument("--heldout_size", type=int, default=100)
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/")
    args = parser.parse_args(argv)
    work = Path(args.work_dir)
    data = work / "arith_sft.jsonl"
    subprocess.run(["hf-simplegpt", "make-sft-data", "--output", str(data)], check=True)
    base = json.loads((Path(args.base) / "all_results.json").read_text())
    result = {"base": {"path": args.base, "eval_loss": base["eval_loss"]}, "environment": environment(), "runs": {}}
    for i, (name, flags) in enumerate(RUNS.items()):
        out = work / f"run{i}"
        command = [
            *("hf-simplegpt", "sft", "--config", "recipes/configs/sft_tiny.yaml", "--model_name_or_path", args.base),
            *("--train_file", str(data), "--output_dir", str(out), "--max_steps", str(args.max_steps)),
            *("--heldout_size", str(args.heldout_size), "--overwrite_output_dir", "true", *flags),
        ]
        print("$ " + " ".join(command), flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        sft = json.loads((out / "sft_results.json").read_text())
        weights = out / ("adapter_model.safetensors" if "--use_peft" in flags else "model.safetensors")
        result["runs"][name] = {
            "flags": flags,
            "seconds": round(seconds, 1),
            "weights_file_bytes": weights.stat().st_size,
            **{k: sft[k] for k in ("trainable_params", "total_params", "eval_loss_before", "eval_loss_after")},
            "samples": sft.get("samples", []),  # held-out prompts answered at temperature 0.8
        }
    result["environment_after"] = environment()
    rows = "\n".join(
        f"| {name} | {r['trainable_params']:,} of {r['total_params']:,} | {r['eval_loss_before']:.4f} → "
        f"{r['eval_loss_after']:.4f} | {r['weights_file_bytes']:,} | {r['seconds']} |"
        for name, r in result["runs"].items()
    )
    answers = "\n".join(
        f"- {name}: " + "; ".join(f"`{a['prompt']}` → `{a['output']}`" for a in r["samples"])
        for name, r in result["runs"].items()
    )
    markdown = (
        f"Before: {describe(result['environment'])}\nAfter: {describe(result['environment_after'])}\n\n"
        f"Base `{args.base}` (validation loss {base['eval_loss']:.4f}); {args.max_steps} steps, "
        f"{args.heldout_size} held-out chats.\n\n"
        "| run | trainable parameters | held-out loss before → after | weights file bytes | seconds |\n"
        f"|---|---:|---|---:|---:|\n{rows}\n\nHeld-out prompts answered (sampled, temperature 0.8):\n\n{answers}\n"
    )
    save("sft-table", result, markdown, args.publish)
    return result


if __name__ == "__main__":
    main()
