"""What keeps every job's work safe: the output folder, a lock, signals, non-finite values, the Hub token, no space.

A Trainer job (pretrain, sft, reward, grpo, rloo, dpo, distill, prune) uses three calls:

    @safeguards.guarded_main                                       # the job's main(): locks released, no-space named
    def main(argv: list[str] | None = None) -> dict:
        data_args, run_args, training_args, ... = training.parse_job_args(..., safeguards.RunArguments, TrainingArgs, ...)
        run = safeguards.start_run(training_args, run_args)        # before any long work
        ...                                                        # load, build the trainer
        train_result = run.train(trainer)                          # instead of trainer.train()

`start_run` checks the numeric flags, moves `--hub_token` into the environment (so `training_args.bin` never holds
it), asks Linux to stop the job when its launcher dies, and claims the output folder: a folder that already holds a
model or checkpoints is refused unless the run resumes (`--resume_from_checkpoint`) or `--overwrite_output_dir`
is given (which removes the old checkpoints first), and a lock file refuses a second concurrent run. `run.train`
checks that a resumed run has the checkpoint's model and batch geometry, logs what it resumes from, and adds
`SafeguardCallback`: SIGTERM/SIGINT save a checkpoint at the end of the current step and exit with 128 + signal;
non-finite gradients stop training before the optimizer step that would spread them into the weights; every
checkpoint gets a manifest of file hashes; a model with non-finite weights is never saved.

Jobs that write a folder without a Trainer (evaluate, convert, quantize, export, ...) call
`claim_output_dir(path, overwrite=...)` inside a `@guarded_main` function.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import fcntl
import functools
import json
import logging
import math
import os
import resource
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from safetensors import SafetensorError
from transformers import TrainerCallback

from . import ray_train
from .checkpoints import (
    MANIFEST_NAME,
    checkpoint_dirs,
    newest_valid_checkpoint,
    resolve_resume_checkpoint,
    resume_differences,
    run_geometry,
    write_manifest,
)
from .training import check_engine, use_global_step_in_trackio

logger = logging.getLogger(__name__)

LOCK_NAME = ".hf_simplegpt.lock"
# Flags whose value is a secret, never written into a file or a message (a lock names the command that holds it).
SECRET_FLAGS = ("--hub_token", "--token", "--api_key")
# Files whose presence means a folder holds a saved model (full, or a LoRA adapter).
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "adapter_config.json",
    "adapter_model.safetensors",
    "model.pte",
    "model.gguf",
)
# Set by `hf-simplegpt` for the processes it launches: the pid their parent must have.
LAUNCHER_PID_ENV = "HF_SIMPLEGPT_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1
# A SIGINT this many seconds after the first stop signal is a second Ctrl-C (exit at once); earlier ones are copies.
SECOND_CTRL_C_AFTER = 3


@dataclass
class RunArguments:
    """What a job may do to an output folder that already holds work, and to a resumed run."""

    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Replace the model and checkpoints --output_dir already holds (its checkpoint-N folders are "
            "removed before training starts). Without it such a folder is refused unless the run resumes."
        },
    )
    allow_resume_changes: bool = field(
        default=False,
        metadata={
            "help": "Resume even though the model config or the batch geometry (processes x per-device batch x "
            "accumulation) differs from the checkpoint's; the run then does not continue exactly."
        },
    )


class NoSpaceError(OSError):
    """Writing the output failed because the disk (or the file size limit, `ulimit -f`) is full."""


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite gradient or weight."""


# ------------------------------------------------------------------------------------------------------ numeric flags


