"""Simulated next to real: run one config in the simulator and on the testbed, compare, calibrate.

``marllb hil compare CONFIG --out DIR [--policies ...] [--seeds ...] [--calibrate]`` is
:func:`compare`: for every policy x seed it runs the simulator into ``DIR/sim/<policy>__<seed>``
(the run-directory writer :func:`experiments.runs.run_one`), the real testbed into
``DIR/real/<policy>__<seed>`` (an injected callable, ``marllb hil run``'s entry point) and, with
``calibrate``, a calibrated simulation into ``DIR/sim_cal/<policy>__<seed>`` (its trace and fitted
parameters in ``DIR/calibration/<policy>__<seed>/``); then :func:`compare_runs` writes

    DIR/report.md        Markdown tables: JCT mean/p90/p99 simulated vs real, relative discrepancy
                         (real - sim) / sim, completed/dropped counts, per-server request shares,
                         and with calibration the discrepancy before/after and the gap closed
    DIR/compare.json     the same numbers, machine-readable
    DIR/jct_cdf.png      JCT CDFs, one color per policy: simulated dashed, real solid,
                         calibrated simulation dotted
    DIR/server_share.png per-server share of requests, simulated vs real (vs calibrated)

Statistics follow the run contract (simulator.run.collect): counts (arrived/completed/dropped/
in_flight) over the whole run from the ``status`` column; JCT statistics over completed requests
that arrived at or after the config's ``warmup_s`` (``np.quantile``, linear interpolation);
server shares over requests that arrived after the warm-up and were given a server (server >= 0;
on the testbed the server is known from its answer, so refused/timed-out requests have none).
A policy with several seeds is aggregated by pooling its seeds' requests (JCTs pooled before the
percentiles, counts summed).

Calibration: :mod:`hil.calibration` (fit, calibrated config); reading run directories:
:mod:`hil.rundirs`.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from hil.calibration import Calibration, calibrated_config, fit_calibration
from hil.rundirs import RunTables, load_tables
from simulator.config import ExperimentConfig, UserError, apply_overrides, load_config, parse_config

__all__ = ["REPORT_FILES", "run_stats", "compare_runs", "point_config", "compare"]

log = logging.getLogger(__name__)

REPORT_FILES = ("report.md", "compare.json", "jct_cdf.png", "jct_cdf.pdf", "server_share.png", "server_share.pdf")

RealRunner = Callable[[ExperimentConfig, Path], Path]


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------

def _measured_jct(df: pd.DataFrame, warmup_s: float) -> np.ndarray:
    mask = (df["status"].astype(str) == "completed").to_numpy() & (df["t_arrive_s"].to_numpy(float) >= warmup_s)
    j = df["jct_s"].to_numpy(float)[mask]
    return j[np.isfinite(j)]


def _server_counts(df: pd.DataFrame, warmup_s: float, n_servers: int) -> np.ndarray:
    srv = pd.to_numeric(df["server"], errors="coerce").to_numpy(float)
    mask = (df["t_arrive_s"].to_numpy(float) >= warmup_s) & np.isfinite(srv) & (srv >= 0)
    return np.bincount(srv[mask].astype(np.int64), minlength=n_servers)[:max(n_servers, 1)]


def _n_servers(run: RunTables) -> int:
    n = len(run.summary.get("per_server") or [])
    srv = pd.to_numeric(run.requests["server"], errors="coerce").to_numpy(float)
    srv = srv[np.isfinite(srv)]
    if srv.size:
        n = max(n, int(srv.max()) + 1)
    return n


def _stats(jct: np.ndarray, status_counts: dict[str, int], server_count: np.ndarray,
           outcomes: dict[str, int] | None) -> dict[str, Any]:
    total = int(server_count.sum())
    out: dict[str, Any] = {
        "arrived": int(sum(status_counts.values())),
        "completed": status_counts.get("completed", 0),
        "dropped": status_counts.get("dropped", 0),
        "in_flight": status_counts.get("in_flight", 0),
        "measured": int(jct.size),
        "jct_mean_s": float(jct.mean()) if jct.size else None,
        "jct_p50_s": float(np.quantile(jct, 0.5)) if jct.size else None,
        "jct_p90_s": float(np.quantile(jct, 0.9)) if jct.size else None,
        "jct_p99_s": float(np.quantile(jct, 0.99)) if jct.size else None,
        "server_count": [int(c) for c in server_count],
        "server_share": [float(c / total) if total else None for c in server_count],
    }
    if outcomes is not None:
        out["outcomes"] = outcomes
    return out


def _status_counts(df: pd.DataFrame) -> dict[str, int]:
    vc = df["status"].astype(str).value_counts()
    return {k: int(vc.get(k, 0)) for k in ("completed", "dropped", "in_flight")}


def _outcomes(df: pd.DataFrame) -> dict[str, int] | None:
    if "outcome" not in df.columns:
        return None
    vc = df["outcome"].astype(str).value_counts()
    return {str(k): int(v) for k, v in sorted(vc.items())}


def run_stats(runs: Sequence[RunTables], n_servers: int) -> dict[str, Any]:
    """Statistics of one run, or of several pooled (requests concatenated per run, each run's
    own warm-up applied)."""
    jct = np.concatenate([_measured_jct(r.requests, r.config.warmup_s) for r in runs]) if runs else np.empty(0)
    status: dict[str, int] = defaultdict(int)
    outcomes: dict[str, int] | None = None
    counts = np.zeros(n_servers, dtype=np.int64)
    for r in runs:
        for k, v in _status_counts(r.requests).items():
            status[k] += v
        c = _server_counts(r.requests, r.config.warmup_s, n_servers)
        counts[:len(c)] += c[:n_servers]
        oc = _outcomes(r.requests)
        if oc is not None:
            outcomes = outcomes or {}
            for k, v in oc.items():
                outcomes[k] = outcomes.get(k, 0) + v
    return _stats(jct, dict(status), counts, outcomes)


_METRICS = (("mean", "jct_mean_s"), ("p90", "jct_p90_s"), ("p99", "jct_p99_s"))


def _rel(real: float | None, sim: float | None) -> float | None:
    if real is None or sim is None or sim == 0:
        return None
    return (real - sim) / sim


def _discrepancy(real: dict[str, Any], sim: dict[str, Any] | None) -> dict[str, float | None] | None:
    if sim is None:
        return None
    return {name: _rel(real[key], sim[key]) for name, key in _METRICS}


def _gap_closed(before: dict | None, after: dict | None) -> dict[str, float | None] | None:
    """Per metric 1 - |after| / |before|: 1 = calibration closed the whole gap, 0 = none,
    negative = it widened it."""
    if before is None or after is None:
        return None
    out: dict[str, float | None] = {}
    for name, _ in _METRICS:
        b, a = before[name], after[name]
        out[name] = None if b is None or a is None or b == 0 else 1.0 - abs(a) / abs(b)
    return out


# --------------------------------------------------------------------------------------------
# compare_runs
# --------------------------------------------------------------------------------------------

Pair = tuple  # (label, sim_dir, real_dir) or (label, sim_dir, real_dir, sim_cal_dir | None)


def compare_runs(pairs: Sequence[Pair], out_dir: str | Path, *,
                 calibrations: dict[str, "Calibration"] | None = None) -> dict[str, Any]:
    """Compare simulated and real run directories and write REPORT_FILES into ``out_dir``.

    ``pairs``: ``(label, sim_dir, real_dir)`` or ``(label, sim_dir, real_dir, sim_cal_dir)``
    (label e.g. ``sed/0``); the policy and seed come from each sim run's summary. Returns the
    dict written to compare.json: ``runs`` (one entry per pair), ``policies`` (pooled over the
    policy's seeds), ``files``."""
    if not pairs:
        raise UserError("compare: nothing to compare (no run pairs)")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{out}: cannot create output directory ({exc.strerror})") from None
    calibrations = calibrations or {}
    loaded = []
    labels = set()
    for pair in pairs:
        if len(pair) not in (3, 4):
            raise UserError(f"compare: a pair is (label, sim_dir, real_dir[, sim_cal_dir]), got {pair!r}")
        label, sim_dir, real_dir = str(pair[0]), pair[1], pair[2]
        if label in labels:
            raise UserError(f"compare: label {label!r} given twice")
        labels.add(label)
        cal_dir = pair[3] if len(pair) == 4 else None
        sim = load_tables(sim_dir)
        real = load_tables(real_dir)
        cal = load_tables(cal_dir) if cal_dir is not None else None
        loaded.append((label, sim, real, cal))
    n_servers = max(max(_n_servers(s), _n_servers(r)) for _, s, r, _ in loaded)

    runs_out = []
    by_policy: dict[str, list] = defaultdict(list)
    for label, sim, real, cal in loaded:
        s, r = run_stats([sim], n_servers), run_stats([real], n_servers)
        c = run_stats([cal], n_servers) if cal is not None else None
        before, after = _discrepancy(r, s), _discrepancy(r, c)
        entry: dict[str, Any] = {
            "label": label, "policy": sim.policy, "seed": sim.seed,
            "sim_dir": str(sim.path), "real_dir": str(real.path),
            "sim_cal_dir": str(cal.path) if cal is not None else None,
            "sim": s, "real": r, "sim_cal": c,
            "discrepancy": before, "discrepancy_cal": after, "gap_closed": _gap_closed(before, after),
        }
        if label in calibrations:
            entry["calibration"] = calibrations[label].to_dict()
        if real.policy != sim.policy:
            log.warning("%s: real run's policy %s differs from the simulated %s", label, real.policy, sim.policy)
        runs_out.append(entry)
        by_policy[sim.policy].append((label, sim, real, cal))

    policies_out = []
    for policy, group in by_policy.items():
        s = run_stats([g[1] for g in group], n_servers)
        r = run_stats([g[2] for g in group], n_servers)
        cals = [g[3] for g in group if g[3] is not None]
        c = run_stats(cals, n_servers) if len(cals) == len(group) else None
        before, after = _discrepancy(r, s), _discrepancy(r, c)
        policies_out.append({
            "policy": policy, "labels": [g[0] for g in group], "seeds": [g[1].seed for g in group],
            "sim": s, "real": r, "sim_cal": c,
            "discrepancy": before, "discrepancy_cal": after, "gap_closed": _gap_closed(before, after),
        })

    result: dict[str, Any] = {"n_servers": n_servers, "runs": runs_out, "policies": policies_out,
                              "files": list(REPORT_FILES)}
    from experiments.runs import _json_safe

    (out / "compare.json").write_text(json.dumps(_json_safe(result), indent=2) + "\n")
    (out / "report.md").write_text(_report_md(result))
    from experiments.figure_style import paper_style

    with paper_style():
        _plot_cdf(loaded, out / "jct_cdf")
        _plot_shares(policies_out, out / "server_share")
    return result


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------

def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1e3:.1f}"


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:+.1f} %"


