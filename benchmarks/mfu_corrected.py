"""MFU of published `bench.py` results recomputed with today's FLOP count, from the tokens/s they measured.

    python benchmarks/mfu_corrected.py --publish     # results/mfu-corrected.{json,md}, from the CUDA results files

Results written before `flops_per_token` took N from `pretraining.matmul_parameters` left out the tied output
projection. This rebuilds each result's SimpleGPT on the meta device (no weights, no time), counts its matmul
parameters as `bench.py` now does, and divides the training-step tokens/s the file recorded by the peak it names.
"""

import argparse
import json
import sys
from pathlib import Path

import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.pretraining import flops_per_token, matmul_parameters

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import RESULTS_DIR, save  # noqa: E402


def recompute(path: Path) -> dict:
    published = json.loads(path.read_text())
    s = published["shapes"]
    config = SimpleGPTConfig(
        vocab_size=s["vocab"],
        hidden_size=s["hidden"],
        num_hidden_layers=s["layers"],
        num_attention_heads=s["heads"],
        max_position_embeddings=max(s["seq"], s["prompt_length"] + s["new_tokens"]),
        tie_word_embeddings=True,  # bench.py converts a GPT-2, whose output layer is the token embedding
    )
    with torch.device("meta"):
        n = matmul_parameters(SimpleGPTForCausalLM(config))
    fpt = flops_per_token(n, s["layers"], s["hidden"], s["seq"])
    train = next(row for row in published["rows"] if row["row"].startswith("training step tokens/s"))
    peak = published["peak_tflops"] * 1e12
    return {
        "file": path.name,
        "peak_tflops": published["peak_tflops"],
        "flops_per_token": {"published": published["flops_per_token"], "corrected": fpt},
        "matmul_parameters": n,
        "training_tokens_per_s": {"SimpleGPT": train["simplegpt"], "GPT-2": train["gpt2"]},
        "mfu": {
            "published": train.get("mfu"),
            "corrected": {"SimpleGPT": train["simplegpt"] * fpt / peak, "GPT-2": train["gpt2"] * fpt / peak},
        },
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="bench.py results (default: results/*-cuda.json)")
    parser.add_argument("--publish", action="store_true", help="write to benchmarks/results/")
    args = parser.parse_args(argv)
    files = args.files or [p for p in sorted(RESULTS_DIR.glob("*-cuda.json")) if not p.stem.startswith("quantize")]
    result = {"results": [recompute(path) for path in files]}
    rows = "\n".join(
        f"| `{r['file']}` | {r['flops_per_token']['published']:,} | {r['flops_per_token']['corrected']:,} | "
        f"{r['mfu']['published']['SimpleGPT']:.1%} | {r['mfu']['corrected']['SimpleGPT']:.1%} | "
        f"{r['mfu']['corrected']['GPT-2']:.1%} |"
        for r in result["results"]
    )
    markdown = (
        "| results file | FLOPs/token published | corrected | SimpleGPT MFU published | corrected | GPT-2 corrected |\n"
        f"|---|---:|---:|---:|---:|---:|\n{rows}\n"
    )
    save("mfu-corrected", result, markdown, args.publish)
    return result


if __name__ == "__main__":
    main()
