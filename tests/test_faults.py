"""What happens to a run when things go wrong around it (issue 13): stop signals, kill -9, a killed launcher, a
second or concurrent run into its folder, corrupted or NaN checkpoints, a changed setup at resume, a full disk, a Hub
token. Each test checks that no work is lost and that nothing goes on silently wrong.

The runs are the tiny pretraining config on a small corpus, in-process where a real process is not the point; two
tests start real processes (`python recipes/pretrain.py`, `hf-simplegpt pretrain`). The README's Reliability table
counts these tests (tests/test_bad_inputs.py checks it).
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_simplegpt import safeguards
from hf_simplegpt.checkpoints import MANIFEST_NAME, checkpoint_dirs, checkpoint_problems, write_manifest
from tests.conftest import PRETRAIN_TINY, REPO_ROOT, log_history, run_pretrain

# The finished run every test compares with or starts from: 8 steps, a checkpoint every 4, a log every step.
RUN = (
    "--max_steps",
    "8",
    "--save_steps",
    "4",
    "--eval_steps",
    "4",
    "--logging_steps",
    "1",
    "--dropout",
    "0.1",
    "--num_sample_generations",
    "0",
)
TOKEN = "hf_faultsTestToken0123456789"  # a made-up Hub token that must appear in no file


@pytest.fixture(scope="module")
def finished(tmp_path_factory, corpus) -> Path:
    """A finished 8-step run, given a Hub token on the command line (not pushed)."""
    root = tmp_path_factory.mktemp("finished")
    with pytest.MonkeyPatch.context() as env:
        env.delenv("HF_TOKEN", raising=False)  # the job moves --hub_token here; keep it from leaking to other tests
        run_pretrain(root, corpus, *RUN, "--hub_token", TOKEN)
    return root / "out"


def curve(output_dir, after: int = 0) -> dict:
    """{(step, "loss" | "eval_loss"): value} of a run's log after step `after`."""
    return {
        (h["step"], k): h[k]
        for h in log_history(output_dir)
        for k in ("loss", "eval_loss")
        if k in h and h["step"] > after
    }


def copy_of(finished: Path, tmp_path: Path, *names: str) -> Path:
    """A copy of the finished run's folder (or only the named entries of it) to damage."""
    out = tmp_path / "out"
    if names:
        out.mkdir()
        for name in names:
            shutil.copytree(finished / name, out / name)
    else:
        shutil.copytree(finished, out)
    return out


def test_sigterm_saves_the_step_and_resume_continues_exactly(tmp_path, corpus, finished, monkeypatch, caplog):
    """SIGTERM (Slurm, Kubernetes, spot instances) mid-step, with the copies one action brings (a Ctrl-C's SIGINT,
    a launcher's forwarded SIGTERM): checkpoint at the end of the step, exit 143, and `--resume_from_checkpoint true`
    gives the uninterrupted run's loss curve to the last bit."""

    def signal_during_step_3(self, args, state, control, **kwargs):
        if state.global_step == 2:  # one action, several signals (see SafeguardCallback._on_signal): one request
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
                os.kill(os.getpid(), sig)

    with monkeypatch.context() as patch:
        patch.setattr(safeguards.SafeguardCallback, "on_step_begin", signal_during_step_3, raising=False)
        with pytest.raises(SystemExit) as stopped:
            run_pretrain(tmp_path, corpus, *RUN)
    out = tmp_path / "out"
    assert stopped.value.code == 128 + signal.SIGTERM
    assert f"Stopped by SIGTERM at step 3; saved {out / 'checkpoint-3'}" in caplog.text
    assert [Path(p).name for p in checkpoint_dirs(str(out))] == ["checkpoint-3"]
    assert checkpoint_problems(str(out / "checkpoint-3")) == []
    assert not (out / "model.safetensors").exists()  # an interrupted run is not a finished model

    run_pretrain(tmp_path, corpus, *RUN, "--resume_from_checkpoint", "true")
    assert f"Resuming from {out / 'checkpoint-3'} (step 3)" in caplog.text
    expected, got = curve(finished, after=3), curve(out, after=3)
    assert len(expected) == 7 and got == expected  # steps 4-8 and two evaluations, bit for bit


