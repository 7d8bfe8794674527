"""Shared tiny fixtures: every test builds its model and data here, offline, in milliseconds."""

import csv
import importlib
import json
import os
import tempfile
from pathlib import Path

# One thread per test process, set before torch starts its pool (and inherited by the jobs and servers the tests
# start): the suite runs one process per core, and two threads per process on the same cores spin-wait for each other.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Trackio (--report_to trackio, and pretraining's default where it is installed) keeps its store in TRACKIO_DIR, read
# when trackio is imported: a folder of this test process, never the user's ~/.cache.
os.environ.setdefault("TRACKIO_DIR", os.path.join(tempfile.gettempdir(), f"hf_simplegpt-tests-trackio-{os.getpid()}"))

import pytest  # noqa: E402
import torch  # noqa: E402

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.synthetic import KeywordTask, write_jsonl
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
# Real data for the tests that use it (they skip where it is absent, as in a fresh clone): the project's CI and team
# checkouts have ../shared/data beside the repository; elsewhere point the variables at your own copies.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MMLU_DIR = Path(os.environ.get("HF_SIMPLEGPT_MMLU_DIR", SHARED_DATA / "mmlu"))  # dev/ and test/ CSVs, 57 subjects
SHAKESPEARE = Path(os.environ.get("HF_SIMPLEGPT_SHAKESPEARE", SHARED_DATA / "tinyshakespeare.txt"))
QUIET = ["--disable_tqdm", "true", "--report_to", "none"]
# Each test's outcome in this process, by node id: tests/test_faults.py checks the README's count against it.
OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":  # a failed or skipped setup is the outcome too
        OUTCOMES.setdefault(report.nodeid, report.outcome)


TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A journey of a thousand miles begins with a single step.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; all who wander are not lost.",
    "The sun rises in the east and sets in the west.",
    "Knowledge is power, and power is responsibility.",
    "Every cloud has a silver lining, even on the darkest day.",
    "Numbers like 3.14159 and 2.71828 appear everywhere in mathematics.",
] * 8


