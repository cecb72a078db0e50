"""Validation against queueing theory (network delay ~0, one server).

Sojourn = request arrival at the server -> completion, from the requests table. Each check is a
95 % confidence interval from 20 batch means (in order of arrival at the server, after the
warm-up) that must contain the closed-form mean; the interval must also be tight (half-width
< 8 % of the mean) so a wrong model cannot pass by being noisy. Fixed seeds: deterministic.
Little's law (time-average number at the server, an independent time integral, vs arrival
rate x mean sojourn) and exact conservation are checked on every run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.run import run_experiment
from simhelpers import batch_means_ci, single_server_cfg


def _check(cfg, expected_w: float) -> None:
    r = run_experiment(cfg, progress=False)
    s, q = r.summary, r.requests
    # conservation, exact, over the whole run
    assert s["arrived"] == s["completed"] + s["dropped"] + s["in_flight"]
    assert s["arrived"] == len(q)
    assert s["dropped"] == 0
    done = q[(q.t_server_arrive_s >= cfg.warmup_s) & q.sojourn_s.notna()].sort_values("t_server_arrive_s")
    w = done.sojourn_s.to_numpy()
    mean, hw = batch_means_ci(w)
    assert hw < 0.08 * mean, f"CI too wide to be a test: {mean:.4f} +- {hw:.4f}"
    assert abs(mean - expected_w) <= hw, f"mean sojourn {mean:.5f} +- {hw:.5f} vs theory {expected_w:.5f}"
    # Little's law on the measurement window: L = lambda W
    window = cfg.duration_s - cfg.warmup_s
    arrived = q[(q.t_server_arrive_s >= cfg.warmup_s)]
    lam = len(arrived) / window
    w_all = arrived.sojourn_s.fillna(cfg.duration_s - arrived.t_server_arrive_s)  # in system at end
    big_l = s["per_server"][0]["mean_jobs"]
    assert big_l == pytest.approx(lam * w_all.mean(), rel=0.03)


def test_mm1_fifo():
    lam, mu = 70.0, 100.0  # rho 0.7
    cfg = single_server_cfg(cores=1, workers=1, rate=lam, job={"dist": "exp", "mean_s": 1 / mu},
                            duration_s=600, warmup_s=20)
    _check(cfg, 1 / (mu - lam))


def _erlang_c_w(lam: float, mu: float, c: int) -> float:
    a = lam / mu
    rho = a / c
    top = a ** c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a ** k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam) + 1 / mu


def test_mmc_erlang_c():
    c, mu = 3, 100.0
    lam = 0.8 * c * mu
    cfg = single_server_cfg(cores=c, workers=c, rate=lam, job={"dist": "exp", "mean_s": 1 / mu},
                            duration_s=200, warmup_s=10)
    _check(cfg, _erlang_c_w(lam, mu, c))


def test_mg1_processor_sharing_heavy_tail():
    # lognormal sizes with sigma 1.5 (SCV e^2.25 - 1 ~ 8.5): PS mean sojourn is E[S]/(1 - rho)
    mean_s, rho = 0.01, 0.6
    cfg = single_server_cfg(cores=1, workers=10_000, rate=rho / mean_s,
                            job={"dist": "lognormal", "mean_s": mean_s, "sigma": 1.5},
                            duration_s=900, warmup_s=20)
    _check(cfg, mean_s / (1 - rho))


def test_md1_pollaczek_khinchine():
    d, rho = 0.01, 0.75
    lam = rho / d
    cfg = single_server_cfg(cores=1, workers=1, rate=lam, job={"dist": "deterministic", "mean_s": d},
                            duration_s=500, warmup_s=10)
    _check(cfg, d + rho * d / (2 * (1 - rho)))


def test_busy_fraction_is_rho():
    lam, mu = 50.0, 100.0
    cfg = single_server_cfg(cores=1, workers=1, rate=lam, job={"dist": "exp", "mean_s": 1 / mu},
                            duration_s=300, warmup_s=5)
    r = run_experiment(cfg, progress=False)
    # busy fraction = lambda E[S]; its sd over 300 s is ~ 1 %: allow 5 %
    assert r.summary["per_server"][0]["busy_fraction"] == pytest.approx(0.5, rel=0.05)
    assert np.isclose(r.summary["jain_fairness"], 1.0)
