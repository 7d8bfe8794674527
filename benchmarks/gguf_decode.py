"""Greedy decode speed on a CPU, side by side: transformers `generate` (eager, dynamic cache), ExecuTorch (XNNPACK)
and llama.cpp (llama-cpp-python) on the model's GGUF in f32 and f16; and how close each export decodes to `generate`.

    python benchmarks/gguf_decode.py --model_name_or_path outputs/pretrain-default --threads 1 --publish

Needs the export extra (executorch, gguf) and llama-cpp-python (pip install llama-cpp-python: it builds llama.cpp
from source, about 12 minutes on 2 cores). The runs alternate (timing.interleaved_medians) and each reports its
median; every runtime decodes exactly --new_tokens tokens after the first prompt, the prompt included in the time.
The parity rows decode every prompt greedily (stopping at EOS) and compare tokens and every position's logits with
eager transformers. Writes gguf-decode-cpu.{json,md} to benchmarks/out/ (benchmarks/results/ with --publish).
"""

import argparse
import json
import os
import platform
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="a pre-norm SimpleGPT folder")
    parser.add_argument("--threads", type=int, default=1, help="threads of torch, ExecuTorch's pool and llama.cpp")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--new_tokens", type=int, default=64)
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/ instead of benchmarks/out/")
    args = parser.parse_args(argv)
    import llama_cpp
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
        files = {dtype: write_gguf(model, tokenizer, Path(tmp) / f"model-{dtype}.gguf", dtype) for dtype in ("f32", "f16")}
        pte = Path(tmp) / "model.pte"
        pte.write_bytes(export_executorch(model, context, "xnnpack"))
        sizes = {"executorch": pte.stat().st_size, **{f"llama_cpp_{d}": f.stat().st_size for d, f in files.items()}}
        runners = {"executorch": ExecuTorchLM(pte),
                   **{f"llama_cpp_{d}": LlamaCppLM(f, threads=args.threads) for d, f in files.items()},
                   **{f"transformers_gguf_{d}": TransformersLM(load_gguf(f).eval()) for d, f in files.items()}}  # fmt: skip
        parity = {}
        for name, runner in runners.items():
            rows = greedy_parity(model, runner, prompts, new_tokens, name=name)
            parity[name] = {"equal_tokens": sum(common_prefix(r["generate"], r[name]) for r in rows),
                            "tokens": sum(len(r["generate"]) for r in rows),
                            "prompts_equal": sum(r["match"] for r in rows), "prompts": len(rows),
                            "max_logit_diff": max(r["max_logit_diff"] for r in rows)}  # fmt: skip
            print(name, parity[name])
        # Speed: llama-cpp-python's default, the last position's logits only.
        timed = {"executorch": runners["executorch"].greedy,
                 **{f"llama_cpp_{d}": LlamaCppLM(f, threads=args.threads, logits_all=False).greedy for d, f in files.items()}}  # fmt: skip
        speed = decode_speed(model, prompts[0], min(new_tokens, context - len(prompts[0])), timed, args.repeats)
    load_after = os.getloadavg()

    results = {
        "model": args.model_name_or_path, "hidden_act": model.config.hidden_act,
        "parameters": model.num_parameters(), "device": "cpu", "machine": platform.machine(),
        "cpu_count": os.cpu_count(), "load_average_before": load_before[0], "load_average_after": load_after[0],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "executorch": version("executorch"), "llama_cpp_python": llama_cpp.__version__,
                     "gguf": version("gguf")},
        "bytes": sizes, "parity": parity, "speed": speed,
    }  # fmt: skip
    names = {"generate": "transformers `generate` (eager, dynamic cache)", "executorch": "ExecuTorch (XNNPACK), .pte",
             "llama_cpp_f32": "llama.cpp, GGUF f32", "llama_cpp_f16": "llama.cpp, GGUF f16",
             "transformers_gguf_f32": "transformers' GGUF loader, f32", "transformers_gguf_f16": "transformers' GGUF loader, f16"}  # fmt: skip
    base = speed["generate_tokens_per_s"]
    lines = ["| runtime | file bytes | decode tokens/s | vs generate | greedy tokens equal to generate | max logit diff |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name in ["generate", *runners]:
        rate, p = speed.get(f"{name}_tokens_per_s"), parity.get(name)
        cells = [f"{sizes[name]:,}" if name in sizes else "–", f"{rate:,.0f}" if rate else "–",
                 f"{rate / base:.2f}x" if rate else "–", f"{p['equal_tokens']} / {p['tokens']}" if p else "–",
                 f"{p['max_logit_diff']:.1e}" if p else "–"]  # fmt: skip
        lines.append(f"| {names[name]} | " + " | ".join(cells) + " |")
    lines.append(
        f"\n{args.model_name_or_path} ({results['parameters']:,} parameters, hidden_act {results['hidden_act']!r}); "
        f"greedy decode of {speed['new_tokens']} tokens at batch 1 after a {len(prompts[0])}-token prompt, median of "
        f"{args.repeats} interleaved runs, {args.threads} thread(s) each; parity over the prompts {PROMPTS} (stopping "
        f"at EOS). {results['cpu_count']}-core {results['machine']} CPU shared with other jobs (load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after); torch {torch.__version__}, executorch "
        f"{version('executorch')}, llama-cpp-python {llama_cpp.__version__}."
    )
    out = BENCHMARKS_DIR / ("results" if args.publish else "out")
    out.mkdir(parents=True, exist_ok=True)
    (out / "gguf-decode-cpu.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "gguf-decode-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
