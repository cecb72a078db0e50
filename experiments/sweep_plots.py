"""Paper figures of a finished sweep directory (vector PDF and PNG, one style), from its files alone.

* ``jct_cdf``: JCT CDF per policy (completed requests after warm-up, pooled over seeds), one panel
  per point of the axes;
* ``jct_percentiles``: p50/p90/p99 JCT per policy, mean over seeds with 95 % CI whiskers;
* ``work_share``: CPU work per server of each server group (servers grouped by their ``cores``),
  relative to the smallest group, per policy, with the capacity ratio as a reference line: the
  paper's Fig. 9/10 ("SED puts 2.3x more work on the 4-CPU servers");
* ``fairness_over_time``: Jain's index over the servers of the work each received per 1 s, divided
  by its cores (1 = every CPU got the same work), mean over seeds, per policy;
* ``training``: episode mean JCT over training episodes, for each checkpoint whose training run
  directory (the checkpoint's folder) holds ``scalars.csv``.

``marllb plot SWEEP_DIR`` redraws them; :func:`plot_sweep` is the entry point.
"""

from __future__ import annotations

import json
import logging
import math
from itertools import product
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from experiments.evaluate import ci95
from experiments.figure_style import paper_style, save_pdf_png
from experiments.runs import read_table
from simulator.config import UserError

__all__ = ["plot_sweep", "SWEEP_FIGURES", "read_sweep", "SweepData", "group_work", "work_ratios",
           "fairness_series"]

log = logging.getLogger(__name__)

SWEEP_FIGURES = ("jct_cdf", "jct_percentiles", "work_share", "fairness_over_time", "training")
_CDF_POINTS = 2000
_PERCENTILES = (("p50", "jct_p50_s"), ("p90", "jct_p90_s"), ("p99", "jct_p99_s"))


class SweepData:
    """A sweep directory read back: the plan (sweep.json), the points table, and per-point files."""

    def __init__(self, path: Path) -> None:
        self.path = path
        meta_path = path / "sweep.json"
        if not meta_path.is_file():
            raise UserError(f"{path}: not a sweep directory (no sweep.json)")
        self.meta = json.loads(meta_path.read_text())
        table = path / "points.parquet"
        if not table.is_file():
            raise UserError(f"{table}: missing (the sweep has not written its tables yet)")
        self.points = pd.read_parquet(table)
        self.aggregate = pd.read_parquet(path / "aggregate.parquet")
        self.axes: list[str] = list(self.meta["axes"])
        self.labels: list[str] = list(dict.fromkeys(self.points["label"]))
        self._configs: dict[str, dict[str, Any]] = {}
        self._summaries: dict[str, dict[str, Any]] = {}

    def cells(self) -> Iterator[tuple[tuple[Any, ...], pd.DataFrame]]:
        """(axis values, the points at them) for every point of the axes grid that has results."""
        for values in product(*(self.meta["axes"][a] for a in self.axes)):
            mask = np.ones(len(self.points), dtype=bool)
            for a, v in zip(self.axes, values):
                mask &= (self.points[a] == v).to_numpy()
            if mask.any():
                yield values, self.points[mask]

    def cell_title(self, values: Sequence[Any]) -> str:
        return ", ".join(f"{a.split('.')[-1]} {v:g}" if isinstance(v, float) else f"{a.split('.')[-1]} {v}"
                         for a, v in zip(self.axes, values)) or self.meta["name"]

    def requests(self, key: str) -> pd.DataFrame:
        """The point's requests table, sorted by id (experiments.runs.read_table)."""
        return read_table(self.path / "points" / key / "requests.parquet")

    def config(self, key: str) -> dict[str, Any]:
        """The point's resolved config (read once: every figure and the page ask for it)."""
        if key not in self._configs:
            import yaml

            self._configs[key] = yaml.safe_load((self.path / "points" / key / "config.yaml").read_text())
        return self._configs[key]

    def summary(self, key: str) -> dict[str, Any]:
        """The point's summary.json (read once)."""
        if key not in self._summaries:
            self._summaries[key] = json.loads((self.path / "points" / key / "summary.json").read_text())
        return self._summaries[key]


def read_sweep(path: str | Path) -> SweepData:
    return SweepData(Path(path))


def _colors(labels: Sequence[str]) -> dict[str, str]:
    return {lab: f"C{i % 10}" for i, lab in enumerate(labels)}


def _panels(n: int, width: float = 3.4, height: float = 2.6) -> tuple[Figure, list[Any]]:
    cols = 2 if n == 4 else min(n, 3)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _completed_after_warmup(req: pd.DataFrame, warmup_s: float) -> pd.DataFrame:
    return req[(req["status"] == "completed") & (req["t_arrive_s"] >= warmup_s)]


