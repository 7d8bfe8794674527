"""Human evaluation in the manner of Chatbot Arena: blind side-by-side votes, preference data for DPO, win rates with
bootstrap confidence intervals and Bradley-Terry scores.

    hf-simplegpt arena outputs/sft outputs/dpo outputs/pretrain-default --prompts prompts.txt --votes votes.jsonl
    hf-simplegpt arena --export votes.jsonl --output prefs.jsonl      # TRL preference rows + the standings
    hf-simplegpt dpo --config dpo_tiny.yaml --model_name_or_path outputs/sft --train_file prefs.jsonl ...

The page (gradio Blocks, two Chatbots) answers the judge's prompt, or the next unjudged prompt of --prompts, with two
models drawn at random in random order, shown as "Model A" and "Model B". The judge votes A / B / tie / both bad; only
then are the names shown. Each vote is appended to --votes as one JSON line and fsync'ed before the page answers, so
a crash loses nothing; a restart appends to the same file and skips the prompts it already holds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import threading
from pathlib import Path

VOTES = ("a", "b", "tie", "both_bad")
VOTE_LABELS = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both are bad"}
FIELDS = ("prompt", "model_a", "model_b", "answer_a", "answer_b", "vote")


# --------------------------------------------------------------------------------------------- votes on disk


def append_vote(path: str | Path, record: dict) -> None:
    """One JSON line, flushed and fsync'ed before returning (a crash right after loses nothing)."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_votes(path: str | Path) -> list[dict]:
    """The votes of a file written by the page; a malformed line is an error naming it and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"Votes file {path} does not exist. Pass the --votes file the arena page wrote.")
    votes = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_no}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not JSON ({err.msg} at column {err.colno}). Fix or delete that line.") from None
        if not isinstance(record, dict):
            raise ValueError(f"{where}: a vote is a JSON object, got {type(record).__name__}.")
        missing = [f for f in FIELDS if f not in record]
        if missing:
            raise ValueError(f"{where}: the vote lacks {missing}; each line needs {', '.join(FIELDS)}.")
        bad = [f for f in FIELDS if not isinstance(record[f], str)]
        if bad:
            raise ValueError(f"{where}: {bad} must be strings.")
        if record["vote"] not in VOTES:
            raise ValueError(f"{where}: vote {record['vote']!r} is not one of {', '.join(VOTES)}.")
        if record["model_a"] == record["model_b"]:
            raise ValueError(f"{where}: model_a and model_b are both {record['model_a']!r}; a battle needs two models.")
        votes.append(record)
    if not votes:
        raise ValueError(f"Votes file {path} holds no votes.")
    return votes


def preference_rows(votes: list[dict]) -> list[dict]:
    """TRL's conversational preference format from the decisive votes (ties and 'both bad' carry no preference)."""
    rows = []
    for v in votes:
        if v["vote"] in ("a", "b"):
            chosen, rejected = (v["answer_a"], v["answer_b"]) if v["vote"] == "a" else (v["answer_b"], v["answer_a"])
            rows.append(
                {
                    "prompt": [{"role": "user", "content": v["prompt"]}],
                    "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}],
                }
            )
    return rows


# ------------------------------------------------------------------------------------------------ standings


def outcomes(votes: list[dict]) -> list[tuple[str, str, float]]:
    """(model_a, model_b, score of a): 1 a won, 0 b won, 0.5 a tie or both bad."""
    score = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}
    return [(v["model_a"], v["model_b"], score[v["vote"]]) for v in votes]


def _win_rates(battles: list[tuple[str, str, float]], models: list[str]) -> dict[str, float]:
    points = dict.fromkeys(models, 0.0)
    games = dict.fromkeys(models, 0)
    for a, b, s in battles:
        points[a] += s
        points[b] += 1 - s
        games[a] += 1
        games[b] += 1
    return {m: points[m] / games[m] if games[m] else float("nan") for m in models}


def win_rates(votes: list[dict], num_bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95) -> dict:
    """Per model: share of its battles won (a tie counts half), with a percentile bootstrap interval over battles."""
    battles = outcomes(votes)
    models = sorted({m for a, b, _ in battles for m in (a, b)})
    point = _win_rates(battles, models)
    rng = random.Random(seed)
    samples = {m: [] for m in models}
    for _ in range(num_bootstrap):
        resampled = _win_rates([battles[rng.randrange(len(battles))] for _ in battles], models)
        for m in models:
            if not math.isnan(resampled[m]):
                samples[m].append(resampled[m])
    tail = (1 - confidence) / 2
    result = {}
    for m in models:
        ordered = sorted(samples[m])
        low, high = ordered[int(tail * (len(ordered) - 1))], ordered[math.ceil((1 - tail) * (len(ordered) - 1))]
        result[m] = {
            "win_rate": point[m],
            "ci_low": low,
            "ci_high": high,
            "battles": sum(m in (a, b) for a, b, _ in battles),
        }
    return result


