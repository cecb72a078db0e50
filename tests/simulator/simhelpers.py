"""Shared helpers for the simulator tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

stats = pytest.importorskip("scipy.stats", reason="scipy (dev extra) is needed for the confidence intervals")

from simulator.config import ExperimentConfig


def single_server_cfg(*, cores: float, workers: int, rate: float, job: dict[str, Any],
                      duration_s: float, warmup_s: float, seed: int = 1,
                      backlog: int = 1_000_000) -> ExperimentConfig:
    """One LB, one server, near-zero network (100 Gb/s, 0 delay): a queue at the server."""
    return ExperimentConfig.model_validate({
        "name": "queue", "seed": seed, "duration_s": duration_s, "warmup_s": warmup_s,
        "topology": {"lbs": 1, "servers": [{"cores": cores, "workers": workers, "backlog": backlog}],
                     "link": {"bandwidth_bps": 1e11, "delay_s": 0.0, "queue_pkts": 100000}},
        "traffic": {"kind": "poisson", "rate": rate, "job": job, "response_bytes": 1000},
        "policy": {"name": "ecmp"},
        "lb": {"flow_timeout_s": 1e6},
    })


def batch_means_ci(x: np.ndarray, n_batches: int = 20, level: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the `level` confidence interval from `n_batches` batch means
    (x in time order; Student t with n_batches-1 degrees of freedom)."""
    m = len(x) // n_batches
    b = x[: m * n_batches].reshape(n_batches, m).mean(axis=1)
    hw = stats.t.ppf(0.5 + level / 2, n_batches - 1) * b.std(ddof=1) / math.sqrt(n_batches)
    return float(b.mean()), float(hw)