def _policy_lines(data: SweepData, line: Callable[[list[str]], tuple[Any, Any] | None],
                  lw: float) -> tuple[Figure, list[Any]]:
    """One panel per point of the axes grid, one line per policy: ``line(keys)`` gives its (x, y)
    from the policy's points in that panel (None: nothing to draw)."""
    cells = list(data.cells())
    fig, axes = _panels(len(cells))
    colors = _colors(data.labels)
    for ax, (values, pts) in zip(axes, cells):
        for label in data.labels:
            keys = list(pts[pts["label"] == label]["key"])
            xy = line(keys) if keys else None
            if xy is not None:
                ax.plot(*xy, lw=lw, color=colors[label], label=label)
        ax.set_title(data.cell_title(values))
    axes[0].legend(title="policy")
    return fig, axes


def jct_cdf(data: SweepData) -> Figure:
    def cdf(keys: list[str]) -> tuple[np.ndarray, np.ndarray] | None:
        warmup = float(data.config(keys[0]).get("warmup_s", 0.0))
        jct = np.concatenate([_completed_after_warmup(data.requests(k), warmup)["jct_s"].to_numpy(float)
                              for k in keys])
        if jct.size == 0:
            return None
        # at most _CDF_POINTS quantiles per line: the same curve, a small vector file
        prob = np.arange(1, jct.size + 1) / jct.size if jct.size <= _CDF_POINTS \
            else np.linspace(0.0, 1.0, _CDF_POINTS)
        return np.quantile(jct, prob) * 1e3, prob

    fig, axes = _policy_lines(data, cdf, lw=1.2)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("JCT (ms)")
        ax.set_ylabel("CDF")
    fig.suptitle("JCT CDF (completed requests after warm-up, all seeds)")
    return fig


def jct_percentiles(data: SweepData) -> Figure:
    cells = list(data.cells())
    fig, axes = _panels(len(cells), width=max(3.4, 0.55 * len(data.labels) + 1.5))
    width = 0.8 / len(_PERCENTILES)
    for ax, (values, pts) in zip(axes, cells):
        labels = [lab for lab in data.labels if (pts["label"] == lab).any()]
        x = np.arange(len(labels))
        for j, (name, col) in enumerate(_PERCENTILES):
            per = [pts[pts["label"] == lab][col].to_numpy(float) * 1e3 for lab in labels]
            mean = [np.nanmean(v) for v in per]
            err = [0.0 if not math.isfinite(ci95(v)) else ci95(v) for v in per]
            ax.bar(x + (j - 1) * width, mean, width, yerr=err, capsize=2, color=f"C{j}", label=name)
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_ylabel("JCT (ms)")
        ax.set_title(data.cell_title(values))
    axes[0].legend(title="percentile")
    fig.suptitle("JCT percentiles (mean over seeds, 95 % CI)")
    return fig


def group_work(req: pd.DataFrame, cores: Sequence[float], warmup_s: float) -> dict[float, float]:
    """CPU work per server (s) of each group of servers with the same nominal ``cores``: the work
    of the requests the group's servers received after warm-up, divided by the group's size."""
    req = req[req["t_arrive_s"] >= warmup_s]
    req = req[req["server"] >= 0]
    work = req.groupby("server")["work_s"].sum()
    out = {}
    for c in sorted(set(cores)):
        members = [i for i, ci in enumerate(cores) if ci == c]
        out[c] = float(sum(work.get(i, 0.0) for i in members)) / len(members)
    return out


def _nominal_cores(data: SweepData, key: str) -> list[float]:
    return [float(s["cores"]) for s in data.summary(key)["per_server"]]


def work_ratios(data: SweepData, pts: pd.DataFrame, label: str) -> tuple[np.ndarray, tuple[float, float] | None]:
    """Per seed of ``label`` among ``pts``: work per server of the biggest server group over that
    of the smallest; and the two groups' core counts (None with a single group)."""
    ratios, groups = [], None
    for key in pts[pts["label"] == label]["key"]:
        per = group_work(data.requests(key), _nominal_cores(data, key), float(data.config(key).get("warmup_s", 0.0)))
        cores = sorted(per)
        if len(cores) >= 2:
            groups = (cores[-1], cores[0])
            if per[cores[0]] > 0:
                ratios.append(per[cores[-1]] / per[cores[0]])
    return np.array(ratios), groups


