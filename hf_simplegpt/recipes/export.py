"""Export a SimpleGPT to ExecuTorch (.pte) or to GGUF (llama.cpp), and check that the export decodes as `generate` does.

    hf-simplegpt export --model_name_or_path outputs/pretrain-default --format executorch \
        --output_dir outputs/pretrain-default-executorch
    hf-simplegpt export --model_name_or_path outputs/pretrain-default --format gguf --gguf_dtype f16
    python recipes/export.py ...                          # the same job, the same flags

ExecuTorch: writes model.pte (static KV cache, XNNPACK-delegated by default), the tokenizer (tokenizer.json, which
ExecuTorch's LLM runner reads too), export.json and export.md. The parity check runs each prompt through
transformers' greedy `generate` and through the .pte on ExecuTorch's Python runtime, and compares the tokens and
every logit; then through ExecuTorch's C++ LLM runner (TextLLMRunner, what its Android and iOS apps run), and
compares the text. A mismatch fails the job.

GGUF: writes model.gguf (llama.cpp's gpt2 architecture, tokenizer inside), export.json and export.md. The parity
check loads the file back through transformers' GGUF loader and, where llama-cpp-python is installed, runs it in
llama.cpp: both must tokenize the prompts as the source tokenizer does, and their greedy tokens and logits are
compared with `generate`'s. Where the file must be exact (f32 and a tanh-GELU model) a difference fails the job;
f16 weights and erf-GELU models (llama.cpp computes tanh-GELU) are measured and reported. Models llama.cpp cannot
run (post-norm, pruned heads) are refused before anything loads.

The source folder is only read.
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
from hf_simplegpt.generation import fixed_length_greedy
from hf_simplegpt.gguf import (
    ERF_GELUS,
    GGUF_DTYPES,
    GGUF_FILE,
    LlamaCppLM,
    TransformersLM,
    check_gguf_dtype,
    check_llama_cpp_can_run,
    load_gguf,
    load_gguf_tokenizer,
    require_gguf,
    write_gguf,
)
from hf_simplegpt.hub import check_simplegpt_source
from hf_simplegpt.safeguards import claim_output_dir, guarded_main
from hf_simplegpt.timing import interleaved_medians
from hf_simplegpt.training import check_minimums, parse_args, setup_logging

logger = logging.getLogger("hf_simplegpt.export")
PROMPTS = ["The ", "A function", "In Python, "]


@dataclass
class ExportArguments:
    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of a float SimpleGPT and its tokenizer."})
    format: str = field(default="executorch", metadata={"help": f"One of {', '.join(FORMATS)}."})
    output_dir: str = field(
        default=None,
        metadata={
            "help": "Where model.pte or model.gguf and the report go; default outputs/<model folder name>-<format>."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace what --output_dir already holds (without it such a folder is refused)."},
    )
    backend: str = field(
        default=None, metadata={"help": f"ExecuTorch backend, one of {', '.join(BACKENDS)}; default xnnpack."}
    )
    max_cache_len: int = field(
        default=None, metadata={"help": "ExecuTorch KV cache positions; default: the model's context."}
    )
    gguf_dtype: str = field(
        default=None,
        metadata={
            "help": f"GGUF weight matrices, one of {', '.join(GGUF_DTYPES)}; default f16 (norms and biases stay f32)."
        },
    )
    prompts: list[str] = field(default_factory=lambda: list(PROMPTS), metadata={"help": "Prompts of the parity check."})
    max_new_tokens: int = field(default=20, metadata={"help": "Greedy tokens per prompt in the parity check."})
    repeats: int = field(default=5, metadata={"help": "Timed decodes per runtime (median reported)."})
    threads: int = field(
        default=None, metadata={"help": "Threads of torch and of ExecuTorch's pool or llama.cpp; default: theirs."}
    )

    def __post_init__(self):
        check_format(self.format)
        # Each format's own flags, refused with the other rather than silently ignored.
        given = {
            "executorch": ["--gguf_dtype"] * (self.gguf_dtype is not None),
            "gguf": ["--backend"] * (self.backend is not None) + ["--max_cache_len"] * (self.max_cache_len is not None),
        }
        if given[self.format]:
            raise ValueError(f"{', '.join(given[self.format])} does not apply to --format {self.format}; drop it.")
        if self.format == "executorch":
            self.backend = self.backend or "xnnpack"
            check_backend(self.backend)
        else:
            self.gguf_dtype = self.gguf_dtype or "f16"
            check_gguf_dtype(self.gguf_dtype)
        if self.output_dir is None:
            self.output_dir = f"outputs/{Path(self.model_name_or_path).name}-{self.format}"
        if not self.prompts or not all(p.strip() for p in self.prompts):
            raise ValueError(f"--prompts {self.prompts}: give at least one non-empty prompt.")
        check_minimums(self, {"max_new_tokens": 1, "repeats": 1})


def write_report(out: Path, results: dict, report: str) -> None:
    """The job's results beside the exported file (export.json, export.md), and the report printed."""
    (out / "export.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "export.md").write_text(report + "\n")
    print(report)


def decode_speed(model, prompt: list[int], new_tokens: int, runtimes: dict, repeats: int) -> dict:
    """Tokens/s of greedy decoding of exactly `new_tokens` after `prompt` at batch 1, by transformers' `generate`
    (eager, dynamic cache) and by each of `runtimes` (name -> a function of (prompt, new_tokens)), interleaved
    (timing.interleaved_medians) so that load from other processes hits them alike."""
    ids = torch.tensor([prompt])
    fixed = fixed_length_greedy(ids, new_tokens)
    runs = {name: (lambda run=run: run(prompt, new_tokens)) for name, run in runtimes.items()}
    with torch.inference_mode():
        seconds = interleaved_medians({**runs, "generate": lambda: model.generate(ids, **fixed)}, repeats, warmup=1)
    return {
        "new_tokens": new_tokens,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        **{f"{name}_tokens_per_s": new_tokens / s for name, s in seconds.items()},
    }


def markdown_report(results: dict) -> str:
    """The parity table (one row per prompt) and the decode speed of both runtimes (ExecuTorch)."""
    lines = [
        "| prompt | new tokens | generate == ExecuTorch runtime | max logit diff | LLM runner text == generate |",
        "|---|---:|---|---:|---|",
    ]
    for row in results["parity"]:
        lines.append(
            f"| {json.dumps(row['prompt'])} | {len(row['generate'])} | {'yes' if row['match'] else 'NO'} | "
            f"{row['max_logit_diff']:.2e} | {'yes' if row['runner_match'] else 'NO'} |"
        )
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
    return gguf_job(args) if args.format == "gguf" else executorch_job(args)


def load_source(args):
    """(tokenizer, float32 model, prompt token ids) of the source folder, with the prompts checked to leave room for
    at least one new token in `context` positions."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype=torch.float32).eval()
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in args.prompts]
    return tokenizer, model, prompts


def check_room(prompts: list[list[int]], context: int, flag: str) -> None:
    longest = max(len(ids) for ids in prompts)
    if longest >= context:
        raise ValueError(
            f"The longest prompt has {longest} tokens, leaving no room in a {context}-position "
            f"{flag}; shorten the prompts."
        )


def executorch_job(args) -> dict:
    require_executorch()
    if args.threads:
        set_threads(args.threads)
    config = check_simplegpt_source(args.model_name_or_path, "export", args.output_dir)
    claim_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[args.model_name_or_path])
    tokenizer, model, prompts = load_source(args)
    max_cache_len = args.max_cache_len or config["max_position_embeddings"]
    check_room(prompts, max_cache_len, "cache (or raise --max_cache_len)")
    new_tokens = min(args.max_new_tokens, max_cache_len - max(len(ids) for ids in prompts))

    start = time.perf_counter()
    pte = export_executorch(model, max_cache_len, args.backend)
    export_seconds = time.perf_counter() - start
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "model.pte").write_bytes(pte)
    tokenizer.save_pretrained(out)
    logger.info(
        "Exported %s to %s (%d bytes) in %.0f s", args.model_name_or_path, out / "model.pte", len(pte), export_seconds
    )

    runner = ExecuTorchLM(out / "model.pte")
    parity = greedy_parity(model, runner, prompts, new_tokens)
    for prompt, row in zip(args.prompts, parity):
        expected = tokenizer.decode(row["generate"], skip_special_tokens=True)
        row.update(
            prompt=prompt,
            runner_text=llm_runner_text(out / "model.pte", out / "tokenizer.json", prompt, len(row["generate"])),
        )
        row["runner_match"] = row["runner_text"] == expected

    steps = min(new_tokens, max_cache_len - len(prompts[0]))
    speed = decode_speed(model, prompts[0], steps, {"executorch": runner.greedy}, args.repeats)
    results = {
        "model": args.model_name_or_path,
        "format": args.format,
        "backend": args.backend,
        "max_cache_len": max_cache_len,
        "pte_bytes": len(pte),
        "export_seconds": export_seconds,
        "parity": parity,
        "speed": speed,
        "args": asdict(args),
    }
    write_report(out, results, markdown_report(results))
    failed = [row["prompt"] for row in parity if not (row["match"] and row["runner_match"])]
    if failed:
        raise RuntimeError(
            f"The exported program does not decode as generate does for prompts {failed}; see {out / 'export.md'}."
        )
    return results


# A float32 GGUF of a tanh-GELU model is the same function in transformers: anything above rounding is a bug.
EXACT_LOGIT_TOLERANCE = 1e-4


def gguf_report(results: dict) -> str:
    """The parity table (one row per prompt: transformers' GGUF loader and llama.cpp against `generate`) and the
    decode speeds."""
    llama = results["llama_cpp_version"] is not None
    lines = [
        "| prompt | new tokens | tokenizer == source | transformers GGUF == generate | max logit diff |"
        + (" llama.cpp == generate | max logit diff |" if llama else ""),
        "|---|---:|---|---|---:|" + ("---|---:|" if llama else ""),
    ]
    yes = {True: "yes", False: "NO"}
    for row in results["parity"]:
        line = (
            f"| {json.dumps(row['prompt'])} | {len(row['generate'])} | {yes[row['tokenizer_match']]} | "
            f"{yes[row['match']]} | {row['max_logit_diff']:.2e} |"
        )
        if llama:
            line += f" {yes[row['llama_cpp_match']]} | {row['llama_cpp_max_logit_diff']:.2e} |"
        lines.append(line)
    notes = [
        f"gguf ({results['gguf_dtype']} matrices, llama.cpp architecture gpt2), {results['gguf_bytes']:,} "
        f"bytes, written in {results['export_seconds']:.1f} s."
    ]
    if results["hidden_act"] in ERF_GELUS:
        notes.append(
            f"The model's activation is {results['hidden_act']!r} (erf); llama.cpp and the reloaded model "
            "compute GELU's tanh approximation, so their logits differ from the source's by that."
        )
    if results["gguf_dtype"] == "f16":
        notes.append("The weight matrices are rounded to float16.")
    s = results["speed"]
    threads = f"{s['threads']} thread{'s' if s['threads'] != 1 else ''}"
    if llama:
        notes.append(
            f"Greedy decode of {s['new_tokens']} tokens at batch 1 (median of {s['repeats']} interleaved "
            f"runs, {threads}): llama.cpp (llama-cpp-python {results['llama_cpp_version']}) "
            f"{s['llama_cpp_tokens_per_s']:,.1f} tokens/s, transformers `generate` (eager, dynamic cache) "
            f"{s['generate_tokens_per_s']:,.1f} tokens/s."
        )
    else:
        notes.append("llama.cpp was not run: llama-cpp-python is not installed (pip install llama-cpp-python).")
    return "\n".join(lines + ["", " ".join(notes)])


def gguf_job(args) -> dict:
    require_gguf()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = check_simplegpt_source(args.model_name_or_path, "export", args.output_dir)
    check_llama_cpp_can_run(config)
    claim_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[args.model_name_or_path])
    tokenizer, model, prompts = load_source(args)
    context = config["max_position_embeddings"]
    check_room(prompts, context, "context")
    new_tokens = min(args.max_new_tokens, context - max(len(ids) for ids in prompts))

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    path = write_gguf(model, tokenizer, out / GGUF_FILE, args.gguf_dtype, name=Path(args.model_name_or_path).name)
    export_seconds = time.perf_counter() - start
    logger.info(
        "Exported %s to %s (%d bytes) in %.1f s", args.model_name_or_path, path, path.stat().st_size, export_seconds
    )

    # transformers' own GGUF loader: the file's tokenizer and model, against the source.
    reloaded_tokenizer = load_gguf_tokenizer(path)
    parity = greedy_parity(model, TransformersLM(load_gguf(path).eval()), prompts, new_tokens, name="transformers_gguf")
    for prompt, ids, row in zip(args.prompts, prompts, parity):
        row.update(
            prompt=prompt, tokenizer_match=reloaded_tokenizer(prompt, add_special_tokens=False)["input_ids"] == ids
        )
    try:
        llama = LlamaCppLM(path, threads=args.threads)
    except ImportError as error:
        llama = None
        logger.warning("%s Only transformers' GGUF loader checks the file.", error)
    runtimes = {}
    if llama is not None:
        import llama_cpp

        for prompt, ids, row, llama_row in zip(
            args.prompts, prompts, parity, greedy_parity(model, llama, prompts, new_tokens, name="llama_cpp")
        ):
            row.update(
                llama_cpp=llama_row["llama_cpp"],
                llama_cpp_match=llama_row["match"],
                llama_cpp_max_logit_diff=llama_row["max_logit_diff"],
            )
            row["tokenizer_match"] = row["tokenizer_match"] and llama.tokenize(prompt) == ids
        runtimes["llama_cpp"] = llama.greedy
    speed = decode_speed(model, prompts[0], min(new_tokens, context - len(prompts[0])), runtimes, args.repeats)

    exact = args.gguf_dtype == "f32" and config.get("hidden_act", "gelu") not in ERF_GELUS
    results = {
        "model": args.model_name_or_path,
        "format": args.format,
        "gguf_dtype": args.gguf_dtype,
        "gguf_bytes": path.stat().st_size,
        "export_seconds": export_seconds,
        "hidden_act": config.get("hidden_act", "gelu"),
        "exact": exact,
        "llama_cpp_version": llama_cpp.__version__ if llama is not None else None,
        "parity": parity,
        "speed": speed,
        "args": asdict(args),
    }
    write_report(out, results, gguf_report(results))
    untokenized = [row["prompt"] for row in parity if not row["tokenizer_match"]]
    if untokenized:
        raise RuntimeError(
            f"The GGUF's tokenizer encodes prompts {untokenized} differently from the source "
            f"tokenizer; see {out / 'export.md'}."
        )
    if exact:
        failed = [
            row["prompt"] for row in parity if not (row["match"] and row["max_logit_diff"] < EXACT_LOGIT_TOLERANCE)
        ]
        if failed:
            raise RuntimeError(
                f"The float32 GGUF, reloaded by transformers, does not compute the source model for "
                f"prompts {failed}; see {out / 'export.md'}."
            )
    differ = [row["prompt"] for row in parity if not (row["match"] and row.get("llama_cpp_match", True))]
    if differ:
        causes = ["float16 weights"] * (args.gguf_dtype == "f16") + ["tanh-GELU for erf"] * (
            results["hidden_act"] in ERF_GELUS
        ) or ["llama.cpp's GELU read from a float16 table"]
        logger.warning(
            "Greedy tokens differ from generate's for prompts %s (%s); see %s.",
            differ,
            ", ".join(causes),
            out / "export.md",
        )
    return results


if __name__ == "__main__":
    main()
