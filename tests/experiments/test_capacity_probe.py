"""bench/learning/capacity_probe.py: its regressions against known truth, its lagged inputs,
and the capacities it records against the scenario's hand-computed values."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "learning"))
from capacity_probe import LAGS, ProbeSedPolicy, RecordingPolicy, logistic, probe, probe_inputs, record, ridge  # noqa: E402

from simulator.config import load_config  # noqa: E402
from simulator.features import FEATURE_NAMES  # noqa: E402
from simulator.run import run_experiment  # noqa: E402


def test_ridge_and_logistic_recover_known_models():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20_000, 3))
    w_true = np.array([1.5, -2.0, 0.0])
    y = x @ w_true + 0.7 + rng.normal(scale=0.5, size=len(x))
    w = ridge(x, y, penalty=1e-6)
    assert np.allclose(w, [*w_true, 0.7], atol=0.02)  # standard error ~0.004
    p = 1 / (1 + np.exp(-(x @ w_true - 0.3)))
    v = logistic(x, (rng.random(len(x)) < p).astype(float), penalty=1e-6)
    assert np.allclose(v, [*w_true, -0.3], atol=0.12)  # standard error ~0.03


def test_probe_scores_a_readable_and_an_unreadable_target():
    """R^2 of a target that is a linear function of the inputs plus noise with a third of the
    signal's variance is 0.75 in expectation; an independent target's is about 0."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40_000, 4))
    signal = x @ np.array([1.0, 0.5, -0.5, 0.0])  # variance 1.5
    y = 1 + 0.1 * (signal + rng.normal(scale=np.sqrt(0.5), size=len(x)))
    r = probe((x[:30_000], y[:30_000]), (x[30_000:], y[30_000:]), penalty=1.0)
    assert abs(r["ridge_r2_test"] - 0.75) < 0.02
    noise = 1 + rng.normal(size=len(x))
    r0 = probe((x[:30_000], noise[:30_000]), (x[30_000:], noise[30_000:]), penalty=1.0)
    assert abs(r0["ridge_r2_test"]) < 0.01
    assert abs(r0["logistic_accuracy_test"] - r0["majority_accuracy_test"]) < 0.03


def test_probe_inputs_carry_the_lagged_log_features():
    t, s, f = 30, 2, len(FEATURE_NAMES)
    feats = np.arange(1, t + 1, dtype=float)[:, None, None] * np.ones((t, s, f))
    feats[3, 0, 0] = np.nan  # an empty reservoir: floored like a zero
    x = probe_inputs(feats)
    assert x.shape == (t, s, f * len(LAGS))
    for j, lag in enumerate(LAGS):
        step = max(0, 20 - lag)
        assert x[20, 1, j * f] == np.log(step + 1)
    assert x[3, 0, 0] == np.log(1e-4)


def test_recorded_capacities_follow_the_scenario():
    """hidden_dynamic: server 0 drops to 1 core at 20 s; server 1 is failed (0) from 30 s to
    45 s; the SMT servers 4-6 have 2 x (1 + 0.25) = 2.5 threads' worth, half of it (1.25) while
    their co-located burst is on; servers 2 and 3 keep their 2 cores."""
    cfg = load_config(ROOT / "experiments" / "configs" / "hidden_dynamic.yaml")
    cfg = cfg.model_copy(update={"duration_s": 50.0})
    feats, caps, times = record(cfg, 3, RecordingPolicy("lsq"))
    assert feats.shape == (2, len(times), 7, len(FEATURE_NAMES)) and times[0] >= cfg.warmup_s
    assert np.all(caps[:, [2, 3]] == 2.0)
    assert np.all(caps[times < 20, 0] == 2.0) and np.all(caps[times > 20, 0] == 1.0)
    failed = (times > 30) & (times < 45)
    assert np.all(caps[failed, 1] == 0.0) and np.all(caps[~failed & (times != 30) & (times != 45), 1] == 2.0)
    assert set(np.unique(caps[:, 4:])) == {1.25, 2.5}


def test_probe_sed_sets_mean_capacity_times_the_probes_reading():
    """A probe that reads 0.5 whatever it sees (zero coefficients, intercept 0.5) on server 4,
    and one that reads 10 (clipped to 2) on server 5: every step's weights are the mean
    capacities with server 4's halved and server 5's doubled."""
    cfg = load_config(ROOT / "experiments" / "configs" / "hidden_dynamic.yaml")
    cfg = cfg.model_copy(update={"duration_s": 8.0})
    n_in = len(FEATURE_NAMES) * len(LAGS)
    flat = {"mu": np.zeros(n_in), "sd": np.ones(n_in)}
    models = {4: flat | {"w": np.r_[np.zeros(n_in), 0.5]}, 5: flat | {"w": np.r_[np.zeros(n_in), 10.0]}}
    mean_cap = np.array([1.8, 1.7, 2.0, 2.0, 2.1, 2.2, 2.3])
    steps = run_experiment(cfg, progress=False, controller=ProbeSedPolicy(mean_cap, models)).steps
    want = mean_cap * np.array([1, 1, 1, 1, 0.5, 2.0, 1])
    got = steps.sort_values(["t_s", "lb", "server"])["weight"].to_numpy().reshape(-1, 7)
    assert got.shape == (2 * 32, 7)  # 2 LBs x 32 steps of 0.25 s
    assert np.allclose(got, want)
