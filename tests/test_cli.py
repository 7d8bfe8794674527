"""hf_simplegpt.cli: the `hf-simplegpt` command runs the recipes' code with their flags, training jobs through
accelerate launch."""

import json
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM

from hf_simplegpt import cli
from tests.conftest import TINY_CORPUS


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hf_simplegpt", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_help_lists_every_job():
    result = run("--help")
    assert result.returncode == 0
    for job in ("pretrain", "sft", "reward", "rl", "dpo", "distill", "prune", "evaluate", "quantize", "export", "convert", "serve",
                "chat-ui"):
        assert f"    {job} " in result.stdout


def test_a_jobs_help_lists_its_flags():
    result = run("evaluate", "--help")
    assert result.returncode == 0 and "--mmlu_data_dir" in result.stdout and "hf-simplegpt evaluate" in result.stdout


def test_launcher_flags_go_to_accelerate_and_the_rest_to_the_job():
    launch, job = cli.split_launch_args(["--multi_gpu", "--num_processes", "2", "--config", "x.yaml",
                                         "--max_steps=3", "--main_process_port=2950", "--output_dir", "o"])  # fmt: skip
    assert launch == ["--multi_gpu", "--num_processes", "2", "--main_process_port=2950"]
    assert job == ["--config", "x.yaml", "--max_steps=3", "--output_dir", "o"]
    assert cli.accelerate_config_file("multi_gpu").endswith("recipes/accelerate/multi_gpu.yaml")
    with pytest.raises(SystemExit, match=r"--accelerate_config nope.*'fsdp'"):
        cli.accelerate_config_file("nope")


def test_unknown_job_and_misplaced_launcher_flags_are_refused():
    result = run("pretrian")
    assert result.returncode == 2 and "unknown job 'pretrian'" in result.stderr
    result = run("evaluate", "--num_processes", "2", "--model_name_or_path", "x")
    assert result.returncode == 2 and "runs in one process" in result.stderr


def test_pretrain_through_the_command_trains_and_saves_with_a_bundled_config(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(TINY_CORPUS))
    out = tmp_path / "out"
    result = run("pretrain", "--config", "pretrain_tiny.yaml", "--train_file", corpus, "--output_dir", out,
                 "--max_steps", 2, "--min_chars", 1, "--heldout_size", 2, "--report_to", "none",
                 "--data_cache_dir", tmp_path / "cache", "--disable_tqdm", "true", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
    assert AutoModelForCausalLM.from_pretrained(out).config.max_position_embeddings == 32
    assert "--- sample ---" in result.stdout  # the end-of-run samples ran (capped at the 32-position context)


def test_a_failing_job_exits_non_zero_with_its_own_message(tmp_path):
    result = run("pretrain", "--config", "pretrain_tiny.yaml", "--train_file", tmp_path / "missing.txt",
                 "--output_dir", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "--train_file" in result.stderr and "no such file" in result.stderr
    assert "CalledProcessError" not in result.stderr  # no launcher traceback on top of the job's error
