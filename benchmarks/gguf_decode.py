"""Greedy decode speed on a CPU, side by side: transformers `generate` (eager, dynamic cache), ExecuTorch (XNNPACK)
and llama.cpp (llama-cpp-python) on the model's GGUF in f32 and f16; and how close each export decodes to `generate`.

    python benchmarks/gguf_decode.py --model_name_or_path outputs/pretrain-default --threads 1 --publish

    python benchmarks/gguf_decode.py ... --llama_cpp node --node_dir DIR    # llama.cpp through node-llama-cpp

Needs the export extra (executorch, gguf) and llama.cpp: llama-cpp-python (pip install llama-cpp-python: it builds
llama.cpp from source, about 12 minutes on an idle 2-core machine), or, with --llama_cpp node, node-llama-cpp's
prebuilt llama.cpp binaries (`npm install node-llama-cpp@3.22.1` in DIR; llama_cpp_greedy.mjs drives them). The runs
alternate, round by round, and each reports its median; every runtime decodes --new_tokens tokens after the first
prompt (node-llama-cpp stops early at EOS; its tokens/s counts what it produced), the prompt included in the time.
The parity rows decode every prompt greedily (stopping at EOS) and compare the tokens and, for the Python runtimes,
every position's logits with eager transformers. Writes gguf-decode-cpu.{json,md} to benchmarks/out/
(benchmarks/results/ with --publish).
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path

import torch

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt.export import ExecuTorchLM, export_executorch, greedy_parity, set_threads
from hf_simplegpt.gguf import LlamaCppLM, TransformersLM, load_gguf, write_gguf
from hf_simplegpt.recipes.export import decode_speed

BENCHMARKS_DIR = Path(__file__).resolve().parent
PROMPTS = ["The ", "A function", "In Python, "]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def node_greedy(node_dir: Path, gguf: Path, prompts: list[str], new_tokens: int, repeats: int, threads: int) -> dict:
    """llama_cpp_greedy.mjs's JSON: llama.cpp's prompt ids, greedy ids and timed decodes (node-llama-cpp)."""
    script = node_dir / "llama_cpp_greedy.mjs"
    shutil.copy(BENCHMARKS_DIR / "llama_cpp_greedy.mjs", script)
    out = subprocess.run(
        ["node", str(script), str(gguf), json.dumps(prompts), str(new_tokens), str(repeats), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="a pre-norm SimpleGPT folder")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch, ExecuTorch's pool and llama.cpp")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument(
        "--llama_cpp",
        choices=["python", "node"],
        default="python",
        help="run llama.cpp through llama-cpp-python, or through node-llama-cpp in --node_dir",
    )
    parser.add_argument("--node_dir", type=Path, help="folder where `npm install node-llama-cpp` was run")
    parser.add_argument(
        "--publish", action="store_true", help="write to benchmarks/results/ instead of benchmarks/out/"
    )
    args = parser.parse_args(argv)
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    set_threads(args.threads)
    load_before = os.getloadavg()
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype=torch.float32).eval()
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    context = model.config.max_position_embeddings
    new_tokens = min(args.new_tokens, context - max(len(p) for p in prompts))

    with tempfile.TemporaryDirectory() as tmp:
        files = {
            dtype: write_gguf(model, tokenizer, Path(tmp) / f"model-{dtype}.gguf", dtype) for dtype in ("f32", "f16")
        }
        pte = Path(tmp) / "model.pte"
        pte.write_bytes(export_executorch(model, context, "xnnpack"))
        sizes = {"executorch": pte.stat().st_size, **{f"llama_cpp_{d}": f.stat().st_size for d, f in files.items()}}
        runners = {
            "executorch": ExecuTorchLM(pte),
            **{f"transformers_gguf_{d}": TransformersLM(load_gguf(f).eval()) for d, f in files.items()},
        }
        if args.llama_cpp == "python":
            runners.update({f"llama_cpp_{d}": LlamaCppLM(f, threads=args.threads) for d, f in files.items()})
        parity = {}
        for name, runner in runners.items():
            rows = greedy_parity(model, runner, prompts, new_tokens, name=name)
            parity[name] = {
                "equal_tokens": sum(common_prefix(r["generate"], r[name]) for r in rows),
                "tokens": sum(len(r["generate"]) for r in rows),
                "prompts_equal": sum(r["match"] for r in rows),
                "prompts": len(rows),
                "max_logit_diff": max(r["max_logit_diff"] for r in rows),
            }
            print(name, parity[name])
        first = min(new_tokens, context - len(prompts[0]))
        if args.llama_cpp == "python":
            timed = {name: runners[name].greedy for name in ("executorch", "llama_cpp_f32", "llama_cpp_f16")}
            speed = decode_speed(model, prompts[0], first, timed, args.repeats)
            runtime = f"llama-cpp-python {version('llama_cpp_python')}"
        else:
            eos = model.generation_config.eos_token_id
            for d, f in files.items():
                got = node_greedy(args.node_dir, f, PROMPTS, new_tokens, 0, args.threads)
                # llama.cpp stops at EOS without returning it; generate's tokens include it.
                expected = [
                    [
                        t
                        for t in model.generate(
                            torch.tensor([ids]),
                            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            max_new_tokens=new_tokens,
                            do_sample=False,
                            pad_token_id=eos,
                        )[0, len(ids) :].tolist()
                        if t != eos
                    ]
                    for ids in prompts
                ]
                parity[f"llama_cpp_{d}"] = {
                    "tokenizer_equal": got["tokens"] == prompts,
                    "equal_tokens": sum(common_prefix(e, g) for e, g in zip(expected, got["new"])),
                    "tokens": sum(len(e) for e in expected),
                    "prompts_equal": sum(e == g for e, g in zip(expected, got["new"])),
                    "prompts": len(prompts),
                    "max_logit_diff": None,
                }
                print(f"llama_cpp_{d}", parity[f"llama_cpp_{d}"])
            # Round by round: generate and ExecuTorch in this process, then each GGUF in node (one untimed decode
            # and one timed decode per round, timed inside node so that its start-up is not counted).
            rates = {}
            for _ in range(args.repeats):
                round_speed = decode_speed(model, prompts[0], first, {"executorch": runners["executorch"].greedy}, 1)
                for name in ("generate", "executorch"):
                    rates.setdefault(name, []).append(round_speed[f"{name}_tokens_per_s"])
                for d, f in files.items():
                    run = node_greedy(args.node_dir, f, PROMPTS[:1], first, 1, args.threads)
                    rates.setdefault(f"llama_cpp_{d}", []).append(run["produced"][0] / run["seconds"][0])
            speed = {
                "new_tokens": first,
                "repeats": args.repeats,
                "threads": args.threads,
                **{f"{name}_tokens_per_s": statistics.median(r) for name, r in rates.items()},
            }
            node_version = json.loads((args.node_dir / "node_modules" / "node-llama-cpp" / "package.json").read_text())[
                "version"
            ]
            runtime = f"node-llama-cpp {node_version} (its prebuilt llama.cpp)"
        for d in files:
            runners[f"llama_cpp_{d}"] = None  # a row in the table
    load_after = os.getloadavg()

    results = {
        "model": args.model_name_or_path,
        "hidden_act": model.config.hidden_act,
        "parameters": model.num_parameters(),
        "device": "cpu",
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "executorch": version("executorch"),
            "gguf": version("gguf"),
            "llama_cpp": runtime,
        },
        "bytes": sizes,
        "parity": parity,
        "speed": speed,
    }
    names = {
        "generate": "transformers `generate` (eager, dynamic cache)",
        "executorch": "ExecuTorch (XNNPACK), .pte",
        "llama_cpp_f32": "llama.cpp, GGUF f32",
        "llama_cpp_f16": "llama.cpp, GGUF f16",
        "transformers_gguf_f32": "transformers' GGUF loader, f32",
        "transformers_gguf_f16": "transformers' GGUF loader, f16",
    }
    base = speed["generate_tokens_per_s"]
    lines = [
        "| runtime | file bytes | decode tokens/s | vs generate | greedy tokens equal to generate | max logit diff |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in ["generate", *runners]:
        rate, p = speed.get(f"{name}_tokens_per_s"), parity.get(name)
        cells = [
            f"{sizes[name]:,}" if name in sizes else "–",
            f"{rate:,.0f}" if rate else "–",
            f"{rate / base:.2f}x" if rate else "–",
            f"{p['equal_tokens']} / {p['tokens']}" if p else "–",
            f"{p['max_logit_diff']:.1e}" if p and p["max_logit_diff"] is not None else "–",
        ]
        lines.append(f"| {names[name]} | " + " | ".join(cells) + " |")
    lines.append(
        f"\n{args.model_name_or_path} ({results['parameters']:,} parameters, hidden_act {results['hidden_act']!r}); "
        f"greedy decode of {speed['new_tokens']} tokens at batch 1 after a {len(prompts[0])}-token prompt, median of "
        f"{args.repeats} interleaved runs, {args.threads} thread(s) each; parity over the prompts {PROMPTS} (stopping "
        f"at EOS). {results['cpu_count']}-core {results['machine']} CPU shared with other jobs (load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after); torch {torch.__version__}, executorch "
        f"{version('executorch')}, llama.cpp through {runtime}."
    )
    out = BENCHMARKS_DIR / ("results" if args.publish else "out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gguf-decode-cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gguf-decode-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
