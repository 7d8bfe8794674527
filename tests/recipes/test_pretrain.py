"""recipes/pretrain.py (hf-simplegpt pretrain) end to end with tiny configs: outputs, objectives, accelerate launch, DDP.
Interruptions, resume and corrupted checkpoints are in tests/test_faults.py; bad input in tests/test_bad_inputs.py."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

import hf_simplegpt  # noqa: F401  (registers the Auto classes)
from hf_simplegpt.pretraining import PretrainingArguments
from hf_simplegpt.recipes import pretrain
from tests.conftest import PRETRAIN_TINY, log_history, run_pretrain

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = PRETRAIN_TINY
_run, _history = run_pretrain, log_history


def test_tiny_run_writes_a_complete_model_folder(tmp_path, corpus, capsys):
    metrics, out = _run(tmp_path, corpus, "--max_steps", "10")
    files = set(os.listdir(out))
    expected = {
        "model.safetensors",
        "config.json",
        "configuration_simplegpt.py",
        "modeling_simplegpt.py",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "trainer_state.json",
        "loss_curve.png",
        "README.md",
        "checkpoint-5",
        "checkpoint-10",
    }
    assert expected <= files, expected - files

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.max_position_embeddings) == (
        64,
        2,
        32,
    )
    assert model.config.vocab_size == len(tokenizer) and model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.use_cache  # the Trainer trains without the KV cache; the saved model is for inference

    history = _history(out)
    evals = [h for h in history if "eval_loss" in h]
    assert evals[0]["step"] == 0  # the untrained baseline
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"] - 0.3
    assert metrics["eval_loss"] == evals[-1]["eval_loss"]
    assert all(h["eval_perplexity"] == pytest.approx(2.718281828 ** h["eval_loss"], rel=1e-6) for h in evals)
    train_logs = [h for h in history if "loss" in h and h["step"] > 1]
    assert train_logs and all(h["tokens_per_second"] > 0 and 0 < h["mfu"] < 1 for h in train_logs)

    card = open(os.path.join(out, "README.md")).read()
    for needle in (
        "## Training data",
        "exact duplicates",
        "near duplicates",
        "| seed | 42 |",
        "Hallucination",
        "Bias",
        "Knowledge cutoff",
        "at most 32 tokens",
        f"{metrics['eval_perplexity']:.2f}",
        "library_name: transformers",
    ):
        assert needle in card, needle
    assert "--- sample ---\nThe" in capsys.readouterr().out


def test_mlm_objective_trains_a_bidirectional_masked_lm(tmp_path, corpus):
    metrics, out = _run(tmp_path, corpus, "--objective", "mlm", "--max_steps", "10")
    model = AutoModelForMaskedLM.from_pretrained(out)
    assert type(model).__name__ == "SimpleGPTForMaskedLM" and model.config.is_causal is False
    evals = [h["eval_loss"] for h in _history(out) if "eval_loss" in h]
    assert evals[-1] < evals[0] - 0.3
    assert "masked language model" in open(os.path.join(out, "README.md")).read()


def test_push_to_hub_uploads_model_code_card_and_training_record(tmp_path, corpus, monkeypatch):
    from huggingface_hub import HfApi

    calls = {}
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("repo", repo_id))
    monkeypatch.setattr(HfApi, "create_commit", lambda self, **kw: calls.setdefault("commit", kw) and "commit-url")
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        _run(tmp_path, corpus, "--push_to_hub", "true")
    _, out = _run(tmp_path, corpus, "--max_steps", "2", "--push_to_hub", "true", "--hub_model_id", "me/tiny-pretrain")
    operations = calls["commit"]["operations"]
    assert calls["repo"] == calls["commit"]["repo_id"] == "me/tiny-pretrain"
    assert all(op.path_or_fileobj == os.path.join(out, op.path_in_repo) for op in operations)
    sent = {op.path_in_repo for op in operations}
    assert {
        "model.safetensors",
        "config.json",
        "configuration_simplegpt.py",
        "modeling_simplegpt.py",
        "tokenizer.json",
        "generation_config.json",
        "README.md",
        "loss_curve.png",
        "trainer_state.json",
    } <= sent
    assert not any(n.startswith("checkpoint") or n.endswith((".pt", ".bin")) for n in sent)
    assert 'from_pretrained("me/tiny-pretrain"' in open(os.path.join(out, "README.md")).read()


def test_activation_checkpointing_run_logs_throughput_to_tensorboard(tmp_path, corpus):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out = _run(
        tmp_path,
        corpus,
        "--max_steps",
        "4",
        "--activation_checkpointing",
        "true",
        "--report_to",
        "tensorboard",
        "--num_sample_generations",
        "0",
    )
    runs = os.path.join(out, "runs")
    events = EventAccumulator(os.path.join(runs, os.listdir(runs)[0])).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/tokens_per_second", "train/mfu", "eval/loss", "eval/perplexity"} <= tags, tags


def test_trackio_logs_loss_and_eval_metrics_at_the_optimizer_step(tmp_path, corpus):
    """--report_to trackio writes to the local store (TRACKIO_DIR, set by conftest), which `trackio show` serves:
    read back, the train and eval metrics are the Trainer's own, at its global steps (not trackio's log count)."""
    pytest.importorskip("trackio")
    from trackio.sqlite_storage import SQLiteStorage

    _, out = _run(
        tmp_path,
        corpus,
        "--max_steps",
        "6",
        "--logging_steps",
        "2",
        "--eval_steps",
        "3",
        "--num_sample_generations",
        "0",
        "--report_to",
        "trackio",
        "--project",
        "hf-simplegpt-tests",
        "--run_name",
        tmp_path.name,
    )
    logged = SQLiteStorage.get_logs("hf-simplegpt-tests", tmp_path.name)
    history = _history(out)
    train = {h["step"]: h["loss"] for h in history if "loss" in h}
    evals = {h["step"]: h["eval_loss"] for h in history if "eval_loss" in h}
    assert sorted(train) == [1, 2, 4, 6] and sorted(evals) == [0, 3, 6]  # logging_first_step, eval_on_start
    assert {row["step"]: row["train/loss"] for row in logged if "train/loss" in row} == pytest.approx(train)
    assert {row["step"]: row["eval/loss"] for row in logged if "eval/loss" in row} == pytest.approx(evals)
    assert all(row["step"] == row["train/global_step"] for row in logged if "train/global_step" in row)
    assert any("eval/perplexity" in row for row in logged)  # ThroughputCallback's metrics reach the tracker too


def test_continue_pretraining_a_saved_model_keeps_its_tokenizer(tmp_path, corpus):
    first, out = _run(tmp_path, corpus, "--max_steps", "5", "--num_sample_generations", "0", out="first")
    _, again = _run(
        tmp_path, corpus, "--max_steps", "2", "--model_name_or_path", out, "--num_sample_generations", "0", out="again"
    )
    assert AutoTokenizer.from_pretrained(again).get_vocab() == AutoTokenizer.from_pretrained(out).get_vocab()
    start = next(h["eval_loss"] for h in _history(again) if "eval_loss" in h)
    assert start == pytest.approx(first["eval_loss"], rel=1e-5)  # it starts where the first run ended


def test_torch_compile_run_trains_the_eager_curve_and_saves_plain_weights(tmp_path, corpus):
    """--torch_compile goes through dynamo (aot_eager: no C++ build in tests; inductor's difference from eager is
    measured by benchmarks/compile_train.py) and the saved keys carry no _orig_mod."""
    from safetensors import safe_open

    common = ("--max_steps", "3", "--logging_steps", "1", "--eval_on_start", "false", "--num_sample_generations", "0")
    metrics, out = _run(tmp_path, corpus, *common, "--torch_compile", "true", "--torch_compile_backend", "aot_eager")
    _, eager = _run(tmp_path, corpus, *common, out="eager")
    with safe_open(os.path.join(out, "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert "model.embed_tokens.weight" in keys and not any("_orig_mod" in k for k in keys)
    assert AutoModelForCausalLM.from_pretrained(out).num_parameters() > 0 and metrics["eval_loss"] < 6

    def steps(folder):
        return [h["loss"] for h in _history(folder) if "grad_norm" in h]

    assert len(steps(out)) == 3 and steps(out) == pytest.approx(steps(eager), abs=1e-5)
    assert metrics["saved_model_max_logit_difference"] <= 1e-4  # the compiled run's folder is its trained model


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, corpus):
    """4 blocks at once and 2 × 2 accumulated see the same blocks and must take the same steps."""
    common = (
        "--max_steps",
        "3",
        "--logging_steps",
        "1",
        "--eval_steps",
        "3",
        "--num_sample_generations",
        "0",
        "--eval_on_start",
        "false",
    )
    _run(tmp_path, corpus, *common, "--per_device_train_batch_size", "4", out="big")
    _run(
        tmp_path,
        corpus,
        *common,
        "--per_device_train_batch_size",
        "2",
        "--gradient_accumulation_steps",
        "2",
        out="accum",
    )

    def steps(out):
        return [v for h in _history(str(tmp_path / out)) if "grad_norm" in h for v in (h["loss"], h["grad_norm"])]

    big, accum = steps("big"), steps("accum")
    assert len(big) == 6
    assert accum == pytest.approx(big, rel=1e-4)


def test_no_config_uses_the_default_offline_run(tmp_path):
    """With no --config the recipe trains the default model on the built-in corpus (here for 2 steps only)."""
    out = str(tmp_path / "default")
    pretrain.main(
        [
            "--output_dir",
            out,
            "--max_steps",
            "2",
            "--eval_on_start",
            "false",
            "--save_steps",
            "2",
            "--num_sample_generations",
            "0",
            "--data_cache_dir",
            str(tmp_path / "cache"),
            "--disable_tqdm",
            "true",
        ]
    )
    config = json.load(open(os.path.join(out, "config.json")))
    assert (config["hidden_size"], config["num_hidden_layers"], config["max_position_embeddings"]) == (128, 4, 128)
    # The measured defaults (benchmarks/results/pretrain-default-batch8-dropout0.md): blocks of 8, no dropout, and
    # 400 steps, the tokens of the former 200 x 16.
    assert [config[f"{part}_dropout"] for part in ("embedding", "residual", "attention")] == [0.0, 0.0, 0.0]
    assert json.load(open(os.path.join(out, "trainer_state.json")))["train_batch_size"] == 8
    assert PretrainingArguments.__dataclass_fields__["max_steps"].default == 400
    card = open(os.path.join(out, "README.md")).read()
    assert "Python reference documentation" in card


# ------------------------------------------------------------------------------------------- subprocess launches


def _env():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _launch(args, timeout=240):
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *args]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU/gloo path; GPUs use recipes/accelerate/multi_gpu.yaml")
def test_two_process_ddp_on_cpu_trains_on_different_shards(tmp_path, corpus):
    """The README's exact command: `accelerate launch --multi_gpu --num_processes 2 recipes/pretrain.py ...`."""
    out = tmp_path / "ddp"
    proc = _launch(
        [
            "--multi_gpu",
            "--num_processes",
            "2",
            "recipes/pretrain.py",
            "--config",
            TINY,
            "--train_file",
            corpus,
            "--output_dir",
            str(out),
            "--max_steps",
            "6",
            "--record_batch_fingerprints",
            "true",
            "--data_cache_dir",
            str(tmp_path / "cache"),
        ]
    )
    ranks = [json.load(open(out / "batch_fingerprints" / f"rank{r}.json")) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # one batch per step on each process
    assert not set(ranks[0]) & set(ranks[1])  # different data shards
    state = json.load(open(out / "trainer_state.json"))
    assert state["global_step"] == 6
    card = open(out / "README.md").read()
    assert "(4 × 1 accumulation × 2 processes)" in card  # the global batch spans both processes
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.max_position_embeddings == 32
    assert "--- sample ---" in proc.stdout
