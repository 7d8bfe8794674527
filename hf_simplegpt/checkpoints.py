"""Checkpoints a run can trust: validate a checkpoint folder and resolve `--resume_from_checkpoint`.

A checkpoint that cannot resume a run exactly (missing or corrupted weights, optimizer or scheduler state, broken
`trainer_state.json`) is named with its problems; `--resume_from_checkpoint true` falls back to the newest complete
checkpoint, and nothing ever silently restarts from scratch.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

logger = logging.getLogger(__name__)


def _check_torch_file(path: str) -> str | None:
    """Problem with a torch.save file (a zip archive), or None."""
    if not zipfile.is_zipfile(path):
        return f"{os.path.basename(path)} is not a valid torch archive"
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()
    return f"{os.path.basename(path)} has a corrupted entry {bad}" if bad else None


def checkpoint_problems(path: str) -> list[str]:
    """Everything that would stop `path` from resuming a run exactly (empty list: it is usable)."""
    if not os.path.isdir(path):
        return [f"{path} is not a directory"]
    problems = []
    files = set(os.listdir(path))
    state_file = os.path.join(path, "trainer_state.json")
    try:
        with open(state_file) as f:
            if "global_step" not in json.load(f):
                problems.append("trainer_state.json has no global_step")
    except FileNotFoundError:
        problems.append("trainer_state.json is missing")
    except json.JSONDecodeError as err:
        problems.append(f"trainer_state.json is not valid JSON ({err})")
    weights = sorted(f for f in files if f.endswith(".safetensors"))
    if not weights and "pytorch_model.bin" not in files:
        problems.append("no model weights (model.safetensors)")
    for name in weights:
        from safetensors import safe_open

        try:
            with safe_open(os.path.join(path, name), framework="pt") as f:
                keys = list(f.keys())
                if keys:  # the header parses; reading a tensor checks the data is all there
                    f.get_tensor(keys[-1])
        except Exception as err:  # safetensors raises its own error types for truncated/garbled files
            problems.append(f"{name} is unreadable ({err})")
    # FSDP and DeepSpeed write optimizer state in their own layouts (folders); check plain torch files only.
    if not any(f.startswith("optimizer") or f.startswith("global_step") for f in files):
        problems.append("optimizer state (optimizer.pt) is missing")
    for name in ("optimizer.pt", "scheduler.pt"):
        if name in files:
            problem = _check_torch_file(os.path.join(path, name))
            if problem:
                problems.append(problem)
    return problems


def resolve_resume_checkpoint(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """Turn `--resume_from_checkpoint` (a path, or true/last for the newest checkpoint in output_dir) into a
    validated checkpoint path. Raises ValueError instead of ever silently restarting from scratch."""
    if resume_from_checkpoint in (None, False, "", "false", "False"):
        return None
    if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() in ("true", "last", "latest"):
        return _newest_valid_checkpoint(output_dir)
    path = str(resume_from_checkpoint)
    if not os.path.exists(path):
        raise ValueError(
            f"--resume_from_checkpoint {path}: no such checkpoint. Pass an existing {PREFIX_CHECKPOINT_DIR}-N "
            f"folder (or 'true' for the newest one in --output_dir)."
        )
    problems = checkpoint_problems(path)
    if problems:
        raise ValueError(
            f"--resume_from_checkpoint {path} is corrupted or incomplete: {'; '.join(problems)}. "
            f"Resume from an earlier {PREFIX_CHECKPOINT_DIR}-N folder instead."
        )
    return path


def _newest_valid_checkpoint(output_dir: str) -> str:
    """The newest complete checkpoint in output_dir (a run killed while saving leaves a partial newest one)."""
    names = os.listdir(output_dir) if os.path.isdir(output_dir) else []
    prefix = f"{PREFIX_CHECKPOINT_DIR}-"
    steps = sorted((int(n[len(prefix) :]) for n in names if n.startswith(prefix) and n[len(prefix) :].isdigit()), reverse=True)
    if not steps:
        raise ValueError(
            f"--resume_from_checkpoint asked for the last checkpoint, but {output_dir} holds no "
            f"{PREFIX_CHECKPOINT_DIR}-N folder. Pass the checkpoint path, or drop the flag to start a new run."
        )
    skipped = []
    for step in steps:
        path = os.path.join(output_dir, f"{prefix}{step}")
        problems = checkpoint_problems(path)
        if not problems:
            for bad, why in skipped:
                logger.warning("Skipping incomplete checkpoint %s: %s", bad, "; ".join(why))
            return path
        skipped.append((path, problems))
    raise ValueError(
        f"Every checkpoint in {output_dir} is corrupted or incomplete ("
        + " | ".join(f"{p}: {'; '.join(w)}" for p, w in skipped)
        + "). Start a new run with a fresh --output_dir."
    )
