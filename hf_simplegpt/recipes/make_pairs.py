"""Write (anchor, positive) pairs for `hf-simplegpt contrastive` from a text file or an MMLU folder, offline.

    hf-simplegpt make-pairs --text_file corpus.txt --output pairs.jsonl [--unit sentence] [--min_words 3]
    hf-simplegpt make-pairs --mmlu_dir data/mmlu --output mmlu_pairs.jsonl [--split test]

From text: within each blank-line separated passage, every unit (a line, or with --unit sentence a sentence) is
paired with the next; units shorter than --min_words words (a speaker's name, a heading) are skipped. Neighbours share
a speaker, a topic, a thought: the similarity the encoder learns. From MMLU: each question with its correct answer (answers of at least --min_words words).
Repeated pairs are written once. Each row is {"anchor": ..., "positive": ...}.
"""

import argparse
from pathlib import Path

from hf_simplegpt.contrastive import make_mmlu_pairs, make_text_pairs
from hf_simplegpt.synthetic import write_jsonl


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text_file", help="a UTF-8 text file; passages are separated by blank lines")
    source.add_argument("--mmlu_dir", help="an MMLU folder with <split>/<subject>_<split>.csv files")
    parser.add_argument("--output", required=True, help="the .jsonl file to write")
    parser.add_argument("--unit", choices=("line", "sentence"), default="line", help="what is paired (text files)")
    parser.add_argument(
        "--min_words", type=int, default=3, help="skip shorter lines/sentences (text) or answers (MMLU)"
    )
    parser.add_argument("--split", default="test", help="MMLU split to read (dev, val, test)")
    args = parser.parse_args(argv)
    if args.min_words < 1:
        raise ValueError(f"--min_words {args.min_words} must be at least 1.")
    if args.text_file:
        if not Path(args.text_file).is_file():
            raise ValueError(f"--text_file {args.text_file}: no such file. Pass a UTF-8 text file.")
        pairs = make_text_pairs(Path(args.text_file).read_text(encoding="utf-8"), args.unit, args.min_words)
        source = args.text_file
    else:
        pairs, source = make_mmlu_pairs(args.mmlu_dir, args.split, args.min_words), args.mmlu_dir
    if not pairs:
        raise ValueError(
            f"{source} gives no pairs: no passage has two consecutive {args.unit}s of at least "
            f"{args.min_words} words. Lower --min_words, try --unit sentence, or pass more text."
        )
    path = write_jsonl(pairs, args.output)
    print(f"wrote {len(pairs)} pairs to {path}")
    return path


if __name__ == "__main__":
    main()
