"""benchmarks/bench.py runs end to end on tiny shapes and reports every row (timings are never asserted)."""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import bench  # noqa: E402


def test_bench_writes_every_row_with_ratios(tmp_path):
    shapes = "--layers 1 --hidden 32 --heads 2 --seq 16 --batch 2 --vocab 512 --new-tokens 3 --prompt-length 4"
    result = bench.main([*shapes.split(), "--repeats", "1", "--warmup", "0", "--output-dir", str(tmp_path), "--name", "t"])
    rows = {row["row"]: row for row in result["rows"]}
    assert list(rows) == [
        "training step tokens/s (eager, float32)",
        "peak training memory MiB (float32)",
        "inference forward tokens/s (float32)",
        "generate tokens/s, batch 1 (dynamic cache)",
        "generate tokens/s, batch 2 (dynamic cache)",
    ]
    for row in rows.values():
        assert row["simplegpt"] > 0 and row["gpt2"] > 0 and math.isclose(row["ratio"], row["simplegpt"] / row["gpt2"])
    # Parameters + AdamW state alone are 3 x 4 bytes per parameter: the measured peak must exceed them.
    params = sum(p.numel() for p in bench.build_models(bench.parse_args(shapes.split()))["GPT-2"].parameters())
    assert rows["peak training memory MiB (float32)"]["gpt2"] > 12 * params / 2**20
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == result["rows"]
    assert "| training step tokens/s (eager, float32) |" in (tmp_path / "t.md").read_text()