def tiny_config_kwargs(**overrides) -> dict:
    """A 2-layer, 32-wide SimpleGPT with dropout off so outputs are deterministic."""
    kwargs = dict(
        vocab_size=300,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        dropout=0.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    kwargs.update(overrides)
    return kwargs


def expected_lora_params(config, r: int) -> int:
    """r * (in + out) for q/k/v/o (hidden -> hidden) and up/down (hidden <-> intermediate), per layer."""
    hidden, intermediate = config.hidden_size, config.intermediate_size
    per_layer = 4 * r * (hidden + hidden) + 2 * r * (hidden + intermediate)
    return config.num_hidden_layers * per_layer


@pytest.fixture
def tiny_config() -> SimpleGPTConfig:
    return SimpleGPTConfig(**tiny_config_kwargs())


@pytest.fixture
def tiny_model(tiny_config) -> SimpleGPTForCausalLM:
    torch.manual_seed(0)
    return SimpleGPTForCausalLM(tiny_config).eval()


@pytest.fixture(scope="session")
def tiny_corpus() -> list[str]:
    return list(TINY_CORPUS)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus):
    """A byte-level BPE with 300 tokens; its special ids match `tiny_config` (pad 0, bos 1, eos 2)."""
    tokenizer = train_tokenizer(tiny_corpus, vocab_size=300, model_max_length=64)
    assert special_token_ids(tokenizer) == {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
    return tokenizer


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path: equal digests mean a byte-identical folder."""
    import hashlib

    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def train_tiny(tokenizer, corpus: list[str], **config) -> SimpleGPTForCausalLM:
    """A tiny SimpleGPT (`tiny_config_kwargs(**config)`) trained for a second on `corpus`, in eval mode: peaked
    next-token distributions, as a real model has."""
    torch.manual_seed(0)
    model = SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs(**config)))
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in corpus]
    flat = torch.tensor([i for row in ids for i in row])
    blocks = flat[: len(flat) // 64 * 64].view(-1, 64)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(40):
        model(blocks, labels=blocks).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def trained_tiny_dir(tmp_path_factory, tiny_tokenizer, tiny_corpus) -> Path:
    """A saved tiny SimpleGPT trained for a second on TINY_CORPUS (peaked next-token distributions, as a real model
    has), with its tokenizer and a held-out text file `heldout.txt` beside it."""
    root = tmp_path_factory.mktemp("trained-tiny")
    train_tiny(tiny_tokenizer, tiny_corpus).save_pretrained(root / "model")
    tiny_tokenizer.save_pretrained(root / "model")
    (root / "heldout.txt").write_text("\n\n".join(tiny_corpus[:16]) + "\n")
    return root / "model"


@pytest.fixture
def real_mmlu() -> Path:
    """The real MMLU folder (HF_SIMPLEGPT_MMLU_DIR, default ../shared/data/mmlu); skips where it is absent."""
    if not (MMLU_DIR / "test").is_dir():
        pytest.skip(f"no MMLU at {MMLU_DIR}: set HF_SIMPLEGPT_MMLU_DIR to a folder with dev/ and test/ CSVs")
    return MMLU_DIR


# A miniature MMLU folder in the original layout: abstract_algebra without a header and with letter answers
# (Hendrycks' files), marketing with a header row and 0-3 answers (the shared copy's format).
MMLU_FIXTURE = {
    "abstract_algebra": {
        "dev": [
            ["What is 1 + 1 in Z_2?", "0", "1", "2", "3", "A"],
            ["  Which group is cyclic?  ", "Z_4", "S_3", "D_4", "Q_8", "A"],
            ["How many elements does Z_5 have?", "3", "4", "5", "6", "C"],
        ],
        "test": [
            ["Find the order of 2 in Z_6.", "1", "2", "3", "6", "C"],
            ["Is every field a ring?", "Yes", "No", "Only finite ones", "Only infinite ones", "A"],
            ["What is the identity of (Z, +)?", "1", "0", "-1", "none", "B"],
        ],
    },
    "marketing": {
        "dev": [
            ["What does the P in 4P stand for?", "Price", "People", "Process", "Proof", "0"],
            ["A brand is a", "logo", "promise", "price", "product", "1"],
        ],
        "test": [
            ["Which is a pricing strategy?", "Skimming", "Cooking", "Sailing", "Painting", "0"],
            ["Market segmentation divides a market into", "prices", "groups", "taxes", "shops", "1"],
        ],
    },
}


def write_mmlu_fixture(root: Path) -> Path:
    """Write MMLU_FIXTURE under root as dev/<subject>_dev.csv and test/<subject>_test.csv; return root."""
    for subject, splits in MMLU_FIXTURE.items():
        for split, rows in splits.items():
            (root / split).mkdir(parents=True, exist_ok=True)
            with open(root / split / f"{subject}_{split}.csv", "w", newline="") as f:
                writer = csv.writer(f)
                if subject == "marketing":
                    writer.writerow(["question", "choice0", "choice1", "choice2", "choice3", "answer"])
                writer.writerows(rows)
    return root


@pytest.fixture
def mmlu_dir(tmp_path) -> Path:
    return write_mmlu_fixture(tmp_path / "mmlu")


# ------------------------------------------------------------------------------------------------ recipes

PRETRAIN_TINY = str(REPO_ROOT / "recipes" / "configs" / "pretrain_tiny.yaml")
WORDS = (
    "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial kings "
    "and every river runs to the sea under grey clouds"
).split()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> str:
    """300 pseudo-random paragraphs (~12k words): enough blocks of 32 tokens for a few steps on two processes."""
    import random

    rng = random.Random(0)
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60))) for _ in range(300)]
    path.write_text("\n\n".join(paragraphs) + "\n")
    return str(path)


def run_pretrain(tmp_path, corpus, *extra, out="out"):
    """Run the pretraining recipe in-process with the tiny config; returns (metrics, output dir)."""
    from hf_simplegpt.recipes import pretrain

    output_dir = str(tmp_path / out)
    argv = [
        "--config",
        PRETRAIN_TINY,
        "--train_file",
        corpus,
        "--output_dir",
        output_dir,
        "--data_cache_dir",
        str(Path(corpus).parent / "cache"),
        "--disable_tqdm",
        "true",
        *extra,
    ]
    return pretrain.main(argv), output_dir


def log_history(output_dir) -> list[dict]:
    """The Trainer's log history saved in `output_dir`/trainer_state.json."""
    return json.loads((Path(output_dir) / "trainer_state.json").read_text())["log_history"]


def run_recipe(name: str, *args):
    """Run hf_simplegpt.recipes.<name>.main() in-process (a subprocess would pay the torch/TRL import again)."""
    return importlib.import_module(f"hf_simplegpt.recipes.{name}").main([*map(str, args), *QUIET])


def metrics_of(output_dir: Path) -> dict:
    return json.loads((output_dir / "alignment_metrics.json").read_text())


@pytest.fixture
def fake_hub(monkeypatch) -> list[dict]:
    """The Hub upload boundary, offline: each commit is recorded (repo, files sent and where from, the card's text at
    the time of the upload), and the Trainer's own pushes fail the test."""
    from huggingface_hub import HfApi
    from transformers import Trainer

    commits = []

    def create_commit(self, repo_id, operations, **kwargs):
        files = {op.path_in_repo: op.path_or_fileobj for op in operations}
        card = Path(files["README.md"]).read_text() if "README.md" in files else None
        commits.append({"repo_id": repo_id, "files": files, "card": card})
        return "commit-url"

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: None)
    monkeypatch.setattr(HfApi, "create_commit", create_commit)
    for name in ("init_hf_repo", "push_to_hub", "_push_from_checkpoint"):
        monkeypatch.setattr(Trainer, name, lambda self, *a, name=name, **k: pytest.fail(f"Trainer.{name} ran"))
    return commits


