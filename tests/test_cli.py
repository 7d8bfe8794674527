"""hf_simplegpt.cli: the `hf-simplegpt` command runs the recipes' code with their flags, training jobs through
accelerate launch (tests/test_readme.py and tests/test_packaging.py run its training jobs end to end)."""

import json
import os
import re
import subprocess
import sys

import pytest

from hf_simplegpt import cli, job_parsers


def run(*args, cwd=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "hf_simplegpt", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )


def test_help_lists_every_job(capsys):
    assert cli.main(["--help"]) == 0
    listed = capsys.readouterr().out
    for job in cli.JOBS:
        assert re.search(rf"^ +{re.escape(job)}\s", listed, re.M), job


# The jobs that read their flags with training.parse_args, so that --config works; the others take a few flags.
CONFIG_JOBS = ("pretrain", "sft", "reward", "grpo", "rloo", "dpo", "distill", "prune", "evaluate", "quantize", "export")


@pytest.mark.parametrize("job", cli.JOBS)
def test_every_jobs_help_lists_its_flags_under_its_name(capsys, monkeypatch, tmp_path, job):
    """`hf-simplegpt <job> --help` for every job: exit 0, the job's name, and --config first where the job takes it.
    Its text, rebuilt from the stored parsers, is the one the job's own parser draws, at any terminal width."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    stored_here = job_parsers.stored_help(job) is not None  # recorded with the installed libraries' versions
    for columns in ("80", "137"):
        monkeypatch.setenv("COLUMNS", columns)
        drawn = cli.render_job_help(job, cli.JOBS[job])
        if stored_here:
            assert job_parsers.stored_help(job) == drawn, "stale job_parsers.json: python -m hf_simplegpt.job_parsers"
        assert cli.main([job, "--help"]) == 0
        assert capsys.readouterr().out == drawn
    assert f"hf-simplegpt {job}" in drawn and re.search(r"^\s+--\w+", drawn, re.M)
    if job in CONFIG_JOBS:
        assert drawn.splitlines()[0].startswith(f"usage: hf-simplegpt {job} [--config FILE.yaml]")
        assert "--config FILE.yaml: flags from a YAML file" in drawn
    if job == "evaluate":
        assert "--mmlu_data_dir" in drawn


def test_stored_parsers_are_used_only_with_the_versions_they_were_recorded_with(monkeypatch):
    recorded = json.loads(job_parsers.STORED.read_text())["jobs"]["sft"]["versions"]
    assert set(recorded) == {"transformers", "trl"}  # what its flags come from, not every installed library
    monkeypatch.setattr(job_parsers, "installed_versions", lambda names: {**recorded, "trl": "0.1"})
    assert job_parsers.stored_help("sft") is None


# What `hf-simplegpt --help` and a job's cached help must not load: each takes seconds, and some print warnings.
HEAVY_MODULES = (
    "torch",
    "transformers",
    "torchao",
    "transformers.modeling_utils",
    "trl",
    "peft",
    "accelerate",
    "datasets",
)
CHECK_IMPORTS = (
    "import json, sys; from hf_simplegpt import cli; code = cli.main(sys.argv[1:]); "
    f"print(json.dumps([code, [m for m in {HEAVY_MODULES!r} if m in sys.modules]]))"
)


def test_help_loads_no_engine_and_prints_no_noise():
    done = subprocess.run([sys.executable, "-c", CHECK_IMPORTS, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stderr == ""
    assert json.loads(done.stdout.splitlines()[-1]) == [0, []]
    assert "pretrain" in done.stdout


def test_a_jobs_first_help_loads_no_engine(tmp_path):
    """A user's first `pretrain --help`: from the stored parsers, without torch, transformers or TRL, nothing on
    stderr."""
    if job_parsers.stored_help("pretrain") is None:
        pytest.skip("job_parsers.json was recorded with other library versions: the help is drawn (next test)")
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "100"}
    done = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS, "pretrain", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == ""
    lines = done.stdout.splitlines()
    assert json.loads(lines[-1]) == [0, []]
    assert lines[0].startswith("usage: hf-simplegpt pretrain [--config FILE.yaml]") and "--learning_rate" in done.stdout


def test_job_help_is_cached_whole_and_then_loads_no_engine(tmp_path):
    """Without stored parsers for the installed versions, the first `pretrain --help` draws the job's parser (its
    engines' load-time warnings kept off stderr); the second comes from the cache, loading nothing, the same text."""
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path), "COLUMNS": "100"}
    unstored = "from hf_simplegpt import job_parsers; job_parsers.STORED = job_parsers.STORED.with_name('none'); "
    first, again = (
        subprocess.run(
            [sys.executable, "-c", unstored + CHECK_IMPORTS, "pretrain", "--help"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        for _ in range(2)
    )
    assert first.returncode == 0 and first.stderr == "", first.stderr
    assert len(list((tmp_path / "hf_simplegpt" / "help").glob("pretrain-*.txt"))) == 1
    assert again.returncode == 0 and again.stderr == ""
    drawn, cached = (done.stdout.splitlines() for done in (first, again))
    assert json.loads(drawn[-1])[1] and json.loads(cached[-1]) == [0, []]  # the first one loaded the engines
    assert drawn[:-1] == cached[:-1] and drawn[0].startswith("usage: hf-simplegpt pretrain [--config FILE.yaml]")


def test_job_help_cache_follows_what_the_text_depends_on(monkeypatch, tmp_path):
    """A different terminal width or a newly installed distribution means another cache file, not a stale text."""
    monkeypatch.setenv("COLUMNS", "100")
    before = cli.help_cache_file("sft")
    assert cli.help_cache_file("sft") == before and cli.help_cache_file("dpo") != before
    monkeypatch.setenv("COLUMNS", "120")
    assert cli.help_cache_file("sft") != before
    monkeypatch.setenv("COLUMNS", "100")
    (tmp_path / "some_trainer-2.0.dist-info").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.help_cache_file("sft") != before


def test_launcher_flags_go_to_accelerate_and_the_rest_to_the_job():
    launch, job = cli.split_launch_args(
        [
            "--multi_gpu",
            "--num_processes",
            "2",
            "--config",
            "x.yaml",
            "--max_steps=3",
            "--main_process_port=2950",
            "--output_dir",
            "o",
            "--mixed_precision",
            "bf16",
            "--debug",
            "underflow_overflow",
            "--gradient_accumulation_steps",
            "4",
            "--dynamo_backend",
            "no",
        ]
    )
    assert launch == [
        "--multi_gpu",
        "--num_processes",
        "2",
        "--main_process_port=2950",
        "--mixed_precision",
        "bf16",
        "--dynamo_backend",
        "no",
    ]
    assert job == [
        "--config",
        "x.yaml",
        "--max_steps=3",
        "--output_dir",
        "o",
        "--debug",
        "underflow_overflow",
        "--gradient_accumulation_steps",
        "4",
    ]
    assert cli.accelerate_config_file("multi_gpu").endswith("recipes/accelerate/multi_gpu.yaml")
    with pytest.raises(SystemExit, match=r"--accelerate_config nope.*'fsdp'"):
        cli.accelerate_config_file("nope")


def test_the_flags_accelerate_and_the_jobs_share_are_the_jobs():
    """JOB_OWNED_FLAGS is every flag both `accelerate launch` and a job take (a library upgrade adding one fails here)."""
    import dataclasses
    import importlib

    from accelerate.commands.launch import launch_command_parser

    accelerate = {option for action in launch_command_parser()._actions for option in action.option_strings}
    jobs = set()
    for job in cli.JOBS.values():
        module = importlib.import_module(job.module)
        for value in vars(module).values():
            if isinstance(value, type) and dataclasses.is_dataclass(value):
                jobs |= {f"--{field.name}" for field in dataclasses.fields(value)}
    assert accelerate & jobs == set(cli.JOB_OWNED_FLAGS)


@pytest.mark.parametrize(
    "argv, says",
    [(["pretrian"], "unknown job 'pretrian'"), (["evaluate", "--num_processes", "2"], "runs in one process")],
)
def test_unknown_job_and_misplaced_launcher_flags_are_refused(capsys, argv, says):
    with pytest.raises(SystemExit) as done:
        cli.main(argv)
    assert done.value.code == 2 and says in capsys.readouterr().err


def test_a_library_upgraded_past_the_declared_range_is_refused_before_any_job(capsys, monkeypatch):
    """`pip install -U transformers` after installing hf-simplegpt leaves a version the serving app's subclasses (and
    more) were never run with: every job refuses at once, naming the library, the range and the pip command."""
    from importlib import metadata

    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "5.25.0" if name == "transformers" else real(name))
    assert cli.main(["evaluate", "--model_name_or_path", "nowhere"]) == 2
    (error,) = capsys.readouterr().err.strip().splitlines()
    declared = next(r for r in metadata.requires("hf-simplegpt") if r.startswith("transformers<"))  # e.g. <5.25,>=5.24
    assert error == (
        f"hf-simplegpt evaluate: error: transformers 5.25.0 is installed; hf-simplegpt needs {declared}: "
        f"pip install '{declared}'"
    )
    monkeypatch.setattr(metadata, "version", real)
    assert cli.version_mismatches() == []  # what this suite runs with is in range


def test_a_taken_output_dir_is_refused_before_the_launcher_starts(tmp_path):
    """A folder holding a model (or locked by a running job) is refused by the command itself: one line, exit 2 as
    for argparse errors, no launcher or job started (no accelerate output, no traceback). Nothing is written there."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")
    result = run(
        "pretrain",
        "--config",
        "pretrain_tiny.yaml",
        "--train_file",
        tmp_path / "corpus.txt",
        "--output_dir",
        out,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"hf-simplegpt pretrain: error: --output_dir {out} already holds a model or checkpoints (config.json): a new "
        "run would overwrite them. Pass --resume_from_checkpoint true to continue that run, --overwrite_output_dir "
        "true to replace it, or another --output_dir."
    )
    assert "Traceback" not in result.stderr and "accelerate" not in result.stderr.lower()
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_a_failing_job_exits_non_zero_with_its_own_message(tmp_path):
    result = run(
        "pretrain",
        "--config",
        "pretrain_tiny.yaml",
        "--train_file",
        tmp_path / "missing.txt",
        "--output_dir",
        tmp_path / "out",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "--train_file" in result.stderr and "no such file" in result.stderr
    assert "CalledProcessError" not in result.stderr  # no launcher traceback on top of the job's error
