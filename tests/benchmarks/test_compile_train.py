"""benchmarks/compile_train.py on its tiny preset: both variants train on the same batches and agree (timings are
never asserted). aot_eager captures the same graphs as inductor without generating C++ code."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import compile_train  # noqa: E402


def test_compiled_and_eager_training_take_the_same_steps_and_are_both_timed(tmp_path):
    result = compile_train.main(
        [
            "--preset",
            "tiny",
            "--backend",
            "aot_eager",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--output-dir",
            str(tmp_path),
            "--name",
            "t",
        ]
    )
    assert len(result["losses"]["eager"]) == len(result["losses"]["compiled"]) == 3
    assert result["losses"]["eager"][-1] < result["losses"]["eager"][0]  # it trains
    assert result["max_abs_loss_difference"] <= 1e-5
    for name in ("eager", "compiled"):
        assert result["rows"][name]["tokens_per_second"] > 0
    assert result["speedup"] > 0 and json.loads((tmp_path / "t.json").read_text())["speedup"] == result["speedup"]
    assert "| compiled |" in (tmp_path / "t.md").read_text()