def work_share(data: SweepData) -> Figure:
    cells = list(data.cells())
    fig, axes = _panels(len(cells), width=max(3.4, 0.55 * len(data.labels) + 1.5))
    for ax, (values, pts) in zip(axes, cells):
        labels = [lab for lab in data.labels if (pts["label"] == lab).any()]
        per_label = {lab: work_ratios(data, pts, lab) for lab in labels}
        x = np.arange(len(labels))
        mean = [r.mean() if r.size else np.nan for r, _ in per_label.values()]
        err = [ci95(r) for r, _ in per_label.values()]
        ax.bar(x, mean, 0.6, yerr=[0.0 if not math.isfinite(e) else e for e in err], capsize=2, color="C0")
        groups = next((g for _, g in per_label.values() if g), None)
        if groups:
            ax.axhline(groups[0] / groups[1], color="k", ls="--", lw=1,
                       label=f"capacity ratio {groups[0]:g}:{groups[1]:g}")
            ax.legend()
        ax.set_xticks(x, labels, rotation=30, ha="right")
        ax.set_ylabel("work per server, big / small group")
        ax.set_title(data.cell_title(values))
    fig.suptitle("Work per server of the biggest server group relative to the smallest (mean over seeds)")
    return fig


def fairness_series(req: pd.DataFrame, cores: Sequence[float], bin_s: float = 1.0) -> pd.Series:
    """Jain's index, per ``bin_s`` of arrival time at the servers, of the work each server received
    divided by its cores (bins with no work are left out)."""
    req = req[(req["server"] >= 0) & np.isfinite(req["t_server_arrive_s"])]
    if req.empty:
        return pd.Series(dtype=float)
    bins = np.floor(req["t_server_arrive_s"].to_numpy(float) / bin_s).astype(int)
    table = req.assign(bin=bins).pivot_table(index="bin", columns="server", values="work_s", aggfunc="sum",
                                             fill_value=0.0)
    table = table.reindex(columns=range(len(cores)), fill_value=0.0) / np.asarray(cores, float)
    x = table.to_numpy()
    total = x.sum(axis=1)
    keep = total > 0
    jain = total[keep] ** 2 / (x.shape[1] * (x[keep] ** 2).sum(axis=1))
    return pd.Series(jain, index=table.index[keep] * bin_s)


def fairness_over_time(data: SweepData) -> Figure:
    def mean_jain(keys: list[str]) -> tuple[Any, np.ndarray]:
        series = [fairness_series(data.requests(k), _nominal_cores(data, k)) for k in keys]
        mean = pd.concat(series, axis=1).mean(axis=1).sort_index()
        return mean.index, mean.to_numpy()

    fig, axes = _policy_lines(data, mean_jain, lw=1.0)
    for ax in axes:
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("Jain's index of work / core")
    fig.suptitle("Fairness over time (per 1 s, mean over seeds)")
    return fig


def training_curves(data: SweepData) -> Figure | None:
    curves = {}
    for label, cp in data.meta.get("checkpoints", {}).items():
        scalars = Path(cp).parent / "scalars.csv"
        if scalars.is_file():
            df = pd.read_csv(scalars)  # columns episode, tag, value
            jct = df[df["tag"] == "charts/episode_jct_mean_s"]
            if not jct.empty:
                curves[label] = jct
    if not curves:
        return None
    fig, (ax,) = _panels(1, width=5.0, height=3.2)
    for i, (label, jct) in enumerate(curves.items()):
        ax.plot(jct["episode"], jct["value"] * 1e3, lw=0.8, alpha=0.4, color=f"C{i}")
        smooth = jct["value"].rolling(10, min_periods=1).mean() * 1e3
        ax.plot(jct["episode"], smooth, lw=1.5, color=f"C{i}", label=f"{label} (10-episode mean)")
    ax.set_xlabel("training episode")
    ax.set_ylabel("episode mean JCT (ms)")
    ax.legend()
    fig.suptitle("Training curves")
    return fig


def plot_sweep(sweep: str | Path | SweepData, out_dir: str | Path | None = None) -> list[Path]:
    """Write every figure of the sweep (its directory, or that directory already read) as PDF and
    PNG into ``out_dir`` (default ``<sweep>/figures``); returns the files written."""
    data = sweep if isinstance(sweep, SweepData) else read_sweep(sweep)
    out = Path(out_dir) if out_dir else data.path / "figures"
    out.mkdir(parents=True, exist_ok=True)
    if data.points.empty:
        raise UserError(f"{data.path}: no finished points to plot")
    makers = {"jct_cdf": jct_cdf, "jct_percentiles": jct_percentiles, "work_share": work_share,
              "fairness_over_time": fairness_over_time, "training": training_curves}
    written: list[Path] = []
    with paper_style():
        for name, make in makers.items():
            fig = make(data)
            if fig is not None:
                written += save_pdf_png(fig, out / name)
    return written
