"""benchmarks/bench.py runs end to end on tiny shapes and reports every row (timings are never asserted)."""

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench  # noqa: E402

SHAPES = "--layers 1 --hidden 32 --heads 2 --seq 16 --batch 2 --vocab 512 --new-tokens 3 --prompt-length 4".split()


def test_bench_writes_every_row_with_ratios_parity_and_targets(tmp_path):
    argv = [
        *SHAPES,
        "--repeats",
        "1",
        "--warmup",
        "0",
        "--compile-backend",
        "aot_eager",
        "--output-dir",
        str(tmp_path),
        "--name",
        "t",
    ]
    result = bench.main(argv)
    rows = {row["row"]: row for row in result["rows"]}
    decode_rows = [
        f"{measure}, batch {batch} ({mode})"
        for batch in (1, 2)
        for mode in ("dynamic cache, eager", "static cache, torch.compile")
        for measure in ("decode tokens/s", "time to first token ms")
    ]
    assert list(rows) == [
        "training step tokens/s (eager, float32)",
        "peak training memory MiB (float32)",
        "inference forward tokens/s (float32)",
        *decode_rows,
    ]
    for row in rows.values():
        assert row["simplegpt"] > 0 and row["gpt2"] > 0 and math.isclose(row["ratio"], row["simplegpt"] / row["gpt2"])
    # Parameters + AdamW state alone are 3 x 4 bytes per parameter: the measured peak must exceed them.
    params = sum(p.numel() for p in bench.build_models(bench.parse_args(SHAPES))["GPT-2"].parameters())
    assert rows["peak training memory MiB (float32)"]["gpt2"] > 12 * params / 2**20
    # Same weights, same function: the bench's parity checks hold.
    assert result["parity"]["forward_max_abs_logit_diff"] < 1e-4
    assert result["parity"]["greedy_tokens_identical"] == {"batch 1": True, "batch 2": True}
    assert [t["target"] for t in result["targets"]] == [
        "dynamic-eager decode, SimpleGPT / GPT-2, batch 1",
        "static-compiled / dynamic-eager decode, SimpleGPT, batch 1",
        "dynamic-eager decode, SimpleGPT / GPT-2, batch 2",
        "static-compiled / dynamic-eager decode, SimpleGPT, batch 2",
    ]
    eager_b1 = rows["decode tokens/s, batch 1 (dynamic cache, eager)"]
    assert math.isclose(result["targets"][0]["value"], eager_b1["ratio"])
    assert len(result["load_average"]["before"]) == 3 and result["command"].endswith(" ".join(argv))
    assert json.loads((tmp_path / "t.json").read_text())["rows"] == result["rows"]
    table = (tmp_path / "t.md").read_text()
    assert "| decode tokens/s, batch 2 (static cache, torch.compile) |" in table and "Load average" in table


def test_bench_writes_to_the_ignored_out_folder_unless_publishing():
    assert bench.parse_args([]).output_dir == bench.BENCHMARKS_DIR / "out"
    assert bench.parse_args(["--publish"]).output_dir == bench.BENCHMARKS_DIR / "results"
    assert bench.parse_args(["--publish", "--output-dir", "elsewhere"]).output_dir == Path("elsewhere")
