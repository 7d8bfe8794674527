"""MMLU scoring speed: one forward pass per question vs one per answer choice, on a small SimpleGPT.

    python benchmarks/mmlu_speed.py --mmlu_data_dir MMLU_DIR --output_dir outputs/mmlu_speed [--publish]

Builds (once) a randomly initialised SimpleGPT (4 layers, hidden 128, context 512) with a 4096-token BPE
trained on the built-in corpus, saves it to <output_dir>/model (evaluate it in full with hf-simplegpt evaluate),
then times `evaluate_mmlu` on the first --limit questions of every subject both ways, alternating over groups of
--group subjects, and checks that the scores agree. Speed does not depend on the weights; the accuracy of random weights is chance by design.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.corpus import builtin_corpus_documents
from hf_simplegpt.evaluation import evaluate_mmlu, load_mmlu
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record import describe, environment, save  # noqa: E402


def build_model(folder: Path, layers: int, hidden: int, context: int, vocab: int) -> None:
    tokenizer = train_tokenizer(builtin_corpus_documents(), vocab_size=vocab, model_max_length=context)
    config = SimpleGPTConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=context,
        norm_position="pre",
        **special_token_ids(tokenizer),
    )
    torch.manual_seed(0)
    SimpleGPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mmlu_data_dir", required=True)
    parser.add_argument("--output_dir", default="outputs/mmlu_speed")
    parser.add_argument("--limit", type=int, default=10, help="questions per subject in the timed comparison")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--group", type=int, default=8, help="subjects timed one way, then the other, in turn")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--publish", action="store_true", help="write results/mmlu-speed-cpu.{json,md}")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(args.output_dir) / "model"
    if not (folder / "config.json").is_file():
        build_model(folder, args.layers, args.hidden, args.context, args.vocab)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    single = [len(tokenizer(" " + c, add_special_tokens=False)["input_ids"]) == 1 for c in "ABCD"]
    print(
        f"model: {folder} ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters), "
        f"torch threads {torch.get_num_threads()}; ' A'..' D' single tokens: {all(single)}"
    )
    subjects = load_mmlu(args.mmlu_data_dir)
    # The two ways alternate over groups of subjects, so load from other processes on a shared machine hits both alike.
    timings, samples, counts = {True: 0.0, False: 0.0}, {True: [], False: []}, {}
    for first in range(0, len(subjects), args.group):
        for one_pass in (True, False):
            start = time.perf_counter()
            result, group_samples = evaluate_mmlu(
                model,
                tokenizer,
                subjects[first : first + args.group],
                limit=args.limit,
                batch_size=args.batch_size,
                one_pass=one_pass,
                progress=False,
            )
            timings[one_pass] += time.perf_counter() - start
            samples[one_pass] += group_samples
            done = counts.setdefault(one_pass, {"questions": 0, "forward_rows": 0})
            done["questions"] += result["questions"]
            done["forward_rows"] += result["forward_rows"]
    for one_pass in (True, False):
        print(
            f"one_pass={one_pass}: {counts[one_pass]['questions']} questions, {counts[one_pass]['forward_rows']} "
            f"forward rows, {timings[one_pass]:.1f} s ({counts[one_pass]['questions'] / timings[one_pass]:.1f} questions/s)"
        )
    accuracy = sum(s["pred"] == s["answer"] for s in samples[True]) / len(samples[True])
    gap = max(
        abs(a - b)
        for x, y in zip(samples[True], samples[False])
        for a, b in zip(x["choice_logliks"], y["choice_logliks"])
    )
    print(f"speed-up of one pass: {timings[False] / timings[True]:.2f}x; largest score difference {gap:.2e}")
    ways = {True: "one pass per question", False: "one pass per choice"}
    result = {
        "model": {
            "parameters": sum(p.numel() for p in model.parameters()),
            "layers": args.layers,
            "hidden": args.hidden,
            "context": args.context,
            "vocab": len(tokenizer),
        },
        "limit": args.limit,
        "batch_size": args.batch_size,
        "group": args.group,
        "largest_score_difference": gap,
        "accuracy": round(accuracy, 4),
        "runs": {ways[k]: {"seconds": round(timings[k], 1), **counts[k]} for k in (True, False)},
        "speedup": round(timings[False] / timings[True], 2),
        "environment": environment(),
    }
    rows = "\n".join(
        f"| {way} | {r['questions']} | {r['forward_rows']} | {r['seconds']} |" for way, r in result["runs"].items()
    )
    markdown = (
        f"{describe(result['environment'])} Model: {result['model']}.\n\n"
        f"| scoring | questions | forward rows | seconds |\n|---|---:|---:|---:|\n{rows}\n\n"
        f"Speed-up of one pass: {result['speedup']}x; largest score difference {gap:.2e}; accuracy "
        f"{result['accuracy']} (random weights: chance).\n"
    )
    save("mmlu-speed-cpu", result, markdown, args.publish)


if __name__ == "__main__":
    main()