def bradley_terry(votes: list[dict], iterations: int = 10_000, tol: float = 1e-10) -> dict[str, float]:
    """Bradley-Terry strengths by Hunter's (2004) MM algorithm, on an Elo-like scale (400 log10 strength, mean 1000).

    A tie counts half a win each way, and every pair of models that met gets one virtual tie, so that a model that
    won (or lost) every battle still has a finite score. P(i beats j) = p_i / (p_i + p_j).
    """
    battles = outcomes(votes)
    models = sorted({m for a, b, _ in battles for m in (a, b)})
    wins = {m: 0.0 for m in models}
    games: dict[tuple[str, str], float] = {}
    for a, b, s in battles:
        wins[a] += s
        wins[b] += 1 - s
        key = tuple(sorted((a, b)))
        games[key] = games.get(key, 0.0) + 1
    for key in games:  # the virtual tie
        games[key] += 1
        for m in key:
            wins[m] += 0.5
    strength = dict.fromkeys(models, 1.0)
    for _ in range(iterations):
        new = {}
        for m in models:
            denominator = sum(n / (strength[i] + strength[j]) for (i, j), n in games.items() if m in (i, j))
            new[m] = wins[m] / denominator
        mean_log = sum(math.log(v) for v in new.values()) / len(new)
        new = {m: v / math.exp(mean_log) for m, v in new.items()}  # fix the scale: geometric mean 1
        done = max(abs(new[m] - strength[m]) for m in models) < tol
        strength = new
        if done:
            break
    return {m: 1000 + 400 * math.log10(strength[m]) for m in models}


