"""A holistic report in the manner of HELM (Liang et al. 2022): several kinds of measurement of one model, side by side.

Sections and their numbers (each from a task of `hf-simplegpt evaluate`):

* accuracy: MMLU accuracy;
* calibration: expected calibration error (ECE) of the MMLU answer probabilities: softmax over the four choices'
  log-likelihoods, confidence = the predicted choice's probability, 10 equal-width confidence bins,
  ECE = sum over bins of (bin size / n) * |accuracy in bin - mean confidence in bin| (HELM's `ece_10_bin`);
* robustness: MMLU accuracy with each of PERTURBATIONS applied to the question and its choices (the instruction,
  letters and "Answer:" are untouched), and the worst of them (HELM reports the worst case);
* bias: CrowS-Pairs pct_stereotype (0.5 is unbiased);
* safety: refusal rate on harmful prompts;
* perplexity: on a held-out text file, when one is given;
* efficiency: greedy decoding tokens/s at batch 1.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace

from .mmlu import Question, Subject

NUM_BINS = 10


def expected_calibration_error(
    choice_logliks: list[list[float]], answers: list[int], num_bins: int = NUM_BINS
) -> float:
    """ECE of the softmax over each question's choice log-likelihoods (see the module docstring)."""
    if not choice_logliks or len(choice_logliks) != len(answers):
        raise ValueError("Need one list of choice log-likelihoods per answer, and at least one.")
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(num_bins)]
    for logliks, answer in zip(choice_logliks, answers):
        top = max(logliks)
        probs = [math.exp(x - top) for x in logliks]
        pred = max(range(len(probs)), key=lambda c: (probs[c], -c))  # first on ties, as mmlu.predict
        confidence = probs[pred] / sum(probs)
        bins[min(int(confidence * num_bins), num_bins - 1)].append((confidence, pred == answer))
    n = len(answers)
    return sum(len(b) / n * abs(sum(hit for _, hit in b) / len(b) - sum(c for c, _ in b) / len(b)) for b in bins if b)


# Perturbations of HELM's robustness scenarios, seeded per text so a question is perturbed the same way every run.
def lowercase(text: str, rng: random.Random) -> str:
    """HELM's `lowercase`."""
    return text.lower()


def extra_whitespace(text: str, rng: random.Random) -> str:
    """HELM's `extra_space`: every space becomes 1 to 3 spaces."""
    return "".join(" " * rng.randint(1, 3) if ch == " " else ch for ch in text)


def typos(text: str, rng: random.Random, prob: float = 0.1) -> str:
    """Keyboard-style typos (HELM's `typos` in spirit): each word of 4+ letters, with probability `prob`, has two
    adjacent inner letters swapped."""
    words = text.split(" ")
    for i, word in enumerate(words):
        if len(word) >= 4 and word.isalpha() and rng.random() < prob:
            j = rng.randint(1, len(word) - 3)
            words[i] = word[:j] + word[j + 1] + word[j] + word[j + 2 :]
    return " ".join(words)


PERTURBATIONS = {"casing": lowercase, "whitespace": extra_whitespace, "typos": typos}


def perturb_subjects(subjects: list[Subject], name: str, seed: int = 0) -> list[Subject]:
    """The subjects with perturbation `name` applied to each test question and its choices (shots untouched)."""
    perturb = PERTURBATIONS[name]

    def one(q: Question, key: str) -> Question:
        rng = random.Random(f"{seed}:{name}:{key}")
        return Question(perturb(q.question, rng), tuple(perturb(c, rng) for c in q.choices), q.answer)

    return [replace(s, test=tuple(one(q, f"{s.name}:{i}") for i, q in enumerate(s.test))) for s in subjects]


def decode_tokens_per_second(model, tokenizer, new_tokens: int = 32, repeats: int = 3) -> float:
    """Median greedy decoding speed at batch 1 (new tokens / seconds after a one-token warm-up), exactly
    `new_tokens` each run (min_new_tokens keeps EOS from ending it early)."""
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor(
        [tokenizer("The", add_special_tokens=False)["input_ids"] or [tokenizer.bos_token_id]], device=device
    )
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    settings = dict(do_sample=False, pad_token_id=pad, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        model.generate(ids, max_new_tokens=1, **settings)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model.generate(ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **settings)
            times.append(time.perf_counter() - start)
    return new_tokens / sorted(times)[len(times) // 2]


# (section, metric, how to read it from a results.json, which way is better)
SECTIONS = (
    ("accuracy", "MMLU accuracy", lambda r: r.get("mmlu", {}).get("acc"), "higher"),
    ("calibration", "MMLU ECE (10 bins)", lambda r: r.get("holistic", {}).get("ece"), "lower"),
    ("robustness", "MMLU accuracy, worst perturbation", lambda r: r.get("holistic", {}).get("robust_acc"), "higher"),
    (
        "bias",
        "CrowS-Pairs pct_stereotype (ideal 0.5)",
        lambda r: r.get("crows_pairs", {}).get("pct_stereotype"),
        "closer to 0.5",
    ),
    ("safety", "refusal rate on harmful prompts", lambda r: r.get("safety", {}).get("refusal_rate"), "higher"),
    ("perplexity", "perplexity", lambda r: r.get("perplexity", {}).get("perplexity"), "lower"),
    (
        "efficiency",
        "greedy decode tokens/s, batch 1",
        lambda r: r.get("holistic", {}).get("decode_tokens_per_s"),
        "higher",
    ),
)


def report_rows(results_by_model: dict[str, dict]) -> list[dict]:
    """One row per section: section, metric, better, and one value (or None: not measured) per model."""
    return [
        {"section": s, "metric": m, "better": b, "values": {name: get(r) for name, r in results_by_model.items()}}
        for s, m, get, b in SECTIONS
    ]


def report_markdown(rows: list[dict]) -> str:
    """The report as one markdown table, a column per model; robustness details below it."""
    models = list(rows[0]["values"])
    fmt = lambda v: "not measured" if v is None else (f"{v:.1f}" if abs(v) >= 100 else f"{v:.4f}")  # noqa: E731
    lines = ["| Section | Metric | " + " | ".join(models) + " | Better |", "|---|---|" + "---:|" * len(models) + "---|"]
    lines += [
        f"| {r['section']} | {r['metric']} | " + " | ".join(fmt(r["values"][m]) for m in models) + f" | {r['better']} |"
        for r in rows
    ]
    return "\n".join(lines)


def plot_report(rows: list[dict], path) -> None:
    """A PNG: one panel per section, a bar per model ("not measured" where a model lacks the section)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(rows[0]["values"])
    fig, axes = plt.subplots(1, len(rows), figsize=(2.2 * len(rows), 3.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, row in zip(axes, rows):
        values = [row["values"][m] for m in models]
        ax.bar(range(len(models)), [v if v is not None else 0 for v in values], color=colors[: len(models)])
        for i, v in enumerate(values):  # a measured 0 has no bar either: say which ones were not measured
            if v is None:
                ax.text(i, 0, "not\nmeasured", ha="center", va="bottom", fontsize=7)
        if row["section"] == "bias":
            ax.axhline(0.5, color="tab:red", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(models)), [f"M{i + 1}" for i in range(len(models))])
        ax.set_title(f"{row['section']}\n({row['better']})", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle("  ".join(f"M{i + 1} = {m}" for i, m in enumerate(models)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
