"""Policy sanity on `moderate` (4 x 2-CPU, 3 x 4-CPU) at 85 % load, exponential jobs.

Asserted as orderings of mean JCT over several seeds (paired by seed: same arrivals and sizes
for every policy), never as hard-coded numbers: ECMP > WCMP > SED and GSQ < LSQ, each in a
majority of seeds and on the mean over seeds. The full table of policies is a slow test that
prints it.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.config import ExperimentConfig
from simulator.run import run_experiment

SEEDS = (11, 12, 13, 14)


def _jct(policy: str, seed: int, duration_s: float = 50.0) -> float:
    cfg = ExperimentConfig.model_validate({
        "seed": seed, "duration_s": duration_s, "warmup_s": 10,
        "topology": {"preset": "moderate"},
        "traffic": {"load": 0.85, "job": {"dist": "exp", "mean_s": 0.2}},
        "policy": {"name": policy},
    })
    r = run_experiment(cfg, progress=False)
    s = r.summary
    assert s["arrived"] == s["completed"] + s["dropped"] + s["in_flight"]
    return s["jct_mean_s"]


@pytest.fixture(scope="module")
def table() -> dict[str, np.ndarray]:
    return {p: np.array([_jct(p, s) for s in SEEDS]) for p in ("ecmp", "wcmp", "sed", "lsq", "gsq")}


def _better(a: np.ndarray, b: np.ndarray) -> None:
    """a has lower mean JCT than b in a majority of seeds and on average."""
    assert (a < b).sum() > len(a) / 2, (a, b)
    assert a.mean() < b.mean(), (a, b)


def test_ecmp_worse_than_wcmp(table):
    _better(table["wcmp"], table["ecmp"])


def test_wcmp_worse_than_sed(table):
    _better(table["sed"], table["wcmp"])


def test_global_counts_beat_local(table):
    _better(table["gsq"], table["lsq"])


@pytest.mark.slow
def test_full_policy_table(capsys):
    rows = []
    for p in ("ecmp", "wcmp", "awcmp", "lsq", "sed", "lsq2", "sed2", "gsq", "gsed", "srt"):
        j = np.array([_jct(p, s, 70.0) for s in SEEDS])
        rows.append((p, j.mean(), j.std(ddof=1)))
    with capsys.disabled():
        print("\npolicy  mean JCT (s) over seeds %s, moderate, load 0.85, exp(0.2 s)" % (SEEDS,))
        for p, m, sd in rows:
            print(f"{p:6s}  {m:.4f} +- {sd:.4f}")
    assert all(np.isfinite(m) for _, m, _ in rows)
