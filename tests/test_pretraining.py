"""hf_simplegpt.pretraining: model arguments, throughput/MFU logging, batch fingerprints, the loss curve."""

import json
import math
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


@pytest.mark.parametrize("tied", [False, True])
def test_flops_per_token_equals_torchs_flop_counter_over_a_training_step(tiny_tokenizer, tied):
    # torch.utils.flop_counter counts every matmul and SDPA call of one forward and backward pass: an independent
    # count of what 6N + 12·L·H·T predicts. With a tied output projection, N must still count its matmul.
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    args = ModelArguments(
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=48,
        num_hidden_layers=2,
        max_position_embeddings=16,
        tie_word_embeddings=tied,
    )
    model = pretraining.build_model(args, tiny_tokenizer)
    ids = torch.randint(0, model.config.vocab_size, (3, 16))
    # SDPA's math backend: without dropout a CPU picks its flash kernel, which the counter has no formula for.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(input_ids=ids, labels=ids).loss.backward()
    cfg = model.config
    predicted = flops_per_token(pretraining.matmul_parameters(model), cfg.num_hidden_layers, cfg.hidden_size, 16)
    assert counter.get_total_flops() == predicted * ids.numel()


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


def test_plot_loss_curve_draws_the_training_and_validation_losses(tmp_path, monkeypatch):
    import matplotlib.figure
    import matplotlib.image

    drawn, savefig = {}, matplotlib.figure.Figure.savefig

    def keep_lines(fig, *args, **kwargs):  # what is on the axes when the PNG is written
        drawn.update({line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in fig.axes[0].lines})
        return savefig(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_lines)
    history = [{"loss": 5.0 - i * 0.1, "step": i} for i in range(1, 20)]
    history += [{"eval_loss": 5.5 - i * 0.01, "step": i} for i in (0, 10, 19)]
    path = plot_loss_curve(history, str(tmp_path / "loss.png"))
    assert drawn == {
        "train": (list(range(1, 20)), [5.0 - i * 0.1 for i in range(1, 20)]),
        "validation": ([0, 10, 19], [5.5 - i * 0.01 for i in (0, 10, 19)]),
    }
    # And the PNG shows both: matplotlib's first two colours (train blue, validation orange) cover pixels.
    pixels = matplotlib.image.imread(path)[..., :3]
    for rgb in ((0.122, 0.467, 0.706), (1.0, 0.498, 0.055)):
        assert (abs(pixels - torch.tensor(rgb).numpy()).max(axis=-1) < 0.02).sum() > 100


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
