"""benchmarks/prune_compare.py runs end to end on tiny shapes: every row, the speculative-decoding table with
identical tokens, the files (timings and losses are never asserted)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import prune_compare  # noqa: E402

from tests.recipes.test_prune import synthetic_corpus  # noqa: E402


def test_prune_compare_writes_every_row_and_the_drafts_keep_the_greedy_tokens(tmp_path, monkeypatch):
    slept = []  # the crossover's delays, seen where they are applied (a timing would depend on the machine's load)
    real_sleep = prune_compare.time.sleep
    monkeypatch.setattr(prune_compare.time, "sleep", lambda seconds: slept.append(seconds) or real_sleep(seconds))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(synthetic_corpus(200))
    tiny = (
        "--layers 2 --hidden 32 --heads 4 --vocab 300 --context 32 --batch 4 --pretrain-steps 4 --recovery-steps 2 "
        "--draft-layers 1 --draft-recovery-steps 2 --prompts 2 --prompt-length 4 --new-tokens 6 --repeats 1 "
        "--target-delays-ms 0,2"
    )
    result = prune_compare.main([*tiny.split(), "--train-file", str(corpus), "--output-dir", str(tmp_path / "out")])
    rows = {row["name"]: row for row in result["rows"]}
    assert list(rows) == [
        "(a) original",
        "(b) pruned, no recovery",
        "(c) pruned + distillation",
        "(d) same shape, from scratch",
    ]
    assert rows["(b) pruned, no recovery"]["parameters"] == rows["(c) pruned + distillation"]["parameters"]
    assert rows["(c) pruned + distillation"]["parameters"] == rows["(d) same shape, from scratch"]["parameters"]
    assert rows["(c) pruned + distillation"]["parameters"] < rows["(a) original"]["parameters"]
    assert rows["(c) pruned + distillation"]["tokens"] == rows["(d) same shape, from scratch"]["tokens"] == "256"
    assert list(result["speculative"]) == list(prune_compare.DRAFT_SETTINGS)
    for setting in result["speculative"].values():
        assert list(setting["drafts"]) == ["(c) pruned + distillation", "1-block draft"]
        for draft in setting["drafts"].values():
            assert draft["identical_to_plain_greedy"] and 0 <= draft["acceptance_rate"] <= 1
            assert 1 <= draft["tokens_per_target_call"] <= 6
    points = result["crossover"]["points"]
    assert [(p["delay_ms"], p["setting"]) for p in points] == [
        (0, "defaults"),
        (0, "adaptive"),
        (2, "defaults"),
        (2, "adaptive"),
    ]
    assert all(p["identical_to_plain_greedy"] for p in points)
    assert slept and set(slept) == {0.002}  # the 2 ms delay ran before the target's forward calls, and only it
    assert json.loads((tmp_path / "out" / "results.json").read_text())["rows"] == result["rows"]
    assert "| (d) same shape, from scratch |" in (tmp_path / "out" / "results.md").read_text()
