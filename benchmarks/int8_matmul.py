"""The matmuls behind `hf-simplegpt quantize` on a CPU, timed alone: why int8 dynamic is not faster than float32 here.

torchao's int8-dynamic Linear quantizes the activations per token, multiplies int8 by int8 with torch._int_mm
(int32 accumulation) and rescales; its int8 weight-only Linear converts the int8 weight to float32 on every call and
runs a float32 matmul. Each row times one call at one shape, the variants interleaved (medians):

    float32        F.linear(x, W) in float32 (MKL/oneDNN)
    torch._int_mm  the int8 x int8 -> int32 product alone (inputs already int8)
    int8_dynamic   torchao Int8DynamicActivationInt8WeightConfig Linear, the whole call
    int8_weight    torchao Int8WeightOnlyConfig Linear, the whole call

    python benchmarks/int8_matmul.py --threads 1     # writes benchmarks/out/int8-matmul-<device>.*

Shapes (rows x in -> out): SimpleGPT default (hidden 128) up_proj and output head over a forward of 8 x 128 tokens,
the same up_proj at one decode step of batch 8, and GPT-2 124M's MLP over 8 x 128 tokens.
"""

import argparse
import copy
import json
import platform
from pathlib import Path

import torch

from hf_simplegpt.timing import interleaved_medians

SHAPES = {
    "default up_proj, forward 8x128": (1024, 128, 512),
    "default lm_head, forward 8x128": (1024, 128, 2048),
    "default up_proj, decode batch 8": (8, 128, 512),
    "GPT-2 124M MLP, forward 8x128": (1024, 768, 3072),
}
OUT_DIR = Path(__file__).resolve().parent / "out"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--output-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig, quantize_

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    for name, (m, k, n) in SHAPES.items():
        linear = torch.nn.Linear(k, n)
        dynamic, weight_only = copy.deepcopy(linear), copy.deepcopy(linear)
        quantize_(dynamic, Int8DynamicActivationInt8WeightConfig())
        quantize_(weight_only, Int8WeightOnlyConfig())
        x = torch.randn(m, k)
        a, b = torch.randint(-127, 128, (m, k), dtype=torch.int8), torch.randint(-127, 128, (k, n), dtype=torch.int8)
        with torch.inference_mode():
            seconds = interleaved_medians(
                {
                    "float32": lambda: linear(x),
                    "torch._int_mm": lambda: torch._int_mm(a, b),
                    "int8_dynamic": lambda: dynamic(x),
                    "int8_weight": lambda: weight_only(x),
                },
                args.repeats,
                warmup=2,
            )
        rows.append({"shape": name, "m": m, "k": k, "n": n, **{key: s * 1e6 for key, s in seconds.items()}})
        print(rows[-1])
    result = {
        "device": "cpu",
        "machine": platform.machine(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rows": rows,
    }
    lines = [
        "| shape (rows x in -> out) | float32 µs | torch._int_mm µs | int8_dynamic µs | int8_weight µs |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape']} ({r['m']}x{r['k']}->{r['n']}) | {r['float32']:,.0f} | {r['torch._int_mm']:,.0f} "
            f"({r['torch._int_mm'] / r['float32']:.1f}x) | {r['int8_dynamic']:,.0f} "
            f"({r['int8_dynamic'] / r['float32']:.1f}x) | {r['int8_weight']:,.0f} "
            f"({r['int8_weight'] / r['float32']:.1f}x) |"
        )
    lines.append(
        f"\ntorch {torch.__version__}, {result['threads']} thread(s); medians of {args.repeats} interleaved "
        "calls; (Nx) = time relative to float32."
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "int8-matmul-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.output_dir / "int8-matmul-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return result


if __name__ == "__main__":
    main()
