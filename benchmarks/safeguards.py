"""What the run safeguards cost: the Trainer step with and without `SafeguardCallback`, and checkpoint manifests.

    python benchmarks/safeguards.py [--publish]         # results/safeguards-cpu.{json,md}: step times, manifest MB/s

Step: the same Trainer (default pretraining shapes: 4 layers, 128 wide, blocks of 128, batch 16, random tokens) runs
`--steps` optimizer steps with and without the callback (gradient-norm check and signal flag every step), alternating
`--repeats` times; the median ms/step of each is reported, and the time the callback itself took per step (the
difference of the medians is within the noise of a shared machine). Manifest: `write_manifest` and `manifest_problems` on a
folder of `--megabytes` of random files (the checkpoint's own files would be in the page cache too).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.checkpoints import manifest_problems, write_manifest
from hf_simplegpt.safeguards import SafeguardCallback

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402


class TimedCallback(SafeguardCallback):
    """The callback, timing its own per-step work (the gradient-norm check and the flags)."""

    seconds = 0.0

    def on_pre_optimizer_step(self, *args, **kwargs):
        start = time.perf_counter()
        super().on_pre_optimizer_step(*args, **kwargs)
        TimedCallback.seconds += time.perf_counter() - start

    def on_step_end(self, *args, **kwargs):
        start = time.perf_counter()
        super().on_step_end(*args, **kwargs)
        TimedCallback.seconds += time.perf_counter() - start


def step_ms(model, data, steps: int, guarded: bool, out: str) -> float:
    args = TrainingArguments(
        out,
        max_steps=steps,
        per_device_train_batch_size=16,
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    if guarded:
        trainer.add_callback(TimedCallback())
    start = time.perf_counter()
    trainer.train()
    return (time.perf_counter() - start) / steps * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=512)
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = SimpleGPTConfig(
        vocab_size=2048,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        max_position_embeddings=128,
        dropout=0.0,
    )
    model = SimpleGPTForCausalLM(config)
    ids = torch.randint(0, 2048, (16 * args.steps, 128))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "labels": ids.tolist()})
    times = {False: [], True: []}
    with tempfile.TemporaryDirectory() as out:
        step_ms(model, data, 2, False, out)  # warm-up (thread pools, allocator)
        for _ in range(args.repeats):
            for guarded in (False, True):
                times[guarded].append(step_ms(model, data, args.steps, guarded, out))
    plain, guarded = statistics.median(times[False]), statistics.median(times[True])
    callback = TimedCallback.seconds * 1000 / (args.steps * args.repeats)
    step = {
        "plain_ms": round(plain, 2),
        "guarded_ms": round(guarded, 2),
        "callback_ms_per_step": round(callback, 3),
        "callback_percent": round(100 * callback / plain, 2),
        "runs_ms": {("guarded" if k else "plain"): [round(t, 1) for t in v] for k, v in times.items()},
    }

    with tempfile.TemporaryDirectory() as folder:
        for i in range(4):  # a checkpoint is a few large files
            with open(os.path.join(folder, f"part{i}.bin"), "wb") as f:
                f.write(os.urandom(args.megabytes * 2**20 // 4))
        start = time.perf_counter()
        write_manifest(folder)
        written = time.perf_counter() - start
        start = time.perf_counter()
        assert manifest_problems(folder) == []
        checked = time.perf_counter() - start
    manifest = {
        "megabytes": args.megabytes,
        "write_MB_per_s": round(args.megabytes / written),
        "check_MB_per_s": round(args.megabytes / checked),
    }
    result = {"train_step": step, "manifest": manifest, "environment": environment()}
    markdown = (
        f"{describe(result['environment'])} {args.steps} steps × {args.repeats} alternating runs, median.\n\n"
        "| measurement | value |\n|---|---:|\n"
        f"| train step ms, plain Trainer | {step['plain_ms']} |\n| train step ms, with SafeguardCallback | {step['guarded_ms']} |\n"
        f"| the callback's own ms per step | {step['callback_ms_per_step']} ({step['callback_percent']}%) |\n"
        f"| manifest write MB/s ({args.megabytes} MB) | {manifest['write_MB_per_s']} |\n"
        f"| manifest check MB/s | {manifest['check_MB_per_s']} |\n"
    )
    save("safeguards-cpu", result, markdown, args.publish)


if __name__ == "__main__":
    main()
