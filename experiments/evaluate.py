"""`marllb eval CONFIG.yaml`: heuristics and trained checkpoints over held-out seeds and loads.

Every (policy, load, seed) point is one ordinary simulated run written with the run contract
(:func:`experiments.runs.run_one`) under ``OUT/<label>__load<L>__seed<S>/`` (``__load<L>`` only
when ``--loads`` is given). A checkpoint runs as ``policy: {name: agent, checkpoint: PATH}``,
exactly as in ``marllb sim run``, so its numbers come from the same simulation path as the
heuristics'. After all runs:

* ``OUT/runs.csv``: one row per run (label, load, seed, run directory and the summary scalars);
* ``OUT/comparison.csv``: per (label, load) over seeds: n, mean of ``jct_mean_s`` and of
  ``jct_p90_s`` with the half-width of their 95 % Student-t confidence interval (NaN for n = 1),
  mean throughput and Jain fairness, and ``vs_best_heuristic`` = mean JCT relative to the best
  (lowest mean JCT) local heuristic at that load (-0.2 = 20 % lower): agents and oracles
  (``simulator.policies.ORACLES``) are not candidates.

Held-out seeds: training draws its episode seeds from ``agents.common.seeding.episode_seed``
(31-bit hashes of the training seed), so small explicit seeds such as the default 1000,1001,1002
are, for practical purposes, never episodes an agent trained on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from simulator.policies import ORACLES
from simulator.config import POLICY_NAMES, ExperimentConfig, UserError

__all__ = ["EvalPoint", "plan_eval", "run_eval", "compare", "ci95", "DEFAULT_SEEDS"]

log = logging.getLogger(__name__)

DEFAULT_SEEDS = (1000, 1001, 1002)  #: held-out evaluation seeds
#: Student-t 97.5 % quantiles for 1..30 degrees of freedom (standard tables); beyond 30 the
#: quantile is interpolated towards the normal 1.960 as 1/df (error < 0.002).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)
_SCALARS = ("jct_mean_s", "jct_p50_s", "jct_p90_s", "jct_p99_s", "throughput_rps", "jain_fairness",
            "completed", "dropped")


@dataclass(frozen=True)
class EvalPoint:
    """One run of the evaluation: its table label, load (None: the config's), seed and config."""

    label: str
    load: float | None
    seed: int
    cfg: ExperimentConfig

    @property
    def dirname(self) -> str:
        load = "" if self.load is None else f"__load{self.load:g}"
        return f"{self.label}{load}__seed{self.seed}"


def _checkpoint_labels(checkpoints: Sequence[str]) -> list[str]:
    if len(checkpoints) <= 1:
        return ["agent"] * len(checkpoints)
    labels = []
    for path in checkpoints:
        p = Path(path)
        labels.append(f"agent-{p.parent.name or p.stem}" if p.stem == "last" else f"agent-{p.stem}")
    if len(set(labels)) != len(labels):
        labels = [f"agent{i + 1}" for i in range(len(checkpoints))]
    return labels


def plan_eval(cfg: ExperimentConfig, policies: Sequence[str], checkpoints: Sequence[str],
              seeds: Sequence[int], loads: Sequence[float] | None = None) -> list[EvalPoint]:
    """Every run of the evaluation, validated before any runs (UserError for a bad name, a
    missing checkpoint, or loads with trace traffic)."""
    unknown = [p for p in policies if p not in POLICY_NAMES or p == "agent"]
    if unknown:
        raise UserError(f"--policies: unknown policy {unknown[0]!r}; heuristics: "
                        f"{', '.join(p for p in POLICY_NAMES if p != 'agent')} (agents via --checkpoint)")
    for path in checkpoints:
        if not Path(path).is_file():
            raise UserError(f"--checkpoint: no such file {path}")
    if not policies and not checkpoints:
        raise UserError("nothing to evaluate: give --policies and/or --checkpoint")
    if loads and cfg.traffic.kind == "trace":
        raise UserError("--loads needs poisson or diurnal traffic, not a trace")
    entries: list[tuple[str, dict]] = [(p, {"name": p}) for p in policies]
    entries += [(label, {"name": "agent", "checkpoint": str(path)})
                for label, path in zip(_checkpoint_labels(checkpoints), checkpoints)]
    points = []
    for label, policy in entries:
        for load in (list(loads) if loads else [None]):
            for seed in seeds:
                update: dict = {"seed": int(seed),
                                "policy": cfg.policy.model_copy(update=policy)}
                if load is not None:
                    update["traffic"] = cfg.traffic.model_copy(update={"load": float(load), "rate": None})
                points.append(EvalPoint(label, load, int(seed), cfg.model_copy(update=update)))
    return points


def ci95(x: np.ndarray) -> float:
    """Half-width of the 95 % Student-t interval of the mean; NaN for fewer than 2 values."""
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan
    df = len(x) - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.960 + (_T975[-1] - 1.960) * len(_T975) / df
    return float(t * x.std(ddof=1) / math.sqrt(len(x)))


def compare(runs: pd.DataFrame) -> pd.DataFrame:
    """The per (label, load) comparison table described in the module docstring."""
    rows = []
    key_load = runs["load"].fillna(-1.0)
    for (label, load), grp in runs.groupby([runs["label"], key_load], sort=False):
        jct, p90 = grp["jct_mean_s"].to_numpy(float), grp["jct_p90_s"].to_numpy(float)
        rows.append({"label": label, "load": None if load < 0 else load, "n": len(grp),
                     "jct_mean_s": float(np.nanmean(jct)), "jct_mean_ci95_s": ci95(jct),
                     "jct_p90_s": float(np.nanmean(p90)), "jct_p90_ci95_s": ci95(p90),
                     "throughput_rps": float(grp["throughput_rps"].mean()),
                     "jain_fairness": float(grp["jain_fairness"].mean()),
                     "is_agent": bool(grp["is_agent"].iloc[0]), "is_oracle": label in ORACLES})
    table = pd.DataFrame(rows)
    best = {}
    for load, grp in table.groupby(table["load"].fillna(-1.0)):
        heur = grp[~grp["is_agent"] & ~grp["is_oracle"]]
        best[load] = float(heur["jct_mean_s"].min()) if len(heur) else math.nan
    table["vs_best_heuristic"] = [row.jct_mean_s / best[-1.0 if row.load is None or pd.isna(row.load)
                                                         else row.load] - 1.0
                                  for row in table.itertuples()]
    return table


def _run_point(_state: None, args: tuple[ExperimentConfig, Path]) -> dict:
    """One evaluation run in a worker (no progress bar; torch on one thread); returns its summary."""
    cfg, out_dir = args
    if cfg.policy.name == "agent":
        import torch

        torch.set_num_threads(1)
    from experiments.runs import run_one

    return run_one(cfg, out_dir, progress=False).summary


def run_eval(points: Sequence[EvalPoint], out: str | Path, *, progress: bool = True,
             runner=None, workers: int = 0, backend: str = "local",
             ray_address: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every point (run-contract directories under ``out``), write runs.csv and
    comparison.csv; returns (runs, comparison). ``workers`` > 0 runs the points on that many
    workers of ``backend`` (``"local"``: spawned processes; ``"ray"``: Ray actors, on the cluster
    at ``ray_address`` if given, see :mod:`agents.common.executors`). Each run is seeded by its
    config alone, so the numbers are the same as in process; ``runner`` is then not used. With
    ``"ray"`` on a cluster, ``out`` must be a directory every node can write (a shared file
    system): the run directories are written by the workers."""
    from experiments.runs import run_one

    from agents.common.executors import BACKENDS, make_executor

    out = Path(out)
    if backend not in BACKENDS:
        raise UserError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if workers < 0 or (backend == "ray" and workers < 1):
        raise UserError(f"workers={workers}: must be >= 0 (>= 1 with backend 'ray')")
    if workers > 0:
        log.warning("eval: %d runs on %d %s workers", len(points), workers, backend)
        with make_executor(backend, workers, ray_address=ray_address) as pool:
            # absolute run directories: a Ray worker's working directory may differ from ours
            summaries = pool.map(_run_point, [(pt.cfg, out.resolve() / pt.dirname) for pt in points])
    else:
        summaries = []
        for i, pt in enumerate(points, 1):
            log.warning("eval run %d/%d: %s", i, len(points), pt.dirname)
            summaries.append(run_one(pt.cfg, out / pt.dirname, progress=progress, runner=runner).summary)
    rows = []
    for pt, summary in zip(points, summaries):
        row = {"label": pt.label, "load": pt.load, "seed": pt.seed, "dir": pt.dirname,
               "is_agent": pt.cfg.policy.name == "agent"}
        row.update({k: summary.get(k) for k in _SCALARS})
        rows.append(row)
    runs = pd.DataFrame(rows)
    for k in _SCALARS:
        runs[k] = pd.to_numeric(runs[k], errors="coerce")
    table = compare(runs)
    runs.to_csv(out / "runs.csv", index=False)
    table.to_csv(out / "comparison.csv", index=False)
    return runs, table
