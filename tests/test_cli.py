"""hf_simplegpt.cli: the `hf-simplegpt` command runs the recipes' code with their flags, training jobs through
accelerate launch (tests/test_readme.py and tests/test_packaging.py run its training jobs end to end)."""

import subprocess
import sys

import pytest
from hf_simplegpt import cli


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "hf_simplegpt", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_help_lists_every_job(capsys):
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    for job in ("pretrain", "sft", "reward", "grpo", "rloo", "dpo", "distill", "prune", "evaluate", "quantize", "export", "convert", "serve",
                "chat-ui"):
        assert f"    {job} " in listed


def test_a_jobs_help_lists_its_flags(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["evaluate", "--help"])
    shown = capsys.readouterr().out
    assert done.value.code == 0 and "--mmlu_data_dir" in shown and "hf-simplegpt evaluate" in shown


def test_launcher_flags_go_to_accelerate_and_the_rest_to_the_job():
    launch, job = cli.split_launch_args(["--multi_gpu", "--num_processes", "2", "--config", "x.yaml",
                                         "--max_steps=3", "--main_process_port=2950", "--output_dir", "o"])  # fmt: skip
    assert launch == ["--multi_gpu", "--num_processes", "2", "--main_process_port=2950"]
    assert job == ["--config", "x.yaml", "--max_steps=3", "--output_dir", "o"]
    assert cli.accelerate_config_file("multi_gpu").endswith("recipes/accelerate/multi_gpu.yaml")
    with pytest.raises(SystemExit, match=r"--accelerate_config nope.*'fsdp'"):
        cli.accelerate_config_file("nope")


@pytest.mark.parametrize("argv, says", [(["pretrian"], "unknown job 'pretrian'"),
                                        (["evaluate", "--num_processes", "2"], "runs in one process")])
def test_unknown_job_and_misplaced_launcher_flags_are_refused(capsys, argv, says):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2 and says in capsys.readouterr().err


def test_a_failing_job_exits_non_zero_with_its_own_message(tmp_path):
    result = run("pretrain", "--config", "pretrain_tiny.yaml", "--train_file", tmp_path / "missing.txt",
                 "--output_dir", tmp_path / "out", cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "--train_file" in result.stderr and "no such file" in result.stderr
    assert "CalledProcessError" not in result.stderr  # no launcher traceback on top of the job's error
