"""Offline demonstration that alignment works, on a CPU in a few minutes: SFT -> reward model -> GRPO/RLOO, DPO,
distillation, on a synthetic task whose goal can be measured.

    hf-simplegpt alignment-demo --output_dir outputs/alignment_demo
    python recipes/alignment_demo.py --output_dir outputs/alignment_demo      # the same

The task (`KeywordTask`, below): prompts ask about an animal, answers are one sentence naming a
colour, and the preference data prefers answers whose colour is the keyword "blue". The demo

1. writes the data (SFT examples, preference pairs, prompts) and a fresh tokenizer + 64-wide SimpleGPT;
2. runs the project's recipes as a user would, printing each command: `sft.py` (about 1 answer in 5 says "blue"),
   `reward.py`, `rl.py` (GRPO, then RLOO) against the reward model, `dpo.py`, and `distill.py` (the GRPO policy
   as teacher of a smaller student);
3. collects each recipe's held-out before/after measurements into `summary.json`, prints them as a table, and
   leaves the GRPO reward curve at OUTPUT_DIR/grpo/reward_curve.png.

The keyword rate is measured directly (`keyword_reward`, logged by GRPO with weight 0 so that only the learned
reward model drives training): the reward model, not the rule, is what the policy is optimised against.
"""

import argparse
import json
import random
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM, safeguards
from hf_simplegpt.rewards import Text
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer

_ANIMALS = ("cat", "dog", "fox", "owl", "bee", "cow", "pig", "hen", "ant", "elk", "bat", "yak")
_COLORS = ("red", "green", "brown", "white", "blue")
_VERBS = ("runs", "sleeps", "jumps", "eats", "sings", "hides", "swims", "walks")
_PLACES = ("home", "park", "field", "river", "hill", "barn", "lake", "road")
_PROMPTS = ("Tell me about the {}.", "Describe the {}.", "What is the {} like?", "Say something about the {}.")


@dataclass
class KeywordTask:
    """A toy preference task whose goal is measurable: answers should contain `keyword`.

    Prompts ask about an animal; answers are one short sentence ("the fox is red and runs near the lake .").
    In the SFT data the colour slot holds the keyword 1 time in `len(colors)` (20% with the defaults), so a model
    fine-tuned on it starts with a low keyword rate that alignment should raise. Preference pairs prefer an answer
    with the keyword over one without: mostly the same sentence with another colour (so only the keyword tells them
    apart), sometimes a garbled sentence (so a reward model does not reward broken text a policy could drift to).

    Args:
        keyword: the word that makes an answer preferred (one of the colours by default, or any other word).
        conversational: produce chat messages (True) or plain strings (False).
        seed: everything drawn from this task is reproducible from it.
    """

    keyword: str = "blue"
    conversational: bool = True
    seed: int = 0

    def __post_init__(self):
        self.colors = tuple(c for c in _COLORS if c != self.keyword) + (self.keyword,)
        self._rng = random.Random(self.seed)

    def _prompt(self) -> str:
        return self._rng.choice(_PROMPTS).format(self._rng.choice(_ANIMALS))

    def _answer(self, color: str) -> str:
        r = self._rng
        return f"the {r.choice(_ANIMALS)} is {color} and {r.choice(_VERBS)} near the {r.choice(_PLACES)} ."

    def _garbled(self) -> str:
        words = self._answer(self._rng.choice(self.colors[:-1])).split()
        self._rng.shuffle(words)
        return " ".join(words[: self._rng.randint(2, len(words))])

    def _wrap(self, prompt: str, **answers: str) -> dict[str, Text]:
        if self.conversational:
            row = {"prompt": [{"role": "user", "content": prompt}]}
            row.update({k: [{"role": "assistant", "content": v}] for k, v in answers.items()})
        else:
            # Plain answers start with a space: byte-level BPE then splits prompt + answer at the same place as the
            # prompt alone, so the trainers find the prompt as an exact token prefix.
            row = {"prompt": prompt, **{k: " " + v for k, v in answers.items()}}
        return row

    def prompts(self, n: int) -> list[dict[str, Text]]:
        """`n` rows `{"prompt"}`: the input of GRPO/RLOO and of on-policy distillation."""
        return [self._wrap(self._prompt()) for _ in range(n)]

    def sft_examples(self, n: int) -> list[dict[str, Text]]:
        """`n` rows `{"prompt", "completion"}` with the keyword in 1 of `len(colors)` answers."""
        return [self._wrap(self._prompt(), completion=self._answer(self._rng.choice(self.colors))) for _ in range(n)]

    def preference_pairs(self, n: int) -> list[dict[str, Text]]:
        """`n` rows `{"prompt", "chosen", "rejected"}`: chosen has the keyword, rejected does not."""
        rows = []
        for _ in range(n):
            chosen = self._answer(self.keyword)
            if self._rng.random() < 0.75:  # the same sentence with another colour: only the keyword differs
                rejected = chosen.replace(f" {self.keyword} ", f" {self._rng.choice(self.colors[:-1])} ")
            else:
                rejected = self._garbled()
            rows.append(self._wrap(self._prompt(), chosen=chosen, rejected=rejected))
        return rows

    def texts(self, n: int) -> list[str]:
        """`n` plain prompt + answer strings, to train a tokenizer on or to measure divergence on."""
        return [f"{self._prompt()} {self._answer(self._rng.choice(self.colors))}" for _ in range(n)]