def _share(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.1f} %"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _report_md(res: dict[str, Any]) -> str:
    parts = ["# Simulated vs real\n\n",
             "JCT over completed requests that arrived after the warm-up (ms); Δ = (real − sim) / sim. "
             "Counts over the whole run. A policy with several seeds pools their requests.\n\n"]
    header = ["run", "policy", "seed", "mean sim", "mean real", "Δ mean", "p90 sim", "p90 real", "Δ p90",
              "p99 sim", "p99 real", "Δ p99", "completed sim / real", "dropped sim / real"]
    rows = []
    for scope, entries in (("run", res["runs"]), ("policy", res["policies"])):
        for e in entries:
            s, r, d = e["sim"], e["real"], e["discrepancy"]
            name = e["label"] if scope == "run" else f"**{e['policy']}** (all seeds)"
            seed = str(e["seed"]) if scope == "run" else ",".join(str(x) for x in e["seeds"])
            rows.append([name, e["policy"], seed,
                         _ms(s["jct_mean_s"]), _ms(r["jct_mean_s"]), _pct(d["mean"]),
                         _ms(s["jct_p90_s"]), _ms(r["jct_p90_s"]), _pct(d["p90"]),
                         _ms(s["jct_p99_s"]), _ms(r["jct_p99_s"]), _pct(d["p99"]),
                         f"{s['completed']} / {r['completed']}", f"{s['dropped']} / {r['dropped']}"])
    parts += ["## JCT\n\n", _table(header, rows)]

    outcome_rows = [[e["label"], ", ".join(f"{k} {v}" for k, v in e["real"]["outcomes"].items())]
                    for e in res["runs"] if e["real"].get("outcomes")]
    if outcome_rows:
        parts += ["\n## Real outcomes\n\n", _table(["run", "outcomes"], outcome_rows)]

    has_cal = any(p["sim_cal"] is not None for p in res["policies"])
    share_header = ["policy", "server", "sim", "real"] + (["sim calibrated"] if has_cal else [])
    share_rows = []
    for p in res["policies"]:
        for j in range(res["n_servers"]):
            row = [p["policy"], f"s{j + 1}", _share(p["sim"]["server_share"][j]), _share(p["real"]["server_share"][j])]
            if has_cal:
                row.append(_share(p["sim_cal"]["server_share"][j]) if p["sim_cal"] else "–")
            share_rows.append(row)
    parts += ["\n## Share of requests per server (after warm-up)\n\n", _table(share_header, share_rows)]

    if has_cal:
        cal_header = ["policy", "Δ mean before", "Δ mean after", "gap closed (mean)", "Δ p90 before",
                      "Δ p90 after", "Δ p99 before", "Δ p99 after"]
        cal_rows = []
        for p in res["policies"]:
            if p["sim_cal"] is None:
                continue
            b, a, g = p["discrepancy"], p["discrepancy_cal"], p["gap_closed"]
            cal_rows.append([p["policy"], _pct(b["mean"]), _pct(a["mean"]),
                             "–" if g["mean"] is None else f"{g['mean'] * 100:.0f} %",
                             _pct(b["p90"]), _pct(a["p90"]), _pct(b["p99"]), _pct(a["p99"])])
        parts += ["\n## Calibration: discrepancy before and after\n\n",
                  "Gap closed = 1 − |Δ after| / |Δ before| (100 % = calibrated simulation matches the real "
                  "mean JCT; negative = further off).\n\n", _table(cal_header, cal_rows)]
        fit_rows = []
        for e in res["runs"]:
            c = e.get("calibration")
            if not c:
                continue
            cores = ", ".join(f"{s['nominal_cores']:g}→{s['cores']:.3g}"
                              + ("" if s["method"] == "ps_fit" else f" ({s['method']})") for s in c["servers"])
            lat = c["latency_outside_service_s"]
            fit_rows.append([e["label"], f"{c['speed_factor']:.4f}", f"{c['overhead_s'] * 1e3:.2f}",
                             f"{c['iters_per_cpu_s_fit']:.4g}", cores, "–" if lat is None else f"{lat * 1e3:.2f}"])
        if fit_rows:
            parts += ["\n## Fitted parameters\n\n",
                      "Speed factor k: real CPU per iteration / calibrated; overhead o: simulated CPU-s added to "
                      "every job (trace size = k·work + o; the script's fixed CPU plus Apache's around the "
                      "request); cores nominal → fitted (simulated cores, processor-sharing fit: a check of the "
                      "CPU quotas, not applied); latency outside service: median real jct − service_s, a "
                      "diagnostic (not applied).\n\n",
                      _table(["run", "k", "o (ms)", "iterations / CPU-s", "cores", "latency outside service (ms)"],
                             fit_rows)]
            notes = [f"- {e['label']}: {n}" for e in res["runs"] if e.get("calibration")
                     for n in e["calibration"]["notes"]]
            if notes:
                parts += ["\nNotes:\n\n", "\n".join(notes) + "\n"]
    return "".join(parts)


