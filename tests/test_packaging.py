"""The package as users install it: a wheel built from the repository, installed non-editable into a fresh
environment, runs the pretraining, SFT and evaluation commands end to end, model cards included."""

import json
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hf_simplegpt import job_parsers
from tests.conftest import REPO_ROOT, TINY_CORPUS, write_mmlu_fixture


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return next(out.glob("hf_simplegpt-*.whl"))


def test_the_wheel_carries_templates_and_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (REPO_ROOT / "model_cards").glob("*.md"):
        assert f"hf_simplegpt/templates/{template.name}" in names
    for config in (REPO_ROOT / "recipes" / "configs").glob("*.yaml"):
        assert f"hf_simplegpt/recipes/configs/{config.name}" in names
    assert "hf_simplegpt/recipes/accelerate/multi_gpu.yaml" in names
    assert {
        "hf_simplegpt/evaluation/safety_data/harmbench/LICENSE",
        "hf_simplegpt/evaluation/safety_data/README.md",
        "hf_simplegpt/evaluation/safety_data/donotanswer/malicious_uses.jsonl",
    } <= set(names)  # safety prompts
    assert any(n.endswith("entry_points.txt") for n in names)
    assert "hf_simplegpt/job_parsers.json" in names  # every job's --help at once


@pytest.fixture(scope="module")
def env(wheel, tmp_path_factory) -> Path:
    """A new virtual environment holding the wheel; its dependencies come from this one's site-packages, read
    through a .pth path (which does not run this environment's editable-install hook)."""
    root = tmp_path_factory.mktemp("env")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    target = next((root / "lib").glob("python3*/site-packages"))
    (target / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(root / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return root


HELP_WITHOUT_TORCH = (
    "import sys; from hf_simplegpt import cli; cli.main(sys.argv[1:]); print('torch loaded:', 'torch' in sys.modules)"
)


def test_installed_wheel_runs_pretrain_sft_and_evaluate(env, tmp_path):
    """The commands from the README, with the bundled tiny configs, in a folder that has no repository around."""

    def run(*args):
        cmd = [str(env / "bin" / "hf-simplegpt"), *map(str, args), "--report_to", "none", "--disable_tqdm", "true"]
        result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
        return result

    where = subprocess.run(
        [str(env / "bin" / "python"), "-c", "import hf_simplegpt; print(hf_simplegpt.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env) in where and str(REPO_ROOT) not in where  # the installed copy, not the source tree
    if job_parsers.stored_help("pretrain") is not None:  # recorded with these versions: a job's help loads no torch
        helped = subprocess.run(
            [str(env / "bin" / "python"), "-c", HELP_WITHOUT_TORCH, "pretrain", "--help"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert helped.startswith("usage: hf-simplegpt pretrain") and helped.endswith("torch loaded: False\n")

    (tmp_path / "corpus.txt").write_text("\n\n".join(TINY_CORPUS))
    run(
        "pretrain",
        "--config",
        "recipes/configs/pretrain_tiny.yaml",
        "--train_file",
        "corpus.txt",
        "--output_dir",
        "pt",
        "--max_steps",
        4,
        "--min_chars",
        1,
        "--heldout_size",
        4,
        "--data_cache_dir",
        tmp_path / "cache",
    )
    assert "## Training data" in (tmp_path / "pt" / "README.md").read_text()  # rendered from the packaged template

    rows = [
        {"messages": [{"role": "user", "content": f"Say {w}."}, {"role": "assistant", "content": w}]}
        for w in ("hi", "yes", "no", "blue", "red", "cat", "dog", "sun")
    ] * 2
    (tmp_path / "chats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(
        "sft",
        "--config",
        "sft_tiny.yaml",
        "--model_name_or_path",
        "pt",
        "--train_file",
        "chats.jsonl",
        "--output_dir",
        "sft",
        "--max_steps",
        4,
        "--max_length",
        32,
        "--num_sample_generations",
        1,
    )
    assert "sft" in (tmp_path / "sft" / "README.md").read_text()

    write_mmlu_fixture(tmp_path / "mmlu")
    cmd = [
        str(env / "bin" / "hf-simplegpt"),
        "evaluate",
        "--model_name_or_path",
        "sft",
        "--tasks",
        "mmlu,perplexity",
        "--mmlu_data_dir",
        "mmlu",
        "--perplexity_file",
        "corpus.txt",
        "--output_dir",
        "eval",
    ]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["mmlu"]["n"] == 5 and results["perplexity"]["perplexity"] > 1
    assert "model-index" in (tmp_path / "eval" / "README.md").read_text()