def write_jsonl(rows: Iterable[dict], path: str | Path) -> Path:
    """Write one JSON object per line; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path



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
        config = SimpleGPTConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
                                 max_position_embeddings=128, **special_token_ids(tokenizer))  # fmt: skip
        SimpleGPTForCausalLM(config).save_pretrained(out / name)
        tokenizer.save_pretrained(out / name)
        files[name] = out / name
    return {k: Path(v) for k, v in files.items()}


def run(job: str, *args) -> dict:
    """Run `hf-simplegpt <job>` as a subprocess (printing the command) and return its alignment_metrics.json, if any.
    The demo owns its folder, so each stage may replace what an earlier demo left there."""
    args = [*map(str, args), "--disable_tqdm", "true", "--overwrite_output_dir", "true"]
    print("\n$ hf-simplegpt " + " ".join([job, *args]), flush=True)
    start = time.time()
    subprocess.run([sys.executable, "-m", f"hf_simplegpt.recipes.{job}", *args], check=True)
    print(f"  ({time.time() - start:.0f} s)")
    output_dir = Path(args[list(args).index("--output_dir") + 1])
    metrics_file = output_dir / "alignment_metrics.json"
    return json.loads(metrics_file.read_text()) if metrics_file.exists() else {}


@safeguards.guarded_main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="outputs/alignment_demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace an earlier demo's folder")
    args = parser.parse_args(argv)
    out = Path(args.output_dir).resolve()
    safeguards.check_writable_dir(str(out))
    if any(out.iterdir()) and not args.overwrite_output_dir:
        raise ValueError(f"--output_dir {out} is not empty (an earlier demo?); pass --overwrite_output_dir to replace "
                         "it, or another --output_dir.")  # fmt: skip
    safeguards.lock_output_dir(str(out))
    files = write_task(out, args.seed)

    run("sft", "--config", "sft_tiny.yaml", "--model_name_or_path", files["base"],
        "--train_file", files["sft"], "--output_dir", out / "sft", "--max_steps", 200,
        "--per_device_train_batch_size", 16, "--num_sample_generations", 0)  # fmt: skip
    summary = {
        "reward": run("reward", "--config", "reward_tiny.yaml", "--model_name_or_path", out / "sft",
                      "--train_file", files["pairs"], "--output_dir", out / "reward"),
    }  # fmt: skip
    for algorithm in ("grpo", "rloo"):
        summary[algorithm] = run(
            "rl", "--config", "rl_tiny.yaml", "--model_name_or_path", out / "sft",
            "--reward_model_name_or_path", out / "reward", "--train_file", files["prompts"],
            "--output_dir", out / algorithm, "--algorithm", algorithm,
            "--reward_funcs", "keyword", "--reward_weights", 1.0, 0.0,
        )  # fmt: skip
    summary["dpo"] = run("dpo", "--config", "dpo_tiny.yaml", "--model_name_or_path", out / "sft",
                         "--train_file", files["pairs"], "--output_dir", out / "dpo")  # fmt: skip
    summary["distill"] = run(
        "distill", "--config", "distill_tiny.yaml", "--model_name_or_path", files["student"],
        "--teacher_model_name_or_path", out / "grpo", "--train_file", files["prompts"],
        "--output_dir", out / "distill",
    )  # fmt: skip

    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    rows = [
        ("Reward model: held-out preference accuracy", summary["reward"], "preference_accuracy"),
        *[(f"{a.upper()}: held-out mean reward-model score", summary[a], "heldout_reward_model") for a in ("grpo", "rloo")],
        *[(f"{a.upper()}: held-out keyword rate", summary[a], "heldout_keyword_reward") for a in ("grpo", "rloo")],
        ("DPO: held-out mean log p(chosen) - log p(rejected)", summary["dpo"], "logp_margin"),
        ("DPO: pairs where chosen is the more likely", summary["dpo"], "chosen_more_likely_fraction"),
        ("Distillation: held-out KL(teacher || student) per token", summary["distill"], "kl_teacher_student"),
    ]  # fmt: skip
    print("\n| Measurement | Before | After |\n|---|---|---|")
    for label, metrics, key in rows:
        print(f"| {label} | {metrics[key + '_before']:.3f} | {metrics[key + '_after']:.3f} |")
    print(f"\nReward curve: {out / 'grpo' / 'reward_curve.png'}; all numbers: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