def _plot_cdf(loaded: Sequence[tuple], stem: Path) -> None:
    from matplotlib.figure import Figure

    from experiments.figure_style import save_pdf_png

    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.add_subplot()
    groups: dict[str, dict[str, list[RunTables]]] = {}
    for _, sim, real, cal in loaded:
        g = groups.setdefault(sim.policy, {"sim": [], "real": [], "sim_cal": []})
        g["sim"].append(sim)
        g["real"].append(real)
        if cal is not None:
            g["sim_cal"].append(cal)
    styles = {"real": ("-", "real"), "sim": ("--", "sim"), "sim_cal": (":", "sim calibrated")}
    positive, drawn = True, False
    for i, (policy, g) in enumerate(groups.items()):
        for kind, (ls, name) in styles.items():
            if not g[kind]:
                continue
            jct = np.sort(np.concatenate([_measured_jct(r.requests, r.config.warmup_s) for r in g[kind]]))
            if jct.size == 0:
                continue
            positive &= bool(jct[0] > 0)
            drawn = True
            y = np.arange(1, jct.size + 1) / jct.size
            ax.step(jct * 1e3, y, where="post", color=f"C{i % 10}", ls=ls, lw=1.4, label=f"{policy} {name}")
    if positive and drawn:
        ax.set_xscale("log")
    ax.set_xlabel("job completion time (ms)")
    ax.set_ylabel("fraction of requests ≤ x")
    ax.set_ylim(0, 1.0)
    ax.grid(True, which="both", alpha=0.3)
    if drawn:
        ax.legend(fontsize=8)
    ax.set_title("JCT CDF: simulated (dashed) vs real (solid)")
    save_pdf_png(fig, stem)


