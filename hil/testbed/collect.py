"""The run contract from real measurements: the client's per-request records become
``requests.parquet`` and ``summary.json`` with the same columns and keys as a simulated run.

Classification mirrors the simulator's (simulator.run.collect) on the window [0, duration_s]:
a request is *completed* if its last response byte arrived by duration_s, *dropped* if the
connection was refused or reset, the server answered an error, or the client gave up (timeout)
by duration_s, and *in flight* otherwise -- so arrived = completed + dropped + in_flight exactly.
JCT runs from the scheduled arrival (as the simulator's) to the last response byte; how late
the client actually sent is reported separately (``lateness``). Statistics cover requests that
arrived at or after warmup_s.

Per server: ``busy_fraction`` is the CPU the server's requests used (PHP's getrusage, summed
over requests that finished in the window) over its CPU quota times the window;
``mean_jobs`` is Little's law on the server-side service time (sum of service_s / window)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from simulator.config import ExperimentConfig
from simulator.results import finite_or_none, jain_index, quantile

__all__ = ["contract_requests", "summarise", "between_scripts_cpu", "DROP_OUTCOMES"]

DROP_OUTCOMES = ("refused", "reset", "http_error", "timeout")


def _failure_time(df: pd.DataFrame) -> np.ndarray:
    """When a failed request failed: the latest time the client recorded for it."""
    cols = [c for c in ("t_last_byte_s", "t_first_byte_s", "t_connect_s", "t_send_s", "t_done_s")
            if c in df.columns]
    return df[cols].max(axis=1, skipna=True).to_numpy(dtype=float)


def contract_requests(records: pd.DataFrame, cfg: ExperimentConfig, timeout_s: float) -> pd.DataFrame:
    """The client's records (all clients, any order) as the run contract's requests table,
    sorted by id, with the client's own columns kept after the contract's."""
    df = records.sort_values("id", kind="stable").reset_index(drop=True)
    end = cfg.duration_s
    outcome = df["outcome"].astype(str).to_numpy()
    t_last = df["t_last_byte_s"].to_numpy(dtype=float)
    t_fail = _failure_time(df)
    # a timeout is known at send + timeout_s: only then did the client give up
    t_fail = np.where(outcome == "timeout", df["t_send_s"].to_numpy(dtype=float) + timeout_s, t_fail)
    completed = (outcome == "completed") & (t_last <= end)
    dropped = np.isin(outcome, DROP_OUTCOMES) & (t_fail <= end)
    status = np.full(len(df), "in_flight", dtype=object)
    status[completed] = "completed"
    status[dropped] = "dropped"
    t_arr = df["t_arrive_s"].to_numpy(dtype=float)
    t_srv = df["t_server_start_s"].to_numpy(dtype=float) if "t_server_start_s" in df else np.full(len(df), np.nan)
    service = df["service_s"].to_numpy(dtype=float) if "service_s" in df else np.full(len(df), np.nan)
    srv_done = t_srv + service
    srv_done_in = np.isfinite(srv_done) & (srv_done <= end)
    out = pd.DataFrame({
        "id": df["id"].to_numpy(dtype=np.int64),
        "client": df["client"].to_numpy(dtype=np.int32),
        "lb": df["lb"].to_numpy(dtype=np.int32),
        "server": df["server"].to_numpy(dtype=np.int32),
        "t_arrive_s": t_arr,
        "t_done_s": np.where(completed, t_last, np.where(dropped, t_fail, np.nan)),
        "jct_s": np.where(completed, t_last - t_arr, np.nan),
        "work_s": df["work_s"].to_numpy(dtype=float),
        "status": pd.Categorical(status, categories=["completed", "dropped", "in_flight"]),
        "t_server_arrive_s": t_srv,
        "t_server_done_s": np.where(srv_done_in, srv_done, np.nan),
        "sojourn_s": np.where(srv_done_in, service, np.nan),
    })
    for c in df.columns:
        if c not in out.columns:
            out[c] = df[c].to_numpy()
    out["lateness_s"] = df["t_send_s"].to_numpy(dtype=float) - t_arr
    out["overhead_cpu_s"] = between_scripts_cpu(out)
    return out


def between_scripts_cpu(req: pd.DataFrame) -> np.ndarray:
    """Per request, the CPU its Apache worker spent since the end of its previous script: the
    server's own work around a request (finishing and logging the previous one, accepting and
    parsing this one, and any health-probe connection handled in between), which the PHP
    script's CPU time (cpu_s) leaves out. From the worker's CPU total at script start
    (cpu_start_s) minus the previous script's start plus its cpu_s, per (server, worker pid);
    NaN for a worker's first request in the run or without those headers."""
    out = np.full(len(req), np.nan)
    if not {"worker_pid", "cpu_start_s", "cpu_s"} <= set(req.columns):
        return out
    d = pd.DataFrame({"server": req["server"].to_numpy(), "pid": req["worker_pid"].to_numpy(),
                      "c0": req["cpu_start_s"].to_numpy(dtype=float), "c": req["cpu_s"].to_numpy(dtype=float)})
    d = d[(d["pid"] > 0) & np.isfinite(d["c0"]) & np.isfinite(d["c"])]
    d = d.sort_values(["server", "pid", "c0"], kind="stable")
    prev_end = (d["c0"] + d["c"]).groupby([d["server"], d["pid"]]).shift(1)
    gap = (d["c0"] - prev_end).to_numpy()
    out[d.index.to_numpy()] = np.where(gap >= 0, gap, np.nan)
    return out


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def summarise(req: pd.DataFrame, cfg: ExperimentConfig, cores: list[float], quotas_cpus: list[float], *,
              wall_s: float, packets: int | None) -> dict[str, Any]:
    """summary.json of a real run (the simulator's keys, from measurements)."""
    end, warm = cfg.duration_s, cfg.warmup_s
    window = end - warm
    status = req["status"].astype(str).to_numpy()
    completed = status == "completed"
    meas = completed & (req["t_arrive_s"].to_numpy() >= warm)
    j = req["jct_s"].to_numpy()[meas]
    server = req["server"].to_numpy()
    in_window = np.isfinite(req["t_server_done_s"].to_numpy()) & (req["t_server_arrive_s"].to_numpy() >= warm)
    cpu = req["cpu_s"].to_numpy(dtype=float) if "cpu_s" in req else np.zeros(len(req))
    per_server, busy = [], []
    for i, q in enumerate(quotas_cpus):
        mine = server == i
        b = float(np.nansum(cpu[mine & in_window]) / (q * window))
        busy.append(b)
        per_server.append({"id": i, "completed": int(np.sum(meas & mine)), "busy_fraction": b,
                           "mean_jobs": float(np.nansum(req["sojourn_s"].to_numpy()[mine & in_window]) / window),
                           "cores": cores[i],
                           "quota_cpus": q,
                           "overhead_cpu_median_s": _median(req["overhead_cpu_s"].to_numpy(float)[mine])
                           if "overhead_cpu_s" in req else None,
                           "refused": int(np.sum(mine & (status == "dropped")))})
    bx = np.array(busy)
    jain = jain_index(bx)
    late = req["lateness_s"].to_numpy(dtype=float)
    late = late[np.isfinite(late)]
    outcome_counts = req["outcome"].astype(str).value_counts().to_dict() if "outcome" in req else {}
    summary: dict[str, Any] = {
        "arrived": int(len(req)),
        "completed": int(completed.sum()),
        "dropped": int((status == "dropped").sum()),
        "in_flight": int((status == "in_flight").sum()),
        "jct_mean_s": float(j.mean()) if len(j) else None,
        "jct_p50_s": quantile(j, 0.5),
        "jct_p90_s": quantile(j, 0.9),
        "jct_p99_s": quantile(j, 0.99),
        "throughput_rps": float(meas.sum() / window),
        "jain_fairness": jain,
        "sim_time_s": float(end),
        "wall_s": float(wall_s),
        "events": None,  # a real run has no simulation events
        "packets": packets,
        "per_server": per_server,
        "seed": cfg.seed,
        "policy": cfg.policy.name,
        "warmup_s": float(warm),
        "measured": int(meas.sum()),
        "outcomes": {str(k): int(v) for k, v in outcome_counts.items()},
        "lateness_mean_s": float(late.mean()) if len(late) else None,
        "lateness_p99_s": quantile(late, 0.99),
        "lateness_max_s": float(late.max()) if len(late) else None,
        "core": "lb_rl_host",
        "real": True,
    }
    return finite_or_none(summary)

