"""benchmarks/gpu.py's tiny preset on a CPU: every step runs or says why it cannot (timings are never asserted)."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import gpu  # noqa: E402


@pytest.mark.slow  # a dozen processes, two DeepSpeed launches among them
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU preset; on a GPU run the script itself")
def test_tiny_preset_runs_every_step_a_cpu_can_and_names_why_not_the_others(tmp_path):
    rows = {row["step"]: row["status"] for row in gpu.main(["--preset", "tiny", "--output-dir", str(tmp_path)])}
    for step in ("bench", "compile_train", "pretrain-multi_gpu", "make-sft-data"):
        assert rows[step] == "measured", (step, rows[step], (tmp_path / f"{step}.log").read_text()[-3000:])
    for step in ("pretrain-deepspeed_zero2", "pretrain-deepspeed_zero3"):
        assert rows[step] == "measured" if gpu._installed("deepspeed") else rows[step].startswith("skipped")
    assert rows["pretrain-fsdp"].startswith("skipped: accelerate runs FSDP only on GPUs")
    for step in ("sft-qlora", "quantize-int4", "vllm-transformers-backend"):
        assert rows[step].startswith("skipped: needs a CUDA GPU") or "int4 weight-only needs a CUDA GPU" in rows[step]
    numbers = json.loads((tmp_path / "summary.json").read_text())["numbers"]
    assert numbers["compile_train"]["max_abs_loss_difference"] <= 1e-5
    assert numbers["pretrain-multi_gpu"]["saved_model_max_logit_difference"] <= 1e-4
    assert "training step tokens/s (eager, float32)" in numbers["bench"]
