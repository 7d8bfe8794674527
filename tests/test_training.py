"""hf_simplegpt.training: argument parsing, throughput/MFU callback, checkpoint validation, loss plot."""

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file
from transformers import TrainerControl, TrainerState

from hf_simplegpt import training
from hf_simplegpt.data import DataArguments
from hf_simplegpt.training import (
    ModelArguments,
    PretrainingArguments,
    ThroughputCallback,
    checkpoint_problems,
    flops_per_token,
    parse_args,
    plot_loss_curve,
    resolve_resume_checkpoint,
)


# ------------------------------------------------------------------------------------------------------ parse_args


def test_parse_args_cli_beats_yaml_beats_defaults(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("hidden_size: 96\nlearning_rate: 3.0e-4\ntrain_file: a.txt\nmax_steps: 7\n")
    data, model, train = parse_args(
        DataArguments, ModelArguments, PretrainingArguments,
        args=["--config", str(config), "--learning_rate", "5e-4", "--output_dir", str(tmp_path / "o")],
    )  # fmt: skip
    assert (model.hidden_size, data.train_file, train.max_steps) == (96, "a.txt", 7)  # YAML over field defaults
    assert train.learning_rate == 5e-4  # CLI over YAML
    assert model.num_hidden_layers == ModelArguments.num_hidden_layers  # untouched default
    # The seed's optimisation defaults.
    assert (train.max_grad_norm, str(train.lr_scheduler_type.value)) == (1.0, "cosine")


def test_parse_args_rejects_unknown_yaml_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("hiden_size: 96\n")
    with pytest.raises(ValueError, match="hiden_size"):
        parse_args(ModelArguments, args=["--config", str(config)])


def test_hardware_defaults_make_cpu_runs_use_cpu(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "has_accelerator", lambda: False)
    (train,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path)])
    assert train.use_cpu is True and not train.bf16 and not train.fp16
    (train,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path), "--use_cpu", "false"])
    assert train.use_cpu is False  # an explicit flag still wins


def test_bad_model_arguments_name_the_fix():
    with pytest.raises(ValueError, match="clm .* mlm"):
        ModelArguments(objective="seq2seq")
    with pytest.raises(ValueError, match="mlm_probability"):
        ModelArguments(mlm_probability=1.5)


# ---------------------------------------------------------------------------------------------------- throughput


def test_flops_per_token_formula():
    # 6N for the weights, 12·L·H·T for attention (PaLM appendix B).
    assert flops_per_token(1000, 2, 32, 64) == 6 * 1000 + 12 * 2 * 32 * 64


def test_throughput_callback_adds_tokens_per_second_mfu_and_perplexity(monkeypatch):
    clock = iter([100.0, 102.0, 110.0])  # train begin, first log 2 s later, second log 8 s later
    monkeypatch.setattr(training.time, "perf_counter", lambda: next(clock))
    cb = ThroughputCallback(tokens_per_step=1000, flops_per_token=6e6, peak_flops=1e12)
    state, control = TrainerState(), TrainerControl()
    cb.on_train_begin(None, state, control)
    state.global_step = 10
    logs = {"loss": 3.0}
    state.log_history.append(dict(logs, step=10))
    cb.on_log(None, state, control, logs=logs)
    assert logs["tokens_per_second"] == pytest.approx(10 * 1000 / 2.0)
    assert logs["mfu"] == pytest.approx(5000 * 6e6 / 1e12, rel=1e-3)
    assert state.log_history[-1]["tokens_per_second"] == logs["tokens_per_second"]  # history stays in sync
    state.global_step = 14
    logs = {"loss": 2.5}
    cb.on_log(None, state, control, logs=logs)
    assert logs["tokens_per_second"] == pytest.approx(4 * 1000 / 8.0)
    eval_logs = {"eval_loss": 2.0}
    cb.on_log(None, state, control, logs=eval_logs)
    assert eval_logs["eval_perplexity"] == pytest.approx(math.exp(2.0))
    assert "tokens_per_second" not in eval_logs


def test_measure_matmul_flops_is_positive_and_finite():
    flops = training.measure_matmul_flops(size=64, seconds=0.01)
    assert 1e6 < flops < 1e15


# --------------------------------------------------------------------------------------------------- checkpoints


