"""MMLU with the prompt and scoring of lm-evaluation-harness's `mmlu` task, so numbers are comparable.

Prompt of one test question with k shots (k = 0..5; the shots are the first k rows of the subject's dev file):

    The following are multiple choice questions (with answers) about {subject with _ as spaces}.
    <blank line>
    {dev question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer: {letter}
    <blank line>                       (repeated k times)
    {test question.strip()}\\nA. {c0}\\nB. {c1}\\nC. {c2}\\nD. {c3}\\nAnswer:

Each choice is scored by the summed log-probability of " A" / " B" / " C" / " D" after that context
(`loglikelihood.encode_pairs`); the prediction is the highest score (first on ties); the metric is
accuracy without length normalisation. Aggregates: per subject, per category (micro average over the
questions of the category's subjects, like the harness's size-weighted groups) and overall.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .loglikelihood import count_rows, encode_pairs, model_max_length, score_token_pairs

LETTERS = ("A", "B", "C", "D")
CATEGORIES = ("stem", "humanities", "social_sciences", "other")

# lm-evaluation-harness's subject -> category map (tasks/mmlu/_generate_configs.py); it puts anatomy
# under STEM, where Hendrycks et al.'s categories.py lists it under "other (health)".
SUBJECT_CATEGORY = {
    **dict.fromkeys(
        "abstract_algebra anatomy astronomy college_biology college_chemistry college_computer_science "
        "college_mathematics college_physics computer_security conceptual_physics electrical_engineering "
        "elementary_mathematics high_school_biology high_school_chemistry high_school_computer_science "
        "high_school_mathematics high_school_physics high_school_statistics machine_learning".split(),
        "stem",
    ),
    **dict.fromkeys(
        "formal_logic high_school_european_history high_school_us_history high_school_world_history "
        "international_law jurisprudence logical_fallacies moral_disputes moral_scenarios philosophy "
        "prehistory professional_law world_religions".split(),
        "humanities",
    ),
    **dict.fromkeys(
        "econometrics high_school_geography high_school_government_and_politics high_school_macroeconomics "
        "high_school_microeconomics high_school_psychology human_sexuality professional_psychology "
        "public_relations security_studies sociology us_foreign_policy".split(),
        "social_sciences",
    ),
    **dict.fromkeys(
        "business_ethics clinical_knowledge college_medicine global_facts human_aging management marketing "
        "medical_genetics miscellaneous nutrition professional_accounting professional_medicine virology".split(),
        "other",
    ),
}
SUBJECTS = tuple(sorted(SUBJECT_CATEGORY))
HUB_DATASET = "cais/mmlu"


@dataclass(frozen=True)
class Question:
    question: str
    choices: tuple[str, str, str, str]
    answer: int  # 0..3


@dataclass(frozen=True)
class Subject:
    name: str
    dev: tuple[Question, ...]
    test: tuple[Question, ...]


# ----------------------------------------------------------------------------------------- data


def _parse_answer(value: str, where: str) -> int:
    value = value.strip()
    if value in LETTERS:
        return LETTERS.index(value)
    if value in ("0", "1", "2", "3"):
        return int(value)
    raise ValueError(f"{where}: answer {value!r} is neither a letter A-D nor an index 0-3.")


def read_csv(path: Path) -> tuple[Question, ...]:
    """Rows of an MMLU csv (question, 4 choices, answer as A-D or 0-3), with or without a header row."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 (byte {raw[err.start]:#04x}); save the file as UTF-8.") from None
    questions = []
    for line_no, row in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if line_no == 1 and [c.strip().lower() for c in row[:1] + row[-1:]] == ["question", "answer"]:
            continue
        if len(row) != 6:
            raise ValueError(f"{path}:{line_no}: expected 6 columns (question, 4 choices, answer), got {len(row)}.")
        questions.append(Question(row[0], tuple(row[1:5]), _parse_answer(row[5], f"{path}:{line_no}")))
    return tuple(questions)


def _describe(folder: Path) -> str:
    if not folder.is_dir():
        return f"{folder} does not exist"
    entries = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    found = [f"{folder}: {entries[:20]}{' ...' if len(entries) > 20 else ''}"]
    for sub in ("dev", "test"):
        if (folder / sub).is_dir():
            names = sorted(p.name for p in (folder / sub).iterdir())
            found.append(f"{sub}/: {names[:10]}{' ...' if len(names) > 10 else ''} ({len(names)} files)")
    return "; ".join(found)


