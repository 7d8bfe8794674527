"""hf_simplegpt.checkpoints: manifests, checkpoint validation, `--resume_from_checkpoint` resolution, resume checks."""

import json
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from hf_simplegpt import SimpleGPTConfig, SimpleGPTForCausalLM
from hf_simplegpt.checkpoints import (
    MANIFEST_NAME,
    checkpoint_problems,
    manifest_problems,
    resolve_resume_checkpoint,
    resume_differences,
    write_manifest,
)
from tests.conftest import tiny_config_kwargs

GEOMETRY = {"world_size": 1, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}


def _fake_checkpoint(path, step=4, manifest=True):
    """The files the Trainer writes into checkpoint-N, and the manifest written after them."""
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path / "model.safetensors"))
    torch.save({"state": {}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    torch.save({"cpu": torch.random.get_rng_state()}, path / "rng_state.pth")
    if manifest:
        write_manifest(str(path), {"global_step": step, **GEOMETRY})
    return path


def test_valid_checkpoint_has_no_problems(tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "checkpoint-4")
    listed = json.loads((ckpt / MANIFEST_NAME).read_text())
    assert set(listed["files"]) == {
        "trainer_state.json",
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
    }
    assert listed["files"]["model.safetensors"]["size"] == os.path.getsize(ckpt / "model.safetensors")
    assert checkpoint_problems(str(ckpt)) == []
    assert resolve_resume_checkpoint(str(ckpt), str(tmp_path)) == str(ckpt)
    assert resolve_resume_checkpoint("true", str(tmp_path)) == str(ckpt)  # newest in output_dir
    assert resolve_resume_checkpoint(None, str(tmp_path)) is None


def _overwrite_bytes(path, offset=600, count=400):
    """Silent corruption: same size, different bytes (what a bad disk or a concurrent writer leaves)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(os.urandom(count))


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: (p / "trainer_state.json").write_text("{truncated"), "trainer_state.json is not valid JSON"),
        (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda p: (p / "model.safetensors").unlink(), "no model weights"),
        (lambda p: os.truncate(p / "model.safetensors", 200), "model.safetensors is unreadable"),
        (lambda p: _overwrite_bytes(p / "model.safetensors"), "model.safetensors changed since it was saved"),
        (lambda p: os.truncate(p / "optimizer.pt", 50), "optimizer.pt is not a valid torch archive"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer state"),
        (lambda p: os.truncate(p / "rng_state.pth", 100), "rng_state.pth is not a valid torch archive"),
        (lambda p: (p / "rng_state.pth").unlink(), "RNG state"),
        (lambda p: (p / MANIFEST_NAME).unlink(), "hf_simplegpt_manifest.json is missing"),
        (lambda p: (p / "extra.bin").write_bytes(b"x"), "extra.bin was added after the save"),
    ],
)
def test_corrupted_checkpoint_is_a_clear_error(tmp_path, damage, problem):
    ckpt = _fake_checkpoint(tmp_path / "checkpoint-4")
    damage(ckpt)
    assert any(problem in p for p in checkpoint_problems(str(ckpt)))
    with pytest.raises(ValueError, match="corrupted or incomplete.*" + problem.split()[0]):
        resolve_resume_checkpoint(str(ckpt), str(tmp_path))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such checkpoint"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-9"), str(tmp_path))
    with pytest.raises(ValueError, match="holds no checkpoint-N"):
        resolve_resume_checkpoint("true", str(tmp_path))


def test_resume_true_skips_a_partial_newest_checkpoint(tmp_path, caplog):
    good = _fake_checkpoint(tmp_path / "checkpoint-4")
    _fake_checkpoint(tmp_path / "checkpoint-8", step=8, manifest=False)  # killed before the save finished
    _fake_checkpoint(tmp_path / "checkpoint-10", step=10)
    _overwrite_bytes(tmp_path / "checkpoint-10" / "model.safetensors")  # corrupted afterwards
    assert manifest_problems(str(tmp_path / "checkpoint-8")) == [
        f"{MANIFEST_NAME} is missing (the save was cut off before it finished)"
    ]
    assert resolve_resume_checkpoint("true", str(tmp_path)) == str(good)
    assert "Skipping incomplete checkpoint" in caplog.text and "checkpoint-10" in caplog.text
    (good / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match="Every checkpoint in .* is corrupted or incomplete"):
        resolve_resume_checkpoint("true", str(tmp_path))


def test_resume_differences_name_the_model_and_batch_changes(tmp_path):
    torch.manual_seed(0)
    model = SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs()))
    ckpt = _fake_checkpoint(tmp_path / "checkpoint-4", manifest=False)
    model.config.save_pretrained(ckpt)
    write_manifest(str(ckpt), {"global_step": 4, **GEOMETRY})
    same = SimpleNamespace(**GEOMETRY)
    assert resume_differences(str(ckpt), model, same) == []
    wider = SimpleGPTForCausalLM(SimpleGPTConfig(**tiny_config_kwargs(hidden_size=64)))
    bigger_batch = SimpleNamespace(**{**GEOMETRY, "per_device_train_batch_size": 8})
    differences = resume_differences(str(ckpt), wider, bigger_batch)
    assert "model hidden_size 32 -> 64" in differences and "model head_dim 8 -> 16" in differences
    assert differences[-2:] == ["per_device_train_batch_size 4 -> 8", "(global batch 8 -> 16 rows per step)"]
    # The same global batch split otherwise (here 2 machines instead of accumulation) continues the same curve.
    two_machines = SimpleNamespace(**{**GEOMETRY, "world_size": 2, "gradient_accumulation_steps": 1})
    assert resume_differences(str(ckpt), model, two_machines) == []
