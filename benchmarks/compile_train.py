"""Compiled against eager training: the same SimpleGPT, the same batches, step time and loss side by side.

Two copies of one model train in the same process on the same sequence of batches, one eager and one through
`torch.compile` (inductor by default); their steps alternate (hf_simplegpt.timing), so load from other processes
hits both alike. Each step is forward + backward + fused AdamW, as in the Trainer. Reported: median step time and
tokens/s of each, the speed-up, and the largest difference between their losses at the same step (how far compiled
training drifts from eager; a measured tolerance, not an assumed one).

    python benchmarks/compile_train.py --publish                  # bench.py's default shapes, CPU: results/compile-train-cpu.*
    python benchmarks/compile_train.py --preset gpt2-124m --device cuda --dtype bfloat16 --peak-tflops 989
    python benchmarks/compile_train.py --preset tiny --backend aot_eager --steps 3    # seconds: what the test runs

Writes <name>.json and <name>.md to benchmarks/out/ (git-ignored), or to benchmarks/results/ with --publish.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.pretraining import flops_per_token, matmul_parameters
from hf_simplegpt.timing import interleaved_times

BENCHMARKS_DIR = Path(__file__).resolve().parent
# bench.py's presets (the shapes of benchmarks/README.md), and a tiny one for the test.
PRESETS = {
    "default": dict(layers=6, hidden=384, heads=6, seq=256, batch=8, vocab=10000),
    "gpt2-124m": dict(layers=12, hidden=768, heads=12, seq=1024, batch=8, vocab=50304),
    "tiny": dict(layers=2, hidden=32, heads=4, seq=16, batch=2, vocab=128),
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="autocast dtype; default bfloat16 on cuda")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: no codegen)")
    parser.add_argument("--mode", default=None, help="torch.compile mode (e.g. max-autotune)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each (median reported)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps of each (compilation happens here)")
    parser.add_argument("--peak-tflops", type=float, help="the device's peak, for MFU (989 for an H100/H200, bf16)")
    parser.add_argument("--name", help="output file stem, default compile-train-<preset>-<device>")
    parser.add_argument(
        "--publish", action="store_true", help="write to benchmarks/results/ instead of benchmarks/out/"
    )
    parser.add_argument("--output-dir", type=Path, help="write here instead (overrides --publish)")
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    args.name = args.name or f"compile-train-{args.preset}-{args.device.split(':')[0]}"
    return args


def run_benchmark(args) -> dict:
    shape = PRESETS[args.preset]
    load_before = os.getloadavg()
    torch.manual_seed(0)
    config = SimpleGPTConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        max_position_embeddings=shape["seq"],
        dropout=0.0,
        tie_word_embeddings=True,
    )
    eager = SimpleGPTForCausalLM(config).to(args.device).train()
    models = {"eager": eager, "compiled": copy.deepcopy(eager)}
    runnable = {"eager": eager, "compiled": torch.compile(models["compiled"], backend=args.backend, mode=args.mode)}
    total = args.warmup + args.steps
    gen = torch.Generator().manual_seed(1)
    batches = torch.randint(0, shape["vocab"], (total, shape["batch"], shape["seq"]), generator=gen).to(args.device)
    autocast = (
        torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16) if args.dtype == "bfloat16" else nullcontext()
    )
    losses = {name: [] for name in models}

    def step(name):
        optimizer = torch.optim.AdamW(models[name].parameters(), lr=1e-3, fused=True)  # the Trainer's default

        def run():
            ids = batches[len(losses[name])]
            with autocast:
                loss = runnable[name](input_ids=ids, labels=ids).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[name].append(loss.item())

        return run

    times = interleaved_times({name: step(name) for name in models}, args.steps, args.warmup, args.device)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    tokens = shape["batch"] * shape["seq"]
    fpt = flops_per_token(matmul_parameters(eager), shape["layers"], shape["hidden"], shape["seq"])
    rows = {}
    for name, s in seconds.items():
        rows[name] = dict(step_seconds=s, tokens_per_second=tokens / s)
        if args.peak_tflops:
            rows[name]["mfu"] = tokens / s * fpt / (args.peak_tflops * 1e12)
    if args.device.startswith("cuda"):
        rows["peak_memory_mib_both"] = torch.cuda.max_memory_allocated() / 2**20
    return dict(
        preset=args.preset,
        shapes=shape,
        device=args.device,
        dtype=args.dtype,
        backend=args.backend,
        mode=args.mode,
        steps=args.steps,
        warmup=args.warmup,
        rows=rows,
        speedup=seconds["eager"] / seconds["compiled"],
        losses=losses,
        max_abs_loss_difference=max(abs(a - b) for a, b in zip(losses["eager"], losses["compiled"])),
        flops_per_token=fpt,
        peak_tflops=args.peak_tflops,
        machine=torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        load_average=dict(before=load_before[0], after=os.getloadavg()[0]),
        versions=dict(torch=torch.__version__, python=platform.python_version()),
    )


def markdown(result: dict) -> str:
    s, load = result["shapes"], result["load_average"]
    lines = [
        f"# Compiled against eager training ({result['preset']}, {result['device']}, {result['dtype']})",
        "",
        f"Shapes: {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, seq {s['seq']}, batch {s['batch']}, "
        f"vocab {s['vocab']}. torch.compile backend {result['backend']}, mode {result['mode']}. Machine: "
        f"{result['machine']}; load average {load['before']:.1f} before, {load['after']:.1f} after. Medians of "
        f"{result['steps']} interleaved steps after {result['warmup']} warm-up steps; forward + backward + fused AdamW.",
        "",
        "| | step ms | tokens/s |" + (" MFU |" if result["peak_tflops"] else ""),
        "|---|---:|---:|" + ("---:|" if result["peak_tflops"] else ""),
    ]
    for name in ("eager", "compiled"):
        row = result["rows"][name]
        mfu = f" {row['mfu']:.1%} |" if "mfu" in row else ""
        lines.append(f"| {name} | {row['step_seconds'] * 1e3:.1f} | {row['tokens_per_second']:,.0f} |{mfu}")
    lines += [
        "",
        f"Speed-up (eager step time / compiled): **{result['speedup']:.2f}×**. Largest difference between "
        f"the two losses at the same step: {result['max_abs_loss_difference']:.2e}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = run_benchmark(args)
    out = args.output_dir or BENCHMARKS_DIR / ("results" if args.publish else "out")
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"{args.name}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