def standings_markdown(votes: list[dict], num_bootstrap: int = 1000) -> str:
    """Win rates with 95% bootstrap intervals, and Bradley-Terry scores when 3 or more models met."""
    rates = win_rates(votes, num_bootstrap=num_bootstrap)
    counts = {k: sum(v["vote"] == k for v in votes) for k in VOTES}
    lines = [
        f"{len(votes)} votes: " + ", ".join(f"{VOTE_LABELS[k].lower()} {n}" for k, n in counts.items()),
        "",
        "| Model | Battles | Win rate (tie = 1/2) | 95% bootstrap CI |",
        "|---|---:|---:|---|",
    ]
    lines += [
        f"| {m} | {r['battles']} | {r['win_rate']:.3f} | [{r['ci_low']:.3f}, {r['ci_high']:.3f}] |"
        for m, r in sorted(rates.items(), key=lambda kv: -kv[1]["win_rate"])
    ]
    if len(rates) >= 3:
        scores = bradley_terry(votes)
        lines += ["", "| Model | Bradley-Terry score (Elo scale) |", "|---|---:|"]
        lines += [f"| {m} | {s:.1f} |" for m, s in sorted(scores.items(), key=lambda kv: -kv[1])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- page


class Arena:
    """The models, the prompt queue and the votes file behind the page."""

    def __init__(
        self,
        model_paths: list[str],
        votes_path: str,
        prompts: list[str] | None = None,
        max_new_tokens: int = 128,
        seed: int | None = None,
        device: str = "cpu",
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.names = [Path(p).name or p for p in model_paths]
        if len(set(self.names)) != len(self.names):  # the votes name models by folder name
            self.names = list(model_paths)
        self.models = {
            n: (AutoModelForCausalLM.from_pretrained(p).to(device).eval(), AutoTokenizer.from_pretrained(p))
            for n, p in zip(self.names, model_paths)
        }
        self.votes_path = votes_path
        started = Path(votes_path).is_file() and os.path.getsize(votes_path) > 0
        done = {v["prompt"] for v in read_votes(votes_path)} if started else set()
        self.queue = [p for p in prompts or [] if p not in done]  # a restart continues where the file ends
        self.max_new_tokens = max_new_tokens
        self.rng = random.Random(seed)
        self.lock = threading.Lock()

    def answer(self, name: str, prompt: str) -> str:
        from ..generation import generate

        model, tokenizer = self.models[name]
        message = [{"role": "user", "content": prompt}] if getattr(tokenizer, "chat_template", None) else prompt
        return generate(model, tokenizer, [message], max_new_tokens=self.max_new_tokens)[0].strip()

    def battle(self, prompt: str) -> dict:
        """Two different models in random order and their answers."""
        with self.lock:
            model_a, model_b = self.rng.sample(self.names, 2)
        return {
            "prompt": prompt,
            "model_a": model_a,
            "model_b": model_b,
            "answer_a": self.answer(model_a, prompt),
            "answer_b": self.answer(model_b, prompt),
        }

    def vote(self, battle: dict, vote: str) -> dict:
        """Record the vote (fsync'ed) and move the prompt queue on."""
        record = {**battle, "vote": vote}
        with self.lock:
            append_vote(self.votes_path, record)
            if self.queue and self.queue[0] == battle["prompt"]:
                self.queue.pop(0)
        return record

    def next_prompt(self) -> str:
        return self.queue[0] if self.queue else ""


def build_page(arena: Arena):
    """The gradio Blocks page: a prompt box, two anonymous Chatbots, four vote buttons, the names after the vote."""
    import gradio as gr

    def ask(prompt):
        if not prompt.strip():
            raise gr.Error("Type a prompt first.")
        battle = arena.battle(prompt.strip())
        chats = [
            [{"role": "user", "content": battle["prompt"]}, {"role": "assistant", "content": battle[f"answer_{s}"]}]
            for s in "ab"
        ]
        return (
            *chats,
            battle,
            *[gr.Button(interactive=True)] * len(VOTES),
            "Vote to see which model wrote which answer.",
        )

    def make_vote(kind):
        def vote(battle):
            if not battle:
                raise gr.Error("Ask a prompt first.")
            record = arena.vote(battle, kind)
            reveal = (
                f"**Your vote: {VOTE_LABELS[kind]}.** Model A was `{record['model_a']}`, model B was "
                f"`{record['model_b']}`. Saved to `{arena.votes_path}`."
            )
            return (None, *[gr.Button(interactive=False)] * len(VOTES), reveal, arena.next_prompt())

        return vote

    with gr.Blocks(title="hf-simplegpt arena", analytics_enabled=False) as page:
        gr.Markdown("# Which answer is better?\nTwo anonymous models answer your prompt. Vote, then see who they were.")
        prompt = gr.Textbox(label="Prompt", value=arena.next_prompt(), elem_id="arena-prompt")
        ask_button = gr.Button("Ask both models", variant="primary", elem_id="arena-ask")
        with gr.Row():
            chat_a = gr.Chatbot(label="Model A", elem_id="arena-a")
            chat_b = gr.Chatbot(label="Model B", elem_id="arena-b")
        with gr.Row():
            buttons = [gr.Button(VOTE_LABELS[k], interactive=False, elem_id=f"arena-vote-{k}") for k in VOTES]
        reveal = gr.Markdown(elem_id="arena-reveal")
        state = gr.State(None)
        ask_button.click(ask, [prompt], [chat_a, chat_b, state, *buttons, reveal])
        for kind, button in zip(VOTES, buttons):
            button.click(make_vote(kind), [state], [state, *buttons, reveal, prompt])
    return page


def read_prompts(path: str) -> list[str]:
    """One prompt per non-blank line of a .txt, or the `prompt` field of each .jsonl line."""
    text = Path(path).read_text(encoding="utf-8")
    if path.endswith(".jsonl"):
        prompts = []
        for line_no, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                value = json.loads(line).get("prompt") if line.strip().startswith("{") else None
                if not isinstance(value, str) or not value.strip():
                    raise ValueError(f"{path}:{line_no}: needs a JSON object with a non-empty 'prompt' string.")
                prompts.append(value.strip())
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts {path} holds no prompts.")
    return prompts


def main(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        prog="hf-simplegpt arena", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="*", help="two or more model folders to compare")
    parser.add_argument("--prompts", help=".txt (one prompt per line) or .jsonl with 'prompt': the judge's queue")
    parser.add_argument("--votes", default="arena_votes.jsonl", help="JSONL the votes are appended to")
    parser.add_argument("--export", metavar="VOTES", help="read this votes file: print the standings, write --output")
    parser.add_argument("--output", help="with --export: TRL preference JSONL for hf-simplegpt dpo --train_file")
    parser.add_argument("--num_bootstrap", type=int, default=1000)
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=None, help="seed of the model draw (default: random)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7861)
    args = parser.parse_args(argv)
    if args.export:
        if args.models:
            raise ValueError("--export reads a votes file; pass no model folders with it.")
        votes = read_votes(args.export)
        print(standings_markdown(votes, args.num_bootstrap))
        if args.output:
            rows = preference_rows(votes)
            if not rows:
                raise ValueError(f"{args.export} holds no A/B votes (only ties or 'both bad'): nothing to prefer.")
            with open(args.output, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
            print(f"Wrote {len(rows)} preference pairs to {args.output} (hf-simplegpt dpo --train_file {args.output}).")
        return votes
    if args.output:
        raise ValueError("--output goes with --export VOTES.")
    if len(args.models) < 2:
        raise ValueError(
            f"The arena needs two or more model folders, got {len(args.models)}: "
            "hf-simplegpt arena MODEL_A MODEL_B [MODEL_C ...]."
        )
    from ..hub import check_model_source

    for path in args.models:
        check_model_source(path, "arena model")
    arena = Arena(
        args.models,
        args.votes,
        read_prompts(args.prompts) if args.prompts else None,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )
    page = build_page(arena)
    page.queue().launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True)
    page.block_thread()  # until Ctrl+C
    return page
