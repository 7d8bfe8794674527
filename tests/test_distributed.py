"""Training beyond one process, on CPUs: two machines on 127.0.0.1 (one process each, gloo) against one process,
resuming a 2-machine checkpoint on one machine, and a machine that cannot reach the main one."""

import json
import os
import socket
import subprocess
import sys
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
    cmd = [
        sys.executable,
        "-m",
        "hf_simplegpt",
        "pretrain",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "2",
        "--machine_rank",
        str(rank),
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
        "--rdzv_conf",
        f"timeout={rdzv_timeout}",
        *job_args,
    ]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def losses(output_dir) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in log_history(output_dir) if "loss" in h}


def test_two_machines_train_like_one_process_with_the_same_global_batch_and_resume_on_one(tmp_path, corpus):
    common = [
        "--config",
        PRETRAIN_TINY,
        "--train_file",
        corpus,
        "--data_cache_dir",
        str(Path(corpus).parent / "cache"),
        "--max_steps",
        "6",
        "--logging_steps",
        "1",
        "--save_steps",
        "3",
        "--eval_steps",
        "6",
        "--eval_on_start",
        "false",
        "--num_sample_generations",
        "0",
        "--disable_tqdm",
        "true",
    ]
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
    run_pretrain(
        tmp_path,
        corpus,
        *common[4:],
        "--per_device_train_batch_size",
        "8",
        "--resume_from_checkpoint",
        str(two / "checkpoint-3"),
        out="resumed",
    )
    resumed = losses(tmp_path / "resumed")
    assert [resumed[s] for s in (4, 5, 6)] == pytest.approx([two_machines[s] for s in (4, 5, 6)], abs=1e-5)


def test_a_machine_that_cannot_reach_the_main_one_fails_in_bounded_time_naming_it(tmp_path, corpus):
    port = free_port()  # nothing listens there: machine 0 never started
    proc = machine(
        1, port, "--config", PRETRAIN_TINY, "--train_file", corpus, "--output_dir", str(tmp_path / "o"), rdzv_timeout=3
    )
    output = proc.communicate(timeout=300)[0]  # start-up included; the wait itself is the 3 s below
    assert proc.returncode != 0
    assert f"could not reach the main machine at 127.0.0.1:{port}" in output, output[-3000:]
    assert "timed out after 3000ms" in output and "--rdzv_conf timeout=SECONDS" in output


def test_fsdp2_fully_shard_trains_like_ddp_and_its_full_state_dict_loads(tmp_path):
    """accelerate runs FSDP only on GPUs; on CPUs the closest honest test is torch's own `fully_shard` (FSDP2, each
    SimpleGPTBlock a unit, as recipes/accelerate/fsdp.yaml asks accelerate for) over gloo, against DDP."""
    from transformers import AutoModelForCausalLM

    jobs = {}
    for engine in ("fsdp2", "ddp"):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "tests/fully_shard_job.py",
            engine,
            str(tmp_path),
        ]
        jobs[engine] = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    for engine, job in jobs.items():
        output = job.communicate(timeout=300)[0]
        assert job.returncode == 0, output[-4000:]
    fsdp2, ddp = (json.loads((tmp_path / f"{engine}.json").read_text()) for engine in ("fsdp2", "ddp"))
    assert fsdp2["sharded"] == ["DTensor"] and ddp["sharded"] == ["Parameter"]  # FSDP2 really sharded the weights
    assert fsdp2["losses"] == pytest.approx(ddp["losses"], abs=1e-5)
    assert fsdp2["losses"][-1] != fsdp2["losses"][0]  # it trained
    # The gathered full state dict is an ordinary model folder with the logits of the sharded model in memory.
    saved = AutoModelForCausalLM.from_pretrained(tmp_path / "model").eval()
    with torch.no_grad():
        logits = saved(torch.tensor(fsdp2["probe"])).logits
    torch.testing.assert_close(logits, torch.tensor(fsdp2["logits"]), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, torch.tensor(ddp["logits"]), atol=1e-4, rtol=1e-4)


