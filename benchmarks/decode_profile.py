"""Where a greedy decode step's time goes, for SimpleGPT and transformers' GPT-2 with the same weights.

    python benchmarks/decode_profile.py            # default bench shapes, batch 1, 64 new tokens

Times, per new token (medians of interleaved runs): `generate`, and a bare loop of `model(next_token, cache)` +
argmax, whose difference is `generate`'s own work; then torch's profiler over one SimpleGPT `generate` call, by
operator. At batch 1 on a CPU the step is the weight matmuls (the `addmm` of every projection and the `mm` of the
output layer), which both models run alike on the same weights.
"""

import argparse
import statistics
import time

import torch
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel

from hf_simplegpt.conversion import convert_gpt2_to_simplegpt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = GPT2Config(n_layer=args.layers, n_embd=args.hidden, n_head=args.heads, n_positions=256,
                        vocab_size=args.vocab, bos_token_id=0, eos_token_id=0, resid_pdrop=0, embd_pdrop=0,
                        attn_pdrop=0)  # fmt: skip
    models = {"SimpleGPT": None, "GPT-2": GPT2LMHeadModel(config).eval()}
    models["SimpleGPT"] = convert_gpt2_to_simplegpt(models["GPT-2"]).eval()
    prompt, n = torch.randint(0, args.vocab, (1, 16)), args.new_tokens

    @torch.no_grad()
    def with_generate(model):
        start = time.perf_counter()
        model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, pad_token_id=0)  # fmt: skip
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
    print("| ms per new token | generate | model step alone | generate's own work |\n|---|---:|---:|---:|")
    for name in models:
        full, step = (statistics.median(times[name, way]) * 1e3 for way in ("generate", "loop"))
        print(f"| {name} | {full:.2f} | {step:.2f} | {full - step:.2f} |")
    with torch.profiler.profile() as profile:
        with_generate(models["SimpleGPT"])
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