def check_training_args(args) -> None:
    """Reject numeric TrainingArguments that would crash late, or train silently wrong (ValueError naming the fix)."""
    problems = []
    positive = ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps")
    problems += [f"--{name} {getattr(args, name)} must be at least 1" for name in positive if getattr(args, name) < 1]
    if not args.learning_rate > 0:
        problems.append(f"--learning_rate {args.learning_rate} must be > 0 (0 trains nothing)")
    if args.max_steps <= 0 and not args.num_train_epochs > 0:
        problems.append(
            f"--max_steps {args.max_steps} and --num_train_epochs {args.num_train_epochs} give zero "
            "training steps; pass --max_steps N or --num_train_epochs > 0"
        )
    # (transformers itself replaces --eval_steps 0 by --logging_steps.)
    if getattr(args.save_strategy, "value", args.save_strategy) == "steps" and not args.save_steps > 0:
        problems.append(f"--save_steps {args.save_steps} must be > 0 with --save_strategy steps")
    if args.max_grad_norm is not None and args.max_grad_norm < 0:
        problems.append(f"--max_grad_norm {args.max_grad_norm} must be >= 0 (0 turns clipping off)")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed {args.seed} must be in [0, 2**32)")
    if args.weight_decay < 0:
        problems.append(f"--weight_decay {args.weight_decay} must be >= 0")
    if not (0 <= args.adam_beta1 < 1 and 0 <= args.adam_beta2 < 1):
        problems.append(f"--adam_beta1 {args.adam_beta1} and --adam_beta2 {args.adam_beta2} must be in [0, 1)")
    if args.dataloader_num_workers < 0:
        problems.append(f"--dataloader_num_workers {args.dataloader_num_workers} must be >= 0")
    if args.save_total_limit is not None and args.save_total_limit < 1:
        problems.append(f"--save_total_limit {args.save_total_limit} must be at least 1 (or unset: keep all)")
    if problems:
        raise ValueError("Bad training flags: " + "; ".join(problems) + ".")


# ------------------------------------------------------------------------------------------------ the output folder


def saved_work(path: str) -> list[str]:
    """What `path` holds that a new run would overwrite: model files and checkpoint-N folders (names)."""
    if not os.path.isdir(path):
        return []
    checkpoints = [os.path.basename(p) for p in checkpoint_dirs(path)]
    return [name for name in MODEL_FILES if os.path.isfile(os.path.join(path, name))] + checkpoints


