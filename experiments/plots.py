"""Plots of finished runs (PNG): JCT CDF, JCT percentile bars per policy, per-server load over time.

Uses matplotlib's object API (``Figure``) with the Agg canvas, so no display and no global pyplot
state are needed.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from experiments.runs import RunData

__all__ = ["PLOT_FILES", "plot_runs", "jct_cdf", "percentile_bars", "server_load"]

log = logging.getLogger(__name__)

PLOT_FILES = ("jct_cdf.png", "jct_percentiles.png", "server_load.png")
_PERCENTILES = (("p50", "jct_p50_s"), ("p90", "jct_p90_s"), ("p99", "jct_p99_s"))


def _colors(labels: Sequence[str]) -> dict[str, str]:
    """One color per distinct label, in first-seen order (tab10 cycle)."""
    distinct = list(dict.fromkeys(labels))
    return {lab: f"C{i % 10}" for i, lab in enumerate(distinct)}


def _completed_jct_s(run: RunData) -> np.ndarray:
    """JCTs (s) of completed requests that arrived after the warm-up."""
    df = run.requests
    if df.empty or "jct_s" not in df:
        return np.empty(0)
    mask = df["status"] == "completed" if "status" in df else np.ones(len(df), bool)
    if "t_arrive_s" in df:
        mask &= df["t_arrive_s"] >= run.config.warmup_s
    jct = df.loc[mask, "jct_s"].to_numpy(dtype=float)
    return jct[np.isfinite(jct)]


def jct_cdf(runs: Sequence[RunData]) -> Figure:
    """Empirical CDF of JCT, one line per run (runs with the same policy share a color)."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.add_subplot()
    colors = _colors([r.label for r in runs])
    labelled: set[str] = set()
    positive = True
    for run in runs:
        jct = np.sort(_completed_jct_s(run))
        if jct.size == 0:
            log.warning("%s: no completed requests after warm-up; left out of the CDF", run.path)
            continue
        positive &= bool(jct[0] > 0)
        y = np.arange(1, jct.size + 1) / jct.size
        label = run.label if run.label not in labelled else None
        labelled.add(run.label)
        ax.step(jct * 1e3, y, where="post", color=colors[run.label], label=label, lw=1.4)
    if positive and labelled:
        ax.set_xscale("log")
    ax.set_xlabel("job completion time (ms)")
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    if labelled:
        ax.legend(title="policy")
    ax.set_title("JCT CDF (completed requests after warm-up)")
    return fig


def percentile_bars(runs: Sequence[RunData]) -> Figure:
    """p50/p90/p99 JCT per policy; bars are means over the policy's runs, whiskers min-max."""
    by_policy: dict[str, list[dict]] = defaultdict(list)
    for run in runs:
        by_policy[run.label].append(run.summary)
    policies = list(by_policy)
    fig = Figure(figsize=(max(5.0, 1.3 * len(policies) + 2), 4.5), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(_PERCENTILES)
    x = np.arange(len(policies))
    for j, (name, key) in enumerate(_PERCENTILES):
        vals = [[s[key] * 1e3 for s in by_policy[p] if s.get(key) is not None] for p in policies]
        mean = np.array([np.mean(v) if v else np.nan for v in vals])
        lo = np.array([mean[i] - min(v) if v else 0 for i, v in enumerate(vals)])
        hi = np.array([max(v) - mean[i] if v else 0 for i, v in enumerate(vals)])
        many = any(len(v) > 1 for v in vals)
        ax.bar(x + (j - 1) * width, mean, width, label=name, color=f"C{j}",
               yerr=np.vstack([lo, hi]) if many else None, capsize=3)
    ax.set_xticks(x, policies)
    ax.set_ylabel("job completion time (ms)")
    ax.legend(title="percentile")
    ax.grid(True, axis="y", alpha=0.3)
    n_runs = {p: len(v) for p, v in by_policy.items()}
    suffix = "" if max(n_runs.values()) == 1 else " (mean over runs, whiskers min-max)"
    ax.set_title("JCT percentiles per policy" + suffix)
    return fig


def _server_labels(run: RunData, servers: Sequence[int]) -> dict[int, str]:
    try:
        import topologies

        g = topologies.build(run.config.topology)
        names = topologies.servers(g)
        return {i: f"s{i + 1} ({g.nodes[names[i]]['cores']:g} cores)" for i in servers if i < len(names)}
    except Exception:  # labels only; the plot is still right without core counts
        return {i: f"s{i + 1}" for i in servers}


def server_load(runs: Sequence[RunData]) -> Figure | None:
    """Flows on each server over time (``n_flow_on`` summed over LBs at each step), one panel per
    policy (its first run). None if no run has steps with ``t_s``, ``server`` and ``n_flow_on``."""
    usable = []
    for r in runs:
        if not {"t_s", "server", "n_flow_on"} <= set(r.steps.columns) or r.steps.empty:
            log.warning("%s: steps lack t_s/server/n_flow_on; no load plot for it", r.path)
        elif all(r.label != u.label for u in usable):  # one panel per policy: its first run
            usable.append(r)
    if not usable:
        return None
    fig = Figure(figsize=(9, 2.6 * len(usable) + 0.6), layout="constrained")
    axes = fig.subplots(len(usable), 1, sharex=True, squeeze=False)[:, 0]
    for ax, run in zip(axes, usable):
        load = run.steps.groupby(["t_s", "server"])["n_flow_on"].sum().unstack("server").sort_index()
        servers = [int(s) for s in load.columns]
        labels = _server_labels(run, servers)
        cmap = "tab20" if len(servers) > 10 else "tab10"
        for i, s in enumerate(load.columns):
            ax.plot(load.index, load[s], lw=1.0, label=labels.get(int(s), f"s{int(s) + 1}"),
                    color=_cmap_color(cmap, i))
        ax.set_ylabel("flows on server")
        ax.set_title(f"{run.label}: {run.path.name}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, ncol=1 if len(servers) <= 8 else 2, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0))
    axes[-1].set_xlabel("simulated time (s)")
    fig.suptitle("Per-server load over time (n_flow_on summed over LBs)")
    return fig


def _cmap_color(name: str, i: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    cmap = colormaps[name]
    return cmap(i % cmap.N)


def plot_runs(runs: Sequence[RunData], out_dir: str | Path) -> list[Path]:
    """Write the PLOT_FILES for `runs` into `out_dir` (created); return the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    figs = {"jct_cdf.png": jct_cdf(runs), "jct_percentiles.png": percentile_bars(runs),
            "server_load.png": server_load(runs)}
    for name, fig in figs.items():
        if fig is None:
            continue
        fig.savefig(out / name, dpi=120)
        written.append(out / name)
    return written