def _fake_checkpoint(path, step=4):
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    save_file({"w": torch.arange(1000, dtype=torch.float32)}, str(path / "model.safetensors"))
    torch.save({"state": {}}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    return path


def test_valid_checkpoint_has_no_problems(tmp_path):
    ckpt = _fake_checkpoint(tmp_path / "checkpoint-4")
    assert checkpoint_problems(str(ckpt)) == []
    assert resolve_resume_checkpoint(str(ckpt), str(tmp_path)) == str(ckpt)
    assert resolve_resume_checkpoint("true", str(tmp_path)) == str(ckpt)  # newest in output_dir
    assert resolve_resume_checkpoint(None, str(tmp_path)) is None


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda p: (p / "trainer_state.json").write_text("{truncated"), "trainer_state.json is not valid JSON"),
        (lambda p: (p / "trainer_state.json").unlink(), "trainer_state.json is missing"),
        (lambda p: (p / "model.safetensors").unlink(), "no model weights"),
        (lambda p: os.truncate(p / "model.safetensors", 200), "model.safetensors is unreadable"),
        (lambda p: os.truncate(p / "optimizer.pt", 50), "optimizer.pt is not a valid torch archive"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer state"),
    ],
)
def test_corrupted_checkpoint_is_a_clear_error(tmp_path, damage, problem):
    ckpt = _fake_checkpoint(tmp_path / "checkpoint-4")
    damage(ckpt)
    assert any(problem in p for p in checkpoint_problems(str(ckpt)))
    with pytest.raises(ValueError, match="corrupted or incomplete.*" + problem.split()[0]):
        resolve_resume_checkpoint(str(ckpt), str(tmp_path))


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no such checkpoint"):
        resolve_resume_checkpoint(str(tmp_path / "checkpoint-9"), str(tmp_path))
    with pytest.raises(ValueError, match="holds no checkpoint-N"):
        resolve_resume_checkpoint("true", str(tmp_path))


# ------------------------------------------------------------------------------------------------------- results


def test_plot_loss_curve_writes_png_with_both_curves(tmp_path):
    history = [{"loss": 5.0 - i * 0.1, "step": i} for i in range(1, 20)]
    history += [{"eval_loss": 5.5 - i * 0.01, "step": i} for i in (0, 10, 19)]
    path = plot_loss_curve(history, str(tmp_path / "loss.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000  # two curves, axes and legend, not an empty canvas


def test_batch_fingerprint_callback_records_training_batches_only(tmp_path):
    model = torch.nn.Linear(4, 4)
    cb = training.BatchFingerprintCallback()
    args = SimpleNamespace(output_dir=str(tmp_path), process_index=1)
    cb.on_train_begin(args, None, None, model=model)
    model.train()
    model(torch.ones(2, 4))
    model(torch.zeros(2, 4))
    model.eval()
    model(torch.ones(2, 4))
    cb.on_train_end(args, None, None)
    recorded = json.loads((tmp_path / "batch_fingerprints" / "rank1.json").read_text())
    assert len(recorded) == 2 and recorded[0] != recorded[1]


def test_hardware_defaults_turn_off_trl_bf16_on_cpu(monkeypatch, tmp_path):
    from trl import SFTConfig

    monkeypatch.setattr(training, "has_accelerator", lambda: False)
    (args,) = parse_args(SFTConfig, args=["--output_dir", str(tmp_path)])
    assert args.use_cpu is True and args.bf16 is False  # TRL alone would turn bf16 on (None -> True)


def test_resume_true_skips_a_partial_newest_checkpoint(tmp_path):
    good = _fake_checkpoint(tmp_path / "checkpoint-4")
    partial = _fake_checkpoint(tmp_path / "checkpoint-8", step=8)
    (partial / "optimizer.pt").unlink()  # killed while saving
    assert resolve_resume_checkpoint("true", str(tmp_path)) == str(good)
    (good / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match="Every checkpoint in .* is corrupted or incomplete"):
        resolve_resume_checkpoint("true", str(tmp_path))


def test_fsdp_or_deepspeed_launch_without_gpus_is_rejected(monkeypatch, tmp_path):
    """accelerate would silently run plain DDP (MULTI_CPU) instead of FSDP on CPUs; say so instead."""
    monkeypatch.setattr(training, "has_accelerator", lambda: False)
    (args,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path)])
    training.check_launch(args)  # a plain CPU run is fine
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="FSDP needs GPUs.*--multi_gpu --num_processes 2"):
        training.check_launch(args)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("WORLD_SIZE", "2")
    args.use_cpu = False
    with pytest.raises(ValueError, match="need --use_cpu true"):
        training.check_launch(args)


def test_an_explicit_precision_replaces_the_hardware_one(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "hardware_defaults", lambda: {"bf16": True, "use_cpu": True})
    config = tmp_path / "c.yaml"
    config.write_text("bf16: false\n")
    (args,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path)])
    assert args.bf16 is True  # the hardware default applies when nothing is said
    for given in (["--bf16", "false"], ["--config", str(config)]):
        (args,) = parse_args(PretrainingArguments, args=["--output_dir", str(tmp_path), *given])
        assert args.bf16 is False and args.fp16 is False
    assert training._given_keys(["--fp16", "--seed=3", "--config", str(config)]) == {"fp16", "seed", "config", "bf16"}
