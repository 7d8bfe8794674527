"""Serving load: `hf-simplegpt serve` on a SimpleGPT against `transformers serve` on the GPT-2 it was converted from.

A randomly initialised GPT2LMHeadModel is saved, and converted with `convert_gpt2_to_simplegpt` (same weights, same
function), both folders with the same tokenizer and chat template. Both servers start on 127.0.0.1 with continuous
batching and the same paged-cache size, and each is measured the same way, the two alternating round by round so
that load from other processes hits both alike:

- sequential: 8 chat requests one after another (non-streamed), tokens/s = completion tokens / wall time;
- 8 concurrent: the same 8 requests from 8 client threads at once;
- time to first token: a streamed request, until its first chunk of text (median of the 8).

Greedy decoding of the same weights: both servers must return the same text, which is checked and reported.

Other scenarios (`--scenario`):

- sampling: 32 concurrent clients, 3 requests each, 32 new tokens, all greedy then all sampled (temperature 0.8, each
  request its own seed), on both servers: tokens/s and latency p50/p95; goal: sampled >= 0.8x greedy on
  hf-simplegpt serve, where every request is decoded in the batch with its own settings.
- prefix: hf-simplegpt serve with and without its prompt cache (--no_prefix_cache): time to first token of requests
  sharing a 200-token system prompt (sequential, streamed), and the hit rate from /metrics.
- mixed: hf-simplegpt serve, 5 rounds of 32 clients mixing greedy and sampled, streamed and not, a quarter of the
  streaming clients disconnecting after 3 chunks: no 5xx, latency p50/p95, tokens/s, and the server's RSS after each
  round (flat means no leak).

    python benchmarks/serve_load.py                       # 6 layers, hidden 384, context 512, ~4 minutes on 2 cores
    python benchmarks/serve_load.py --publish             # also write benchmarks/results/serve-load-cpu.{json,md}
    python benchmarks/serve_load.py --scenario sampling --layers 4 --hidden 256 --publish   # serve-sampling-cpu.*

Writes benchmarks/out/serve-load.{json,md} (serve-SCENARIO.* for the other scenarios).
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
    parser.add_argument(
        "--threads", type=int, default=1, help="OMP_NUM_THREADS of both servers; 0 leaves torch's default"
    )
    parser.add_argument("--publish", action="store_true", help="also write benchmarks/results/serve-load-cpu.*")
    parser.add_argument("--scenario", choices=["compare", "sampling", "prefix", "mixed"], default="compare")
    return parser.parse_args(argv)


def build_folders(args, root: Path) -> dict[str, Path]:
    """GPT-2 (random, seed 0) and the SimpleGPT converted from it, each saved with the same tokenizer."""
    tokenizer = train_tokenizer(builtin_corpus_documents()[:2000], vocab_size=args.vocab, model_max_length=args.context)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=args.context,
        n_embd=args.hidden,
        n_layer=args.layers,
        n_head=args.heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        **special_token_ids(tokenizer),
    )
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


def start(name: str, folder: Path, args, log: Path, *flags: str) -> tuple[subprocess.Popen, str]:
    """Start one server with continuous batching and the same cache size; returns (process, OpenAI base URL)."""
    port = free_port()
    blocks = 32 * -(-args.context // PAGE_SIZE)  # hf-simplegpt serve's CPU default: 32 full-context sequences
    bin_dir = Path(sys.executable).parent
    if name.startswith("hf-simplegpt"):
        cmd = [bin_dir / "hf-simplegpt", "serve", folder, "--port", port, *flags]
    else:
        cmd = [
            bin_dir / "transformers",
            "serve",
            folder,
            "--continuous-batching",
            "--host",
            "127.0.0.1",
            "--port",
            port,
            "--device",
            "cpu",
            "--cb-num-blocks",
            blocks,
            "--cb-max-batch-tokens",
            512,
        ]
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
        for chunk in client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens, stream=True):
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
        "same_text_batched": [r.choices[0].message.content for r in concurrent]
        == [r.choices[0].message.content for r in sequential],
    }


def table(result: dict) -> str:
    names = list(result["servers"])
    rows = [
        ("sequential tokens/s (8 requests, one at a time)", "sequential_tokens_per_s", "{:,.0f}"),
        (f"{CLIENTS} concurrent clients tokens/s", "concurrent_tokens_per_s", "{:,.0f}"),
        ("concurrent / sequential", "speedup", "{:.1f}×"),
        ("time to first token, ms (median)", "ttft_ms", "{:,.0f}"),
    ]
    lines = [f"| measurement | {' | '.join(names)} |", "|---|" + "---:|" * len(names)]
    for label, key, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt.format(result["servers"][n][key]) for n in names) + " |")
    return "\n".join(lines)


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def run_clients(client: OpenAI, model: str, jobs: list[dict]) -> dict:
    """Send `jobs` (chat request settings, each with `messages`; `disconnect_after` chunks for a client that leaves
    mid-stream) from one thread per job; tokens/s over the wall time, latency p50/p95, and the status of each."""

    def one(job):
        job = dict(job)
        leave_after = job.pop("disconnect_after", None)
        start = time.perf_counter()
        try:
            if job.get("stream"):
                stream = client.chat.completions.create(model=model, stream_options={"include_usage": True}, **job)
                chunks, tokens = 0, 0
                for chunk in stream:
                    chunks += 1
                    if leave_after is not None and chunks >= leave_after:
                        stream.response.close()  # the client goes away mid-stream
                        return {"status": 200, "tokens": 0, "seconds": time.perf_counter() - start, "left": True}
                    tokens = chunk.usage.completion_tokens if chunk.usage else tokens
                return {"status": 200, "tokens": tokens, "seconds": time.perf_counter() - start}
            reply = client.chat.completions.create(model=model, **job)
            return {"status": 200, "tokens": reply.usage.completion_tokens, "seconds": time.perf_counter() - start}
        except Exception as error:  # noqa: BLE001 - a benchmark counts failures by status
            return {"status": getattr(error, "status_code", 599), "tokens": 0, "seconds": time.perf_counter() - start}

    start = time.perf_counter()
    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(one, jobs))
    wall = time.perf_counter() - start
    latencies = [r["seconds"] for r in results if not r.get("left")]
    return {
        "tokens_per_s": sum(r["tokens"] for r in results) / wall,
        "p50_s": percentile(latencies, 0.5),
        "p95_s": percentile(latencies, 0.95),
        "statuses": sorted({r["status"] for r in results}),
        "server_errors": sum(r["status"] >= 500 for r in results),
        "left_mid_stream": sum(bool(r.get("left")) for r in results),
    }


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def load_jobs(kind: str, clients: int = 32, per_client: int = 3, max_tokens: int = 32) -> list[list[dict]]:
    """Per client thread, its requests: `greedy`, `sampled` (temperature 0.8, own seed) or `mixed`."""
    rounds = []
    for request in range(per_client):
        jobs = []
        for i in range(clients):
            job = {
                "messages": [{"role": "user", "content": f"Write about topic number {i}, part {request}."}],
                "max_tokens": max_tokens,
            }
            if kind == "sampled" or (kind == "mixed" and i % 2):
                job.update(temperature=0.8, seed=1000 * request + i)
            if kind == "mixed" and i % 4 >= 2:
                job["stream"] = True
                if i % 8 == 3:
                    job["disconnect_after"] = 3
            jobs.append(job)
        rounds.append(jobs)
    return rounds


def sampling_scenario(args, folders, out: Path) -> tuple[dict, str]:
    servers = {
        name: start(name, folder, args, out / f"serve-sampling-{folder.name}.log") for name, folder in folders.items()
    }
    result = {}
    try:
        for name, (_, url) in servers.items():
            client = OpenAI(base_url=url, api_key="unused", timeout=600, max_retries=0)
            client.chat.completions.create(model=str(folders[name]), messages=prompts()[0], max_tokens=4)
            result[name] = {}
            for kind in ("greedy", "sampled"):
                runs = [run_clients(client, str(folders[name]), jobs) for jobs in load_jobs(kind)]
                result[name][kind] = {
                    key: statistics.median(run[key] for run in runs) for key in ("tokens_per_s", "p50_s", "p95_s")
                }
                result[name][kind]["server_errors"] = sum(run["server_errors"] for run in runs)
            result[name]["sampled_over_greedy"] = (
                result[name]["sampled"]["tokens_per_s"] / result[name]["greedy"]["tokens_per_s"]
            )
    finally:
        for process, _ in servers.values():
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    lines = [
        "| server | greedy tokens/s | sampled tokens/s | sampled / greedy | greedy p50 / p95 s | sampled p50 / p95 s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in result.items():
        g, sm = r["greedy"], r["sampled"]
        lines.append(
            f"| {name} | {g['tokens_per_s']:,.0f} | {sm['tokens_per_s']:,.0f} | {r['sampled_over_greedy']:.2f}x "
            f"| {g['p50_s']:.2f} / {g['p95_s']:.2f} | {sm['p50_s']:.2f} / {sm['p95_s']:.2f} |"
        )
    return {
        "servers": result
    }, "32 concurrent clients x 3 requests x 32 new tokens (median of the 3 waves).\n\n" + "\n".join(lines)


def prefix_scenario(args, folders, out: Path) -> tuple[dict, str]:
    folder = folders["hf-simplegpt serve (SimpleGPT)"]
    system = " ".join(f"Rule {i}: answer about the for statement." for i in range(14))  # ~200 tokens
    result = {}
    for label, flags in (("cached", []), ("not cached (--no_prefix_cache)", ["--no_prefix_cache"])):
        process, url = start("hf-simplegpt", folder, args, out / "serve-prefix.log", *flags)
        try:
            client = OpenAI(base_url=url, api_key="unused", timeout=600, max_retries=0)
            times = []
            for i in range(12):
                messages = [{"role": "system", "content": system}, {"role": "user", "content": f"Question {i}?"}]
                start_time = time.perf_counter()
                for chunk in client.chat.completions.create(
                    model=str(folder), messages=messages, max_tokens=8, stream=True
                ):
                    if chunk.choices and chunk.choices[0].delta.content:
                        times.append(time.perf_counter() - start_time)
                        break
            prompt_tokens = client.chat.completions.create(
                model=str(folder), messages=messages, max_tokens=1
            ).usage.prompt_tokens
            metrics = json.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=60).read())
            result[label] = {
                "ttft_ms_median": 1000 * statistics.median(times),
                "prompt_tokens": prompt_tokens,
                "prefix_cache": metrics["prefix_cache"],
            }
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
    cached, plain = result["cached"], result["not cached (--no_prefix_cache)"]
    result["ttft_ratio_cached_over_not"] = cached["ttft_ms_median"] / plain["ttft_ms_median"]
    text = (
        f"12 sequential streamed requests sharing a system prompt ({cached['prompt_tokens']} prompt tokens in all), "
        f"8 new tokens each: time to first token, median: cached {cached['ttft_ms_median']:.0f} ms, not cached "
        f"{plain['ttft_ms_median']:.0f} ms (ratio {result['ttft_ratio_cached_over_not']:.2f}); prompt-cache hit "
        f"rate {cached['prefix_cache']['prefix_cache_hit_rate']:.2f} ({cached['prefix_cache']['cached_prompt_tokens']}"
        f" of {cached['prefix_cache']['prompt_tokens']} prompt tokens read from the cache)."
    )
    return result, text


def mixed_scenario(args, folders, out: Path) -> tuple[dict, str]:
    folder = folders["hf-simplegpt serve (SimpleGPT)"]
    process, url = start("hf-simplegpt", folder, args, out / "serve-mixed.log")
    rounds = []
    try:
        client = OpenAI(base_url=url, api_key="unused", timeout=600, max_retries=0)
        client.chat.completions.create(model=str(folder), messages=prompts()[0], max_tokens=4)
        for _ in range(5):
            runs = [run_clients(client, str(folder), jobs) for jobs in load_jobs("mixed", per_client=2)]
            rounds.append(
                {
                    "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                    "p50_s": statistics.median(r["p50_s"] for r in runs),
                    "p95_s": max(r["p95_s"] for r in runs),
                    "server_errors": sum(r["server_errors"] for r in runs),
                    "statuses": sorted({s for r in runs for s in r["statuses"]}),
                    "left_mid_stream": sum(r["left_mid_stream"] for r in runs),
                    "rss_mb": rss_mb(process.pid),
                }
            )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    lines = [
        "| round | tokens/s | p50 s | p95 s | 5xx | clients that left mid-stream | server RSS MB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(rounds, 1):
        lines.append(
            f"| {i} | {r['tokens_per_s']:,.0f} | {r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['server_errors']} | "
            f"{r['left_mid_stream']} | {r['rss_mb']:,.0f} |"
        )
    text = (
        "5 rounds x 2 waves of 32 clients: half greedy, half sampled (own seeds); half of each streamed, a quarter "
        "of the streaming clients closing the connection after 3 chunks.\n\n" + "\n".join(lines)
    )
    return {"rounds": rounds}, text


SCENARIOS = {"sampling": sampling_scenario, "prefix": prefix_scenario, "mixed": mixed_scenario}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.scenario != "compare":
        return run_scenario(args)
    load_before = os.getloadavg()[0]
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_folders(args, Path(tmp))
        servers = {
            name: start(name, folder, args, out / f"serve-load-{folder.name}.log") for name, folder in folders.items()
        }
        try:
            clients = {
                name: OpenAI(base_url=url, api_key="unused", timeout=300, max_retries=0)
                for name, (_, url) in servers.items()
            }
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
        summary[name] = {
            key: statistics.median(run[key] for run in runs)
            for key in ("sequential_tokens_per_s", "concurrent_tokens_per_s", "ttft_ms")
        }
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
    text = (
        f"Shapes: {result['shapes']}; {args.rounds} interleaved rounds (median); OMP_NUM_THREADS="
        f"{result['omp_num_threads']}; {result['machine']}; 1-minute load average {load['before']:.1f} before, "
        f"{load['after']:.1f} after; torch {torch.__version__}, transformers {transformers.__version__}. Same "
        "greedy text from both "
        f"servers: {result['same_text_both_servers']}; batched text equals sequential: "
        f"{all(s['same_text_batched'] for s in summary.values())}.\n\n{table(result)}\n"
    )
    for folder in [out, *([HERE / "results"] if args.publish else [])]:
        stem = "serve-load" if folder == out else "serve-load-cpu"
        (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (folder / f"{stem}.md").write_text(text)
    print(text)
    return result


def run_scenario(args) -> dict:
    load_before = os.getloadavg()[0]
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folders = build_folders(args, Path(tmp))
        result, text = SCENARIOS[args.scenario](args, folders, out)
    result.update(
        shapes={k: getattr(args, k) for k in ("layers", "hidden", "heads", "context", "vocab")},
        omp_num_threads=args.threads or "default",
        load_average_1min={"before": load_before, "after": os.getloadavg()[0]},
        machine=f"{platform.machine()}, {os.cpu_count()} cores",
        versions={"torch": torch.__version__, "transformers": transformers.__version__},
    )
    load = result["load_average_1min"]
    text = (
        f"Shapes: {result['shapes']}; OMP_NUM_THREADS={result['omp_num_threads']}; {result['machine']}; 1-minute "
        f"load average {load['before']:.1f} before, {load['after']:.1f} after (a shared machine); torch "
        f"{torch.__version__}, transformers {transformers.__version__}.\n\n{text}\n"
    )
    for folder in [out, *([HERE / "results"] if args.publish else [])]:
        stem = f"serve-{args.scenario}" + ("-cpu" if folder != out else "")
        (folder / f"{stem}.json").write_text(json.dumps(result, indent=2) + "\n")
        (folder / f"{stem}.md").write_text(text)
    print(text)
    return result


if __name__ == "__main__":
    main()
