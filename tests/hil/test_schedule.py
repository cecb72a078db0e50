"""hil.testbed.schedule: the testbed replays the simulator's own requests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hil.testbed.schedule import Schedule, build_schedule, lb_hash
from simulator.config import ExperimentConfig
from simulator.run import run_experiment

KW = dict(iters_per_cpu_s=5e7, cpu_per_core=0.5, n_lbs=3, n_clients=4)


def _cfg(traffic: dict, seed: int = 3, duration_s: float = 8.0) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"seed": seed, "duration_s": duration_s, "traffic": traffic})


@pytest.mark.parametrize("traffic", [
    {"kind": "poisson", "load": 0.8},
    {"kind": "poisson", "rate": 40.0, "job": {"dist": "lognormal", "mean_s": 0.05, "sigma": 1.5}},
    {"kind": "diurnal", "load": 0.9, "period_s": 3.0, "peak_to_trough": 4.0},
], ids=["poisson_load", "poisson_rate_lognormal", "diurnal"])
def test_equals_simulator_requests(traffic: dict) -> None:
    cfg = _cfg(traffic)
    req = run_experiment(cfg, progress=False).requests
    s = build_schedule(cfg, **KW)
    assert len(s) == len(req) > 100
    np.testing.assert_array_equal(s.id, req["id"].to_numpy())
    np.testing.assert_array_equal(s.t_s, req["t_arrive_s"].to_numpy())
    np.testing.assert_array_equal(s.work_s, req["work_s"].to_numpy())
    assert s.t_s.max() <= cfg.duration_s
    assert np.all(np.diff(s.t_s) > 0)


def test_trace_config_equals_simulator(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("time,size\n" + "".join(f"{0.05 * i:.3f},{0.01 + 0.001 * i:.4f}\n" for i in range(80)))
    cfg = _cfg({"kind": "trace", "path": str(trace)}, duration_s=3.0)
    req = run_experiment(cfg, progress=False).requests
    s = build_schedule(cfg, **KW)
    np.testing.assert_array_equal(s.t_s, req["t_arrive_s"].to_numpy())
    np.testing.assert_array_equal(s.work_s, req["work_s"].to_numpy())
    assert s.t_s[-1] == 3.0  # the simulator's own cut-off keeps an arrival at exactly duration_s


def test_columns_and_n_iter_scaling() -> None:
    cfg = _cfg({"load": 0.7})
    s = build_schedule(cfg, **KW)
    assert s.id.dtype == np.int64 and s.n_iter.dtype == np.int64
    np.testing.assert_array_equal(s.n_iter, np.rint(s.work_s * 0.5 * 5e7).astype(np.int64))
    # twice the real CPUs per simulated core => twice the loop count
    s2 = build_schedule(cfg, **{**KW, "cpu_per_core": 1.0})
    assert np.all(np.abs(s2.n_iter - 2 * s.n_iter) <= 1)
    np.testing.assert_array_equal(s.client, s.id % 4)
    assert set(np.unique(s.lb)) == {0, 1, 2}
    counts = np.bincount(s.lb)
    assert counts.min() > 0.25 * len(s)  # roughly uniform
    assert s.meta["seed"] == 3 and s.meta["n_lbs"] == 3 and s.meta["duration_s"] == 8.0


def test_deterministic_and_save_load(tmp_path: Path) -> None:
    cfg = _cfg({"kind": "diurnal", "load": 0.6, "period_s": 2.0})
    a, b = build_schedule(cfg, **KW), build_schedule(cfg, **KW)
    for k in ("id", "t_s", "work_s", "n_iter", "lb", "client"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
    path = tmp_path / "sched"  # no .npz suffix: saved to exactly this name
    a.save(path)
    c = Schedule.load(path)
    for k in ("id", "t_s", "work_s", "n_iter", "lb", "client"):
        got, want = getattr(c, k), getattr(a, k)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    assert c.meta == a.meta
    other = build_schedule(cfg.model_copy(update={"seed": 4}), **KW)
    assert not np.array_equal(other.t_s[:10], a.t_s[:10])
    sub = a.rows(2)
    assert np.all(sub.client == 2) and len(sub) == int(np.sum(a.client == 2))


def test_lb_hash_is_stable() -> None:
    ids = np.arange(10, dtype=np.int64)
    h = lb_hash(7, ids, 4)
    np.testing.assert_array_equal(h, lb_hash(7, ids, 4))
    assert not np.array_equal(h, lb_hash(8, ids, 4))
    np.testing.assert_array_equal(lb_hash(-1, ids, 1), np.zeros(10, dtype=np.int32))
    # pinned values: the assignment must not change between versions/machines
    assert lb_hash(0, np.arange(16), 2).tolist() == [1, 1, 0, 0, 0, 1, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1]
    assert lb_hash(12345, np.arange(16), 3).tolist() == [2, 1, 2, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 2, 1, 0]
    with pytest.raises(ValueError):
        lb_hash(0, ids, 0)
