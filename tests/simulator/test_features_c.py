"""The compiled reservoir statistics (simulator/_stats.c through features.reservoir_stats)
against the vectorised numpy version they replaced (tests/simulator/features_reference.py), on
random reservoirs with tied values and tied times, every fill from empty to full; plus the
checks of bad input. (The statistics' definitions themselves are tested against numpy's
quantile/std and hand computations in test_shm_publish.py and tests/envs/test_envs.py.)"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.features import reservoir_stats, samples_stats
from tests.simulator.features_reference import reservoir_stats_numpy

ORDER_STATS = (1, 4)  # p90 and decayed p90: picked/interpolated from sorted values, bit-exact
ROBUST_EXACT = (6, 8)  # the median and the recent count


def random_reservoirs(rng: np.random.Generator, n_r: int, k: int) -> tuple[np.ndarray, ...]:
    v = rng.lognormal(-3.0, 1.5, (n_r, k))
    tied = rng.random((n_r, k)) < 0.3
    v[tied] = np.round(v[tied], 3)  # millisecond values: ties within a reservoir
    t = np.sort(rng.uniform(0.0, 20.0, (n_r, k)), axis=1)
    t[rng.random((n_r, k)) < 0.2] = 10.0  # equal sample times: equal weights
    fill = rng.integers(0, k + 1, n_r)
    unused = np.arange(k)[None, :] >= fill[:, None]
    t[unused] = v[unused] = 0.0  # as in a frame: unused slots are 0
    return t, v, fill


@pytest.mark.parametrize("k", [1, 2, 8, 32, 128])
@pytest.mark.parametrize("robust", [False, True])
def test_it_equals_the_numpy_version(k: int, robust: bool) -> None:
    rng = np.random.default_rng(1000 + k)
    t, v, fill = random_reservoirs(rng, 4000, k)
    got = reservoir_stats(t, v, fill, robust=robust)
    want = reservoir_stats_numpy(t, v, fill, robust=robust)
    assert got.shape == want.shape == (4000, 9 if robust else 5)
    empty = fill == 0
    assert empty.any() and np.isnan(got[empty]).all()
    # sums in another order: equal to the last bits
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300, equal_nan=True)
    exact = ORDER_STATS + (ROBUST_EXACT if robust else ())
    np.testing.assert_array_equal(got[:, exact], want[:, exact])


def test_other_decays_and_strided_input() -> None:
    rng = np.random.default_rng(7)
    t, v, fill = random_reservoirs(rng, 500, 16)
    samples = np.stack([t, v], axis=-1)  # (R, K, 2) as in a frame: t and v are strided views
    for decay in (0.5, 0.99, 1.0):
        got = reservoir_stats(samples[..., 0], samples[..., 1], fill, decay=decay, robust=True)
        want = reservoir_stats_numpy(t, v, fill, decay=decay, robust=True)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300, equal_nan=True)
        # the frame layout straight in: the same numbers
        np.testing.assert_array_equal(samples_stats(samples, fill, decay=decay, robust=True), got)


def test_selected_rows_equal_those_rows_of_the_whole() -> None:
    rng = np.random.default_rng(11)
    t, v, fill = random_reservoirs(rng, 300, 32)
    samples = np.stack([t, v], axis=-1)
    whole = samples_stats(samples, fill, robust=True)
    rows = np.array([299, 0, 17, 17, 150])  # any order, repeats allowed
    np.testing.assert_array_equal(samples_stats(samples, fill, robust=True, rows=rows), whole[rows])
    assert samples_stats(samples, fill, rows=[]).shape == (0, 5)


def test_bad_input_is_refused() -> None:
    t = np.zeros((3, 4))
    with pytest.raises(ValueError, match="same"):
        reservoir_stats(t, np.zeros((3, 5)), [1, 1, 1])
    with pytest.raises(ValueError, match="same"):
        reservoir_stats(t, t, [1, 1])
    with pytest.raises(ValueError, match="reservoir 2 has fill 5"):
        reservoir_stats(t, t, [1, 4, 5])
    with pytest.raises(ValueError, match="reservoir 0 has fill -1"):
        reservoir_stats(t, t, [-1, 0, 0])
    with pytest.raises(ValueError, match="same"):
        samples_stats(np.zeros((3, 4, 3)), [1, 1, 1])
    with pytest.raises(ValueError, match="row 3 is not a reservoir"):
        samples_stats(np.zeros((3, 4, 2)), [1, 1, 1], rows=[0, 3])
    assert reservoir_stats(np.zeros((0, 4)), np.zeros((0, 4)), []).shape == (0, 5)
