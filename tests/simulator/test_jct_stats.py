"""Exact streaming JCT statistics (simulator.jct_stats) against independent truth: the mean of
exact rationals (fractions.Fraction, correctly rounded by float()) and numpy's quantiles of the
whole array, bit for bit, whatever the chunking and however many counting passes it takes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from simulator import jct_stats
from simulator.jct_stats import exact_mean, linear_quantiles, order_statistics

QS = (0.0, 0.123, 0.5, 0.9, 0.99, 0.999, 1.0)


def _source(x: np.ndarray, pieces: int = 7):
    chunks = np.array_split(x, pieces)
    return lambda: iter(chunks)


def _samples(rng: np.random.Generator):
    """Arrays that stress the selection: spread, rounded (many ties), all equal, zeros, tiny,
    huge and a single value."""
    yield rng.lognormal(-3, 1.5, 4000)
    yield np.round(rng.exponential(0.1, 3000), 3)
    yield np.full(500, 0.25)
    z = rng.exponential(1.0, 999)
    z[::3] = 0.0
    yield z
    yield rng.lognormal(-3, 1, 700) * 1e-300
    yield rng.lognormal(0, 1, 700) * 1e300
    yield np.array([0.042])


@pytest.mark.parametrize("gather", [1, 7, 100, 1 << 20])  # 1: every pass counts, down to all 64 bits
def test_quantiles_and_mean_are_exact(monkeypatch, gather: int) -> None:
    monkeypatch.setattr(jct_stats, "_GATHER", gather)
    for x in _samples(np.random.default_rng(gather)):
        src = _source(x)
        assert linear_quantiles(src, len(x), QS) == [float(np.quantile(x, q)) for q in QS]
        assert exact_mean(src) == float(sum(map(Fraction, x)) / len(x))


def test_order_does_not_matter() -> None:
    x = np.random.default_rng(5).lognormal(-2, 2, 10_000)
    y = np.random.default_rng(6).permutation(x)
    assert exact_mean(_source(x, 3)) == exact_mean(_source(y, 11))
    assert linear_quantiles(_source(x, 3), len(x), QS) == linear_quantiles(_source(y, 11), len(y), QS)


def test_order_statistics_are_the_sorted_values(monkeypatch) -> None:
    monkeypatch.setattr(jct_stats, "_GATHER", 50)
    x = np.random.default_rng(9).gamma(0.5, 0.2, 2000)
    ranks = [0, 1, 999, 1000, 1998, 1999]
    got = order_statistics(_source(x), len(x), ranks)
    assert got == {r: float(np.sort(x)[r]) for r in ranks}


def test_empty_and_bad_input() -> None:
    assert exact_mean(lambda: iter([])) is None
    assert linear_quantiles(lambda: iter([np.array([])]), 0, (0.5, 0.9)) == [None, None]
    with pytest.raises(ValueError, match="non-negative"):
        exact_mean(_source(np.array([0.1, -0.2, 0.3]), 1))
    with pytest.raises(ValueError, match="non-negative"):
        exact_mean(_source(np.array([0.1, np.nan]), 1))
    with pytest.raises(ValueError, match="finite"):
        linear_quantiles(_source(np.array([0.1, np.inf]), 1), 2, (0.5,))
    with pytest.raises(ValueError, match="rank 5 outside 0..4"):
        order_statistics(_source(np.ones(5)), 5, [5])