def _plot_shares(policies: Sequence[dict], stem: Path) -> None:
    from matplotlib.figure import Figure

    from experiments.figure_style import save_pdf_png

    n = len(policies)
    fig = Figure(figsize=(8, 2.6 * n + 0.6), layout="constrained")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    for ax, p in zip(axes, policies):
        kinds = [("sim", "sim", "C0"), ("real", "real", "C1")]
        if p["sim_cal"] is not None:
            kinds.append(("sim_cal", "sim calibrated", "C2"))
        m = len(p["sim"]["server_share"])
        x = np.arange(m)
        width = 0.8 / len(kinds)
        for k, (key, name, color) in enumerate(kinds):
            vals = np.array([np.nan if v is None else v * 100 for v in p[key]["server_share"]])
            ax.bar(x + (k - (len(kinds) - 1) / 2) * width, vals, width, label=name, color=color)
        ax.set_xticks(x, [f"s{j + 1}" for j in range(m)])
        ax.set_ylabel("share of requests (%)")
        ax.set_title(p["policy"], fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Per-server share of requests: simulated vs real")
    save_pdf_png(fig, stem)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------
# compare: run everything
# --------------------------------------------------------------------------------------------

def point_config(cfg: ExperimentConfig, policy: str, seed: int) -> ExperimentConfig:
    """cfg with ``policy.name`` and ``seed`` set, validated like ``--set`` overrides."""
    data = apply_overrides(cfg.model_dump(mode="json"), [f"policy.name={policy}", f"seed={seed}"])
    return parse_config(data, f"policy {policy}, seed {seed}")


def compare(cfg_path_or_cfg: str | Path | ExperimentConfig, out_dir: str | Path, *,
            policies: Sequence[str] | None = None, seeds: Sequence[int] | None = None,
            calibrate: bool = False, fitted_cores: bool = False, run_real: RealRunner,
            progress: bool = True) -> dict[str, Any]:
    """Run every policy x seed simulated and real (and calibrated), then :func:`compare_runs`.

    ``run_real(cfg, out_path)`` runs the testbed and returns the real run directory. Policies
    and seeds default to the config's. ``fitted_cores``: the calibrated simulation also takes
    the fitted per-server cores (see :func:`hil.calibration.calibrated_config`). Returns
    compare_runs' dict."""
    from experiments.runs import _json_safe, check_topology, config_to_yaml, run_one

    if isinstance(cfg_path_or_cfg, ExperimentConfig):
        base = cfg_path_or_cfg
    else:
        base = load_config(cfg_path_or_cfg)
        check_topology(base, str(cfg_path_or_cfg))
    policies = list(policies) if policies else [base.policy.name]
    seeds = [int(s) for s in seeds] if seeds else [base.seed]
    points = [(p, s, point_config(base, p, s)) for p in policies for s in seeds]  # validate all first
    out = Path(out_dir)
    pairs: list[tuple] = []
    calibrations: dict[str, Calibration] = {}
    steps_per_point = 3 if calibrate else 2
    prog = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), transient=True)
        task = prog.add_task("compare", total=len(points) * steps_per_point)
        prog.start()

    def step(label: str, what: str) -> None:
        if prog is not None:
            prog.update(task, description=f"{label}: {what}")

    try:
        for policy, seed, cfg in points:
            name = f"{policy}__{seed}"
            label = f"{policy}/{seed}"

            step(label, "simulator")
            sim_dir = out / "sim" / name
            run_one(cfg, sim_dir, progress=False)
            if prog is not None:
                prog.advance(task)
            step(label, "testbed")
            real_target = out / "real" / name
            real_target.parent.mkdir(parents=True, exist_ok=True)
            real_dir = Path(run_real(cfg, real_target))
            if prog is not None:
                prog.advance(task)
            cal_dir = None
            if calibrate:
                step(label, "calibrated simulator")
                cal = fit_calibration(real_dir)
                cal_store = out / "calibration" / name
                cal_cfg = calibrated_config(cfg, real_dir, cal, cal_store, fitted_cores=fitted_cores)
                (cal_store / "calibration.json").write_text(json.dumps(_json_safe(cal.to_dict()), indent=2) + "\n")
                (cal_store / "config.yaml").write_text(config_to_yaml(cal_cfg))
                cal_dir = out / "sim_cal" / name
                run_one(cal_cfg, cal_dir, progress=False)
                calibrations[label] = cal
                if prog is not None:
                    prog.advance(task)
            pairs.append((label, sim_dir, real_dir, cal_dir) if calibrate else (label, sim_dir, real_dir))
    finally:
        if prog is not None:
            prog.stop()
    return compare_runs(pairs, out, calibrations=calibrations)