def check_writable_dir(path: str, flag: str = "--output_dir") -> list[str]:
    """Create `path` if needed and prove a file can be written in it; ValueError naming the problem otherwise.
    Returns the folders it created, deepest first."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path} is a file, not a folder. Pass a folder path (it is created if missing).")
    created, missing = [], os.path.abspath(path)
    while not os.path.exists(missing):
        created.append(missing)
        missing = os.path.dirname(missing)
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_test.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as err:
        raise ValueError(
            f"{flag} {path} is not a writable folder ({err.strerror or err}). Pass a folder you can write to."
        ) from err
    return created


def claim_output_dir(
    path: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    writer: bool = True,
    inputs: Sequence[str | None] = (),
    flag: str = "--output_dir",
) -> None:
    """Make `path` this job's output folder, or raise ValueError before any work starts.

    A folder the job reads (`inputs`: its source models) is always refused. A folder holding a model or checkpoints
    is refused unless the job `resume`s there or may `overwrite` it; with `overwrite` its checkpoint-N folders are
    removed first (a later `--resume_from_checkpoint true` must never pick up a stale one). The `writer` process (the
    one that saves; the main process under data parallelism) then takes the folder's lock. Call it inside a
    `@guarded_main` function, which releases the lock when the job ends.
    """
    for source in inputs:
        if source and os.path.isdir(source) and os.path.realpath(source) == os.path.realpath(path):
            raise ValueError(
                f"{flag} {path} is the folder this job reads its model from: writing there would replace "
                f"it. Pass another {flag}."
            )
    created = check_writable_dir(path, flag)
    if writer:
        _created_dirs.extend(created)
    refusal = output_dir_refusal(path, overwrite=overwrite, resume=resume, flag=flag, locked=False)
    if refusal:
        raise ValueError(refusal)
    if not writer:
        return
    lock_output_dir(path)
    if overwrite and not resume:
        stale = checkpoint_dirs(path)
        for checkpoint in stale:
            shutil.rmtree(checkpoint)
        if stale:
            logger.warning(
                "--overwrite_output_dir: removed %d old checkpoint(s) from %s: %s",
                len(stale),
                path,
                ", ".join(os.path.basename(c) for c in stale),
            )


def output_dir_refusal(
    path: str, *, overwrite: bool = False, resume: bool = False, flag: str = "--output_dir", locked: bool = True
) -> str | None:
    """Why a run may not write into `path`, or None: it holds a model or checkpoints (and the run neither resumes nor
    overwrites), or (with `locked`) a running job holds its lock. `hf-simplegpt` asks before it starts the launcher."""
    existing = saved_work(path)
    if existing and not (resume or overwrite):
        return (
            f"{flag} {path} already holds a model or checkpoints ({', '.join(existing)}): a new run would overwrite "
            "them. Pass --resume_from_checkpoint true to continue that run, --overwrite_output_dir true to replace "
            f"it, or another {flag}."
        )
    holder = lock_holder(path) if locked else None
    return _in_use(path, holder) if holder else None


def lock_holder(path: str) -> str | None:
    """The run holding `path`'s lock (described), or None when no live run does. A shared lock taken for an instant
    finds out; it does not change the lock file."""
    try:
        fd = os.open(os.path.join(path, LOCK_NAME), os.O_RDONLY)
    except OSError:  # no lock file (or not a file: the job says so when it starts)
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _describe_holder(os.read(fd, 4096))
    except OSError:  # a filesystem without flock: the job warns when it starts
        return None
    finally:
        os.close(fd)
    return None


def _in_use(path: str, holder: str) -> str:
    return (
        f"{path} is in use by another run ({holder}). Two runs writing one folder mix their checkpoints: wait for "
        "it to finish, stop it, or pass another --output_dir."
    )


# Output folders this process created (claim_output_dir): a job that fails removes those it left empty.
_created_dirs: list[str] = []
# Locks this process holds: real path -> open file descriptor. Jobs in one process run one after another, so a
# folder locked by an earlier job of this process may be locked again.
_held_locks: dict[str, int] = {}


def lock_output_dir(path: str) -> None:
    """Take `path`/.hf_simplegpt.lock (flock), or raise ValueError naming the run that holds it.

    The kernel releases a flock when its process dies, however it dies, so a lock left by a killed run is stale by
    construction: it is taken over, with a warning naming the dead process.
    """
    real = os.path.realpath(path)
    if real in _held_locks:
        return
    lock_path = os.path.join(path, LOCK_NAME)
    if os.path.isdir(lock_path):
        raise ValueError(
            f"{lock_path} is a folder, where this job keeps its lock file: remove it, or pass another --output_dir."
        )
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(os.read(fd, 4096))
            os.close(fd)
            raise ValueError(_in_use(path, holder)) from None
        except OSError as err:  # a filesystem without flock (some network filesystems)
            os.close(fd)
            logger.warning("Cannot lock %s (%s): nothing stops a second run from writing into it.", path, err)
            return
        # The file may have been removed by its previous holder between our open and flock: lock the current one.
        if os.path.exists(lock_path) and os.fstat(fd).st_ino == os.stat(lock_path).st_ino:
            break
        os.close(fd)
    previous = os.read(fd, 4096)
    if previous.strip():
        logger.warning(
            "Took over the stale lock of %s: its run (%s) is no longer running.", path, _describe_holder(previous)
        )
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(without_secrets(sys.argv))[:500],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(holder).encode(), 0)
    _held_locks[real] = fd


def _describe_holder(content: bytes) -> str:
    try:
        holder = json.loads(content)
        command = " ".join(without_secrets(holder["command"].split()))  # a lock written by an older version
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: {command[:120]}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return "a process that left no readable details"


def without_secrets(argv: Sequence[str]) -> list[str]:
    """A command line fit to write into a file or a message: the values of `SECRET_FLAGS` replaced by ***."""
    shown, hide_next = [], False
    for arg in argv:
        flag, eq, _ = arg.partition("=")
        if hide_next:
            shown.append("***")
        elif flag in SECRET_FLAGS:
            arg = f"{flag}=***" if eq else flag
            shown.append(arg)
        else:
            shown.append(arg)
        hide_next = flag in SECRET_FLAGS and not eq and not hide_next
    return shown


def release_output_dir(path: str) -> None:
    """Remove and release `path`'s lock if this process holds it."""
    fd = _held_locks.pop(os.path.realpath(path), None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(path, LOCK_NAME))
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for real in list(_held_locks):
        release_output_dir(real)


