"""Same config and seed => identical summary (minus wall_s) and requests; other seed differs."""

from __future__ import annotations

import json

import pandas as pd

from simulator.config import ExperimentConfig
from simulator.run import run_experiment


def _cfg(seed: int) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "seed": seed, "duration_s": 5, "topology": {"preset": "moderate", "clients": 3},
        "traffic": {"load": 0.8, "job": {"mean_s": 0.05}}, "policy": {"name": "sed2"},
    })


def _summary_bytes(r) -> str:
    s = dict(r.summary)
    s.pop("wall_s")
    return json.dumps(s, sort_keys=True)


def test_same_seed_identical():
    a = run_experiment(_cfg(7), progress=False)
    b = run_experiment(_cfg(7), progress=False)
    assert _summary_bytes(a) == _summary_bytes(b)
    pd.testing.assert_frame_equal(a.requests, b.requests)
    pd.testing.assert_frame_equal(a.steps, b.steps)
    assert a.summary["arrived"] > 500


def test_other_seed_differs():
    a = run_experiment(_cfg(7), progress=False)
    c = run_experiment(_cfg(8), progress=False)
    assert _summary_bytes(a) != _summary_bytes(c)
    assert not a.requests["t_arrive_s"].equals(c.requests["t_arrive_s"])
