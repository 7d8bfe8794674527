"""Shared tiny fixtures: every test builds its model and data here, offline, in milliseconds."""

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
