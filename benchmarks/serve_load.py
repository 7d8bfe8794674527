"""Serving load: `hf-simplegpt serve` on a SimpleGPT against `transformers serve` on the GPT-2 it was converted from.

A randomly initialised GPT2LMHeadModel is saved, and converted with `convert_gpt2_to_simplegpt` (same weights, same
function), both folders with the same tokenizer and chat template. Both servers start on 127.0.0.1 with continuous
batching and the same paged-cache size, and each is measured the same way, the two alternating round by round so
that load from other processes hits both alike:

- sequential: 8 chat requests one after another (non-streamed), tokens/s = completion tokens / wall time;
- 8 concurrent: the same 8 requests from 8 client threads at once;
- time to first token: a streamed request, until its first chunk of text (median of the 8).

Greedy decoding of the same weights: both servers must return the same text, which is checked and reported.

    python benchmarks/serve_load.py                       # 6 layers, hidden 384, context 512, ~4 minutes on 2 cores
    python benchmarks/serve_load.py --publish             # also write benchmarks/results/serve-load-cpu.{json,md}

Writes benchmarks/out/serve-load.{json,md}.
"""

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import transformers
from openai import OpenAI
from transformers import GPT2Config, GPT2LMHeadModel

from hf_simplegpt.conversion import convert_gpt2_to_simplegpt
from hf_simplegpt.corpus import builtin_corpus_documents
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer

HERE = Path(__file__).resolve().parent
CLIENTS = 8
PAGE_SIZE = 256  # transformers' default paged-cache block


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=4096, help="tokenizer (and model) vocabulary")
    parser.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request")
    parser.add_argument("--rounds", type=int, default=3, help="measurement rounds per server (median reported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of both servers; 0 leaves torch's default")  # fmt: skip
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/results/serve-load-cpu.*")
    return parser.parse_args(argv)


def build_folders(args, root: Path) -> dict[str, Path]:
    """GPT-2 (random, seed 0) and the SimpleGPT converted from it, each saved with the same tokenizer."""
    tokenizer = train_tokenizer(builtin_corpus_documents()[:2000], vocab_size=args.vocab, model_max_length=args.context)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=args.context, n_embd=args.hidden, n_layer=args.layers,
                        n_head=args.heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        **special_token_ids(tokenizer))  # fmt: skip
    gpt2 = GPT2LMHeadModel(config).eval()
    simplegpt = convert_gpt2_to_simplegpt(gpt2)
    ids = torch.randint(len(tokenizer), (2, 64))
    with torch.no_grad():
        assert torch.allclose(gpt2(ids).logits, simplegpt(ids).logits, atol=1e-4), "conversion changed the logits"
    folders = {"hf-simplegpt serve (SimpleGPT)": root / "simplegpt", "transformers serve (GPT-2)": root / "gpt2"}
    for model, folder in zip((simplegpt, gpt2), folders.values()):
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folders


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, folder: Path, args, log: Path) -> tuple[subprocess.Popen, str]:
    """Start one server with continuous batching and the same cache size; returns (process, OpenAI base URL)."""
    port = free_port()
    blocks = 32 * -(-args.context // PAGE_SIZE)  # hf-simplegpt serve's CPU default: 32 full-context sequences
    bin_dir = Path(sys.executable).parent
    if name.startswith("hf-simplegpt"):
        cmd = [bin_dir / "hf-simplegpt", "serve", folder, "--port", port]
    else:
        cmd = [bin_dir / "transformers", "serve", folder, "--continuous-batching", "--host", "127.0.0.1",
               "--port", port, "--device", "cpu", "--cb-num-blocks", blocks, "--cb-max-batch-tokens", 512]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    with open(log, "w") as out:
        process = subprocess.Popen(list(map(str, cmd)), stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{name} did not start:\n{log.read_text()[-3000:]}")


def prompts() -> list[list[dict]]:
    return [[{"role": "user", "content": f"Write about topic number {i}: the for statement."}] for i in range(CLIENTS)]


def measure(client: OpenAI, model: str, max_tokens: int) -> dict:
    """One round: sequential and concurrent tokens/s, and time to first token, for the 8 prompts."""

    def ask(messages):
        return client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)

    def first_token_seconds(messages) -> float:
        start = time.perf_counter()
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                    stream=True):  # fmt: skip
            if chunk.choices and chunk.choices[0].delta.content:
                return time.perf_counter() - start
        raise RuntimeError("the stream sent no text")

    start = time.perf_counter()
    sequential = [ask(messages) for messages in prompts()]
    sequential_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        concurrent = list(pool.map(ask, prompts()))
    concurrent_seconds = time.perf_counter() - start
    tokens = sum(r.usage.completion_tokens for r in sequential)
    return {
        "sequential_tokens_per_s": tokens / sequential_seconds,
        "concurrent_tokens_per_s": sum(r.usage.completion_tokens for r in concurrent) / concurrent_seconds,
        "ttft_ms": 1000 * statistics.median(first_token_seconds(messages) for messages in prompts()),
        "texts": [r.choices[0].message.content for r in sequential],
        "same_text_batched": [r.choices[0].message.content for r in concurrent] == [r.choices[0].message.content
                                                                                    for r in sequential],
    }  # fmt: skip


