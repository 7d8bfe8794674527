"""SimpleGPT against transformers' GPT2LMHeadModel: same shapes, same weights, one process, interleaved runs.

SimpleGPT is configured as GPT-2 (pre-norm, tanh-GELU, tied embeddings) by converting a randomly initialised
GPT2LMHeadModel with `convert_gpt2_to_simplegpt`, so both models compute the same function from the same weights
and only the implementation differs. Every measurement alternates between the two models (A B A B ...) so that
load from other processes on the machine hits both alike; each row reports the median.

Rows: training step tokens/s (forward + backward + AdamW) and its peak memory, inference forward tokens/s,
`generate` tokens/s at batch 1 and the training batch with the dynamic cache, and (with `--compile`, the default
on a GPU) with the static cache plus `torch.compile`. On a GPU the step runs under bfloat16 autocast and reports
model FLOPs utilisation against `--peak-tflops`.

    PYTHONPATH=. python benchmarks/bench.py                      # CPU default shapes, a few minutes on 2 cores
    PYTHONPATH=. python benchmarks/bench.py --preset gpt2-124m --device cuda --peak-tflops 989

Writes <output-dir>/<name>.json and <name>.md (default benchmarks/results/<preset>-<device>.*).
"""

import argparse
import gc
import json
import platform
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation import CompileConfig

from hf_simplegpt.conversion import convert_gpt2_to_simplegpt
from hf_simplegpt.pretraining import flops_per_token

PRESETS = {
    "default": dict(layers=6, hidden=384, heads=6, seq=256, batch=8, vocab=10000),
    "gpt2-124m": dict(layers=12, hidden=768, heads=12, seq=1024, batch=8, vocab=50304),
}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    for name in ("layers", "hidden", "heads", "seq", "batch", "vocab"):
        parser.add_argument(f"--{name}", type=int, help=f"override the preset's {name}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="autocast dtype; bfloat16 on cuda by default")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="add torch.compile rows (training step, static-cache generate); default on cuda only")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's dense bf16 peak for MFU, e.g. 989 for an H100/H200 SXM")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row and model (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per row and model")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per generate call")
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--rows", default="train,memory,forward,generate",
                        help="comma-separated subset of train,memory,forward,generate")
    parser.add_argument("--name", help="output file stem, default <preset>-<device>")
    parser.add_argument("--output-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.hidden % args.heads:
        parser.error(f"--hidden {args.hidden} must be divisible by --heads {args.heads}")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    args.rows = set(args.rows.split(","))
    if unknown := args.rows - {"train", "memory", "forward", "generate"}:
        parser.error(f"unknown --rows {sorted(unknown)}; choose from train,memory,forward,generate")
    args.name = args.name or f"{args.preset}-{args.device.split(':')[0]}"
    return args


def build_models(args) -> dict[str, torch.nn.Module]:
    """GPT2LMHeadModel (sdpa) and SimpleGPT converted from it: identical weights, dropout off in both."""
    torch.manual_seed(args.seed)
    config = GPT2Config(
        vocab_size=args.vocab, n_positions=max(args.seq, args.prompt_length + args.new_tokens), n_embd=args.hidden,
        n_layer=args.layers, n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=args.vocab - 1, eos_token_id=args.vocab - 1,
    )
    gpt2 = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    simplegpt = convert_gpt2_to_simplegpt(gpt2)
    simplegpt.config._attn_implementation = "sdpa"
    return {"SimpleGPT": simplegpt.to(args.device), "GPT-2": gpt2.to(args.device)}


def synchronize(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def autocast(args):
    if args.dtype == "float32":
        return nullcontext()
    return torch.autocast(args.device.split(":")[0], dtype=getattr(torch, args.dtype))


def interleaved_medians(runs: dict, repeats: int, warmup: int, device: str) -> dict[str, float]:
    """Median seconds of each zero-argument callable in `runs`, alternating between them on every repeat."""
    times = {name: [] for name in runs}
    for i in range(warmup + repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def make_train_step(model, optimizer, ids, args):
    def step():
        with autocast(args):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def state_bytes(model, optimizer) -> int:
    """Bytes of the parameters (tied ones once) and the optimizer state: what a training run holds between steps."""
    tensors = list(model.parameters()) + [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values())


def peak_step_bytes(step, device: str) -> int:
    """Peak bytes allocated above the level before the step (activations, logits, gradients) during one step."""
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    # On CPU the profiler's memory events carry the allocator's running total ("Total Allocated").
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        prof.export_chrome_trace(f.name)
        events = json.load(open(f.name))["traceEvents"]
    totals = [(e["ts"], e["args"]["Total Allocated"], e["args"]["Bytes"]) for e in events
              if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})]
    if not totals:
        raise RuntimeError("the profiler recorded no CPU memory events; cannot measure peak memory on this build")
    totals.sort()
    before = totals[0][1] - totals[0][2]  # the total just before the step's first allocation
    return max(total for _, total, _ in totals) - before


def generate_runner(model, prompt, args, static: bool):
    kwargs = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False,
                  pad_token_id=args.vocab - 1)
    if static:
        compile_config = CompileConfig(fullgraph=True)
        compile_config._compile_all_devices = True  # generate compiles only on GPUs unless told (a class attribute)
        kwargs.update(cache_implementation="static", compile_config=compile_config)
    else:
        kwargs.update(disable_compile=True)

    attention_mask = torch.ones_like(prompt)  # no padding; explicit because the pad id is the EOS id

    def run():
        with torch.inference_mode(), autocast(args):
            out = model.generate(prompt, attention_mask=attention_mask, **kwargs)
        assert out.shape[1] == prompt.shape[1] + args.new_tokens

    return run


