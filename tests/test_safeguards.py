"""hf_simplegpt.safeguards in isolation: the lock, the output-folder rules, no-space diagnosis, the gradient check.
Whole runs meeting faults are in tests/test_faults.py; bad flags and folders in tests/test_bad_inputs.py."""

import errno
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from transformers import Trainer, TrainingArguments

from hf_simplegpt import safeguards
from tests.conftest import REPO_ROOT, make_model

# A process that takes a folder's lock the way a job does and exits at once, leaving a stale lock file behind.
TAKE_LOCK_AND_EXIT = """import fcntl, json, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "host": "elsewhere", "started": "earlier", "command": "old run"}).encode())
"""


def test_a_stale_lock_is_taken_over_and_released_at_the_end(tmp_path, caplog):
    lock = tmp_path / safeguards.LOCK_NAME
    dead = subprocess.run([sys.executable, "-c", TAKE_LOCK_AND_EXIT, str(lock)], check=True)
    assert dead.returncode == 0 and lock.exists()

    @safeguards.guarded_main
    def job():
        safeguards.claim_output_dir(str(tmp_path))
        safeguards.claim_output_dir(str(tmp_path))  # the same process may claim its folder again
        return json.loads(lock.read_text())

    holder = job()
    assert holder["pid"] == os.getpid() and holder["command"]
    assert "Took over the stale lock" in caplog.text and "old run" in caplog.text
    assert not lock.exists()  # released when the job returned


def test_claim_refuses_saved_work_and_overwrite_removes_only_checkpoints(tmp_path, caplog):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoint-7").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    assert safeguards.saved_work(str(tmp_path)) == ["config.json", "checkpoint-7"]
    with pytest.raises(ValueError, match=r"already holds a model or checkpoints \(config.json, checkpoint-7\)"):
        safeguards.claim_output_dir(str(tmp_path))
    with pytest.raises(ValueError, match="is the folder this job reads its model from"):
        safeguards.claim_output_dir(str(tmp_path), overwrite=True, inputs=[str(tmp_path)])
    safeguards.claim_output_dir(str(tmp_path), overwrite=True)
    safeguards.release_output_dir(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "notes.txt"]
    assert "removed 1 old checkpoint(s)" in caplog.text


def test_no_space_is_recognised_however_a_library_words_it(tmp_path):
    assert (
        safeguards.no_space_reason(OSError(errno.ENOSPC, "No space left on device"), [])
        == "no space left on the device"
    )
    wrapped = RuntimeError("Error while serializing: I/O error: File too large (os error 27)")
    assert safeguards.no_space_reason(wrapped, []) == "a file grew past the file size limit"
    try:
        try:
            raise OSError(errno.EDQUOT, "quota")
        except OSError as cause:
            raise RuntimeError("save failed") from cause
    except RuntimeError as err:
        assert safeguards.no_space_reason(err, []) == "the disk quota is exceeded"
    assert safeguards.no_space_reason(RuntimeError("CUDA out of memory"), [str(tmp_path)]) is None


def test_an_overflowing_loss_stops_training_before_the_update(tiny_tokenizer, tmp_path):
    """A loss whose gradient is not finite: the step is named and the weights stay as they were."""
    torch.manual_seed(0)
    model = make_model(tiny_tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(3, 300, (8, 16)).tolist()
    args = TrainingArguments(
        str(tmp_path),
        max_steps=3,
        per_device_train_batch_size=4,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_dict({"input_ids": ids, "labels": ids}),
        compute_loss_func=lambda outputs, labels, num_items_in_batch: outputs.logits.mean() * float("inf"),
    )
    run = safeguards.GuardedRun(resume_from_checkpoint=None)
    with pytest.raises(
        safeguards.NonFiniteError,
        match="Training stopped at step 1: the gradient norm is (nan|inf); the loss or its gradient overflowed",
    ):
        run.train(trainer)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_one_action_is_one_stop_request_and_only_a_later_ctrl_c_exits_at_once(monkeypatch):
    """Copies of a stop signal (a Ctrl-C reaching job and launcher, parent-death SIGTERMs, forwarded ones) never abort
    the checkpoint; a SIGINT `SECOND_CTRL_C_AFTER` seconds after the first signal (a person pressing again) does."""
    callback = safeguards.SafeguardCallback()
    clock = [100.0]
    monkeypatch.setattr(safeguards.time, "monotonic", lambda: clock[0])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
        callback._on_signal(sig, None)
    assert callback.requested == signal.SIGINT
    clock[0] += safeguards.SECOND_CTRL_C_AFTER
    callback._on_signal(signal.SIGTERM, None)  # SIGTERM is never more than the same request
    with pytest.raises(KeyboardInterrupt):
        callback._on_signal(signal.SIGINT, None)


def test_a_launched_jobs_output_survives_its_launcher(tmp_path):
    """A job whose stderr is a pipe its dead launcher read: writing (transformers' progress bar while saving the stop
    checkpoint) goes on instead of raising BrokenPipeError, and the descriptor then points at /dev/null."""
    script = """import os, sys
from hf_simplegpt import safeguards
safeguards.launched_by_a_launcher = lambda: True
assert safeguards.die_with_parent()
from huggingface_hub.utils import tqdm
for _ in tqdm(range(3), desc="Writing model shards"):
    print("x" * 100000, file=sys.stderr)
sys.stderr.flush()
open(sys.argv[1], "w").write(os.readlink("/proc/self/fd/2"))
"""
    read, write = os.pipe()
    os.close(read)  # the launcher is gone
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "fd2")], stderr=write, cwd=REPO_ROOT)
    os.close(write)
    assert done.returncode == 0 and (tmp_path / "fd2").read_text() == os.devnull
