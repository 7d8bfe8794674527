"""hf_simplegpt.checkpoints: checkpoint validation and `--resume_from_checkpoint` resolution."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from hf_simplegpt.checkpoints import checkpoint_problems, resolve_resume_checkpoint


def _fake_checkpoint(path, step=4):
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path / "model.safetensors"))
    torch.save({"state": {}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    return path


def test_valid_checkpoint_has_no_problems(tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "checkpoint-4")
    assert checkpoint_problems(str(ckpt)) == []
    assert resolve_resume_checkpoint(str(ckpt), str(tmp_path)) == str(ckpt)
    assert resolve_resume_checkpoint("true", str(tmp_path)) == str(ckpt)  # newest in output_dir
    assert resolve_resume_checkpoint(None, str(tmp_path)) is None


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: (p / "trainer_state.json").write_text("{truncated"), "trainer_state.json is not valid JSON"),
        (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda p: (p / "model.safetensors").unlink(), "no model weights"),
        (lambda p: os.truncate(p / "model.safetensors", 200), "model.safetensors is unreadable"),
        (lambda p: os.truncate(p / "optimizer.pt", 50), "optimizer.pt is not a valid torch archive"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer state"),
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


def test_resume_true_skips_a_partial_newest_checkpoint(tmp_path):
    good = _fake_checkpoint(tmp_path / "checkpoint-4")
    partial = _fake_checkpoint(tmp_path / "checkpoint-8", step=8)
    (partial / "optimizer.pt").unlink()  # killed while saving
    assert resolve_resume_checkpoint("true", str(tmp_path)) == str(good)
    (good / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match="Every checkpoint in .* is corrupted or incomplete"):
        resolve_resume_checkpoint("true", str(tmp_path))
