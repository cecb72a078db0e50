"""What one simulated run returns; `experiments` turns it into the run-contract files."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import pandas as pd

__all__ = ["SimResult", "SUMMARY_KEYS", "PER_SERVER_KEYS", "quantile", "jain_index", "finite_or_none"]

#: Keys `summary` must carry (run contract in DESIGN.md); more are allowed.
SUMMARY_KEYS = (
    "arrived", "completed", "dropped", "in_flight",
    "jct_mean_s", "jct_p50_s", "jct_p90_s", "jct_p99_s",
    "throughput_rps", "jain_fairness", "sim_time_s", "wall_s",
    "events", "packets", "per_server", "seed", "policy",
)
PER_SERVER_KEYS = ("id", "completed", "busy_fraction", "mean_jobs")


@dataclass
class SimResult:
    """summary: JSON-ready dict with at least SUMMARY_KEYS (wall-clock fields: only `wall_s`).
    requests: one row per request (id, client, lb, server, t_arrive_s, t_done_s, jct_s, work_s,
    status in {completed, dropped, in_flight}).
    steps: one row per LB step and server (t_s, lb, server, n_flow_on, weight, features...).
    Both are None when the run streamed them to its run directory (``run_experiment(out_dir=)``;
    read them back with experiments.runs.load_run)."""

    summary: dict[str, Any]
    requests: pd.DataFrame | None
    steps: pd.DataFrame | None
    extra: dict[str, Any] = field(default_factory=dict)


# Summary figures shared by simulated and real runs (simulator.run.collect, hil.testbed.collect).

def quantile(x: np.ndarray, q: float, *, reorder: bool = False) -> float | None:
    """np.quantile of x (linear), None for an empty array. ``reorder``: partition x in place
    instead of a copy (same value; x's order is lost, its values kept)."""
    return float(np.quantile(x, q, overwrite_input=reorder)) if len(x) else None


def jain_index(x: np.ndarray) -> float:
    """Jain's fairness (sum x)^2 / (n sum x^2); 1.0 when every x is 0."""
    return float(x.sum() ** 2 / (len(x) * (x ** 2).sum())) if (x ** 2).sum() > 0 else 1.0


def finite_or_none(summary: dict[str, Any]) -> dict[str, Any]:
    """Non-finite float values -> None (JSON has no NaN), in place; returns summary."""
    for k, v in list(summary.items()):
        if isinstance(v, float) and not math.isfinite(v):
            summary[k] = None
    return summary
