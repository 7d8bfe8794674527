"""recipes/prune.py end to end on a model pretrained by the project's own recipe: pruning hurts, distillation
recovers, the output is an ordinary SimpleGPT folder, the source folder is never touched, bad flags fail first."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel

from hf_simplegpt.compression import PruningPlan, prune_model
from tests.conftest import run_recipe
from tests.test_modeling_simplegpt import REMOTE_CODE_SCRIPT, random_ids

NAMES = ["Ada", "Brian", "Chloe", "Dmitri", "Esme", "Farid"]
THINGS = ["apples", "books", "coins", "lamps", "maps", "shells"]


def synthetic_corpus(paragraphs: int = 300, seed: int = 0) -> str:
    """Short paragraphs with a grammar and arithmetic a tiny model picks up in a few dozen steps."""
    rng = random.Random(seed)
    lines = []
    for _ in range(paragraphs):
        a, b = rng.sample(NAMES, 2)
        n, k = rng.randint(2, 9), rng.randint(1, 2)
        thing = rng.choice(THINGS)
        lines.append(f"{a} has {n} {thing}. {a} gives {k} to {b}. Now {a} has {n - k} {thing} and {b} is glad.")
    return "\n\n".join(lines)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("prune")
    corpus = root / "corpus.txt"
    corpus.write_text(synthetic_corpus())
    data = ["--train_file", corpus, "--heldout_size", 16, "--data_cache_dir", root / "cache"]
    run_recipe(
        "pretrain",
        "--config",
        "pretrain_tiny.yaml",
        *data,
        "--output_dir",
        root / "source",
        "--max_steps",
        150,
        "--per_device_train_batch_size",
        16,
        "--learning_rate",
        3e-3,
        "--warmup_steps",
        10,
        "--eval_strategy",
        "no",
        "--save_strategy",
        "no",
        "--eval_on_start",
        "false",
        "--num_sample_generations",
        0,
    )
    return {"root": root, "source": root / "source", "data": data}


def prune(pretrained, output_dir, *flags):
    return run_recipe(
        "prune",
        "--config",
        "prune_tiny.yaml",
        "--model_name_or_path",
        pretrained["source"],
        *pretrained["data"],
        "--output_dir",
        output_dir,
        *flags,
    )


def test_pruning_hurts_recovery_heals_and_the_folder_is_an_ordinary_simplegpt(pretrained, tmp_path):
    source = pretrained["source"]
    before = folder_bytes(source)
    out = tmp_path / "pruned"
    report = prune(pretrained, out, "--recovery_steps", 30)
    assert folder_bytes(source) == before  # the source folder is only read

    losses = report["heldout_loss"]
    # The held-out split is the pretraining run's own: the unpruned loss is its final validation loss.
    pretrain_loss = json.loads((source / "all_results.json").read_text())["eval_loss"]
    assert losses["source"] == pytest.approx(pretrain_loss, rel=1e-4)
    assert losses["pruned"] > losses["source"] + 0.1  # half the heads and neurons gone: clearly worse
    assert losses["recovered"] < losses["pruned"] - 0.5 * (losses["pruned"] - losses["source"])  # most of it back
    assert report["recovery"]["tokens"] == 30 * 8 * 32

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.head_dim, config.intermediate_size) == (
        2,
        2,
        16,
        128,
    )
    assert json.loads((out / "pruning.json").read_text())["parameters"]["pruned"] == model.num_parameters()
    card = (out / "README.md").read_text()
    assert "| attention heads per layer | 4 | 2 |" in card and "Logit distillation from the unpruned model" in card
    assert f"| pruned + recovery | {losses['recovered']:.4f} |" in card

    ids = random_ids(2, 10, high=300)
    torch.save(ids, tmp_path / "ids.pt")
    result = subprocess.run(  # the folder loads as remote code on a machine without hf_simplegpt
        [sys.executable, "-c", REMOTE_CODE_SCRIPT, str(out), str(tmp_path / "ids.pt"), str(tmp_path / "logits.pt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1", "PATH": "", "HF_HOME": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), model(ids).logits, atol=0, rtol=0)


def test_recovery_steps_0_saves_the_sliced_source_and_drop_layers_removes_a_block(pretrained, tmp_path):
    out = tmp_path / "pruned"
    report = prune(pretrained, out, "--recovery_steps", 0, "--drop_layers", 1, "--mlp_keep_ratio", 0.25)
    assert set(report["heldout_loss"]) == {"source", "pruned"} and report["recovery"]["tokens"] == 0
    saved = AutoModelForCausalLM.from_pretrained(out).eval()
    assert (saved.config.num_hidden_layers, saved.config.num_attention_heads, saved.config.intermediate_size) == (
        1,
        2,
        64,
    )
    source = AutoModelForCausalLM.from_pretrained(pretrained["source"]).eval()
    expected = prune_model(source, PruningPlan(**report["kept"]))  # the plan pruning.json records
    ids = random_ids(2, 10, high=300)
    with torch.no_grad():
        torch.testing.assert_close(saved(ids).logits, expected(ids).logits, atol=0, rtol=0)
    assert "None (`--recovery_steps 0`)" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--keep_ratio", 0], r"--keep_ratio 0\.0: the fraction of units kept must be in \(0, 1\]"),
        (["--keep_ratio", 1.5], r"--keep_ratio 1\.5: the fraction of units kept must be in \(0, 1\]"),
        (["--attention_keep_ratio", 0.1], r"Keeping 0\.1 of 4 attention heads per layer keeps 0"),
        (["--mlp_keep_ratio", 0.001], r"Keeping 0\.001 of 256 MLP neurons per layer keeps 0"),
        (["--drop_layers", 2], r"--drop_layers 2: the model has 2 layers and at least one must stay"),
        (["--max_steps", 5], r"--max_steps 5: the recovery length is --recovery_steps"),
        (["--lmbda", 0.5], r"Recovery distils on the training text \(--lmbda 0"),
    ],
)
def test_bad_flags_fail_before_any_work(pretrained, tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        prune(pretrained, tmp_path / "out", *flags)
    assert not (tmp_path / "out").exists()


def test_no_text_or_a_model_that_is_not_a_simplegpt_fails_before_any_work(pretrained, tmp_path):
    with pytest.raises(
        ValueError, match=r"Pass --train_file \(or --dataset_name\): the text the importance is measured"
    ):
        run_recipe("prune", "--model_name_or_path", pretrained["source"], "--output_dir", tmp_path / "out")
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(
        ValueError, match=r"holds a 'gpt2' model; prune works on SimpleGPT folders \(`hf-simplegpt convert`"
    ):
        run_recipe(
            "prune", "--model_name_or_path", tmp_path / "gpt2", *pretrained["data"], "--output_dir", tmp_path / "out"
        )
    assert not (tmp_path / "out").exists()


def test_the_source_folder_cannot_be_the_output(pretrained):
    before = folder_bytes(pretrained["source"])
    with pytest.raises(ValueError, match=r"is the folder this job reads its model from"):
        prune(pretrained, pretrained["source"])
    assert folder_bytes(pretrained["source"]) == before
