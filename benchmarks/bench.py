"""SimpleGPT against transformers' GPT2LMHeadModel: same shapes, same weights, one process, interleaved runs.

SimpleGPT is configured as GPT-2 (pre-norm, tanh-GELU, tied embeddings) by converting a randomly initialised
GPT2LMHeadModel with `convert_gpt2_to_simplegpt`, so both models compute the same function from the same weights
and only the implementation differs. Every measurement alternates between the runs it compares (A B A B ...) so
that load from other processes on the machine hits them alike; each row reports the median.

Rows: training step tokens/s (forward + backward + AdamW) and its peak memory, inference forward tokens/s, and for
greedy `generate` at batch 1 and the training batch: decode tokens/s and time to first token, with the dynamic cache
in eager mode and with the static cache compiled by `generate`'s `compile_config` (`torch.compile`,
fullgraph). Both come from one `--new-tokens` call, timed by a streamer: time to first token is the prefill of
`--prompt-length` tokens plus the first token; decode tokens/s is batch x (new tokens - 1) over the rest of the call.
The bench checks that both models compute the same thing: forward logits, and identical greedy tokens in every
decode mode.
On a GPU (`--device cuda`) the training step runs under bfloat16 autocast and reports model FLOPs utilisation against
`--peak-tflops`; the inference rows run bfloat16 copies of the models.

    python benchmarks/bench.py                                      # CPU default shapes, some minutes on 2 cores
    python benchmarks/bench.py --preset gpt2-124m --rows decode --new-tokens 32 --repeats 3
    python benchmarks/bench.py --preset gpt2-124m --device cuda --peak-tflops 989

Writes <name>.json and <name>.md (name default <preset>-<device>) to benchmarks/out/ (git-ignored), or to the
published benchmarks/results/ with --publish.
"""

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.generation import CompileConfig
from transformers.generation.streamers import BaseStreamer

from hf_simplegpt.conversion import convert_gpt2_to_simplegpt
from hf_simplegpt.pretraining import flops_per_token, matmul_parameters
from hf_simplegpt.timing import interleaved_medians, interleaved_times, synchronize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import save  # noqa: E402

