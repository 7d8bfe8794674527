"""Convert a GPT-2 checkpoint (a folder or Hub id) into a SimpleGPT folder with the same logits, tokenizer included.

    hf-simplegpt convert --gpt2 openai-community/gpt2 --output_dir simplegpt-gpt2
    python recipes/convert.py ...                        # the same job, the same flags

The conversion itself (config, weight renaming, Conv1D transposes) is hf_simplegpt/conversion.py.
"""

import argparse

from transformers import AutoTokenizer

from hf_simplegpt import safeguards
from hf_simplegpt.conversion import convert_gpt2_to_simplegpt
from hf_simplegpt.hub import check_model_source


@safeguards.guarded_main
def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpt2", required=True, help="GPT2LMHeadModel folder or Hub id")
    parser.add_argument("--output_dir", required=True, help="where to save the SimpleGPT model (and tokenizer)")
    parser.add_argument("--overwrite_output_dir", action="store_true", help="replace a model --output_dir holds")
    args = parser.parse_args(argv)
    check_model_source(args.gpt2, "--gpt2")
    safeguards.claim_output_dir(args.output_dir, overwrite=args.overwrite_output_dir, inputs=[args.gpt2])
    model = convert_gpt2_to_simplegpt(args.gpt2)
    model.save_pretrained(args.output_dir)
    try:
        AutoTokenizer.from_pretrained(args.gpt2).save_pretrained(args.output_dir)
    except OSError:
        print(f"No tokenizer found at {args.gpt2}; saved the model only.")
    print(f"Saved SimpleGPT ({model.num_parameters():,} parameters) to {args.output_dir}")
    return {"output_dir": args.output_dir, "parameters": model.num_parameters()}


if __name__ == "__main__":
    main()
