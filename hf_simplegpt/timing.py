"""Timing that shared machines do not fool: the runs being compared alternate (A B A B ...) in one process, so load
from other processes hits them alike, and each reports its median."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a timer around it measures the work and not only its launch."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def interleaved_times(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int, device: str = "cpu"
) -> dict[str, list[float]]:
    """Seconds of each zero-argument callable in `runs` per repeat, alternating between them on every repeat; the
    first `warmup` rounds are not timed."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}.")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(warmup + repeats):
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            run()
            synchronize(device)
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def interleaved_medians(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int, device: str = "cpu"
) -> dict[str, float]:
    """Median seconds of each callable in `runs`, timed by `interleaved_times`."""
    return {name: statistics.median(t) for name, t in interleaved_times(runs, repeats, warmup, device).items()}
