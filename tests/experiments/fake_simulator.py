"""A FAKE simulator for testing the CLI plumbing only (files, errors, plots) — not a model.

It draws Poisson arrivals and job sizes, sends request i to server i mod N, and calls the job
size the JCT. Nothing here is shipped or used outside tests/experiments/.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

import topologies
from simulator.config import ExperimentConfig
from simulator.results import SimResult


def fake_run_experiment(cfg: ExperimentConfig, *, progress: bool = True,
                        pcap_path: str | None = None) -> SimResult:
    g = topologies.build(cfg.topology)
    servers = topologies.servers(g)
    n = len(servers)
    rng = np.random.default_rng(cfg.seed)
    rate = cfg.traffic.rate or cfg.traffic.load * sum(g.nodes[s]["cores"] for s in servers) / cfg.traffic.job.mean_s
    t = np.cumsum(rng.exponential(1 / rate, size=int(rate * cfg.duration_s * 1.5) + 10))
    t = t[t < cfg.duration_s]
    work = rng.exponential(cfg.traffic.job.mean_s, size=t.size)
    srv = np.arange(t.size) % n
    done = t + work
    status = np.where(done <= cfg.duration_s, "completed", "in_flight")
    req = pd.DataFrame({"id": np.arange(t.size), "client": 0, "lb": 0, "server": srv,
                        "t_arrive_s": t, "t_done_s": np.where(status == "completed", done, np.nan),
                        "jct_s": np.where(status == "completed", work, np.nan), "work_s": work,
                        "status": status})
    steps_t = np.arange(0, cfg.duration_s, cfg.lb.step_s)
    steps = pd.DataFrame([{"t_s": ts, "lb": 0, "server": i,
                           "n_flow_on": int(((t <= ts) & (done > ts) & (srv == i)).sum()), "weight": 1.0}
                          for ts in steps_t for i in range(n)])
    jct = req.loc[(req.status == "completed") & (req.t_arrive_s >= cfg.warmup_s), "jct_s"].to_numpy()
    per = [{"id": i, "completed": int(((srv == i) & (status == "completed")).sum()),
            "busy_fraction": 0.5, "mean_jobs": 1.0} for i in range(n)]
    comp = np.array([p["completed"] for p in per], float)
    summary = {
        "arrived": int(t.size), "completed": int((status == "completed").sum()), "dropped": 0,
        "in_flight": int((status == "in_flight").sum()),
        "jct_mean_s": float(jct.mean()), "jct_p50_s": float(np.percentile(jct, 50)),
        "jct_p90_s": float(np.percentile(jct, 90)), "jct_p99_s": float(np.percentile(jct, 99)),
        "throughput_rps": float((status == "completed").sum() / cfg.duration_s),
        "jain_fairness": float(comp.sum() ** 2 / (n * (comp ** 2).sum())),
        "sim_time_s": cfg.duration_s, "wall_s": 0.01, "events": 0, "packets": 0,
        "per_server": per, "seed": cfg.seed, "policy": cfg.policy.name,
    }
    return SimResult(summary=summary, requests=req, steps=steps)
