"""Quantize a SimpleGPT with torchao, through transformers' own switch, and measure it against the float original.

    hf-simplegpt quantize --model_name_or_path outputs/pretrain-default --method int8_dynamic \
        --output_dir outputs/pretrain-default-int8_dynamic
    python recipes/quantize.py ...                        # the same job, the same flags

The model is loaded with `from_pretrained(..., quantization_config=TorchAoConfig(...))` and saved with
`save_pretrained`: the output folder (safetensors, config.json with its `quantization_config`, model code, tokenizer,
card) reloads with a plain `AutoModelForCausalLM.from_pretrained(folder)` wherever torchao is installed. The job
then measures the reloaded folder against the float32 original on held-out text (`--eval_file`, or the documents a
pretraining run with the same data flags held out; the built-in corpus by default) and writes quantization.json,
quantization.md and the card (README.md). The source folder is only read.

Methods: int8_weight_only and int8_dynamic run on CPUs and GPUs; int4_weight_only needs a CUDA GPU.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

import hf_simplegpt  # noqa: F401  (registers SimpleGPT with the Auto classes)
from hf_simplegpt import hub
from hf_simplegpt.corpus import CorpusArguments, heldout_blocks
from hf_simplegpt.hub import check_simplegpt_source, write_model_card
from hf_simplegpt.quantization import METHODS, check_method, comparison_results, markdown_table, quantize_folder
from hf_simplegpt.safeguards import claim_output_dir, guarded_main
from hf_simplegpt.training import check_minimums, parse_args, setup_logging

logger = logging.getLogger("hf_simplegpt.quantize")
PUBLISHED_EXTRAS = ("quantization.json", "quantization.md")


@dataclass
class QuantizeArguments:
    model_name_or_path: str = field(metadata={"help": "Folder (or Hub id) of a float SimpleGPT and its tokenizer."})
    method: str = field(metadata={"help": f"One of {', '.join(METHODS)}."})
    output_dir: str = field(
        default=None,
        metadata={"help": "Where the quantized folder goes; default outputs/<model folder name>-<method>."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace what --output_dir already holds (without it such a folder is refused)."},
    )
    include_embeddings: bool = field(
        default=True,
        metadata={"help": "Also quantize the embedding tables (int8 weight-only) and the output head; int8 methods."},
    )
    device: str = field(default="auto", metadata={"help": "cpu, cuda, ...; auto: cuda when available."})
    max_eval_blocks: int = field(default=64, metadata={"help": "Held-out blocks (of the model's context) measured."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass and in the batched decode."})
    prompt_length: int = field(default=16, metadata={"help": "Prompt tokens of the decode measurement."})
    new_tokens: int = field(default=32, metadata={"help": "Tokens generated per row in the decode measurement."})
    repeats: int = field(default=5, metadata={"help": "Timed runs per speed row and model (median reported)."})
    threads: int = field(default=None, metadata={"help": "torch threads for the measurements; default: torch's."})
    seed: int = field(default=42, metadata={"help": "Seed of the held-out split (pretraining's default: 42)."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the quantized folder."})
    hub_model_id: str = field(default=None, metadata={"help": "Hub repo id for --push_to_hub, e.g. user/name-int8."})

    def __post_init__(self):
        check_method(self.method)  # an unknown method, or int4 without a GPU, fails before anything loads
        if self.output_dir is None:
            self.output_dir = f"outputs/{Path(self.model_name_or_path).name}-{self.method}"
        check_minimums(self, {"max_eval_blocks": 1, "batch_size": 1, "prompt_length": 1, "new_tokens": 1, "repeats": 1})


@guarded_main
def main(argv: list[str] | None = None) -> dict:
    args, data_args = parse_args(QuantizeArguments, CorpusArguments, args=argv)
    setup_logging()
    push = hub.wants_push(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    config = check_simplegpt_source(args.model_name_or_path, "quantize", args.output_dir)
    claim_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[args.model_name_or_path])
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    source, out = args.model_name_or_path, Path(args.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(source)
    reference = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32).to(device).eval()
    out.mkdir(parents=True, exist_ok=True)
    model = quantize_folder(source, args.method, out, include_embeddings=args.include_embeddings, device=device)
    tokenizer.save_pretrained(out)
    logger.info("Quantized %s with %s into %s", source, args.method, out)

    blocks = heldout_blocks(data_args, tokenizer, config["max_position_embeddings"], args.seed, args.max_eval_blocks)
    results = comparison_results(
        reference,
        model,
        args.method,
        blocks,
        batch_size=args.batch_size,
        prompt_length=args.prompt_length,
        new_tokens=args.new_tokens,
        repeats=args.repeats,
    )
    heldout = data_args.eval_file or "the held-out split of the pretraining corpus"
    results = {
        "model": source,
        **results,
        "heldout": heldout,
        "args": asdict(args),
        "quantization_config": json.loads((out / "config.json").read_text())["quantization_config"],
    }
    table = markdown_table(results, heldout)
    (out / "quantization.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "quantization.md").write_text(table + "\n")
    print(table)
    write_model_card(
        out,
        "quantized.md",
        model_name=out.resolve().name,
        base_model=source,
        repo_id=args.hub_model_id,
        tags=["quantized", "torchao", args.method],
        quantization=results,
        quantization_table=table,
    )
    if push:
        hub.push(out, args, extra_files=PUBLISHED_EXTRAS)
    return results


if __name__ == "__main__":
    main()
