"""Offline demonstration that alignment works, on a CPU in a few minutes: SFT -> reward model -> GRPO/RLOO, DPO,
distillation, on a synthetic task whose goal can be measured.

    hf-simplegpt alignment-demo --output_dir outputs/alignment_demo
    python recipes/alignment_demo.py --output_dir outputs/alignment_demo      # the same

The task (`hf_simplegpt.synthetic.KeywordTask`): prompts ask about an animal, answers are one sentence naming a
colour, and the preference data prefers answers whose colour is the keyword "blue". The demo

1. writes the data (SFT examples, preference pairs, prompts) and a fresh tokenizer + 64-wide SimpleGPT;
2. runs the project's recipes as a user would, printing each command: `sft.py` (about 1 answer in 5 says "blue"),
   `reward.py`, `grpo.py` and `rloo.py` against the reward model, `dpo.py`, and `distill.py` (the GRPO policy
   as teacher of a smaller student);
3. collects each recipe's held-out before/after measurements into `summary.json`, prints them as a table, and
   leaves the GRPO reward curve at OUTPUT_DIR/grpo/reward_curve.png.

The keyword rate is measured directly (`keyword_reward`, logged by GRPO with weight 0 so that only the learned
reward model drives training): the reward model, not the rule, is what the policy is optimised against.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM, safeguards
from hf_simplegpt.synthetic import KeywordTask, write_jsonl
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer


def write_task(out: Path, seed: int) -> dict[str, Path]:
    """Data files from independent draws of the task, plus a tokenizer and an untrained model to start from."""
    data = out / "data"
    files = {
        "sft": write_jsonl(KeywordTask(seed=seed).sft_examples(3200), data / "sft.jsonl"),
        "pairs": write_jsonl(KeywordTask(seed=seed + 1).preference_pairs(1024), data / "pairs.jsonl"),
        "prompts": write_jsonl(KeywordTask(seed=seed + 2).prompts(2048), data / "prompts.jsonl"),
    }
    tokenizer = train_tokenizer(KeywordTask(seed=seed + 3).texts(2000), vocab_size=420, model_max_length=128)
    for name, width in (("base", 64), ("student", 32)):
        torch.manual_seed(seed)
        config = SimpleGPTConfig(
            vocab_size=len(tokenizer),
            hidden_size=width,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=128,
            **special_token_ids(tokenizer),
        )
        SimpleGPTForCausalLM(config).save_pretrained(out / name)
        tokenizer.save_pretrained(out / name)
        files[name] = out / name
    return {k: Path(v) for k, v in files.items()}


def run(job: str, *args, seconds: dict) -> dict:
    """Run `hf-simplegpt <job>` as a subprocess (printing the command), record its wall clock in `seconds[job]` and
    return its alignment_metrics.json, if any. The demo owns its folder, so each stage may replace what an earlier
    demo left there."""
    args = [*map(str, args), "--disable_tqdm", "true", "--overwrite_output_dir", "true"]
    print("\n$ hf-simplegpt " + " ".join([job, *args]), flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", f"hf_simplegpt.recipes.{job}", *args], check=True)
    seconds[job] = round(time.time() - start, 1)
    print(f"  ({seconds[job]:.0f} s)")
    output_dir = Path(args[list(args).index("--output_dir") + 1])
    metrics_file = output_dir / "alignment_metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.exists() else {}


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/alignment_demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace an earlier demo's folder")
    args = parser.parse_args(argv)
    out = Path(args.output_dir).resolve()
    safeguards.check_writable_dir(str(out))
    if any(out.iterdir()) and not args.overwrite_output_dir:
        raise ValueError(
            f"--output_dir {out} is not empty (an earlier demo?); pass --overwrite_output_dir to replace "
            "it, or another --output_dir."
        )
    safeguards.lock_output_dir(str(out))
    files = write_task(out, args.seed)
    seconds = {}  # each stage's wall clock, kept in summary.json

    run(
        "sft",
        "--config",
        "sft_tiny.yaml",
        "--model_name_or_path",
        files["base"],
        "--train_file",
        files["sft"],
        "--output_dir",
        out / "sft",
        "--max_steps",
        200,
        "--per_device_train_batch_size",
        16,
        "--num_sample_generations",
        0,
        seconds=seconds,
    )
    summary = {
        "reward": run(
            "reward",
            "--config",
            "reward_tiny.yaml",
            "--model_name_or_path",
            out / "sft",
            "--train_file",
            files["pairs"],
            "--output_dir",
            out / "reward",
            seconds=seconds,
        ),
    }
    for algorithm in ("grpo", "rloo"):
        summary[algorithm] = run(
            algorithm,
            "--config",
            f"{algorithm}_tiny.yaml",
            "--model_name_or_path",
            out / "sft",
            "--reward_model_name_or_path",
            out / "reward",
            "--train_file",
            files["prompts"],
            "--output_dir",
            out / algorithm,
            "--reward_funcs",
            "keyword",
            "--reward_weights",
            1.0,
            0.0,
            seconds=seconds,
        )
    summary["dpo"] = run(
        "dpo",
        "--config",
        "dpo_tiny.yaml",
        "--model_name_or_path",
        out / "sft",
        "--train_file",
        files["pairs"],
        "--output_dir",
        out / "dpo",
        seconds=seconds,
    )
    summary["distill"] = run(
        "distill",
        "--config",
        "distill_tiny.yaml",
        "--model_name_or_path",
        files["student"],
        "--teacher_model_name_or_path",
        out / "grpo",
        "--train_file",
        files["prompts"],
        "--output_dir",
        out / "distill",
        seconds=seconds,
    )

    (out / "summary.json").write_text(json.dumps({**summary, "seconds": seconds}, indent=2))
    rows = [
        ("Reward model: held-out preference accuracy", summary["reward"], "preference_accuracy"),
        *[
            (f"{a.upper()}: held-out mean reward-model score", summary[a], "heldout_reward_model")
            for a in ("grpo", "rloo")
        ],
        *[(f"{a.upper()}: held-out keyword rate", summary[a], "heldout_keyword_reward") for a in ("grpo", "rloo")],
        ("DPO: held-out mean log p(chosen) - log p(rejected)", summary["dpo"], "logp_margin"),
        ("DPO: pairs where chosen is the more likely", summary["dpo"], "chosen_more_likely_fraction"),
        ("Distillation: held-out KL(teacher || student) per token", summary["distill"], "kl_teacher_student"),
    ]
    print("\n| Measurement | Before | After |\n|---|---|---|")
    for label, metrics, key in rows:
        print(f"| {label} | {metrics[key + '_before']:.3f} | {metrics[key + '_after']:.3f} |")
    print(f"\nReward curve: {out / 'grpo' / 'reward_curve.png'}; all numbers: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    main()
