"""Write a small instruction dataset (two-number arithmetic as chat turns) for trying the SFT recipe offline.

    python recipes/make_sft_toy_data.py --output data/arith_sft.jsonl --rows 2000

Each row is {"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}; the same seed gives the same file.
"""

import argparse
import random

from hf_simplegpt.synthetic import write_jsonl

QUESTIONS = ("What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?", "Please work out {a} {op} {b}.")
OPERATIONS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def make_rows(rows: int, seed: int) -> list[dict]:
    """`rows` conversations, each a question about two numbers below 100 and its worked answer."""
    rng = random.Random(seed)
    out = []
    for _ in range(rows):
        a, b, op = rng.randrange(100), rng.randrange(100), rng.choice(sorted(OPERATIONS))
        question = rng.choice(QUESTIONS).format(a=a, op=op, b=b)
        answer = f"{a} {op} {b} = {OPERATIONS[op](a, b)}."
        out.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="the .jsonl file to write")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    path = write_jsonl(make_rows(args.rows, args.seed), args.output)
    print(f"wrote {args.rows} conversations to {path}")
    return {"output": str(path), "rows": args.rows}


if __name__ == "__main__":
    main()
