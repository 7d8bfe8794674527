"""Shared tiny fixtures: every test builds its model and data here, offline, in milliseconds."""

import csv
from pathlib import Path

import pytest
import torch

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.tokenization import special_token_ids, train_tokenizer

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # present in CI and the team's checkout, absent in a user's clone

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


@pytest.fixture
def shared_data() -> Path:
    """The team's shared data folder (MMLU, tinyshakespeare); tests using it skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent (only the project's CI and team checkouts have it)")
    return SHARED_DATA


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
