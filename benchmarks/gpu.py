"""Issue 17's GPU measurements as one prepared command, for a GPU user or a session lent a device:

    python benchmarks/gpu.py                      # on a CUDA GPU: the 124M preset, results in benchmarks/out/gpu/
    python benchmarks/gpu.py --publish            # the same, into benchmarks/results/gpu-<device>.md
    python benchmarks/gpu.py --preset tiny        # any machine, minutes: tiny shapes, what the test runs on a CPU

Steps (each runs as its own process, so one failure does not stop the others; each row of the summary says
measured, skipped and why, or failed with its log):
  1. bench.py: SimpleGPT against GPT2LMHeadModel, training step eager and torch.compile (bf16, fused AdamW, SDPA),
     tokens/s, MFU and peak memory (124M preset: seq 1024);
  2. compile_train.py: compiled against eager on the same batches (speed-up, loss difference, MFU);
  3. the shipped engines on one device: hf-simplegpt pretrain with --accelerate_config multi_gpu, fsdp,
     deepspeed_zero2, deepspeed_zero3 (tokens/s from the job's log, and its saved-folder logit check);
  4. a QLoRA SFT step (bitsandbytes NF4, .[qlora]) on the pretrained folder;
  5. int4 weight-only quantization (torchao) of that folder, with its perplexity and speed comparison;
  6. a vLLM smoke test of its Transformers backend, where vllm is installed.
The MFU goal (issue 17): >= 40% for compiled 124M training on an H100/H200-class GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
PRESETS = {
    # The 124M shapes (GPT-2 small, seq 1024, vocab 50304) at bf16 on a GPU; 989 TFLOP/s: H100/H200 dense bf16.
    "gpu": dict(
        bench=["--preset", "gpt2-124m", "--compile", "--peak-tflops", "989", "--rows", "train,memory"],
        compile=["--preset", "gpt2-124m", "--peak-tflops", "989"],
        pretrain=[
            "--vocab_size",
            "8192",
            "--hidden_size",
            "768",
            "--num_hidden_layers",
            "12",
            "--num_attention_heads",
            "12",
            "--max_position_embeddings",
            "1024",
            "--per_device_train_batch_size",
            "8",
            "--max_steps",
            "30",
            "--logging_steps",
            "10",
            "--torch_compile",
            "true",
            "--optim",
            "adamw_torch_fused",
        ],
        sft_steps="20",
        quantize_blocks="64",
    ),
    "tiny": dict(
        bench=[
            "--layers",
            "1",
            "--hidden",
            "32",
            "--heads",
            "2",
            "--seq",
            "16",
            "--batch",
            "2",
            "--vocab",
            "512",
            "--rows",
            "train,memory",
            "--repeats",
            "1",
            "--warmup",
            "0",
        ],
        compile=["--preset", "tiny", "--backend", "aot_eager", "--steps", "2", "--warmup", "1"],
        pretrain=["--config", "pretrain_tiny.yaml", "--max_steps", "2", "--eval_on_start", "false"],
        sft_steps="2",
        quantize_blocks="4",
    ),
}
ENGINES = ("multi_gpu", "fsdp", "deepspeed_zero2", "deepspeed_zero3")


def run(name: str, cmd: list[str], out: Path, rows: list[dict], skip: str | None = None) -> bool:
    """Run one step, logging to out/<name>.log; append its row; True when it exited 0."""
    row = dict(step=name, command=" ".join(cmd))
    if skip:
        rows.append({**row, "status": f"skipped: {skip}"})
        print(f"[{name}] skipped: {skip}", flush=True)
        return False
    print(f"[{name}] {row['command']}", flush=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    with open(out / f"{name}.log", "w") as log:
        code = subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    rows.append({**row, "status": "measured" if code == 0 else f"failed (exit {code}, see {name}.log)"})
    return code == 0


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu" if torch.cuda.is_available() else "tiny")
    parser.add_argument("--output-dir", type=Path, help="default benchmarks/out/gpu-<preset>")
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/results/gpu-<device>.md/.json")
    args = parser.parse_args(argv)
    preset, cuda = PRESETS[args.preset], torch.cuda.is_available()
    out = (args.output_dir or REPO / "benchmarks" / "out" / f"gpu-{args.preset}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    py, rows = sys.executable, []
    cli = [py, "-m", "hf_simplegpt"]

    run("bench", [py, "benchmarks/bench.py", *preset["bench"], "--output-dir", str(out), "--name", "bench"], out, rows)
    run(
        "compile_train",
        [py, "benchmarks/compile_train.py", *preset["compile"], "--output-dir", str(out), "--name", "compile_train"],
        out,
        rows,
    )
    base = out / "pretrain-multi_gpu"
    for engine in ENGINES:
        skip = None
        if not cuda and engine == "fsdp":
            skip = "accelerate runs FSDP only on GPUs (tests/test_distributed.py tests fully_shard on CPUs)"
        elif engine.startswith("deepspeed") and not _installed("deepspeed"):
            skip = 'deepspeed not installed (pip install --no-build-isolation -e ".[deepspeed]")'
        run(
            f"pretrain-{engine}",
            [
                *cli,
                "pretrain",
                "--accelerate_config",
                engine,
                "--num_processes",
                "1",
                *preset["pretrain"],
                "--output_dir",
                str(out / f"pretrain-{engine}"),
                "--overwrite_output_dir",
                "true",
                "--num_sample_generations",
                "0",
                "--report_to",
                "none",
            ],
            out,
            rows,
            skip,
        )
    have_base = (base / "model.safetensors").exists()
    data = out / "sft.jsonl"
    run("make-sft-data", [*cli, "make-sft-data", "--output", str(data)], out, rows)
    run(
        "sft-qlora",
        [
            *cli,
            "sft",
            "--config",
            "sft_qlora.yaml",
            "--model_name_or_path",
            str(base),
            "--train_file",
            str(data),
            "--output_dir",
            str(out / "sft-qlora"),
            "--max_steps",
            preset["sft_steps"],
            "--num_sample_generations",
            "0",
            "--overwrite_output_dir",
            "true",
        ],
        out,
        rows,
        None
        if cuda and have_base and _installed("bitsandbytes")
        else "needs a CUDA GPU, bitsandbytes (.[qlora]) and the pretrained folder",
    )
    run(
        "quantize-int4",
        [
            *cli,
            "quantize",
            "--model_name_or_path",
            str(base),
            "--method",
            "int4_weight_only",
            "--output_dir",
            str(out / "int4"),
            "--max_eval_blocks",
            preset["quantize_blocks"],
            "--overwrite_output_dir",
            "true",
        ],
        out,
        rows,
        None if cuda and have_base else "int4 weight-only needs a CUDA GPU and the pretrained folder",
    )
    smoke = (
        "from vllm import LLM, SamplingParams; import sys; llm = LLM(sys.argv[1], model_impl='transformers', "
        "trust_remote_code=True); print(llm.generate(['The '], SamplingParams(max_tokens=16))[0].outputs[0].text)"
    )
    run(
        "vllm-transformers-backend",
        [py, "-c", smoke, str(base)],
        out,
        rows,
        None if cuda and have_base and _installed("vllm") else "needs a CUDA GPU, vllm and the pretrained folder",
    )

    device = torch.cuda.get_device_name() if cuda else "cpu"
    summary = {
        "preset": args.preset,
        "device": device,
        "torch": torch.__version__,
        "steps": rows,
        "numbers": _numbers(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = "\n".join(["| step | status |", "|---|---|", *(f"| {r['step']} | {r['status']} |" for r in rows)])
    text = f"# GPU measurements ({args.preset}, {device})\n\n{table}\n\n```json\n{json.dumps(summary['numbers'], indent=2)}\n```\n"
    (out / "summary.md").write_text(text)
    if args.publish:
        stem = REPO / "benchmarks" / "results" / f"gpu-{args.preset}-{'cuda' if cuda else 'cpu'}"
        stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        stem.with_suffix(".md").write_text(text)
    print(text)
    return rows


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _numbers(out: Path) -> dict:
    """The headline numbers each step wrote: tokens/s, MFU, memory, speed-up, the engines' logit checks."""
    numbers = {}
    if (out / "bench.json").exists():
        numbers["bench"] = {
            r["row"]: {k: r.get(k) for k in ("simplegpt", "gpt2", "ratio", "mfu")}
            for r in json.loads((out / "bench.json").read_text())["rows"]
        }
    if (out / "compile_train.json").exists():
        result = json.loads((out / "compile_train.json").read_text())
        numbers["compile_train"] = {
            "rows": result["rows"],
            "speedup": result["speedup"],
            "max_abs_loss_difference": result["max_abs_loss_difference"],
        }
    for engine in ENGINES:
        results = out / f"pretrain-{engine}" / "all_results.json"
        if results.exists():
            r = json.loads(results.read_text())
            numbers[f"pretrain-{engine}"] = {
                k: r.get(k) for k in ("train_samples_per_second", "eval_loss", "saved_model_max_logit_difference")
            }
    for name, file in (("sft-qlora", "sft-qlora/sft_results.json"), ("quantize-int4", "int4/quantization.json")):
        if (out / file).exists():
            numbers[name] = json.loads((out / file).read_text())
    return numbers


if __name__ == "__main__":
    main(sys.argv[1:])