def table(result: dict) -> str:
    names = list(result["servers"])
    rows = [("sequential tokens/s (8 requests, one at a time)", "sequential_tokens_per_s", "{:,.0f}"),
            (f"{CLIENTS} concurrent clients tokens/s", "concurrent_tokens_per_s", "{:,.0f}"),
            ("concurrent / sequential", "speedup", "{:.1f}×"),
            ("time to first token, ms (median)", "ttft_ms", "{:,.0f}")]  # fmt: skip
    lines = [f"| measurement | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(result["servers"][n][key]) for n in names) + " |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_folders(args, Path(tmp))
        servers = {name: start(name, folder, args, out / f"serve-load-{folder.name}.log")
                   for name, folder in folders.items()}  # fmt: skip
        try:
            clients = {name: OpenAI(base_url=url, api_key="unused", timeout=300, max_retries=0)
                       for name, (_, url) in servers.items()}  # fmt: skip
            for name, client in clients.items():  # warm up: the first request sets up continuous batching
                client.chat.completions.create(model=str(folders[name]), messages=prompts()[0], max_tokens=8)
            rounds = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, client in clients.items():
                    rounds[name].append(measure(client, str(folders[name]), args.max_tokens))
        finally:
            for process, _ in servers.values():
                process.send_signal(signal.SIGTERM)
                process.wait(60)
    summary = {}
    for name, runs in rounds.items():
        summary[name] = {key: statistics.median(run[key] for run in runs)
                         for key in ("sequential_tokens_per_s", "concurrent_tokens_per_s", "ttft_ms")}  # fmt: skip
        summary[name]["speedup"] = summary[name]["concurrent_tokens_per_s"] / summary[name]["sequential_tokens_per_s"]
        summary[name]["same_text_batched"] = all(run["same_text_batched"] for run in runs)
    first = list(rounds.values())
    result = {
        "shapes": {k: getattr(args, k) for k in ("layers", "hidden", "heads", "context", "vocab", "max_tokens")},
        "rounds": args.rounds,
        "omp_num_threads": args.threads or "default",
        "servers": summary,
        "same_text_both_servers": first[0][0]["texts"] == first[1][0]["texts"],
        "load_average_1min": {"before": load_before, "after": os.getloadavg()[0]},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    load = result["load_average_1min"]
    text = (f"Shapes: {result['shapes']}; {args.rounds} interleaved rounds (median); OMP_NUM_THREADS="
            f"{result['omp_num_threads']}; {result['machine']}; 1-minute load average {load['before']:.1f} before, "
            f"{load['after']:.1f} after; torch {torch.__version__}, transformers {transformers.__version__}. Same "
            "greedy text from both "
            f"servers: {result['same_text_both_servers']}; batched text equals sequential: "
            f"{all(s['same_text_batched'] for s in summary.values())}.\n\n{table(result)}\n")
    for folder in [out, *([HERE / "results"] if args.publish else [])]:
        stem = "serve-load" if folder == out else "serve-load-cpu"
        (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (folder / f"{stem}.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
