"""Co-located background load: exact capacity switching in the PS server, and the queueing
prediction for a constant stolen fraction f (M/M/1 with service rate mu (1 - f))."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.config import ExperimentConfig, UserError
from simulator.run import build_simulation, run_experiment
from simhelpers import batch_means_ci, single_server_cfg
from test_server_model import Clock, Req, _server


def test_capacity_switches_exactly():
    # one 1.5 s job on 1 core; background takes half the core during [1, 2): 1.0 s of work by
    # t=1, then rate 0.5 -> 0.5 s of work more by t=2: done at exactly 2.0
    ck = Clock()
    s = _server(1, 4, 0, ck)
    r = Req(1, 1.5)
    assert s.admit(r, 0.0)
    s.request_arrived(r, 0.0)
    ck.schedule(1.0, lambda _: s.set_background(0.5, 1.0), None)
    ck.schedule(2.0, lambda _: s.set_background(0.0, 2.0), None)
    ck.run()
    assert ck.log == [("done", 1, pytest.approx(2.0, abs=1e-12))]
    # two jobs of 1 s on 2 cores with 0.75 of the cores taken: capacity 0.5 shared by two
    # jobs -> 0.25 each -> both done at 4.0
    ck = Clock()
    s = _server(2, 4, 0, ck)
    s.set_background(0.75, 0.0)
    for i in (1, 2):
        q = Req(i, 1.0)
        assert s.admit(q, 0.0)
        s.request_arrived(q, 0.0)
    ck.run()
    assert [e[2] for e in ck.log] == [pytest.approx(4.0), pytest.approx(4.0)]
    with pytest.raises(ValueError):
        s.set_background(1.0, 5.0)


def test_constant_fraction_is_mm1_with_reduced_rate():
    lam, mu, f = 70.0, 200.0, 0.5  # effective rate 100, rho 0.7
    cfg = single_server_cfg(cores=1, workers=1, rate=lam, job={"dist": "exp", "mean_s": 1 / mu},
                            duration_s=600, warmup_s=20)
    cfg = ExperimentConfig.model_validate({**cfg.model_dump(),
                                           "background": {"fraction": f, "off_s": 0.0}})
    r = run_experiment(cfg, progress=False)
    q = r.requests
    done = q[(q.t_server_arrive_s >= cfg.warmup_s) & q.sojourn_s.notna()].sort_values("t_server_arrive_s")
    mean, hw = batch_means_ci(done.sojourn_s.to_numpy())
    want = 1 / (mu * (1 - f) - lam)
    assert hw < 0.08 * mean
    assert abs(mean - want) <= hw, f"{mean:.5f} +- {hw:.5f} vs M/M/1 {want:.5f}"
    # busy fraction counts the machine share the service uses: lambda/mu = 0.35 of the core
    assert r.summary["per_server"][0]["busy_fraction"] == pytest.approx(lam / mu, rel=0.05)


def test_on_off_bursts_follow_the_periods():
    cfg = ExperimentConfig.model_validate({
        "duration_s": 10, "topology": {"preset": "unittest"}, "traffic": {"rate": 20},
        "background": {"servers": [1, 4], "fraction": 0.25, "on_s": 1.0, "off_s": 1.5,
                       "dist": "deterministic"}})
    sim = build_simulation(cfg)
    seen = []
    for t in np.arange(0.1, 10, 0.5):
        sim.schedule(t, lambda t: seen.append((t, [s.background for s in sim.servers])), t)
    sim.run()
    for t, bgs in seen:
        on = (t % 2.5) >= 1.5  # off [0, 1.5), on [1.5, 2.5), ...
        assert bgs == [0.0, 0.25 if on else 0.0, 0.0, 0.0, 0.25 if on else 0.0, 0.0], t
    # exponential periods: the long-run share of time on is on/(on+off) = 0.4
    cfg = ExperimentConfig.model_validate({
        "duration_s": 400, "topology": {"lbs": 1, "servers": [{"cores": 1}]},
        "traffic": {"rate": 1}, "background": {"fraction": 0.5, "on_s": 2.0, "off_s": 3.0}})
    sim = build_simulation(cfg)
    on_time = []
    sim.schedule(0.0, lambda _: None, None)
    for t in np.arange(0.05, 400, 0.1):
        sim.schedule(t, lambda _: on_time.append(sim.servers[0].background > 0), None)
    sim.run()
    # ~80 on/off cycles: the fraction has sd ~ 0.03; allow 0.1
    assert abs(np.mean(on_time) - 0.4) < 0.1


def test_background_bad_server_index():
    cfg = ExperimentConfig.model_validate({
        "duration_s": 1, "topology": {"preset": "unittest"}, "traffic": {"rate": 5},
        "background": {"servers": [6]}})
    with pytest.raises(UserError, match="background.servers"):
        run_experiment(cfg, progress=False)
