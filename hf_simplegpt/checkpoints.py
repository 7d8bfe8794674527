"""Checkpoints a run can trust: a manifest of file hashes, validation, `--resume_from_checkpoint` resolution and the
check that a resumed run has the checkpoint's model and batch geometry.

Every checkpoint a job saves gets `hf_simplegpt_manifest.json`, written last (`safeguards.SafeguardCallback`): the
size and xxh3-128 hash of each file, and the run's batch geometry. A checkpoint without it was cut off while saving;
one whose files differ from it was damaged afterwards. Each file the Trainer reads at resume is checked too (weights,
optimizer, scheduler, scaler, RNG states, trainer_state.json). `--resume_from_checkpoint true` falls back to the
newest valid checkpoint, naming what it skipped; nothing ever silently restarts from scratch.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import zipfile
from typing import Any

import xxhash
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

logger = logging.getLogger(__name__)

MANIFEST_NAME = "hf_simplegpt_manifest.json"
# Torch archives the Trainer loads at resume (rng_state.pth, or rng_state_<rank>.pth per process).
_TORCH_FILES = re.compile(r"^(optimizer|scheduler|scaler)\.pt$|^rng_state(_\d+)?\.pth$")
# Config fields that say nothing about the weights or the computation.
_CONFIG_NOISE = {
    "_name_or_path",
    "transformers_version",
    "architectures",
    "auto_map",
    "dtype",
    "torch_dtype",
    "use_cache",
    "_attn_implementation",
    "_attn_implementation_autoset",
    "_commit_hash",
}
GEOMETRY = ("world_size", "per_device_train_batch_size", "gradient_accumulation_steps")


def checkpoint_dirs(output_dir: str) -> list[str]:
    """The checkpoint-N folders of `output_dir`, oldest (smallest N) first, as the Trainer orders them to rotate."""
    return sort_checkpoints(output_dir) if os.path.isdir(output_dir) else []


# ------------------------------------------------------------------------------------------------------- manifest


def _file_hash(path: str) -> str:
    digest = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _temporary(name: str) -> bool:
    """A file that a killed save left half-written: safetensors writes .tmpXXXXXX and renames it, the manifest *.tmp."""
    return name.startswith(".tmp") or name.endswith(".tmp")


def _files(folder: str) -> list[str]:
    """Every file under `folder` (FSDP and DeepSpeed save sub-folders), relative, sorted; the manifest and temporary
    files excluded."""
    found = [
        os.path.relpath(os.path.join(root, name), folder)
        for root, _, names in os.walk(folder)
        for name in names
        if not _temporary(name)
    ]
    return sorted(f for f in found if f != MANIFEST_NAME)


def write_manifest(folder: str, run: dict[str, Any] | None = None) -> str:
    """Write `folder`/hf_simplegpt_manifest.json: size and xxh3-128 of every file, plus `run` (batch geometry).

    xxh3 reads at memory speed, so hashing costs about one read of the checkpoint, which the page cache still holds.
    The manifest is written to a temporary name and renamed, so it exists only once complete.
    """
    paths = {name: os.path.join(folder, name) for name in _files(folder)}
    files = {name: {"size": os.path.getsize(path), "xxh3_128": _file_hash(path)} for name, path in paths.items()}
    path = os.path.join(folder, MANIFEST_NAME)
    with open(path + ".tmp", "w") as f:
        json.dump({"format": 1, "run": run or {}, "files": files}, f, indent=1)
    os.replace(path + ".tmp", path)
    return path


def read_manifest(folder: str) -> dict:
    with open(os.path.join(folder, MANIFEST_NAME)) as f:
        return json.load(f)


def manifest_problems(folder: str) -> list[str]:
    """Files that are missing, added, resized or changed since the manifest was written (empty: all as saved)."""
    try:
        listed = read_manifest(folder)["files"]
    except FileNotFoundError:
        return [f"{MANIFEST_NAME} is missing (the save was cut off before it finished)"]
    except (json.JSONDecodeError, KeyError) as err:
        return [f"{MANIFEST_NAME} is unreadable ({err})"]
    present = set(_files(folder))
    problems = [f"{name} is missing" for name in sorted(set(listed) - present)]
    problems += [f"{name} was added after the save" for name in sorted(present - set(listed))]
    for name in sorted(set(listed) & present):
        path = os.path.join(folder, name)
        if os.path.getsize(path) != listed[name]["size"]:
            problems.append(f"{name} has {os.path.getsize(path)} bytes, {listed[name]['size']} were saved")
        elif _file_hash(path) != listed[name]["xxh3_128"]:
            problems.append(f"{name} changed since it was saved (its hash differs)")
    return problems


# ------------------------------------------------------------------------------------------------------ validation


def _check_torch_file(path: str) -> str | None:
    """Problem with a torch.save file (a zip archive), or None."""
    if not zipfile.is_zipfile(path):
        return f"{os.path.basename(path)} is not a valid torch archive"
    with zipfile.ZipFile(path) as zf:
        bad = zf.testzip()  # reads every entry and checks its CRC
    return f"{os.path.basename(path)} has a corrupted entry {bad}" if bad else None


def checkpoint_problems(path: str) -> list[str]:
    """Everything that would stop `path` from resuming a run exactly (empty list: it is usable)."""
    if not os.path.isdir(path):
        return [f"{path} is not a directory"]
    problems = manifest_problems(path)
    files = set(os.listdir(path))
    try:
        with open(os.path.join(path, "trainer_state.json")) as f:
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
    # FSDP and DeepSpeed write optimizer state in their own layouts (folders); their files are covered by the manifest.
    if not any(f.startswith("optimizer") or f.startswith("global_step") for f in files):
        problems.append("optimizer state (optimizer.pt) is missing")
    if not any(f.startswith("rng_state") for f in files):
        problems.append("RNG state (rng_state.pth) is missing")
    for name in sorted(f for f in files if _TORCH_FILES.match(f)):
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


def newest_valid_checkpoint(output_dir: str) -> str | None:
    """The newest checkpoint of `output_dir` that passes every check, or None."""
    return next((p for p in reversed(checkpoint_dirs(output_dir)) if not checkpoint_problems(p)), None)


def _newest_valid_checkpoint(output_dir: str) -> str:
    """The newest complete checkpoint in output_dir (a run killed while saving leaves a partial newest one)."""
    candidates = list(reversed(checkpoint_dirs(output_dir)))
    if not candidates:
        raise ValueError(
            f"--resume_from_checkpoint asked for the last checkpoint, but {output_dir} holds no "
            f"{PREFIX_CHECKPOINT_DIR}-N folder. Pass the checkpoint path, or drop the flag to start a new run."
        )
    skipped = []
    for path in candidates:
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


# ---------------------------------------------------------------------------------------------- resume compatibility


def run_geometry(args) -> dict[str, int]:
    """The batch geometry of a run (TrainingArguments): the global batch is their product."""
    return {name: int(getattr(args, name)) for name in GEOMETRY}


def resume_differences(checkpoint: str, model, args) -> list[str]:
    """How the run about to resume from `checkpoint` differs from the run that saved it: model config fields (or
    the LoRA adapter's), and batch geometry (world size x per-device batch x accumulation). Empty: the same run."""
    differences = []
    config_file = os.path.join(checkpoint, "config.json")
    if os.path.isfile(config_file):
        saved = type(model.config).from_json_file(config_file).to_dict()
        current = model.config.to_dict()
        for key in sorted((set(saved) | set(current)) - _CONFIG_NOISE):
            if saved.get(key) != current.get(key):
                differences.append(f"model {key} {saved.get(key)!r} -> {current.get(key)!r}")
    adapter_file = os.path.join(checkpoint, "adapter_config.json")
    peft_config = getattr(model, "peft_config", {}).get("default")
    if os.path.isfile(adapter_file) and peft_config is not None:
        with open(adapter_file) as f:
            saved = json.load(f)
        for key in ("peft_type", "r", "lora_alpha", "target_modules", "modules_to_save", "use_dora", "use_rslora"):
            value = getattr(peft_config, key, None)
            value = sorted(value) if isinstance(value, set) else value
            old = sorted(saved.get(key)) if isinstance(saved.get(key), list) else saved.get(key)
            if key in saved and old != (sorted(value) if isinstance(value, list) else value):
                differences.append(f"adapter {key} {old!r} -> {value!r}")
    try:
        saved_geometry = read_manifest(checkpoint).get("run", {})
    except FileNotFoundError:
        saved_geometry = {}
    current_geometry = run_geometry(args)
    changed = [name for name in GEOMETRY if name in saved_geometry and saved_geometry[name] != current_geometry[name]]
    if changed:
        before, after = (math.prod(g[name] for name in GEOMETRY) for g in (saved_geometry, current_geometry))
        changes = [f"{name} {saved_geometry[name]} -> {current_geometry[name]}" for name in changed]
        if before == after:
            # The same global batch split otherwise (2 machines -> 1, more accumulation instead of processes): every
            # step sees the same rows and (with exact accumulation) the same loss, so the curve continues.
            logger.info(
                "Resuming with the same global batch of %d rows split differently: %s", after, "; ".join(changes)
            )
        else:
            differences += [*changes, f"(global batch {before} -> {after} rows per step)"]
    return differences