@pytest.mark.slow  # DeepSpeed's first launch JIT-builds its CPU comm op with g++ (minutes); .ci/run runs these
@pytest.mark.parametrize("config", ["deepspeed_zero2", "deepspeed_zero3"])
def test_deepspeed_zero_on_cpus_trains_like_one_process_and_saves_the_trained_model(tmp_path, corpus, config):
    """`--accelerate_config deepspeed_zero2|3` with 2 CPU processes: really DeepSpeed, really 2 data shards, the
    1-process curve at the same global batch, and a folder that reloads with the trained model's logits."""
    pytest.importorskip("deepspeed")
    from transformers import AutoModelForCausalLM

    common = [
        "--config",
        PRETRAIN_TINY,
        "--train_file",
        corpus,
        "--data_cache_dir",
        str(Path(corpus).parent / "cache"),
        "--max_steps",
        "4",
        "--logging_steps",
        "1",
        "--eval_steps",
        "4",
        "--eval_on_start",
        "false",
        "--num_sample_generations",
        "0",
        "--disable_tqdm",
        "true",
    ]
    out = tmp_path / config
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "hf_simplegpt",
            "pretrain",
            "--accelerate_config",
            config,
            "--num_processes",
            "2",
            *common,
            "--output_dir",
            str(out),
            "--record_batch_fingerprints",
            "true",
        ],
        cwd=REPO_ROOT,
        env=env(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "Launch: DistributedType.DEEPSPEED, 2 process(es) on cpu" in proc.stdout
    ranks = [json.loads((out / "batch_fingerprints" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4 and not set(ranks[0]) & set(ranks[1])  # one shard each

    run_pretrain(tmp_path, corpus, *common[4:], "--per_device_train_batch_size", "8", out="one")
    if config == "deepspeed_zero2":
        assert losses(out) == pytest.approx(losses(tmp_path / "one"), abs=1e-4)
    else:  # ZeRO-3 builds the model partitioned (zero3_init_flag), drawing other initial weights: it must train
        assert losses(out)[4] < losses(out)[1] - 0.1
    results = json.loads((out / "all_results.json").read_text())
    assert results["saved_model_max_logit_difference"] <= 1e-4  # checked by the job against the model in memory
    assert (
        AutoModelForCausalLM.from_pretrained(out).num_parameters()
        == AutoModelForCausalLM.from_pretrained(tmp_path / "one").num_parameters()
    )


@pytest.mark.slow  # a local Ray cluster starts in minutes on a loaded 2-core machine
def test_ray_train_runs_the_job_in_two_workers_and_reports_its_checkpoints(tmp_path, corpus):
    """`hf-simplegpt pretrain --ray_workers 2`: Ray's TorchTrainer, two CPU workers, one gloo process group."""
    pytest.importorskip("ray.train")
    out = tmp_path / "ray"
    cmd = [
        sys.executable,
        "-m",
        "hf_simplegpt",
        "pretrain",
        "--ray_workers",
        "2",
        "--config",
        PRETRAIN_TINY,
        "--train_file",
        corpus,
        "--data_cache_dir",
        str(Path(corpus).parent / "cache"),
        "--output_dir",
        str(out),
        "--max_steps",
        "4",
        "--save_steps",
        "2",
        "--eval_steps",
        "4",
        "--num_sample_generations",
        "0",
        "--disable_tqdm",
        "true",
        "--record_batch_fingerprints",
        "true",
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    ranks = [json.loads((out / "batch_fingerprints" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 4 and not set(ranks[0]) & set(ranks[1])  # 2 workers, 2 data shards
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 4
    reported = sorted(p.name for p in (out / "ray_results").rglob("checkpoint_*") if p.is_dir())
    assert len(reported) == 2, reported  # the Trainer's checkpoints at steps 2 and 4, reported to Ray