def guarded_main(main):
    """Decorate a job's `main`: the output folders it locks are released when it returns or raises, the folders it
    created are removed if it fails before writing in them, and a write that fails for lack of space ends in a
    `NoSpaceError` that says so instead of a library's I/O message."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        before, created, failed = set(_held_locks), len(_created_dirs), True
        try:
            result = main(*args, **kwargs)
            failed = False
            return result
        except NoSpaceError:
            raise
        except (OSError, RuntimeError, SafetensorError) as err:  # how torch.save, safetensors and open() fail writing
            why = no_space_reason(err, list(_held_locks) or ["."])
            if why is None:
                raise
            raise NoSpaceError(
                errno.ENOSPC,
                f"No space to write the job's output: {why} ({err}). Free space and "
                "run it again; checkpoints written before are intact.",
            ) from err
        finally:
            for real in set(_held_locks) - before:
                release_output_dir(real)
            for folder in _created_dirs[created:] if failed else ():
                with contextlib.suppress(OSError):  # only an empty folder is removed: what the job wrote stays
                    os.rmdir(folder)
            del _created_dirs[created:]

    return wrapper


def no_space_reason(err: BaseException, folders: list[str]) -> str | None:
    """Why a failed write failed, when the cause is a full disk or the file size limit; None otherwise.

    Libraries word it differently (OSError ENOSPC/EFBIG/EDQUOT, safetensors' "os error 28", torch.save's
    "unexpected pos"), so the disk itself is asked too, and `ulimit -f` when a file in `folders` reached it.
    """
    chain, seen = [err], set()
    while chain[-1].__cause__ or chain[-1].__context__:
        nxt = chain[-1].__cause__ or chain[-1].__context__
        if id(nxt) in seen:
            break
        seen.add(id(nxt))
        chain.append(nxt)
    codes = {
        errno.ENOSPC: "no space left on the device",
        errno.EFBIG: "a file grew past the file size limit",
        errno.EDQUOT: "the disk quota is exceeded",
    }
    for e in chain:
        if isinstance(e, OSError) and e.errno in codes:
            return codes[e.errno]
        for code, why in codes.items():
            if f"os error {code})" in str(e) or os.strerror(code) in str(e):
                return why
    soft_limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if soft_limit != resource.RLIM_INFINITY:
        sizes = (
            os.path.getsize(os.path.join(root, f))
            for folder in folders
            for root, _, names in os.walk(folder)
            for f in names
        )
        if any(size >= soft_limit for size in sizes):
            return f"a file reached the file size limit (ulimit -f: {soft_limit} bytes)"
    for folder in folders:
        with contextlib.suppress(OSError):
            if shutil.disk_usage(folder).free < 64 * 2**20:
                return f"no space left on the device of {folder}"
    return None


# -------------------------------------------------------------------------------------------------- the job process


def keep_token_out_of_files(args) -> None:
    """Move `--hub_token` into the environment (HF_TOKEN, which huggingface_hub reads) and off `args`, so that
    `training_args.bin`, which the Trainer pickles into the output folder and every checkpoint, never holds it."""
    token = getattr(args, "hub_token", None)
    if token:
        os.environ["HF_TOKEN"] = token
        args.hub_token = None


def launched_by_a_launcher() -> bool:
    """True under `accelerate launch` or torchrun (they set these variables for the processes they start)."""
    return any(name in os.environ for name in (LAUNCHER_PID_ENV, "ACCELERATE_DYNAMO_BACKEND", "TORCHELASTIC_RUN_ID"))


def die_with_parent() -> bool:
    """Under a launcher, ask Linux (PR_SET_PDEATHSIG) to send this process SIGTERM when the launcher dies, so that
    killing `accelerate launch` or `hf-simplegpt` never leaves a training process writing; training then saves a
    checkpoint and exits. Not done for a job started directly, which may outlive its shell on purpose (nohup).
    Returns whether the request was made."""
    if not sys.platform.startswith("linux") or not launched_by_a_launcher():
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning("prctl(PR_SET_PDEATHSIG) failed (errno %d): this job outlives its launcher.", ctypes.get_errno())
        return False
    expected = os.environ.get(LAUNCHER_PID_ENV)
    if expected and os.getppid() != int(expected):  # the launcher died before the request was made
        raise SystemExit(f"The launcher (pid {expected}) exited before this job started; stopping.")
    if not isinstance(sys.stderr, _SurvivingStream):
        sys.stdout, sys.stderr = _SurvivingStream(sys.stdout), _SurvivingStream(sys.stderr)
    return True


class _SurvivingStream:
    """sys.stdout or sys.stderr of a launched job, which keeps working once the launcher is gone.

    accelerate relays a job's stderr through a pipe that it reads. When the launcher is killed, writing into that
    pipe raises BrokenPipeError, and the progress bar transformers draws while saving would abort the very checkpoint
    the parent-death SIGTERM asked for. After the first broken write the descriptor points at /dev/null (for every
    other holder of it too, C code included) and the job goes on.
    """

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def _reader_gone(self):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self._stream.fileno())
        os.close(null)

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._reader_gone()
            return self._stream.write(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._reader_gone()
            self._stream.flush()


def start_run(training_args, run_args: RunArguments, inputs: Sequence[str | None] = ()) -> GuardedRun:
    """Everything a Trainer job checks and claims after parsing and before any long work (see the module docstring).
    `inputs` are the model folders the job reads, which it must never write into.

    Returns the `GuardedRun` whose `train(trainer)` replaces `trainer.train()`.
    """
    check_training_args(training_args)
    keep_token_out_of_files(training_args)
    die_with_parent()
    resume = resolve_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    out = os.path.realpath(training_args.output_dir)
    if resume and run_args.overwrite_output_dir and os.path.realpath(resume).startswith(out + os.sep):
        raise ValueError(
            f"--overwrite_output_dir would remove {resume}, the checkpoint --resume_from_checkpoint continues from. "
            "Pass one of the two."
        )
    claim_output_dir(
        training_args.output_dir,
        overwrite=run_args.overwrite_output_dir,
        resume=resume is not None,
        writer=training_args.should_save,
        inputs=inputs,
    )
    return GuardedRun(resume, run_args.allow_resume_changes)


@dataclass
class GuardedRun:
    """A claimed run: the validated checkpoint it resumes from (or None), and `train`."""

    resume_from_checkpoint: str | None
    allow_resume_changes: bool = False

    def train(self, trainer, **train_kwargs):
        """`trainer.train(resume_from_checkpoint=...)` with `SafeguardCallback` and the resume checks.

        Raises SystemExit(128 + signal) after a SIGTERM/SIGINT stop (the checkpoint is saved and named in the log),
        NonFiniteError for NaN/inf gradients or weights, NoSpaceError when a checkpoint cannot be written (the
        partial checkpoint is removed; the previous one is intact).
        """
        check_engine(trainer.accelerator)  # FSDP/DeepSpeed asked for, DDP set up: refuse
        use_global_step_in_trackio(trainer)
        ray_train.prepare(trainer)  # in a Ray Train worker (hf-simplegpt <job> --ray_workers N): report to Ray
        resume = self.resume_from_checkpoint
        if resume:
            differences = resume_differences(resume, trainer.model, trainer.args)
            if differences and not self.allow_resume_changes:
                raise ValueError(
                    f"Resuming from {resume} with a different setup: {'; '.join(differences)}. The checkpoint's "
                    "optimizer state and data position belong to its own model and batch, so the run would not "
                    "continue exactly (a different model shape cannot even load its weights). Resume with the "
                    "checkpoint's settings, or pass --allow_resume_changes true."
                )
            with open(os.path.join(resume, "trainer_state.json")) as f:
                step = json.load(f)["global_step"]
            logger.warning(
                "Resuming from %s (step %d)%s.",
                resume,
                step,
                f", accepting changes: {'; '.join(differences)}" if differences else "",
            )
        callback = SafeguardCallback(may_overflow=trainer.accelerator.scaler is not None)
        trainer.add_callback(callback)
        try:
            with callback.stop_on_signals():
                result = trainer.train(resume_from_checkpoint=resume, **train_kwargs)
        except (NonFiniteError, KeyboardInterrupt):
            raise
        except Exception as err:
            partial = os.path.join(trainer.args.output_dir, f"checkpoint-{callback.saving}")
            if callback.saving is None or not os.path.isdir(partial):
                raise
            self._failed_save(partial, err)
        finally:
            trainer.remove_callback(callback)
        if callback.stopped_by is not None:
            name = signal.Signals(callback.stopped_by).name
            checkpoint = os.path.join(trainer.args.output_dir, f"checkpoint-{trainer.state.global_step}")
            logger.error(
                "Stopped by %s at step %d; saved %s. Continue with --resume_from_checkpoint true (or %s).",
                name,
                trainer.state.global_step,
                checkpoint,
                checkpoint,
            )
            raise SystemExit(128 + callback.stopped_by)
        bad = non_finite_parameters(trainer.model)
        if bad:
            raise NonFiniteError(
                f"Training ended with non-finite weights ({', '.join(bad[:3])}); the model is not "
                "saved. Resume from an earlier checkpoint with a lower --learning_rate."
            )
        return result

    @staticmethod
    def _failed_save(partial: str, err: Exception):
        """Remove the checkpoint a failed save left (it has no manifest: it could never resume) and say what is left."""
        why = no_space_reason(err, [partial])
        shutil.rmtree(partial, ignore_errors=True)
        output_dir, name = os.path.split(partial)
        previous = newest_valid_checkpoint(output_dir)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        if why is None:
            raise RuntimeError(f"Saving {name} failed ({err}); the partial folder was removed and {kept}.") from err
        raise NoSpaceError(
            errno.ENOSPC,
            f"No space to save {name}: {why} ({err}). The partial folder was removed and "
            f"{kept}: free space, then continue with --resume_from_checkpoint true.",
        ) from err


# ---------------------------------------------------------------------------------------------------- the callback


def non_finite_parameters(model) -> list[str]:
    """Names of this process's parameters (its shards, when sharded) holding NaN or inf; one host-device sync."""
    named = [(n, p.detach()) for n, p in model.named_parameters() if p.numel()]
    named = [(n, p.to_local() if hasattr(p, "to_local") else p) for n, p in named]  # FSDP2 DTensor: the local shard
    if not named:
        return []
    flags = torch.stack([torch.isfinite(p).all() for _, p in named]).cpu().tolist()
    return [n for (n, _), ok in zip(named, flags) if not ok]