PRESETS = {
    "default": dict(layers=6, hidden=384, heads=6, seq=256, batch=8, vocab=10000),
    "gpt2-124m": dict(layers=12, hidden=768, heads=12, seq=1024, batch=8, vocab=50304),
}
BENCHMARKS_DIR = Path(__file__).resolve().parent
ROWS = ("train", "memory", "forward", "decode")
DECODE_MODES = {"dynamic": "dynamic cache, eager", "static": "static cache, torch.compile"}
# Issue 11's targets: SimpleGPT's eager decode against GPT-2's, and SimpleGPT's compiled decode against its own eager.
EAGER_TARGET, COMPILED_TARGET = 1.3, 2.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    for name in ("layers", "hidden", "heads", "seq", "batch", "vocab"):
        parser.add_argument(f"--{name}", type=int, help=f"override the preset's {name}")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], help="default bfloat16 on cuda, float32 on cpu")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="add a torch.compile training-step row; default on cuda only",
    )
    parser.add_argument(
        "--compile-backend",
        default="inductor",
        help="torch.compile backend of the static-cache decode rows (aot_eager: no codegen, for tests)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's dense bf16 peak for MFU, e.g. 989 for an H100/H200 SXM",
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per row and model (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs per row and model")
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens generated per decode run")
    parser.add_argument("--prompt-length", type=int, default=16)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--name", help="output file stem, default <preset>-<device>")
    parser.add_argument(
        "--publish", action="store_true", help="write to benchmarks/results/ instead of benchmarks/out/"
    )
    parser.add_argument("--output-dir", type=Path, help="write here instead (overrides --publish)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, value in PRESETS[args.preset].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.hidden % args.heads:
        parser.error(f"--hidden {args.hidden} must be divisible by --heads {args.heads}")
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2: decode speed is measured after the first token")
    if args.dtype is None:
        args.dtype = "bfloat16" if args.device.startswith("cuda") else "float32"
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    args.rows = set(args.rows.split(","))
    if unknown := args.rows - set(ROWS):
        parser.error(f"unknown --rows {sorted(unknown)}; choose from {','.join(ROWS)}")
    args.name = args.name or f"{args.preset}-{args.device.split(':')[0]}"
    if args.output_dir is None:
        args.output_dir = BENCHMARKS_DIR / ("results" if args.publish else "out")
    return args


def build_models(args) -> dict[str, torch.nn.Module]:
    """GPT2LMHeadModel (sdpa) and SimpleGPT converted from it: identical weights, dropout off in both."""
    torch.manual_seed(args.seed)
    config = GPT2Config(
        vocab_size=args.vocab,
        n_positions=max(args.seq, args.prompt_length + args.new_tokens),
        n_embd=args.hidden,
        n_layer=args.layers,
        n_head=args.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=args.vocab - 1,
        eos_token_id=args.vocab - 1,
    )
    gpt2 = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    simplegpt = convert_gpt2_to_simplegpt(gpt2)
    simplegpt.config._attn_implementation = "sdpa"
    return {"SimpleGPT": simplegpt.to(args.device), "GPT-2": gpt2.to(args.device)}


def autocast(args):
    if args.dtype == "float32":
        return nullcontext()
    return torch.autocast(args.device.split(":")[0], dtype=getattr(torch, args.dtype))


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
    totals = [
        (e["ts"], e["args"]["Total Allocated"], e["args"]["Bytes"])
        for e in events
        if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})
    ]
    if not totals:
        raise RuntimeError("the profiler recorded no CPU memory events; cannot measure peak memory on this build")
    totals.sort()
    before = totals[0][1] - totals[0][2]  # the total just before the step's first allocation
    return max(total for _, total, _ in totals) - before


class TokenClock(BaseStreamer):
    """Records when `generate` hands over its first new tokens (the first `put` is the prompt)."""

    def __init__(self, device: str):
        self.device, self.puts, self.first_token = device, 0, None

    def put(self, value):
        self.puts += 1
        if self.puts == 2:
            synchronize(self.device)
            self.first_token = time.perf_counter()

    def end(self):
        pass


def generate_runner(model, prompt, mode: str, args, outputs: list, first_token_seconds: list):
    """A zero-argument greedy `generate` of exactly `--new-tokens` tokens. Appends the generated ids to `outputs` and
    the seconds from the call to its first new token to `first_token_seconds`."""
    new_tokens = args.new_tokens
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=args.vocab - 1)
    if mode == "static":
        compile_config = CompileConfig(fullgraph=True, backend=args.compile_backend)
        compile_config._compile_all_devices = True  # generate compiles only on GPUs unless told (a class attribute)
        kwargs.update(cache_implementation="static", compile_config=compile_config)
    else:
        kwargs.update(disable_compile=True)
    attention_mask = torch.ones_like(prompt)  # no padding; explicit because the pad id is the EOS id

    def run():
        clock = TokenClock(args.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(prompt, attention_mask=attention_mask, streamer=clock, **kwargs)
        outputs.append(out[:, prompt.shape[1] :])
        first_token_seconds.append(clock.first_token - start)

    return run


def decode_rows(models, args, gen: torch.Generator, add) -> dict:
    """Decode tokens/s and time to first token per batch size and mode, all runs of a batch size interleaved.

    Returns whether the greedy tokens of SimpleGPT and GPT-2 (and of both modes) were identical, per batch size.
    """
    parity = {}
    for batch in sorted({1, args.batch}):
        prompt = torch.randint(0, args.vocab - 1, (batch, args.prompt_length), generator=gen).to(args.device)
        runs, outputs, first_token = {}, {}, {}
        for mode in DECODE_MODES:
            for name, model in models.items():
                outputs[mode, name], first_token[mode, name] = [], []
                runs[mode, name] = generate_runner(
                    model, prompt, mode, args, outputs[mode, name], first_token[mode, name]
                )
        # The static rows compile during their first calls: warm-up runs everything at least twice.
        warmup = max(2, args.warmup)
        times = interleaved_times(runs, args.repeats, warmup, args.device)
        for mode, label in DECODE_MODES.items():
            decode, first = {}, {}
            for name in models:
                firsts = first_token[mode, name][warmup:]
                decode_seconds = [total - first for total, first in zip(times[mode, name], firsts)]
                decode[name] = batch * (args.new_tokens - 1) / statistics.median(decode_seconds)
                first[name] = 1000 * statistics.median(firsts)
            add(f"decode tokens/s, batch {batch} ({label})", "tokens/s", decode)
            add(f"time to first token ms, batch {batch} ({label})", "ms", first, higher_is_better=False)
        reference = outputs["dynamic", "GPT-2"][-1]
        parity[f"batch {batch}"] = all(torch.equal(out, reference) for outs in outputs.values() for out in outs)
    return parity


def targets(rows: list[dict], args) -> list[dict]:
    """Issue 11's decode targets, computed from the rows."""
    by_name = {row["row"]: row for row in rows}
    found = []
    for batch in sorted({1, args.batch}):
        eager = by_name.get(f"decode tokens/s, batch {batch} ({DECODE_MODES['dynamic']})")
        compiled = by_name.get(f"decode tokens/s, batch {batch} ({DECODE_MODES['static']})")
        if eager is None or compiled is None:
            continue
        found.append(
            dict(
                target=f"dynamic-eager decode, SimpleGPT / GPT-2, batch {batch}",
                goal=EAGER_TARGET,
                value=eager["ratio"],
            )
        )
        found.append(
            dict(
                target=f"static-compiled / dynamic-eager decode, SimpleGPT, batch {batch}",
                goal=COMPILED_TARGET,
                value=compiled["simplegpt"] / eager["simplegpt"],
                gpt2=compiled["gpt2"] / eager["gpt2"],
            )
        )
    for target in found:
        target["met"] = target["value"] >= target["goal"]
    return found


def run_benchmark(args) -> dict:
    load_before = os.getloadavg()
    models = build_models(args)
    device, rows = args.device, []
    gen = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=gen).to(device)
    tokens = args.batch * args.seq
    num_params = matmul_parameters(models["SimpleGPT"])
    fpt = flops_per_token(num_params, args.layers, args.hidden, args.seq)

    def add(row, unit, values, higher_is_better=True, **extra):
        rows.append(
            dict(
                row=row,
                unit=unit,
                higher_is_better=higher_is_better,
                simplegpt=values["SimpleGPT"],
                gpt2=values["GPT-2"],
                ratio=values["SimpleGPT"] / values["GPT-2"],
                **extra,
            )
        )
        print(
            f"{row:<56} SimpleGPT {values['SimpleGPT']:>10.1f}  GPT-2 {values['GPT-2']:>10.1f}  "
            f"ratio {rows[-1]['ratio']:.3f}",
            flush=True,
        )

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

    # Inference runs the weights in the benchmark's dtype (bfloat16 copies on GPUs), as a server would.
    dtype = getattr(torch, args.dtype)
    inference = {n: (m if dtype == torch.float32 else copy.deepcopy(m).to(dtype)).eval() for n, m in models.items()}
    with torch.inference_mode():
        logits = {n: m(input_ids=ids[:1, : args.prompt_length]).logits.float() for n, m in inference.items()}
    parity = dict(forward_max_abs_logit_diff=(logits["SimpleGPT"] - logits["GPT-2"]).abs().max().item())
    if dtype == torch.float32 and parity["forward_max_abs_logit_diff"] > 1e-3:
        raise RuntimeError(
            f"SimpleGPT and GPT-2 disagree (max logit difference {parity['forward_max_abs_logit_diff']})"
        )

    if "forward" in args.rows:

        def forward(model):
            def run():
                with torch.inference_mode():
                    model(input_ids=ids)

            return run

        seconds = interleaved_medians({n: forward(m) for n, m in inference.items()}, args.repeats, args.warmup, device)
        add(f"inference forward tokens/s ({args.dtype})", "tokens/s", {n: tokens / s for n, s in seconds.items()})

    if "decode" in args.rows:
        parity["greedy_tokens_identical"] = decode_rows(inference, args, gen, add)

    return dict(
        shapes=dict(
            layers=args.layers,
            hidden=args.hidden,
            heads=args.heads,
            seq=args.seq,
            batch=args.batch,
            vocab=args.vocab,
            prompt_length=args.prompt_length,
            new_tokens=args.new_tokens,
        ),
        preset=args.preset,
        device=device,
        dtype=args.dtype,
        compile=args.compile,
        compile_backend=args.compile_backend,
        repeats=args.repeats,
        warmup=args.warmup,
        matmul_params=num_params,
        flops_per_token=fpt,
        peak_tflops=args.peak_tflops,
        machine=machine_description(device),
        load_average=dict(before=load_before, after=os.getloadavg()),
        versions=dict(torch=torch.__version__, transformers=transformers.__version__, python=platform.python_version()),
        rows=rows,
        parity=parity,
        targets=targets(rows, args),
    )


