"""Training beyond one process, on CPUs: two machines on 127.0.0.1 (one process each, gloo) against one process,
resuming a 2-machine checkpoint on one machine, and a machine that cannot reach the main one."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import PRETRAIN_TINY, log_history, run_pretrain

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU/gloo path")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def machine(rank: int, port: int, *job_args, rdzv_timeout: int = 120) -> subprocess.Popen:
    """One "machine" of a 2-machine launch on 127.0.0.1: `hf-simplegpt pretrain` with accelerate's multi-node flags."""
    cmd = [sys.executable, "-m", "hf_simplegpt", "pretrain", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
           "--main_process_port", str(port), "--rdzv_conf", f"timeout={rdzv_timeout}", *job_args]  # fmt: skip
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def losses(output_dir) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in log_history(output_dir) if "loss" in h}


def test_two_machines_train_like_one_process_with_the_same_global_batch_and_resume_on_one(tmp_path, corpus):
    common = ["--config", PRETRAIN_TINY, "--train_file", corpus, "--data_cache_dir", str(Path(corpus).parent / "cache"),
              "--max_steps", "6", "--logging_steps", "1", "--save_steps", "3", "--eval_steps", "6",
              "--eval_on_start", "false", "--num_sample_generations", "0", "--disable_tqdm", "true"]  # fmt: skip
    two = tmp_path / "two"
    port = free_port()
    machines = [machine(rank, port, *common, "--output_dir", str(two)) for rank in (0, 1)]
    outputs = [m.communicate(timeout=400)[0] for m in machines]
    assert [m.returncode for m in machines] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "MULTI_CPU, 2 process(es)" in outputs[0]  # one gloo process group over both machines

    # One process with the 2 x 4 rows of each global batch: the same curve, step by step (float32).
    run_pretrain(tmp_path, corpus, *common[4:], "--per_device_train_batch_size", "8", out="one")
    two_machines, one_process = losses(two), losses(tmp_path / "one")
    assert sorted(two_machines) == list(range(1, 7))
    assert two_machines == pytest.approx(one_process, abs=1e-5)

    # The 2-machine checkpoint resumes on one machine (same global batch) and continues the same curve.
    run_pretrain(tmp_path, corpus, *common[4:], "--per_device_train_batch_size", "8",
                 "--resume_from_checkpoint", str(two / "checkpoint-3"), out="resumed")  # fmt: skip
    resumed = losses(tmp_path / "resumed")
    assert [resumed[s] for s in (4, 5, 6)] == pytest.approx([two_machines[s] for s in (4, 5, 6)], abs=1e-5)


def test_a_machine_that_cannot_reach_the_main_one_fails_in_bounded_time_naming_it(tmp_path, corpus):
    port = free_port()  # nothing listens there: machine 0 never started
    start = time.monotonic()
    proc = machine(1, port, "--config", PRETRAIN_TINY, "--train_file", corpus, "--output_dir", str(tmp_path / "o"),
                   rdzv_timeout=3)  # fmt: skip
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode != 0
    assert time.monotonic() - start < 90
    assert f"could not reach the main machine at 127.0.0.1:{port}" in output, output[-3000:]
    assert "--rdzv_conf timeout=SECONDS" in output
