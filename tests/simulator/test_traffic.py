"""Traffic sources and job sizes against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.config import JobConfig
from simulator.traffic import DiurnalSource, JobSizes, PoissonSource, TraceSource


@pytest.mark.parametrize("job,var", [
    ({"dist": "exp", "mean_s": 0.2}, 0.04),
    ({"dist": "lognormal", "mean_s": 0.2, "sigma": 0.5}, 0.04 * (math.exp(0.25) - 1)),
    ({"dist": "pareto", "mean_s": 0.2, "alpha": 4.5}, None),
    ({"dist": "deterministic", "mean_s": 0.2}, 0.0),
])
def test_job_size_mean(job, var):
    sizes = JobSizes(JobConfig(**job), np.random.default_rng(1))
    x = np.array([sizes.next() for _ in range(40000)])
    sd = math.sqrt(var) if var is not None else x.std()
    # 4.5 standard errors: a wrong mean parameterisation fails, noise does not
    assert abs(x.mean() - 0.2) <= 4.5 * sd / math.sqrt(len(x)) + 1e-12
    if var:
        assert x.var() == pytest.approx(var, rel=0.1)


def test_poisson_rate_and_cv():
    src = PoissonSource(500.0, JobSizes(JobConfig(), np.random.default_rng(2)), np.random.default_rng(3))
    t = np.array([src.next_request()[0] for _ in range(20000)])
    gaps = np.diff(t)
    assert 1 / gaps.mean() == pytest.approx(500, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.03)


def test_diurnal_rate_follows_sinusoid():
    src = DiurnalSource(400.0, 3.0, 10.0, JobSizes(JobConfig(), np.random.default_rng(4)),
                        np.random.default_rng(5))
    t = []
    while True:
        tt = src.next_request()[0]
        if tt > 100:
            break
        t.append(tt)
    t = np.array(t)
    assert len(t) / 100 == pytest.approx(400, rel=0.03)  # mean rate
    phase = t % 10.0
    trough = ((phase < 1) | (phase > 9)).sum() / (100 / 10 * 2)  # per second near the trough
    peak = ((phase > 4) & (phase < 6)).sum() / (100 / 10 * 2)
    assert trough == pytest.approx(src.trough, rel=0.15)
    assert peak == pytest.approx(src.peak, rel=0.1)
    assert src.peak / src.trough == pytest.approx(3.0)


def test_trace_formats(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("time,size\n0.0,0.1\n0.5,0.2\n")
    src = TraceSource(str(csv), 1e-6)
    assert [src.next_request(), src.next_request(), src.next_request()] == [(0.0, 0.1), (0.5, 0.2), None]
    tsv = tmp_path / "b.tsv"
    tsv.write_text("time\tquery\n0.25\t/dummy.php?n=2000000\n1.0\t/dummy.php?x=1&n=10\n")
    src = TraceSource(str(tsv), 5e-8)
    assert src.next_request() == pytest.approx((0.25, 0.1))
    assert src.next_request() == pytest.approx((1.0, 5e-7))
