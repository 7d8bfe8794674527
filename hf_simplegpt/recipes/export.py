"""Export a SimpleGPT to ExecuTorch (.pte) and check that the exported program decodes exactly as `generate` does.

    hf-simplegpt export --model_name_or_path outputs/pretrain-default --format executorch \
        --output_dir outputs/pretrain-default-executorch
    python recipes/export.py ...                          # the same job, the same flags

Writes model.pte (static KV cache, XNNPACK-delegated by default), the tokenizer (tokenizer.json, which ExecuTorch's
LLM runner reads too), export.json and export.md. The parity check runs each prompt through transformers' greedy
`generate` and through the .pte on ExecuTorch's Python runtime, and compares the tokens and every logit; then
through ExecuTorch's C++ LLM runner (TextLLMRunner, what its Android and iOS apps run), and compares the text. A
mismatch fails the job. The source folder is only read.
"""

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt.export import (
    BACKENDS,
    FORMATS,
    ExecuTorchLM,
    check_backend,
    check_format,
    export_executorch,
    greedy_parity,
    llm_runner_text,
    require_executorch,
    set_threads,
)
from hf_simplegpt.hub import check_simplegpt_source
from hf_simplegpt.timing import interleaved_medians
from hf_simplegpt.safeguards import claim_output_dir, guarded_main
from hf_simplegpt.training import check_minimums, parse_args, setup_logging

logger = logging.getLogger("hf_simplegpt.export")
PROMPTS = ["The ", "A function", "In Python, "]


@dataclass
class ExportArguments:
    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of a float SimpleGPT and its tokenizer."})
    format: str = field(default="executorch", metadata={"help": f"One of {', '.join(FORMATS)}."})
    output_dir: str = field(default=None, metadata={"help": "Where model.pte and the report go; default "
                                                    "outputs/<model folder name>-<format>."})  # fmt: skip
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Replace what --output_dir already holds (without it such a folder is refused)."}
    )
    backend: str = field(default="xnnpack", metadata={"help": f"ExecuTorch backend, one of {', '.join(BACKENDS)}."})
    max_cache_len: int = field(default=None, metadata={"help": "KV cache positions; default: the model's context."})
    prompts: list[str] = field(default_factory=lambda: list(PROMPTS), metadata={"help": "Prompts of the parity check."})
    max_new_tokens: int = field(default=20, metadata={"help": "Greedy tokens per prompt in the parity check."})
    repeats: int = field(default=5, metadata={"help": "Timed decodes per runtime (median reported)."})
    threads: int = field(default=None, metadata={"help": "Threads of torch and of ExecuTorch's pool; default: theirs."})

    def __post_init__(self):
        check_format(self.format)
        check_backend(self.backend)
        if self.output_dir is None:
            self.output_dir = f"outputs/{Path(self.model_name_or_path).name}-{self.format}"
        if not self.prompts or not all(p.strip() for p in self.prompts):
            raise ValueError(f"--prompts {self.prompts}: give at least one non-empty prompt.")
        check_minimums(self, {"max_new_tokens": 1, "repeats": 1})


def markdown_report(results: dict) -> str:
    """The parity table (one row per prompt) and the decode speed of both runtimes."""
    lines = [
        "| prompt | new tokens | generate == ExecuTorch runtime | max logit diff | LLM runner text == generate |",
        "|---|---:|---|---:|---|",
    ]
    for row in results["parity"]:
        lines.append(f"| {json.dumps(row['prompt'])} | {len(row['generate'])} | {'yes' if row['match'] else 'NO'} | "
                     f"{row['max_logit_diff']:.2e} | {'yes' if row['runner_match'] else 'NO'} |")  # fmt: skip
    s = results["speed"]
    threads = f"{s['threads']} thread{'s' if s['threads'] != 1 else ''}"
    lines += [
        "",
        f"{results['format']} ({results['backend']}), {results['pte_bytes']:,} bytes, static KV cache of "
        f"{results['max_cache_len']} positions, exported in {results['export_seconds']:.0f} s. Greedy decode of "
        f"{s['new_tokens']} tokens at batch 1 (median of {s['repeats']} interleaved runs, {threads}): ExecuTorch "
        f"runtime {s['executorch_tokens_per_s']:,.1f} tokens/s, transformers `generate` (eager, dynamic cache) "
        f"{s['generate_tokens_per_s']:,.1f} tokens/s.",
    ]
    return "\n".join(lines)


@guarded_main
def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_args(ExportArguments, args=argv)
    setup_logging()
    require_executorch()
    if args.threads:
        set_threads(args.threads)
    config = check_simplegpt_source(args.model_name_or_path, "export", args.output_dir)
    claim_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[args.model_name_or_path])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype=torch.float32).eval()
    max_cache_len = args.max_cache_len or config["max_position_embeddings"]
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in args.prompts]
    longest = max(len(ids) for ids in prompts)
    if longest >= max_cache_len:
        raise ValueError(f"The longest prompt has {longest} tokens, leaving no room in a {max_cache_len}-position "
                         "cache; shorten the prompts or raise --max_cache_len.")  # fmt: skip
    new_tokens = min(args.max_new_tokens, max_cache_len - longest)

    start = time.perf_counter()
    pte = export_executorch(model, max_cache_len, args.backend)
    export_seconds = time.perf_counter() - start
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pte").write_bytes(pte)
    tokenizer.save_pretrained(out)
    logger.info("Exported %s to %s (%d bytes) in %.0f s", args.model_name_or_path, out / "model.pte", len(pte),
                export_seconds)  # fmt: skip

    runner = ExecuTorchLM(out / "model.pte")
    parity = greedy_parity(model, runner, prompts, new_tokens)
    for prompt, row in zip(args.prompts, parity):
        expected = tokenizer.decode(row["generate"], skip_special_tokens=True)
        row.update(prompt=prompt, runner_text=llm_runner_text(out / "model.pte", out / "tokenizer.json", prompt,
                                                              len(row["generate"])))  # fmt: skip
        row["runner_match"] = row["runner_text"] == expected

    prompt = torch.tensor([prompts[0]])
    steps = max_cache_len - len(prompts[0])
    fixed = dict(attention_mask=torch.ones_like(prompt), max_new_tokens=min(new_tokens, steps),
                 min_new_tokens=min(new_tokens, steps), do_sample=False, eos_token_id=None, pad_token_id=0)  # fmt: skip
    with torch.inference_mode():
        seconds = interleaved_medians(
            {"executorch": lambda: runner.greedy(prompts[0], fixed["max_new_tokens"]),
             "generate": lambda: model.generate(prompt, **fixed)},
            args.repeats, warmup=1,
        )  # fmt: skip
    results = {
        "model": args.model_name_or_path, "format": args.format, "backend": args.backend,
        "max_cache_len": max_cache_len, "pte_bytes": len(pte), "export_seconds": export_seconds,
        "parity": parity,
        "speed": {"new_tokens": fixed["max_new_tokens"], "repeats": args.repeats, "threads": torch.get_num_threads(),
                  **{f"{name}_tokens_per_s": fixed["max_new_tokens"] / s for name, s in seconds.items()}},
        "args": asdict(args),
    }  # fmt: skip
    report = markdown_report(results)
    (out / "export.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "export.md").write_text(report + "\n")
    print(report)
    failed = [row["prompt"] for row in parity if not (row["match"] and row["runner_match"])]
    if failed:
        raise RuntimeError(f"The exported program does not decode as generate does for prompts {failed}; see "
                           f"{out / 'export.md'}.")  # fmt: skip
    return results


if __name__ == "__main__":
    main()