def run_benchmark(args) -> dict:
    models = build_models(args)
    device, rows = args.device, []
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(device)
    tokens = args.batch * args.seq
    gpt2_like = models["SimpleGPT"]
    num_params = gpt2_like.num_parameters(exclude_embeddings=True)
    fpt = flops_per_token(num_params, args.layers, args.hidden, args.seq)

    def add(row, unit, values, higher_is_better=True, **extra):
        rows.append(dict(row=row, unit=unit, higher_is_better=higher_is_better,
                         simplegpt=values["SimpleGPT"], gpt2=values["GPT-2"],
                         ratio=values["SimpleGPT"] / values["GPT-2"], **extra))
        print(f"{row:<48} SimpleGPT {values['SimpleGPT']:>12.1f}  GPT-2 {values['GPT-2']:>12.1f}  "
              f"ratio {rows[-1]['ratio']:.3f}", flush=True)

    train_variants = [("eager", models)]
    if args.compile:
        train_variants.append(("torch.compile", {n: torch.compile(m) for n, m in models.items()}))
    if rows_wanted := {"train", "memory"} & args.rows:
        for label, variant in train_variants:
            for m in models.values():
                m.train()
            steps = {}
            for name, model in variant.items():
                # fused AdamW: the Trainer's default optimizer (adamw_torch_fused), on CPU and GPU alike.
                optimizer = torch.optim.AdamW(models[name].parameters(), lr=1e-4, fused=True)
                steps[name] = (make_train_step(model, optimizer, ids, args), optimizer)
            if "train" in rows_wanted:
                seconds = interleaved_medians({n: s for n, (s, _) in steps.items()}, args.repeats, args.warmup, device)
                tps = {n: tokens / s for n, s in seconds.items()}
                extra = {"tflops": {n: t * fpt / 1e12 for n, t in tps.items()}}
                if args.peak_tflops:
                    extra["mfu"] = {n: t * fpt / (args.peak_tflops * 1e12) for n, t in tps.items()}
                add(f"training step tokens/s ({label}, {args.dtype})", "tokens/s", tps, **extra)
            if "memory" in rows_wanted and label == "eager":
                peak = {}
                for name, (step, optimizer) in steps.items():
                    if not optimizer.state:  # AdamW allocates its state on the first step: make it exist, cheaply
                        for p in models[name].parameters():
                            p.grad = torch.zeros_like(p)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    peak[name] = (peak_step_bytes(step, device) + state_bytes(models[name], optimizer)) / 2**20
                add(f"peak training memory MiB ({args.dtype})", "MiB", peak, higher_is_better=False)
            del steps
            gc.collect()
    for m in models.values():
        m.eval()

    if "forward" in args.rows:
        def forward(model):
            def run():
                with torch.inference_mode(), autocast(args):
                    model(input_ids=ids)
            return run
        seconds = interleaved_medians({n: forward(m) for n, m in models.items()}, args.repeats, args.warmup, device)
        add(f"inference forward tokens/s ({args.dtype})", "tokens/s", {n: tokens / s for n, s in seconds.items()})

    if "generate" in args.rows:
        caches = [("dynamic cache", False)] + ([("static cache + torch.compile", True)] if args.compile else [])
        for batch in sorted({1, args.batch}):
            prompt = torch.randint(0, args.vocab - 1, (batch, args.prompt_length), generator=gen).to(device)
            for label, static in caches:
                runs = {n: generate_runner(m, prompt, args, static) for n, m in models.items()}
                # Static-cache compilation happens in the first calls: more warm-up there.
                seconds = interleaved_medians(runs, max(1, args.repeats // 2 + 1), args.warmup + 2 * static, device)
                add(f"generate tokens/s, batch {batch} ({label})", "tokens/s",
                    {n: batch * args.new_tokens / s for n, s in seconds.items()})

    return dict(
        shapes=dict(layers=args.layers, hidden=args.hidden, heads=args.heads, seq=args.seq, batch=args.batch,
                    vocab=args.vocab, prompt_length=args.prompt_length, new_tokens=args.new_tokens),
        preset=args.preset, device=device, dtype=args.dtype, compile=args.compile, repeats=args.repeats,
        non_embedding_params=num_params, flops_per_token=fpt, peak_tflops=args.peak_tflops,
        machine=machine_description(device),
        versions=dict(torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version()),
        rows=rows,
    )


def machine_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def markdown_table(result: dict) -> str:
    s = result["shapes"]
    lines = [
        f"Shapes: {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, seq {s['seq']}, batch {s['batch']}, "
        f"vocab {s['vocab']}; generate {s['new_tokens']} tokens after a {s['prompt_length']}-token prompt. "
        f"Device: {result['device']} ({result['machine']}), {result['dtype']}, torch {result['versions']['torch']}, "
        f"transformers {result['versions']['transformers']}; median of {result['repeats']} interleaved runs "
        f"({result['repeats'] // 2 + 1} for generate).",
        "",
        "| measurement | SimpleGPT | GPT2LMHeadModel | SimpleGPT / GPT-2 |",
        "|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        better = "higher is better" if row["higher_is_better"] else "lower is better"
        values = [f"{v:,.0f}" if v >= 100 else f"{v:.1f}" for v in (row["simplegpt"], row["gpt2"])]
        lines.append(f"| {row['row']} | {values[0]} | {values[1]} | {row['ratio']:.2f}× ({better}) |")
        if "mfu" in row:
            lines.append(f"| ↳ MFU at {result['peak_tflops']} TFLOP/s peak | {row['mfu']['SimpleGPT']:.1%} | "
                         f"{row['mfu']['GPT-2']:.1%} | |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    result = run_benchmark(args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown_table(result)
    (args.output_dir / f"{args.name}.md").write_text(table)
    print("\n" + table)
    return result


if __name__ == "__main__":
    main()