def _check_subjects(requested: Iterable[str] | None, available: Iterable[str]) -> list[str]:
    available = sorted(available)
    if requested is None:
        return available
    requested = list(requested)
    unknown = [s for s in requested if s not in available]
    if unknown:
        raise ValueError(f"Unknown MMLU subject(s) {unknown}; valid subjects: {', '.join(available)}.")
    return requested


def load_local(data_dir: str | Path, subjects: Iterable[str] | None = None, need_dev: bool = True) -> list[Subject]:
    """Subjects from a folder in the original layout: test/<subject>_test.csv and dev/<subject>_dev.csv."""
    data_dir = Path(data_dir)
    tests = {p.name[: -len("_test.csv")]: p for p in sorted((data_dir / "test").glob("*_test.csv"))}
    if not tests:
        raise ValueError(
            f"No MMLU test files (test/<subject>_test.csv) under {data_dir}. Found: {_describe(data_dir)}. "
            "Point --mmlu_data_dir at the folder holding dev/ and test/."
        )
    names = _check_subjects(subjects, tests)
    loaded = []
    for name in names:
        dev_path = data_dir / "dev" / f"{name}_dev.csv"
        if need_dev and not dev_path.is_file():
            raise ValueError(
                f"Few-shot examples need {dev_path}, which is missing. Found: {_describe(data_dir)}. "
                "Use num_fewshot=0 or add the dev files."
            )
        dev = read_csv(dev_path) if dev_path.is_file() else ()
        test = read_csv(tests[name])
        if not test:
            raise ValueError(f"{tests[name]} holds no questions. Restore the file, or leave {name} out of --subjects.")
        loaded.append(Subject(name, dev, test))
    return loaded


def load_hub(subjects: Iterable[str] | None = None, need_dev: bool = True) -> list[Subject]:
    """Subjects from the Hub dataset `cais/mmlu` (needs network access)."""
    from datasets import load_dataset

    from ..hub import is_connection_error

    loaded = []
    for name in _check_subjects(subjects, SUBJECTS):
        try:
            ds = load_dataset(HUB_DATASET, name)
        except Exception as error:
            if not is_connection_error(error):
                raise
            raise ValueError(
                f"MMLU comes from the Hub dataset {HUB_DATASET} when --mmlu_data_dir is not given, and the Hub is "
                f"unreachable ({type(error).__name__}). Pass --mmlu_data_dir DIR, a local copy in the original "
                "layout (DIR/dev/*_dev.csv, DIR/test/*_test.csv), or rerun with network access."
            ) from None
        to_q = lambda rows: tuple(Question(r["question"], tuple(r["choices"]), int(r["answer"])) for r in rows)  # noqa: E731
        loaded.append(Subject(name, to_q(ds["dev"]) if need_dev else (), to_q(ds["test"])))
    return loaded


def load_mmlu(data_dir: str | Path | None = None, subjects: Iterable[str] | None = None, num_fewshot: int = 0):
    """Local folder when `data_dir` is given, else the Hub. Checks that every subject has `num_fewshot` dev rows."""
    if not 0 <= num_fewshot:
        raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}.")
    loaded = load_local(data_dir, subjects, num_fewshot > 0) if data_dir else load_hub(subjects, num_fewshot > 0)
    for subject in loaded:
        if num_fewshot > len(subject.dev):
            raise ValueError(
                f"num_fewshot={num_fewshot} but {subject.name} has only {len(subject.dev)} dev questions; "
                f"use num_fewshot <= {len(subject.dev)} (MMLU ships 5 per subject)."
            )
    return loaded


# --------------------------------------------------------------------------------------- prompt