def _sync_max(values: list[float], device) -> list[float]:
    """Element-wise max over all processes (the values unchanged in a single process), so that they all decide alike."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tensor.tolist()


def _gradient_norm(model) -> float:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:  # DeepSpeed keeps the gradients itself
        return 0.0
    norm = torch.nn.utils.get_total_norm(grads)
    return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()  # FSDP2: a DTensor


class SafeguardCallback(TrainerCallback):
    """Stops on SIGTERM/SIGINT after saving, stops on non-finite gradients, writes a manifest into every checkpoint.

    - A signal (routed here by `stop_on_signals`) sets a flag. Before each optimizer step the processes agree on it
      and on the gradient check in one tiny all-reduce; at the end of that step a due evaluation is skipped, a
      checkpoint is saved and training stops.
    - A NaN/inf gradient norm raises `NonFiniteError` naming the step before the optimizer step, so the weights stay
      as they were (not checked under fp16's GradScaler, which skips such steps itself, nor under DeepSpeed, which
      keeps the gradients). Before every save the weights are checked too: non-finite ones are never saved.
    - After each save, once every process has written its files, the main process writes the checkpoint's manifest
      (`checkpoints.write_manifest`); a checkpoint without one was cut off while saving.

    Args:
        may_overflow: gradients may legitimately be inf (fp16 with a GradScaler).
    """

    def __init__(self, may_overflow: bool = False):
        self.may_overflow = may_overflow
        self.requested: int | None = None  # the signal this process received first
        self.requested_at = 0.0  # when (time.monotonic())
        self.stopped_by: int | None = None  # the signal the run stops for (agreed by all processes)
        self.saving: int | None = None  # the step whose checkpoint is being written

    @contextlib.contextmanager
    def stop_on_signals(self):
        """Route SIGTERM and SIGINT here while the block runs (signal handlers live in the main thread only).

        Under a launcher the handlers stay after a stop: the process is on its way out, and copies of the same
        request (see `_on_signal`) may still arrive while it releases its folder and exits with 128 + signal."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            if self.requested is None or not launched_by_a_launcher():
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    def _on_signal(self, signum, frame):
        """The first SIGTERM or SIGINT asks for a checkpoint at the end of the step, then an exit.

        One user action often delivers several signals: Ctrl-C reaches the launcher and the job, and the launcher
        forwards it (accelerate and `hf-simplegpt` as SIGTERM, torchrun as SIGINT); killing a launcher sends the
        parent-death SIGTERM once per launcher thread; Slurm signals every process of the step. So every later
        SIGTERM, and a SIGINT within `SECOND_CTRL_C_AFTER` seconds of the first signal, is the same request and
        never aborts the save. Only a SIGINT after that (a person pressing Ctrl-C again) exits at once, without it.
        """
        now = time.monotonic()
        if self.requested is None:
            self.requested, self.requested_at = signum, now
            logger.warning(
                "%s received: saving a checkpoint at the end of this step, then exiting (Ctrl-C again, "
                "after %d s, exits at once without it).",
                signal.Signals(signum).name,
                SECOND_CTRL_C_AFTER,
            )
        elif signum == signal.SIGINT and now - self.requested_at >= SECOND_CTRL_C_AFTER:
            raise KeyboardInterrupt

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        norm = 0.0 if self.may_overflow or model is None else _gradient_norm(model)
        bad_norm, requested = _sync_max([float(not math.isfinite(norm)), float(self.requested or 0)], args.device)
        if bad_norm:
            step = state.global_step + 1
            weights = non_finite_parameters(model)
            cause = (
                f"the weights were already non-finite ({', '.join(weights[:3])}): a corrupted model or checkpoint file?"
                if weights
                else "the loss or its gradient overflowed: lower --learning_rate, keep "
                "--max_grad_norm > 0, or train in bf16 rather than fp16"
            )
            raise NonFiniteError(
                f"Training stopped at step {step}: the gradient norm is {norm if norm else 'not finite'}; {cause}. "
                f"Nothing of step {step} was applied or saved; the checkpoints of earlier steps are intact."
            )
        if requested:
            self.stopped_by = int(requested)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.stopped_by is not None:
            control.should_evaluate = False
            control.should_save = True
            control.should_training_stop = True
        if control.should_save and model is not None:
            bad = non_finite_parameters(model)
            if _sync_max([float(bool(bad))], args.device)[0]:
                where = ", ".join(bad[:3]) or "on another process"
                raise NonFiniteError(
                    f"At step {state.global_step} the weights hold NaN/inf ({where}); they are not "
                    "saved. Earlier checkpoints are intact."
                )
            self.saving = state.global_step
            self._remove_cut_off_save(args, state.global_step)

    @staticmethod
    def _remove_cut_off_save(args, step: int) -> None:
        """Remove checkpoint-`step` if a run killed while saving it left it without a manifest: this save then starts
        from an empty folder, and the killed save's leftovers (safetensors' .tmpXXXXXX files) never get listed."""
        folder = os.path.join(args.output_dir, f"checkpoint-{step}")
        if args.should_save and os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, MANIFEST_NAME)):
            logger.warning(
                "Removing %s, cut off while saving by an earlier run, before saving that step again.", folder
            )
            shutil.rmtree(folder)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # nobody writes its files into the folder before it is removed

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if distributed:
            torch.distributed.barrier()  # every process has written its files (rng_state_<rank>.pth, shards)
        if args.should_save and os.path.isdir(folder):
            write_manifest(folder, {"global_step": state.global_step, **run_geometry(args)})
        if distributed:
            torch.distributed.barrier()  # nobody exits (its launcher would kill the rest) before the manifest exists
        self.saving = None
