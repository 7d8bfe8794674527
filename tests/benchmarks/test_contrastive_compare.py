"""benchmarks/contrastive_compare.py's paired comparison: is (b) above another ranker beyond noise, query by query."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import contrastive_compare  # noqa: E402


def test_paired_difference_counts_queries_and_bounds_the_difference():
    ours = np.array([1.0] * 30 + [0.0] * 60 + [1.0] * 10)
    theirs = np.array([0.0] * 30 + [0.0] * 60 + [1.0] * 5 + [0.0] * 5)  # ours finds 35 more, theirs none more
    clear = contrastive_compare.paired_difference(ours, theirs)
    assert clear["difference"] == pytest.approx(0.35)
    assert (clear["queries_better"], clear["queries_worse"]) == (35, 0)
    assert 0 < clear["ci95"][0] < 0.35 < clear["ci95"][1]
    assert clear["sign_test_p"] == pytest.approx(2 * 0.5**35)

    swapped = np.concatenate([ours[:20], theirs[20:]]), np.concatenate([theirs[:20], ours[20:]])
    even = contrastive_compare.paired_difference(*swapped)  # 20 queries won, 15 lost: not beyond noise
    assert (even["queries_better"], even["queries_worse"]) == (20, 15)
    assert even["ci95"][0] < 0 < even["ci95"][1] and even["sign_test_p"] > 0.4
