"""End-to-end runs: trace replay, diurnal, run-time events, summary contract."""

from __future__ import annotations

import numpy as np

from simulator.config import ExperimentConfig
from simulator.results import PER_SERVER_KEYS, SUMMARY_KEYS
from simulator.run import run_experiment


def test_trace_replay_marllb_format(tmp_path):
    p = tmp_path / "rate.tsv"
    t = np.arange(1, 201) * 0.01
    p.write_text("time\tquery\n" + "".join(f"{x:.3f}\t/dummy.php?n={1000000 + i}\n" for i, x in enumerate(t)))
    cfg = ExperimentConfig.model_validate({
        "duration_s": 5, "traffic": {"kind": "trace", "path": str(p), "work_per_iteration_s": 1e-8},
        "topology": {"preset": "unittest"}})
    r = run_experiment(cfg, progress=False)
    q = r.requests
    assert len(q) == 200
    assert np.allclose(q.t_arrive_s, t)
    assert np.allclose(q.work_s, (1000000 + np.arange(200)) * 1e-8)
    assert r.summary["completed"] == 200
    assert set(SUMMARY_KEYS) <= set(r.summary)
    assert all(set(PER_SERVER_KEYS) <= set(s) for s in r.summary["per_server"])


def test_failure_drops_and_recovers():
    cfg = ExperimentConfig.model_validate({
        "seed": 2, "duration_s": 12, "topology": {"preset": "unittest"},
        "traffic": {"load": 0.6, "job": {"mean_s": 0.2}}, "policy": {"name": "wcmp"},
        "events": [{"at_s": 4, "server": 0, "kind": "fail"}, {"at_s": 8, "server": 0, "kind": "recover"},
                   {"at_s": 2, "server": 5, "kind": "capacity", "cores": 8}]})
    r = run_experiment(cfg, progress=False)
    s, q = r.summary, r.requests
    assert s["arrived"] == s["completed"] + s["dropped"] + s["in_flight"]
    dropped = q[q.status == "dropped"]
    assert len(dropped) > 0 and (dropped.server == 0).all()
    # refused/reset only while failed (t in [4, 8] plus in-flight SYNs)
    assert dropped.t_done_s.between(4.0, 8.01).all()
    after = q[(q.server == 0) & (q.t_arrive_s > 8.1)]
    assert len(after) > 0 and (after.status != "dropped").all()
    assert s["per_server"][5]["cores"] == 8


def test_fin_close_and_diurnal_and_steps():
    cfg = ExperimentConfig.model_validate({
        "seed": 4, "duration_s": 6, "topology": {"preset": "moderate"},
        "traffic": {"kind": "diurnal", "rate": 200, "period_s": 3, "close": "fin", "job": {"mean_s": 0.02}},
        "policy": {"name": "awcmp"}, "lb": {"step_s": 0.5}})
    r = run_experiment(cfg, progress=False)
    st = r.steps
    assert len(st) == 12 * 2 * 7  # steps at 0.5, 1.0, ..., 6.0 for 2 LBs x 7 servers
    assert (st.n_flow_on >= 0).all()
    # awcmp writes normalised weights
    last = st[st.t_s == st.t_s.max()]
    for _, g in last.groupby("lb"):
        assert g.weight.sum() == np.float64(1.0) or abs(g.weight.sum() - 1.0) < 1e-9
    assert st.fd_mean_s.notna().any() and st.fct_mean_s.notna().any()
    assert r.summary["completed"] > 0.9 * r.summary["arrived"]


def test_features_skipped_for_a_static_policy_change_nothing():
    """A static policy does not read features, so the model computes them on recorded steps
    only (lb.record_every = 3): the summary and the steps table equal those of the same run
    whose controller asks for features every step."""
    import pandas as pd

    from simulator.policies import StaticPolicy
    from simulator.run import build_simulation, collect

    class Reading(StaticPolicy):
        reads_features = True
        calls = 0

        def on_step(self, now_s, lb, features):
            Reading.calls += 1
            assert len(features["n_flow_on"]) == 6
            return None

    cfg = ExperimentConfig.model_validate({
        "seed": 4, "duration_s": 5, "warmup_s": 1, "topology": {"preset": "unittest"},
        "traffic": {"load": 0.8}, "policy": {"name": "sed"}, "lb": {"record_every": 3}})
    res = []
    for ctl in (StaticPolicy("sed"), Reading("sed")):
        sim = build_simulation(cfg, controller=ctl)
        sim.run()
        res.append(collect(sim, 0.0))
    (a, b), steps = res, round(5 / cfg.lb.step_s)
    assert Reading.calls == steps  # every step of the one LB
    assert {**a.summary, "wall_s": 0} == {**b.summary, "wall_s": 0}
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert len(a.steps) == 6 * (steps // 3)