def machine_description(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def markdown_table(result: dict) -> str:
    s, load = result["shapes"], result["load_average"]
    lines = [
        f"Shapes: {s['layers']} layers, hidden {s['hidden']}, {s['heads']} heads, seq {s['seq']}, batch {s['batch']}, "
        f"vocab {s['vocab']}; decode {s['new_tokens']} tokens after a {s['prompt_length']}-token prompt. "
        f"Device: {result['device']} ({result['machine']}), {result['dtype']}, torch {result['versions']['torch']}, "
        f"transformers {result['versions']['transformers']}; median of {result['repeats']} interleaved runs. "
        f"Load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in load['before'])} before, "
        f"{'/'.join(f'{x:.2f}' for x in load['after'])} after.",
        "",
        "| measurement | SimpleGPT | GPT2LMHeadModel | SimpleGPT / GPT-2 |",
        "|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        better = "higher is better" if row["higher_is_better"] else "lower is better"
        lines.append(
            f"| {row['row']} | {number(row['simplegpt'])} | {number(row['gpt2'])} | {row['ratio']:.2f}× ({better}) |"
        )
        if "mfu" in row:
            lines.append(
                f"| ↳ MFU at {result['peak_tflops']} TFLOP/s peak | {row['mfu']['SimpleGPT']:.1%} | "
                f"{row['mfu']['GPT-2']:.1%} | |"
            )
    if result["targets"]:
        lines += ["", "| target (issue 11) | goal | measured | met |", "|---|---:|---:|---|"]
        for t in result["targets"]:
            gpt2 = f" (GPT-2: {t['gpt2']:.2f}×)" if "gpt2" in t else ""
            lines.append(
                f"| {t['target']} | ≥ {t['goal']}× | {t['value']:.2f}×{gpt2} | {'yes' if t['met'] else 'no'} |"
            )
    parity = result["parity"]
    lines += ["", f"Parity: largest forward logit difference {parity['forward_max_abs_logit_diff']:.2e}"]
    if "greedy_tokens_identical" in parity:
        lines[-1] += "; greedy tokens identical across models and decode modes: " + ", ".join(
            f"{k} {'yes' if v else 'no'}" for k, v in parity["greedy_tokens_identical"].items()
        )
    lines[-1] += "."
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    result = run_benchmark(args)
    result["command"] = "python benchmarks/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    save(args.name, result, markdown_table(result), output_dir=args.output_dir)
    return result


if __name__ == "__main__":
    main()
