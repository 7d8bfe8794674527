"""hf_simplegpt.pretraining: model arguments, throughput/MFU logging, batch fingerprints, the loss curve."""

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
from transformers import TrainerControl, TrainerState

from hf_simplegpt import pretraining
from hf_simplegpt.pretraining import ModelArguments, ThroughputCallback, flops_per_token, plot_loss_curve


def test_bad_model_arguments_name_the_fix():
    with pytest.raises(ValueError, match="clm .* mlm"):
        ModelArguments(objective="seq2seq")
    with pytest.raises(ValueError, match="mlm_probability"):
        ModelArguments(mlm_probability=1.5)


def test_build_model_takes_a_head_dim_so_a_pruned_shape_can_be_trained_from_scratch(tiny_tokenizer):
    args = ModelArguments(hidden_size=32, num_attention_heads=2, head_dim=8, intermediate_size=48, num_hidden_layers=1)
    model = pretraining.build_model(args, tiny_tokenizer)
    assert (model.config.num_attention_heads, model.config.head_dim, model.config.hidden_size) == (2, 8, 32)
    assert model.model.layers[0].self_attn.q_proj.weight.shape == (16, 32)  # 2 heads x 8 from the 32-wide stream


def test_flops_per_token_formula():
    # 6N for the weights, 12·L·H·T for attention (PaLM appendix B).
    assert flops_per_token(1000, 2, 32, 64) == 6 * 1000 + 12 * 2 * 32 * 64


def test_throughput_callback_adds_tokens_per_second_mfu_and_perplexity(monkeypatch):
    clock = iter([100.0, 102.0, 110.0])  # train begin, first log 2 s later, second log 8 s later
    monkeypatch.setattr(pretraining.time, "perf_counter", lambda: next(clock))
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
    flops = pretraining.measure_matmul_flops(size=64, seconds=0.01)
    assert 1e6 < flops < 1e15


def test_plot_loss_curve_writes_png_with_both_curves(tmp_path):
    history = [{"loss": 5.0 - i * 0.1, "step": i} for i in range(1, 20)]
    history += [{"eval_loss": 5.5 - i * 0.01, "step": i} for i in (0, 10, 19)]
    path = plot_loss_curve(history, str(tmp_path / "loss.png"))
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(path) > 10_000  # two curves, axes and legend, not an empty canvas


def test_batch_fingerprint_callback_records_training_batches_only(tmp_path):
    model = torch.nn.Linear(4, 4)
    cb = pretraining.BatchFingerprintCallback()
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
