"""The plain-SimPy reference model (simulator/reference.py, the speed benchmarks' yardstick)
against queueing theory: with ``policy="wcmp"`` each server receives a Poisson thinning of the
arrivals in proportion to its cores, so it is an M/M/c queue and the mean JCT is the five hops
plus the cores-weighted mean of the Erlang-C sojourns."""

from __future__ import annotations

import math

import pytest

from simulator.reference import run_reference

HOP_S = 50e-6


def _mmc_sojourn(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    top = a ** c / math.factorial(c) / (1 - a / c)
    p_wait = top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam) + 1 / mu


def test_wcmp_reference_is_a_set_of_mmc_queues() -> None:
    cores, mu, load = [2, 4], 100.0, 0.7
    lam = load * sum(cores) * mu
    r = run_reference(cores, lam, 1 / mu, duration_s=600.0, seed=4, hop_delay_s=HOP_S, policy="wcmp")
    want = 5 * HOP_S + sum(c / sum(cores) * _mmc_sojourn(lam * c / sum(cores), mu, c) for c in cores)
    assert r["requests"] > 240_000
    # over 20 seeds of 150 s (63k requests) the ratio to theory had mean 0.998 and SD 1.4 %;
    # 600 s halve the SD to about 0.7 %, so 3 % is more than 4 SDs (two-sided < 1e-4)
    assert r["jct_mean_s"] == pytest.approx(want, rel=0.03)
    a, b = (run_reference(cores, lam, 1 / mu, duration_s=20.0, seed=5, policy="wcmp") for _ in range(2))
    assert (a["jct_mean_s"], a["requests"]) == (b["jct_mean_s"], b["requests"])  # same seed, same run


def test_unknown_reference_policy_is_one_clear_error() -> None:
    with pytest.raises(ValueError, match="policy must be 'sed' or 'wcmp', got 'lsq'"):
        run_reference([2, 4], 100.0, 0.01, 1.0, policy="lsq")