def largest_lora_b(output_dir: Path) -> float:
    """The largest |weight| of the LoRA B matrices saved in `output_dir`: 0 until training moves them off their init."""
    from safetensors.torch import load_file

    weights = load_file(output_dir / "adapter_model.safetensors")
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b, f"no LoRA B matrices in {output_dir}"
    return max(w.abs().max().item() for w in lora_b)


def make_model(tokenizer, **shape) -> SimpleGPTForCausalLM:
    torch.manual_seed(0)
    kwargs = tiny_config_kwargs(vocab_size=len(tokenizer), **special_token_ids(tokenizer), **shape)
    return SimpleGPTForCausalLM(SimpleGPTConfig(**kwargs))


def warm_start(model, tokenizer, rows, steps: int = 150, lr: float = 5e-3):
    """A few seconds of plain causal-LM training on prompt + completion (the role of SFT in the real pipeline)."""
    ids = [
        tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=True, return_dict=True)["input_ids"]
        for r in rows
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        batch = tokenizer.pad({"input_ids": ids[step * 16 : (step + 1) * 16]}, return_tensors="pt")
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> dict[str, Path]:
    """Task data files, a warmed-up policy (also the distillation teacher) and a smaller, less trained student."""
    root = tmp_path_factory.mktemp("alignment")
    task = KeywordTask(seed=0)
    tokenizer = train_tokenizer(task.texts(500), vocab_size=420, model_max_length=64)
    policy = warm_start(make_model(tokenizer), tokenizer, task.sft_examples(2400))
    paths = {name: root / name for name in ("policy", "student")}
    policy.save_pretrained(paths["policy"])
    tokenizer.save_pretrained(paths["policy"])
    student = make_model(tokenizer, hidden_size=16, num_attention_heads=2, num_hidden_layers=1)
    warm_start(student, tokenizer, task.sft_examples(640), steps=40).save_pretrained(paths["student"])
    tokenizer.save_pretrained(paths["student"])
    paths["pairs"] = Path(write_jsonl(task.preference_pairs(400), root / "pairs.jsonl"))
    paths["prompts"] = Path(write_jsonl(task.prompts(400), root / "prompts.jsonl"))
    paths["root"] = root
    return paths


@pytest.fixture(scope="session")
def reward_dir(workspace) -> Path:
    out = workspace["root"] / "reward"
    run_recipe(
        "reward",
        "--config",
        "reward_tiny.yaml",
        "--model_name_or_path",
        str(workspace["policy"]),
        "--train_file",
        str(workspace["pairs"]),
        "--output_dir",
        str(out),
    )
    return out
