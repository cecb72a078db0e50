#!/usr/bin/env python3
"""Benchmark of the local testbed (root): the client's connections/s through the LB, and the
highest request rate a preset sustains with no drops, real next to simulated.

    sudo python bench/testbed/run.py [--config experiments/configs/moderate_sed.yaml]
        [--cpu-per-core 0.04] [--seconds 15] [--lo 0.3] [--hi 1.3] [--steps 5]
        [--conn-rates 500,1000,1500] [--conn-seconds 4] [--out bench/out/testbed.json]

Connections/s: a testbed of 1 LB and 2 servers with 0.5 CPU each; Poisson arrivals of
``work.php?n=0`` requests at each offered rate for ``--conn-seconds``, sent by the real client
through lb_rl_host (ECMP) -- and, as the reference in the same run, the same schedule sent
straight to the two servers (half each, two client processes), bypassing the LB. Reported: sent
and completed per second, outcomes, send lateness (p99), JCT p50/p99.

Method: the config's traffic as Poisson at ``load`` x (its capacity) with its job sizes; a
trial at one load is one ``marllb hil run`` of ``--seconds`` (all real: client, lb_rl_host,
controllers, Apache under CPU quotas). A trial *sustains* its load when no request is dropped
(refused, reset, timed out) and at most 1 % are still in flight at the end (the queue did not
grow without bound). Bisection over load in [lo, hi] for ``--steps`` trials gives the highest
sustained load to within (hi - lo) / 2^steps. Reference, same run: the same search and the
same criterion on the simulator with the same configs and seeds. Prints the two rates and their
ratio, plus the client's send lateness and the LBs' counters at the highest sustained load, and
writes JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from simulator.config import ExperimentConfig, load_config  # noqa: E402

IN_FLIGHT_MAX = 0.01


def trial_config(base: ExperimentConfig, load: float, seconds: float, cpu_per_core: float) -> ExperimentConfig:
    data = base.model_dump()
    data["duration_s"] = seconds
    data["warmup_s"] = min(data.get("warmup_s", 0.0), seconds / 4)
    data["traffic"]["rate"] = None
    data["traffic"]["load"] = load
    if data["traffic"]["kind"] == "trace":
        data["traffic"]["kind"] = "poisson"
    data["hil"]["cpu_per_core"] = cpu_per_core
    return ExperimentConfig.model_validate(data)


def sustains(summary: dict[str, Any]) -> bool:
    return summary["dropped"] == 0 and summary["in_flight"] <= IN_FLIGHT_MAX * max(1, summary["arrived"])


def search(run: Callable[[float], dict[str, Any]], lo: float, hi: float, steps: int,
           label: str) -> tuple[float | None, list[dict[str, Any]]]:
    """Highest load in [lo, hi] whose trial sustains, by bisection; None if lo fails."""
    trials = []
    best: float | None = None
    s = run(lo)
    trials.append({"load": lo, **_brief(s)})
    print(f"  {label} load {lo:.3f}: {_fmt(s)}", flush=True)
    if not sustains(s):
        return None, trials
    best = lo
    a, b = lo, hi
    for _ in range(steps):
        mid = (a + b) / 2
        s = run(mid)
        ok = sustains(s)
        trials.append({"load": mid, **_brief(s)})
        print(f"  {label} load {mid:.3f}: {_fmt(s)}", flush=True)
        if ok:
            best, a = mid, mid
        else:
            b = mid
    return best, trials


def _brief(s: dict[str, Any]) -> dict[str, Any]:
    keys = ("arrived", "completed", "dropped", "in_flight", "jct_mean_s", "jct_p99_s", "throughput_rps",
            "lateness_p99_s", "outcomes")
    return {k: s.get(k) for k in keys} | {"sustained": sustains(s)}


def _fmt(s: dict[str, Any]) -> str:
    jct = s.get("jct_mean_s")
    return (f"arrived {s['arrived']}, dropped {s['dropped']}, in flight {s['in_flight']}, "
            f"JCT mean {jct * 1e3:.1f} ms" if jct is not None else "no completions") + \
           (" -> sustained" if sustains(s) else " -> not sustained")


def conn_rate(rates: list[float], seconds: float, tmp: Path) -> list[dict[str, Any]]:
    """Connections/s through the LB and straight to the servers (see the module docstring)."""
    import threading

    import numpy as np

    from hil.testbed.dataplane import start_dataplane
    from hil.testbed.plan import make_plan
    from hil.testbed.replay import replay
    from hil.testbed.schedule import Schedule
    from hil.testbed.testbed import up
    from simulator.config import parse_config

    cfg = parse_config({"name": "conn_rate", "topology": {"lbs": 1, "servers": [
        {"cores": 1, "workers": 64, "backlog": 511}, {"cores": 1, "workers": 64, "backlog": 511}]},
        "policy": {"name": "ecmp"}, "hil": {"cpu_per_core": 0.5}})
    plan = make_plan(cfg)
    run = up(cfg, plan, start_lbs=False)
    start_dataplane(cfg, plan, run, tmp / "conn_logs")
    rows = []
    for rate in rates:
        t = np.cumsum(np.random.default_rng(int(rate)).exponential(1.0 / rate, int(rate * seconds)))
        n = len(t)

        def sched(mask: np.ndarray) -> Schedule:
            k = int(mask.sum())
            return Schedule(id=np.arange(n)[mask], t_s=t[mask], work_s=np.zeros(k), n_iter=np.zeros(k, np.int64),
                            lb=np.zeros(k, np.int32), client=np.zeros(k, np.int32))

        through = replay(plan, sched(np.ones(n, bool)), tmp / "conn", response_bytes=100)
        direct: list[Any] = [None, None]

        def send_direct(j: int) -> None:
            direct[j] = replay(plan, sched(np.arange(n) % 2 == j), tmp / f"conn_d{j}", response_bytes=100,
                               target=plan.servers[j].ip)

        threads = [threading.Thread(target=send_direct, args=(j,)) for j in (0, 1)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        for name, df in (("through_lb", through), ("direct", pd.concat(direct, ignore_index=True))):
            sent = df["t_send_s"].notna()
            done = df["outcome"] == "completed"
            late = (df["t_send_s"] - df["t_arrive_s"])[sent]
            jct = (df["t_last_byte_s"] - df["t_send_s"])[done]
            rows.append({"offered_per_s": rate, "path": name, "requests": n,
                         "sent_per_s": float(sent.sum() / seconds), "completed_per_s": float(done.sum() / seconds),
                         "outcomes": {str(k): int(v) for k, v in df["outcome"].value_counts().items() if v},
                         "lateness_p99_s": float(late.quantile(0.99)), "jct_p50_s": float(jct.quantile(0.5)),
                         "jct_p99_s": float(jct.quantile(0.99))})
            r = rows[-1]
            print(f"  {rate:6.0f}/s {name:10s}: sent {r['sent_per_s']:7.1f}/s, completed {r['completed_per_s']:7.1f}/s, "
                  f"lateness p99 {r['lateness_p99_s'] * 1e3:5.2f} ms, JCT p50/p99 {r['jct_p50_s'] * 1e3:.1f}/"
                  f"{r['jct_p99_s'] * 1e3:.1f} ms, {r['outcomes']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "experiments" / "configs" / "moderate_sed.yaml")
    ap.add_argument("--cpu-per-core", type=float, default=0.04)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--lo", type=float, default=0.3)
    ap.add_argument("--hi", type=float, default=1.3)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--conn-rates", default="500,1000,1500", help="offered connections/s (empty: skip)")
    ap.add_argument("--conn-seconds", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "testbed.json")
    args = ap.parse_args(argv)

    from hil.run import run_hil
    from hil.testbed.calibrate import load_calibration
    from hil.testbed.plan import make_plan
    from hil.testbed.testbed import down, load_state
    from simulator.run import run_experiment

    base = load_config(args.config)
    plan = make_plan(trial_config(base, args.lo, args.seconds, args.cpu_per_core))
    total_cores = sum(plan.cores)
    from simulator.traffic import mean_job_s

    rate_per_load = total_cores / mean_job_s(base.traffic.job)
    print(f"{args.config.name}: {len(plan.lbs)} LB(s), {len(plan.servers)} servers, {total_cores:g} cores "
          f"x {args.cpu_per_core:g} CPU = {total_cores * args.cpu_per_core:.2f} CPUs of quota; "
          f"load 1.0 = {rate_per_load:.1f} requests/s; {args.seconds:g} s per trial", flush=True)

    def sim(load: float) -> dict[str, Any]:
        return run_experiment(trial_config(base, load, args.seconds, args.cpu_per_core), progress=False).summary

    tmp = Path(tempfile.mkdtemp(prefix="mlb-bench-testbed-"))

    def real(load: float) -> dict[str, Any]:
        out = tmp / f"load_{load:.4f}"
        return run_hil(trial_config(base, load, args.seconds, args.cpu_per_core), out,
                       progress=False, keep_up=True).summary

    t0 = time.perf_counter()
    was_up = load_state() is not None
    conn: list[dict[str, Any]] = []
    try:
        rates = [float(x) for x in args.conn_rates.split(",") if x.strip()]
        if rates:
            print("client connections/s through the LB (reference: straight to the servers):", flush=True)
            conn = conn_rate(rates, args.conn_seconds, tmp)
        print("simulator (reference):", flush=True)
        sim_best, sim_trials = search(sim, args.lo, args.hi, args.steps, "sim ")
        print("testbed:", flush=True)
        real_best, real_trials = search(real, args.lo, args.hi, args.steps, "real")
    finally:
        if not was_up:
            down()
    resolution = (args.hi - args.lo) / 2 ** args.steps

    def rate(x: float | None) -> float | None:
        return None if x is None else x * rate_per_load

    ratio = real_best / sim_best if real_best and sim_best else None
    print(f"\nhighest load with no drops (resolution {resolution:.3f}):")
    print(f"  simulator {sim_best or 0:.3f}  ({rate(sim_best) or 0:.1f} req/s)")
    print(f"  testbed   {real_best or 0:.3f}  ({rate(real_best) or 0:.1f} req/s)")
    print(f"  ratio testbed / simulator: {ratio:.3f}" if ratio else "  ratio: -")
    result = {
        "bench": "testbed", "config": str(args.config), "cpu_per_core": args.cpu_per_core,
        "seconds_per_trial": args.seconds, "criterion": {"dropped": 0, "in_flight_max_share": IN_FLIGHT_MAX},
        "search": {"lo": args.lo, "hi": args.hi, "steps": args.steps, "resolution_load": resolution},
        "requests_per_s_per_load": rate_per_load,
        "sim": {"best_load": sim_best, "best_rate_per_s": rate(sim_best), "trials": sim_trials},
        "real": {"best_load": real_best, "best_rate_per_s": rate(real_best), "trials": real_trials},
        "ratio_real_to_sim": ratio,
        "connections": {"servers": "2 x 0.5 CPU", "seconds": args.conn_seconds, "rows": conn},
        "calibration": {k: v for k, v in ((load_calibration() or {}).get("by_cpu_per_core", {})
                                          .get(f"{args.cpu_per_core:g}", {})).items() if k != "samples"},
        "wall_s": time.perf_counter() - t0,
        "host": platform.node(), "date": dt.datetime.now().isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
