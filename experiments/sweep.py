"""`marllb sweep SWEEP.yaml`: every point of policies x axes x seeds, resumable, on a local pool or Ray.

A sweep file names a base config and the axes::

    name: moderate_paper
    base: ../configs/paper_moderate.yaml     # relative to the sweep file
    set: {duration_s: 60}                    # fixed overrides (dotted path: value), optional
    policies: [ecmp, wcmp, lsq, sed, gsq, gsed]
    checkpoints: {qmix: ../../runs/qmix/last.pt}   # label: checkpoint (policy 'agent'), optional
    axes:                                    # dotted path: values; the grid is their product
      traffic.rate: [518.8, 690.9, 696.5, 796.3]
    seeds: 1000-1009                         # or a list
    baseline: sed                            # the paired comparison's reference
    quick: {seeds: [1, 2], set: {duration_s: 5}}   # what --quick changes (any key above)

Design (plain, so that resuming is exact): a point is the fully resolved config of one run; its
key is a hash of that config (and of the checkpoint file's bytes), so the same point in two
sweeps, or after an edit that does not touch it, is the same key. A point runs as one task and
writes its run directory (the run contract of ``marllb sim run`` plus ``point.json``) to a temporary
name, then renames it to ``points/<key>/``: a directory there is a finished point and is never run
again. A point that raises is written to ``errors/<key>.json`` (its traceback) and the others go on;
the next invocation tries it again. A pool worker that dies hard (a signal, the OOM killer, a crash in
C) breaks the local pool: the rest go on in a new pool, the points that were running are retried
alone, and one that kills its worker again is recorded as failed. One sweep at a time per OUT (a start removes the temporary
directories a killed run left). Outputs in OUT::

    sweep.json          the sweep as resolved (file, axes, points planned)
    points/<key>/       finished points (config.yaml, summary.json, requests/steps.parquet, point.json)
    errors/<key>.json   points that failed in the last attempt
    points.parquet      one row per finished point: label, axis values, seed, key, summary scalars
    aggregate.parquet   per (label, axis values): n seeds, mean and 95 % CI of mean/p90 JCT, mean p50
                        and p99, drops, fairness, and the paired difference against the baseline
    aggregate.csv, table.md   the same, for people

Every policy at a seed sees the same requests: the simulator draws the workload and the policies'
choices from separate random streams (tests/experiments/test_sweep.py checks it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import traceback
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from simulator.config import (POLICY_NAMES, ConfigError, ExperimentConfig, UserError, parse_config,
                              read_yaml_mapping, set_path, yaml_line)

__all__ = ["SweepSpec", "SweepPoint", "load_sweep", "plan_points", "run_sweep", "aggregate",
           "SCALARS", "read_points"]

log = logging.getLogger(__name__)

#: summary keys copied into points.parquet
SCALARS = ("jct_mean_s", "jct_p50_s", "jct_p90_s", "jct_p99_s", "throughput_rps", "jain_fairness",
           "arrived", "completed", "dropped")
_SWEEP_KEYS = ("name", "base", "set", "policies", "checkpoints", "axes", "seeds", "baseline", "quick")
_SEED_RANGE = re.compile(r"^\s*(-?\d+)\s*-\s*(-?\d+)\s*$")


@dataclass
class SweepSpec:
    """A sweep file read and checked (paths resolved against the file's directory)."""

    path: Path
    name: str
    base: Path
    fixed: dict[str, Any]
    policies: list[str]
    checkpoints: dict[str, Path]
    axes: dict[str, list[Any]]
    seeds: list[int]
    baseline: str | None
    text: str = field(repr=False, default="")


@dataclass(frozen=True)
class SweepPoint:
    """One run of the sweep: its table label, axis values (in the sweep's axis order), seed,
    resolved config and key."""

    label: str
    axes: tuple[tuple[str, Any], ...]
    seed: int
    cfg: ExperimentConfig
    key: str

    def meta(self) -> dict[str, Any]:
        return {"key": self.key, "label": self.label, "axes": dict(self.axes), "seed": self.seed}


# ---------------------------------------------------------------------------------------------
# reading the sweep file
# ---------------------------------------------------------------------------------------------
def _err(spec_path: Path, text: str, loc: Sequence[str | int], msg: str) -> ConfigError:
    line = yaml_line(text, loc)
    where = f"{spec_path}:{line}" if line else str(spec_path)
    return ConfigError(f"{where}: {'.'.join(map(str, loc))}: {msg}")


def _seeds(value: Any, err) -> list[int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        m = _SEED_RANGE.match(value)
        if not m or int(m.group(1)) > int(m.group(2)):
            raise err("expected a list of integers or a range 'LO-HI'")
        return list(range(int(m.group(1)), int(m.group(2)) + 1))
    if isinstance(value, list) and value and all(isinstance(s, int) and not isinstance(s, bool) for s in value):
        if len(set(value)) != len(value):
            raise err("seeds repeat")
        return list(value)
    raise err("expected a non-empty list of integers or a range 'LO-HI'")


def load_sweep(path: str | Path, quick: bool = False,
               extra_checkpoints: dict[str, str] | None = None) -> SweepSpec:
    """Read a sweep file; ConfigError naming the file, line and key for every mistake. ``quick``
    applies the file's ``quick`` section (a reduced variant of the same sweep); ``extra_checkpoints``
    (label: path, relative to the working directory) adds agents to the file's."""
    path = Path(path)
    data, text = read_yaml_mapping(path, "sweep file")

    def err(loc, msg):
        return _err(path, text, loc, msg)

    unknown = [k for k in data if k not in _SWEEP_KEYS]
    if unknown:
        raise err([unknown[0]], f"unknown key; a sweep file has {', '.join(_SWEEP_KEYS)}")
    if quick:
        q = data.get("quick")
        if not isinstance(q, dict):
            raise err(["quick"], "--quick needs a 'quick' mapping in the sweep file")
        bad = [k for k in q if k not in _SWEEP_KEYS or k == "quick"]
        if bad:
            raise err(["quick", bad[0]], "unknown key")
        data = {**data, **q}
    base_raw = data.get("base")
    if not isinstance(base_raw, str):
        raise err(["base"], "expected the path of a config file")
    base = (path.parent / base_raw).resolve()
    if not base.is_file():
        raise err(["base"], f"no such config file {base}")
    fixed = data.get("set") or {}
    if not isinstance(fixed, dict):
        raise err(["set"], "expected a mapping of dotted field paths to values")
    policies = data.get("policies") or []
    if not isinstance(policies, list):
        raise err(["policies"], "expected a list of policy names")
    for i, p in enumerate(policies):
        if p not in POLICY_NAMES or p == "agent":
            raise err(["policies", i], f"unknown policy {p!r}; heuristics and oracles: "
                      f"{', '.join(n for n in POLICY_NAMES if n != 'agent')} (agents go in 'checkpoints')")
    checkpoints_raw = data.get("checkpoints") or {}
    if not isinstance(checkpoints_raw, dict):
        raise err(["checkpoints"], "expected a mapping label: checkpoint path")
    checkpoints = {}
    for label, cp in checkpoints_raw.items():
        if label in policies:
            raise err(["checkpoints", label], "label is also a policy name")
        cp_path = (path.parent / str(cp)).resolve()
        if not cp_path.is_file():
            raise err(["checkpoints", label], f"no such checkpoint {cp_path}")
        checkpoints[str(label)] = cp_path
    for label, cp in (extra_checkpoints or {}).items():
        if label in policies or label in checkpoints:
            raise ConfigError(f"--checkpoint {label}={cp}: label {label!r} is already in {path}")
        if not Path(cp).is_file():
            raise ConfigError(f"--checkpoint {label}={cp}: no such checkpoint")
        checkpoints[label] = Path(cp).resolve()
    if not policies and not checkpoints:
        raise err(["policies"], "nothing to run: give policies and/or checkpoints")
    axes = data.get("axes") or {}
    if not isinstance(axes, dict):
        raise err(["axes"], "expected a mapping of dotted field paths to lists of values")
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise err(["axes", name], "expected a non-empty list of values")
        if name in ("seed", "policy", "policy.name"):
            raise err(["axes", name], "seeds and policies have their own keys")
    seeds = _seeds(data.get("seeds", [0]), lambda msg: err(["seeds"], msg))
    labels = list(policies) + list(checkpoints)
    baseline = data.get("baseline")
    if baseline is not None and baseline not in labels:
        raise err(["baseline"], f"{baseline!r} is not one of the sweep's policies ({', '.join(labels)})")
    return SweepSpec(path=path, name=str(data.get("name") or path.stem), base=base, fixed=dict(fixed),
                     policies=list(policies), checkpoints=checkpoints,
                     axes={str(k): list(v) for k, v in axes.items()}, seeds=seeds,
                     baseline=baseline, text=text)


# ---------------------------------------------------------------------------------------------
# planning: every point resolved and keyed before anything runs
# ---------------------------------------------------------------------------------------------
def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    set_path(data, dotted, value, dotted)
    # rate and load are two ways to say one thing: setting one clears the other
    if dotted in ("traffic.rate", "traffic.load"):
        data["traffic"].pop("load" if dotted.endswith("rate") else "rate", None)


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def point_key(cfg: ExperimentConfig, checkpoint_digest: str = "") -> str:
    """16 hex digits of the SHA-256 of the resolved config (canonical JSON) and, for an agent,
    of its checkpoint file's bytes: the same run has the same key wherever it is planned."""
    doc = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256((doc + checkpoint_digest).encode()).hexdigest()[:16]


def plan_points(spec: SweepSpec) -> list[SweepPoint]:
    """Every point of the sweep in a fixed order (label, then axes, then seed); ConfigError when a
    point's config is invalid, naming the sweep file and the point."""
    base, _ = read_yaml_mapping(spec.base)
    entries: list[tuple[str, dict[str, Any], str]] = [(p, {"name": p}, "") for p in spec.policies]
    for label, cp in spec.checkpoints.items():
        entries.append((label, {"name": "agent", "checkpoint": str(cp)}, _file_digest(cp)))
    axis_names = list(spec.axes)
    points = []
    for label, policy, digest in entries:
        for values in product(*(spec.axes[a] for a in axis_names)):
            for seed in spec.seeds:
                data = json.loads(json.dumps(base))  # a deep copy of plain YAML data
                for dotted, value in spec.fixed.items():
                    _set_path(data, str(dotted), value)
                for dotted, value in zip(axis_names, values):
                    _set_path(data, dotted, value)
                data["seed"] = int(seed)
                data["policy"] = {**(data.get("policy") or {}), **policy}
                axes = tuple(zip(axis_names, values))
                where = f"{spec.path}: point {label} {dict(axes)} seed {seed} (base {spec.base})"
                cfg = parse_config(data, where)
                points.append(SweepPoint(label, axes, int(seed), cfg, point_key(cfg, digest)))
    keys = [p.key for p in points]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{spec.path}: two points resolve to the same run (an axis that changes nothing?)")
    return points


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _run_point(_state: None, job: tuple[ExperimentConfig, dict[str, Any], str]) -> dict[str, Any]:
    """Run one point in a worker; never raises for a failing run (the error is the result)."""
    cfg, meta, out = job
    out_dir = Path(out)
    final = out_dir / "points" / meta["key"]
    tmp = out_dir / "points" / f".tmp-{meta['key']}-{os.getpid()}"
    error_file = out_dir / "errors" / f"{meta['key']}.json"
    try:
        if cfg.policy.name == "agent":
            import torch

            torch.set_num_threads(1)
        from experiments.runs import run_one

        shutil.rmtree(tmp, ignore_errors=True)
        summary = run_one(cfg, tmp, progress=False).summary
        (tmp / "point.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(tmp, final)
        except OSError:  # another worker finished the same point first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
        error_file.unlink(missing_ok=True)
        return {"key": meta["key"], "ok": True, "summary": {k: summary.get(k) for k in SCALARS}}
    except Exception as exc:  # a crashing point is recorded; the sweep goes on
        shutil.rmtree(tmp, ignore_errors=True)
        record = {**meta, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        _atomic_write(error_file, json.dumps(record, indent=2) + "\n")
        return {"key": meta["key"], "ok": False, "error": record["error"]}


def finished_keys(out: Path) -> set[str]:
    points = out / "points"
    if not points.is_dir():
        return set()
    return {p.name for p in points.iterdir() if p.is_dir() and not p.name.startswith(".")}


def _run_on_local_pools(jobs: list[tuple], workers: int, out: Path, on_done) -> None:
    """Run ``jobs`` on local process pools, surviving workers that die hard (OOM killer, a signal,
    an abort in C): a dead worker breaks the whole pool, so the points that were running then (their
    temporary directories name them) become suspects and the rest go on in a fresh pool; at the end
    each suspect runs alone, and one that kills its worker again is recorded as failed."""
    from concurrent.futures.process import BrokenProcessPool

    from agents.common.executors import make_executor

    finished: set[int] = set()
    suspects: list[int] = []
    index_of = {job[1]["key"]: i for i, job in enumerate(jobs)}

    def done(i: int, result: dict[str, Any]) -> None:
        finished.add(i)
        on_done(i, result)

    def running_keys() -> set[str]:
        keys = set()
        for tmp in (out / "points").glob(".tmp-*"):
            keys.add(tmp.name.split("-")[1])
            shutil.rmtree(tmp, ignore_errors=True)
        return keys

    while True:
        todo = [i for i in range(len(jobs)) if i not in finished and i not in suspects]
        if not todo:
            break
        try:
            with make_executor("local", workers) as pool:
                pool.map(_run_point, [jobs[i] for i in todo], on_done=lambda j, r: done(todo[j], r))
        except BrokenProcessPool:
            new = [index_of[k] for k in running_keys() if k in index_of and index_of[k] not in finished]
            log.warning("a worker process died; %d point(s) that were running will be retried alone",
                        len(new) or len(todo))
            suspects += new or [i for i in todo if i not in finished]
    for i in suspects:
        try:
            with make_executor("local", 1) as solo:
                solo.map(_run_point, [jobs[i]], on_done=lambda _, r: done(i, r))
        except BrokenProcessPool as exc:
            running_keys()
            meta = jobs[i][1]
            record = {**meta, "error": f"its worker process died ({exc}): a signal, the OOM killer or a crash "
                      "in C; the point ran alone", "traceback": ""}
            _atomic_write(out / "errors" / f"{meta['key']}.json", json.dumps(record, indent=2) + "\n")
            on_done(i, {"key": meta["key"], "ok": False, "error": record["error"]})


@dataclass
class SweepOutcome:
    planned: int
    ran: int
    skipped: int
    failed: list[dict[str, Any]]
    points: pd.DataFrame
    aggregate: pd.DataFrame


def run_sweep(spec: SweepSpec, out: str | Path, *, workers: int = 1, backend: str = "local",
              ray_address: str | None = None, progress: bool = True) -> SweepOutcome:
    """Run every point of ``spec`` that ``out`` does not hold yet, then write the tables."""
    from agents.common.executors import BACKENDS, make_executor

    out = Path(out).resolve()
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if workers < 1:
        raise UserError(f"--workers {workers}: must be >= 1")
    points = plan_points(spec)
    for sub in ("points", "errors"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for stale in (out / "points").glob(".tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    _atomic_write(out / "sweep.json", json.dumps({
        "name": spec.name, "file": str(spec.path), "base": str(spec.base), "set": spec.fixed,
        "policies": spec.policies, "checkpoints": {k: str(v) for k, v in spec.checkpoints.items()},
        "axes": spec.axes, "seeds": spec.seeds, "baseline": spec.baseline,
        "points": [p.meta() for p in points]}, indent=2, default=str) + "\n")
    done = finished_keys(out)
    todo = [p for p in points if p.key not in done]
    log.warning("sweep %s: %d points, %d finished before, %d to run on %d %s worker(s)",
                spec.name, len(points), len(points) - len(todo), len(todo), workers, backend)
    failed: list[dict[str, Any]] = []
    if todo:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        jobs = [(p.cfg, p.meta(), str(out)) for p in todo]
        columns = (TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[failed]} failed"), TimeRemainingColumn())
        with Progress(*columns, disable=not progress) as bar:
            task = bar.add_task("points", total=len(jobs), failed=0)

            def on_done(i: int, result: dict[str, Any]) -> None:
                if not result["ok"]:
                    failed.append({**todo[i].meta(), "error": result["error"]})
                    log.warning("point %s failed: %s", todo[i].key, result["error"])
                bar.update(task, advance=1, failed=len(failed))

            if workers == 1 and backend == "local":
                for i, job in enumerate(jobs):
                    on_done(i, _run_point(None, job))
            elif backend == "local":
                _run_on_local_pools(jobs, workers, out, on_done)
            else:
                with make_executor(backend, workers, ray_address=ray_address) as pool:
                    pool.map(_run_point, jobs, on_done=on_done)
    table = read_points(out, points)
    agg = aggregate(table, list(spec.axes), spec.baseline)
    write_tables(out, table, agg, spec)
    return SweepOutcome(planned=len(points), ran=len(todo), skipped=len(points) - len(todo),
                        failed=failed, points=table, aggregate=agg)


# ---------------------------------------------------------------------------------------------
# tables
# ---------------------------------------------------------------------------------------------
def read_points(out: Path, points: Sequence[SweepPoint]) -> pd.DataFrame:
    """One row per finished point of ``points`` (the planned ones: results of points the sweep
    file no longer names stay on disk but are not in the table)."""
    rows = []
    for p in points:
        summary_path = out / "points" / p.key / "summary.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        row: dict[str, Any] = {"label": p.label, **dict(p.axes), "seed": p.seed, "key": p.key,
                               "is_agent": p.cfg.policy.name == "agent"}
        row.update({k: summary.get(k) for k in SCALARS})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["label", *(a for a, _ in points[0].axes), "seed", "key", "is_agent",
                                        *SCALARS] if points else None)
    for k in SCALARS:
        table[k] = pd.to_numeric(table[k], errors="coerce")
    return table


def aggregate(table: pd.DataFrame, axes: Sequence[str], baseline: str | None) -> pd.DataFrame:
    """Per (label, axis values) over seeds: n, mean and 95 % CI of mean and p90 JCT, mean p50/p99,
    dropped, fairness; with a baseline, the paired relative difference of mean JCT and of p90 JCT
    against it over the seeds both finished (mean and 95 % CI; -0.1 = 10 % lower)."""
    from experiments.evaluate import ci95

    group_cols = ["label", *axes]
    rows = []
    if table.empty:
        return pd.DataFrame(columns=group_cols + ["n"])
    base_rows = table[table["label"] == baseline] if baseline else table.iloc[0:0]
    for keys, grp in table.groupby(group_cols, sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row: dict[str, Any] = dict(zip(group_cols, keys))
        row["n"] = len(grp)
        for col in ("jct_mean_s", "jct_p90_s"):
            x = grp[col].to_numpy(float)
            row[col] = float(np.nanmean(x)) if np.isfinite(x).any() else math.nan
            row[f"{col}_ci95"] = ci95(x)
        for col in ("jct_p50_s", "jct_p99_s", "dropped", "jain_fairness", "throughput_rps"):
            x = grp[col].to_numpy(float)
            row[col] = float(np.nanmean(x)) if np.isfinite(x).any() else math.nan
        if baseline:
            mask = np.ones(len(base_rows), dtype=bool)
            for a, v in zip(axes, keys[1:]):
                mask &= (base_rows[a] == v).to_numpy()
            ref = base_rows[mask].set_index("seed")
            for col in ("jct_mean_s", "jct_p90_s"):
                paired = grp.set_index("seed")[col].to_frame("x").join(ref[col].rename("b"), how="inner")
                d = (paired["x"] / paired["b"] - 1.0).to_numpy(float)
                row[f"{col}_vs_{baseline}"] = float(np.nanmean(d)) if np.isfinite(d).any() else math.nan
                row[f"{col}_vs_{baseline}_ci95"] = ci95(d)
            row["n_paired"] = len(paired)
        rows.append(row)
    return pd.DataFrame(rows)


def _markdown(agg: pd.DataFrame, axes: Sequence[str], baseline: str | None) -> str:
    head = ["policy", *axes, "n", "mean JCT (ms)", "p90 JCT (ms)", "p99 JCT (ms)", "dropped", "Jain"]
    if baseline:
        head += [f"mean vs {baseline}", f"p90 vs {baseline}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def ms(v: float, ci: float) -> str:
        if not math.isfinite(v):
            return "–"
        return f"{1e3 * v:.1f} ± {1e3 * ci:.1f}" if math.isfinite(ci) else f"{1e3 * v:.1f}"

    def pct(v: float, ci: float) -> str:
        if not math.isfinite(v):
            return "–"
        return f"{100 * v:+.1f} ± {100 * ci:.1f} %" if math.isfinite(ci) else f"{100 * v:+.1f} %"

    for r in agg.to_dict("records"):
        cells = [str(r["label"]), *(f"{r[a]:g}" if isinstance(r[a], float) else str(r[a]) for a in axes),
                 str(r["n"]), ms(r["jct_mean_s"], r["jct_mean_s_ci95"]), ms(r["jct_p90_s"], r["jct_p90_s_ci95"]),
                 ms(r["jct_p99_s"], math.nan), f"{r['dropped']:.1f}", f"{r['jain_fairness']:.3f}"]
        if baseline:
            cells += [pct(r[f"jct_mean_s_vs_{baseline}"], r[f"jct_mean_s_vs_{baseline}_ci95"]),
                      pct(r[f"jct_p90_s_vs_{baseline}"], r[f"jct_p90_s_vs_{baseline}_ci95"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_tables(out: Path, table: pd.DataFrame, agg: pd.DataFrame, spec: SweepSpec) -> None:
    """points.parquet, aggregate.parquet/.csv and table.md, each written atomically."""
    for df, name in ((table, "points.parquet"), (agg, "aggregate.parquet")):
        tmp = out / f".{name}.tmp-{os.getpid()}"
        df.to_parquet(tmp, index=False)
        os.replace(tmp, out / name)
    _atomic_write(out / "aggregate.csv", agg.to_csv(index=False))
    note = (f"95 % Student-t intervals over seeds; ms; `vs {spec.baseline}`: paired relative difference "
            f"over the seeds both finished\n\n" if spec.baseline else "95 % Student-t intervals over seeds; ms\n\n")
    _atomic_write(out / "table.md", f"# sweep {spec.name}\n\n{note}{_markdown(agg, list(spec.axes), spec.baseline)}")