def format_question(q: Question) -> str:
    """`question.strip()`, the four lettered choices, then `Answer:` (no trailing space)."""
    lines = [q.question.strip()] + [f"{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices)]
    return "\n".join(lines) + "\nAnswer:"


def build_context(subject: str, shots: Iterable[Question], question: Question) -> str:
    """Description, blank line, each shot answered (`" " + letter`) and followed by a blank line, then the question."""
    description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
    examples = "".join(f"{format_question(s)} {LETTERS[s.answer]}\n\n" for s in shots)
    return description + examples + format_question(question)


# ------------------------------------------------------------------------------------- scoring


def evaluate_mmlu(
    model,
    tokenizer,
    subjects: list[Subject],
    *,
    num_fewshot: int = 0,
    limit: int | None = None,
    batch_size: int = 16,
    one_pass: bool = True,
    padding_side: str = "left",
    progress: bool = True,
) -> tuple[dict, list[dict]]:
    """Score every test question of `subjects` (the first `limit` per subject when given).

    Returns (results, samples): results from `aggregate` plus the run settings; one sample per question
    with subject, doc_id (0-based row of the test file, header excluded), choice_logliks, pred, answer.
    `one_pass=True` scores the four answers from one forward pass whenever they are single tokens.
    """
    from tqdm.auto import tqdm

    model.eval()
    max_length = model_max_length(model)
    requests, docs = [], []
    for subject in subjects:
        shots = subject.dev[:num_fewshot]
        for doc_id, q in enumerate(subject.test[:limit]):
            context = build_context(subject.name, shots, q)
            requests.extend((context, " " + letter) for letter in LETTERS)
            docs.append((subject.name, doc_id, q.answer))
    pairs = encode_pairs(tokenizer, requests)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    n_rows = count_rows(pairs, max_length, one_pass)
    with tqdm(
        total=n_rows, desc=f"MMLU {num_fewshot}-shot ({len(docs)} questions)", unit="fwd", disable=not progress
    ) as bar:
        scores = score_token_pairs(
            model,
            pairs,
            batch_size=batch_size,
            max_length=max_length,
            padding_side=padding_side,
            pad_token_id=pad,
            share_inputs=one_pass,
            on_rows_done=bar.update,
        )
    samples = []
    for i, (subject, doc_id, answer) in enumerate(docs):
        logliks = scores[4 * i : 4 * i + 4]
        pred = predict(logliks)
        samples.append(
            {"subject": subject, "doc_id": doc_id, "choice_logliks": logliks, "pred": pred, "answer": answer}
        )
    results = aggregate([s["pred"] for s in samples], [s["answer"] for s in samples], [s["subject"] for s in samples])
    results.update(num_fewshot=num_fewshot, limit=limit, forward_rows=n_rows, questions=len(docs))
    return results, samples


def predict(choice_logliks: list[float]) -> int:
    """Index of the highest score; the first one on ties (numpy.argmax, as the harness uses)."""
    return max(range(len(choice_logliks)), key=lambda c: (choice_logliks[c], -c))


def aggregate(predictions: list[int], references: list[int], subjects: list[str]) -> dict:
    """Accuracy per subject, per category (micro: all questions of its subjects) and overall (micro).

    Subjects outside the 57 MMLU subjects count in `acc` but in no category. Each entry carries `n`, the
    number of questions, and overall `acc_stderr` = sqrt(acc (1 - acc) / (n - 1)) as the harness reports.
    """
    if not (len(predictions) == len(references) == len(subjects)) or not predictions:
        raise ValueError(
            f"Need equally many predictions, references and subjects (got {len(predictions)}, "
            f"{len(references)}, {len(subjects)}), and at least one."
        )
    per_subject: dict[str, list[int]] = {}
    per_category: dict[str, list[int]] = {}
    for pred, ref, subject in zip(predictions, references, subjects):
        hit = int(pred == ref)
        per_subject.setdefault(subject, []).append(hit)
        if subject in SUBJECT_CATEGORY:
            per_category.setdefault(SUBJECT_CATEGORY[subject], []).append(hit)
    hits = [int(p == r) for p, r in zip(predictions, references)]
    acc = sum(hits) / len(hits)
    summary = lambda h: {"acc": sum(h) / len(h), "n": len(h)}  # noqa: E731
    return {
        "acc": acc,
        "acc_stderr": math.sqrt(acc * (1 - acc) / (len(hits) - 1)) if len(hits) > 1 else float("nan"),
        "n": len(hits),
        "categories": {c: summary(per_category[c]) for c in CATEGORIES if c in per_category},
        "subjects": {s: summary(h) for s, h in sorted(per_subject.items())},
    }


def write_samples(samples: list[dict], path: str | Path) -> None:
    """One JSON object per line."""
    with open(path, "w", encoding="utf-8") as f:
        for sample in samples:
            f.write(json.dumps(sample) + "\n")


def plot_categories(mmlu: dict, path: str | Path) -> None:
    """Bar chart of the accuracy per category and overall, with the chance line, saved as a PNG at `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c for c in CATEGORIES if c in mmlu["categories"]] + ["overall"]
    values = [mmlu["categories"][c]["acc"] for c in names[:-1]] + [mmlu["acc"]]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(names, values, color=["tab:blue"] * (len(names) - 1) + ["tab:gray"])
    ax.axhline(0.25, color="tab:red", linestyle="--", label="chance (0.25)")
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"MMLU {mmlu['num_fewshot']}-shot accuracy per category ({mmlu['n']} questions)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
