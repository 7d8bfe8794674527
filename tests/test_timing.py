"""hf_simplegpt.timing: interleaved runs, untimed warm-up, medians."""

import pytest

from hf_simplegpt import timing


def test_runs_alternate_warmups_are_not_timed_and_medians_are_reported(monkeypatch):
    order, clock = [], iter(float(t) for t in range(1000))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    runs = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    times = timing.interleaved_times(runs, repeats=3, warmup=1)
    assert order == ["a", "b"] * 4  # A B A B ...: shared load hits both alike
    assert {name: len(t) for name, t in times.items()} == {"a": 3, "b": 3}  # the warm-up round is not kept
    assert all(t == 1.0 for ts in times.values() for t in ts)  # each run spans one tick of the fake clock
    assert timing.interleaved_medians(runs, repeats=2, warmup=0) == {"a": 1.0, "b": 1.0}
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        timing.interleaved_times(runs, repeats=0, warmup=0)