def files_holding(token: str, *paths: Path) -> list[Path]:
    """The files under `paths` (folders or files) that hold `token`, read while a run may be writing there."""
    holding = []
    for f in (f for p in paths for f in ([p] if p.is_file() else p.rglob("*"))):
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):  # a temporary file renamed meanwhile
            if token.encode() in f.read_bytes():
                holding.append(f)
    return holding


def wait_for(condition, what: str, process=None, timeout: float = 600):
    """Poll `condition` until it holds; fail naming `what` if `process` ends first or `timeout` (a bound for a hung
    run, far above the time a loaded machine needs) passes."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process is None or process.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.2)


@pytest.mark.parametrize("stop", ["kill -9", "SIGTERM"])
def test_stopping_the_launcher_stops_the_job_after_a_checkpoint(tmp_path, corpus, monkeypatch, stop):
    """`hf-simplegpt pretrain` while its job trains, killed with -9 (the job asked Linux for SIGTERM when its parent
    dies; the pipe the launcher read the job's stderr from breaks) or sent SIGTERM (a Slurm preemption, `kill`; it is
    passed on to the job, which is then waited for however long the save takes: here the job is frozen for longer
    than accelerate's 5 s grace period). Either way the job saves a checkpoint and exits instead of writing on unseen.
    While it runs, a second run into the same folder is refused by the lock, naming the job's pid. The Hub token on
    its command line is in no file and no message: not while it runs, nor after it, nor in the refusal."""
    out, log = tmp_path / "out", tmp_path / "job.log"
    args = [
        "--config",
        PRETRAIN_TINY,
        "--train_file",
        corpus,
        "--output_dir",
        str(out),
        "--max_steps",
        "100000",
        "--save_steps",
        "100000",
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--num_sample_generations",
        "0",
        "--data_cache_dir",
        str(Path(corpus).parent / "cache"),
        "--disable_tqdm",
        "true",
        "--hub_token",
        TOKEN,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    monkeypatch.setenv("HF_TOKEN", "")  # restored after the test: the refused run below moves --hub_token there
    with open(log, "w") as sink:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "hf_simplegpt.cli", "pretrain", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(lambda: "'loss'" in log.read_text(), "a logged training step", launcher)
        (job,) = psutil.Process(launcher.pid).children(recursive=True)
        assert files_holding(TOKEN, out, log) == [] and (out / safeguards.LOCK_NAME).exists()
        with pytest.raises(ValueError, match=f"{out} is in use by another run \\(pid {job.pid} on ") as refused:
            run_pretrain(tmp_path, corpus, *args[4:])
        assert TOKEN not in str(refused.value) and "--hub_token ***" in (out / safeguards.LOCK_NAME).read_text()
        if stop == "kill -9":
            launcher.kill()
        else:  # the job is frozen past accelerate's grace period, after which its launcher would send SIGKILL
            job.suspend()
            launcher.send_signal(signal.SIGTERM)
            time.sleep(6)
            job.resume()
        assert launcher.wait(timeout=600) == (-signal.SIGKILL if stop == "kill -9" else 128 + signal.SIGTERM)
        gone, _ = psutil.wait_procs([job], timeout=600)
        assert gone, "the job outlived its launcher"
    finally:
        launcher.kill()
    text = log.read_text()
    assert "SIGTERM received: saving a checkpoint" in text
    (checkpoint,) = checkpoint_dirs(str(out))
    assert f"Stopped by SIGTERM at step {checkpoint.rsplit('-', 1)[1]}; saved {checkpoint}" in text
    assert checkpoint_problems(checkpoint) == []
    assert not (out / safeguards.LOCK_NAME).exists()  # released by the job on its way out
    assert files_holding(TOKEN, out, log) == []


def test_kill_9_keeps_complete_checkpoints_and_resume_takes_over_the_stale_lock(tmp_path, corpus, caplog):
    """kill -9 while checkpoints are written every step: every checkpoint with a manifest is complete, the newest one
    may be cut off mid-save (and is skipped), the lock is left behind by a dead process and is taken over. A save cut
    off by the kill (here with the temporary file safetensors writes before renaming) is redone from an empty folder,
    so its manifest lists no leftover. The Hub token is in no file the killed run left, nor in the takeover warning."""
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(REPO_ROOT / "recipes" / "pretrain.py"),
        "--config",
        PRETRAIN_TINY,
        "--train_file",
        corpus,
        "--output_dir",
        str(out),
        "--max_steps",
        "100000",
        "--save_steps",
        "1",
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--lr_scheduler_type",
        "constant",
        "--data_cache_dir",
        str(Path(corpus).parent / "cache"),
        "--disable_tqdm",
        "true",
        "--num_sample_generations",
        "0",
        "--hub_token",
        TOKEN,
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "checkpoint-4" / MANIFEST_NAME).exists(), "4 checkpoints", proc)
        assert files_holding(TOKEN, out) == []
    finally:
        proc.kill()
        proc.wait()
    assert (out / safeguards.LOCK_NAME).exists()  # nobody removed it
    assert files_holding(TOKEN, out) == []
    complete = [p for p in checkpoint_dirs(str(out)) if (Path(p) / MANIFEST_NAME).exists()]
    assert len(complete) >= 4 and all(checkpoint_problems(p) == [] for p in complete)
    newest = int(complete[-1].rsplit("-", 1)[1])
    cut_off = out / f"checkpoint-{newest + 1}"
    cut_off.mkdir(exist_ok=True)  # the kill may have landed between two saves: make it land in one
    (cut_off / ".tmpK9x2Qa").write_bytes(os.urandom(4096))

    same = (
        "--max_steps",
        str(newest + 4),
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--lr_scheduler_type",
        "constant",
        "--num_sample_generations",
        "0",
    )
    run_pretrain(tmp_path, corpus, *same, "--save_steps", "1", "--resume_from_checkpoint", "true")
    assert f"Took over the stale lock of {out}: its run (pid {proc.pid} " in caplog.text and TOKEN not in caplog.text
    assert f"Resuming from {complete[-1]} (step {newest})" in caplog.text
    assert f"Removing {cut_off}, cut off while saving" in caplog.text
    assert not (cut_off / ".tmpK9x2Qa").exists() and checkpoint_problems(str(cut_off)) == []
    run_pretrain(tmp_path, corpus, *same, "--save_steps", "100", out="uninterrupted")
    resumed, expected = curve(out, after=newest), curve(tmp_path / "uninterrupted", after=newest)
    assert len(expected) == 4 and resumed == expected  # bit for bit


def test_a_corrupted_checkpoint_is_refused_and_true_falls_back_to_the_previous_one(tmp_path, corpus, finished, caplog):
    """4,000 bytes overwritten inside the newest checkpoint's weights (same size: only the manifest's hash sees it)."""
    out = copy_of(finished, tmp_path, "checkpoint-4", "checkpoint-8")
    weights = out / "checkpoint-8" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        f.write(os.urandom(4000))
    damaged = weights.read_bytes()
    with pytest.raises(ValueError, match="checkpoint-8 is corrupted or incomplete: model.safetensors changed since it"):
        run_pretrain(tmp_path, corpus, *RUN, "--resume_from_checkpoint", str(out / "checkpoint-8"))
    assert weights.read_bytes() == damaged  # nothing was touched

    run_pretrain(tmp_path, corpus, *RUN, "--resume_from_checkpoint", "true")
    assert f"Skipping incomplete checkpoint {out / 'checkpoint-8'}" in caplog.text
    assert curve(out, after=4) == curve(finished, after=4)  # resumed from checkpoint-4, exactly


def test_non_finite_weights_stop_training_naming_the_step_and_are_never_saved(tmp_path, corpus, finished):
    """Weights that went NaN before the manifest was written (bad memory, a bug): the first step stops with an error
    naming it and the cause, before the optimizer spreads the NaN; no checkpoint or model is written."""
    out = copy_of(finished, tmp_path, "checkpoint-4")
    path = out / "checkpoint-4" / "model.safetensors"
    weights = load_file(path)
    weights["model.layers.0.mlp.up_proj.weight"][0, 0] = float("nan")
    save_file(weights, str(path), metadata={"format": "pt"})
    write_manifest(str(out / "checkpoint-4"))
    with pytest.raises(
        safeguards.NonFiniteError,
        match=r"Training stopped at step 5: the gradient norm is nan; the "
        r"weights were already non-finite \(model.layers.0.mlp.up_proj.weight\)",
    ):
        run_pretrain(tmp_path, corpus, *RUN, "--resume_from_checkpoint", "true")
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint-4"]


def test_a_second_run_is_refused_and_overwrite_removes_the_stale_checkpoints(tmp_path, corpus, finished, caplog):
    out = copy_of(finished, tmp_path)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(
        ValueError,
        match=r"already holds a model or checkpoints \(config.json, model.safetensors, "
        r"checkpoint-4, checkpoint-8\)",
    ):
        run_pretrain(tmp_path, corpus, *RUN)
    assert (out / "model.safetensors").read_bytes() == before

    run_pretrain(tmp_path, corpus, *RUN, "--max_steps", "2", "--save_steps", "2", "--overwrite_output_dir", "true")
    assert "removed 2 old checkpoint(s)" in caplog.text
    assert [Path(p).name for p in checkpoint_dirs(str(out))] == ["checkpoint-2"]  # none left from the old run
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2


def test_resume_with_another_batch_or_model_shape_is_refused_unless_allowed(tmp_path, corpus, finished, caplog):
    out = copy_of(finished, tmp_path, "checkpoint-4")
    resume = ("--resume_from_checkpoint", str(out / "checkpoint-4"))
    with pytest.raises(ValueError, match=r"different setup: per_device_train_batch_size 4 -> 2; \(global batch 4 -> 2"):
        run_pretrain(tmp_path, corpus, *RUN, *resume, "--per_device_train_batch_size", "2")
    with pytest.raises(ValueError, match="different setup: .*model hidden_size 64 -> 32"):
        run_pretrain(tmp_path, corpus, *RUN, *resume, "--hidden_size", "32")
    run_pretrain(
        tmp_path,
        corpus,
        *RUN,
        *resume,
        "--max_steps",
        "5",
        "--per_device_train_batch_size",
        "2",
        "--allow_resume_changes",
        "true",
    )
    assert "accepting changes: per_device_train_batch_size 4 -> 2" in caplog.text


def test_a_full_disk_is_a_clear_no_space_error_and_keeps_the_previous_checkpoint(tmp_path, corpus, finished):
    """The file size limit (`ulimit -f`, as a full disk would) stops the save of checkpoint-8 half-way."""
    out = copy_of(finished, tmp_path, "checkpoint-4")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, limits[1]))  # the model file is ~560 kB
    try:
        with pytest.raises(
            safeguards.NoSpaceError,
            match="No space to save checkpoint-8: a file grew past the file "
            "size limit .* the previous checkpoint .*checkpoint-4 is intact",
        ):
            run_pretrain(tmp_path, corpus, *RUN, "--resume_from_checkpoint", "true")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert [Path(p).name for p in checkpoint_dirs(str(out))] == ["checkpoint-4"]  # the partial one is removed
    assert checkpoint_problems(str(out / "checkpoint-4")) == []


def test_a_hub_token_is_in_no_file_the_run_wrote(finished):
    """`--hub_token` goes to the environment, not into training_args.bin (pickled into the folder and every checkpoint)."""
    files = [p for p in finished.rglob("*") if p.is_file()]
    assert len(files) > 20 and sum(p.name == "training_args.bin" for p in files) == 3
    assert [p for p in files if TOKEN.encode() in p.read_bytes()] == []
    args = torch.load(finished / "training_args.bin", weights_only=False)
    assert args.hub_token is None and args.max_steps == 8


def test_readme_counts_are_this_runs_outcomes(request):  # keep last in the module: it reads the outcomes above
    from tests.conftest import OUTCOMES
    from tests.test_bad_inputs import readme_row

    faults = [
        item.nodeid for item in request.session.items if item.module is request.module and item is not request.node
    ]
    if not all(node in OUTCOMES for node in faults):
        pytest.skip("the README's count is checked when every fault test ran in this process (the whole module)")
    handled = sum(OUTCOMES[node] == "passed" for node in faults)
    row = readme_row("Faults (tests/test_faults.py)", handled, len(faults))
    assert row in (REPO_ROOT / "README.md").read_text(), f"README.md's row should read:\n{row}"
