"""Where a greedy decode step's time goes, for SimpleGPT and transformers' GPT-2 with the same weights.

    python benchmarks/decode_profile.py [--publish]   # default bench shapes, batch 1, 64 new tokens: results/decode-profile-cpu.*

Times, per new token (medians of interleaved runs): `generate`, and a bare loop of `model(next_token, cache)` +
argmax, whose difference is `generate`'s own work; then torch's profiler over one SimpleGPT `generate` call, by
operator. At batch 1 on a CPU the step is the weight matmuls (the `addmm` of every projection and the `mm` of the
output layer), which both models run alike on the same weights.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from hf_simplegpt.conversion import convert_gpt2_to_simplegpt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/")
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=args.layers,
        n_embd=args.hidden,
        n_head=args.heads,
        n_positions=256,
        vocab_size=args.vocab,
        bos_token_id=0,
        eos_token_id=0,
        resid_pdrop=0,
        embd_pdrop=0,
        attn_pdrop=0,
    )
    models = {"SimpleGPT": None, "GPT-2": GPT2LMHeadModel(config).eval()}
    models["SimpleGPT"] = convert_gpt2_to_simplegpt(models["GPT-2"]).eval()
    prompt, n = torch.randint(0, args.vocab, (1, 16)), args.new_tokens

    @torch.no_grad()
    def with_generate(model):
        start = time.perf_counter()
        model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            pad_token_id=0,
        )
        return (time.perf_counter() - start) / n

    @torch.no_grad()
    def bare_loop(model):
        cache = DynamicCache(config=model.config)
        token = model(prompt, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(n):
            token = model(token, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
        return (time.perf_counter() - start) / n

    times = {(name, way): [] for name in models for way in ("generate", "loop")}
    for _ in range(args.repeats):
        for name, model in models.items():
            times[name, "generate"].append(with_generate(model))
            times[name, "loop"].append(bare_loop(model))
    ms = {
        name: {way: round(statistics.median(times[name, way]) * 1e3, 2) for way in ("generate", "loop")}
        for name in models
    }
    with torch.profiler.profile() as profile:
        with_generate(models["SimpleGPT"])
    events = profile.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {
        e.key: round(e.self_cpu_time_total / total, 4)
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]
    }
    result = {"ms_per_new_token": ms, "simplegpt_generate_self_cpu_share": shares, "environment": environment()}
    rows = "\n".join(
        f"| {name} | {t['generate']:.2f} | {t['loop']:.2f} | {t['generate'] - t['loop']:.2f} |"
        for name, t in ms.items()
    )
    top = "\n".join(f"| `{op}` | {share:.1%} |" for op, share in shares.items())
    markdown = (
        f"{describe(result['environment'])}\n\n| ms per new token | generate | model step alone | generate's own work |\n"
        f"|---|---:|---:|---:|\n{rows}\n\nOne SimpleGPT `generate`, self CPU time by operator:\n\n"
        f"| operator | share |\n|---|---:|\n{top}\n"
    )
    save("decode-profile-cpu", result, markdown, args.publish)


if __name__ == "__main__":
    main()
