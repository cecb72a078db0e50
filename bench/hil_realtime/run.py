#!/usr/bin/env python3
"""Benchmark of swap-in runs: the largest flow rate each combination sustains in real time on
this machine with p99 event lag under a bound (1 ms, and 2 ms, by default).

    python bench/hil_realtime/run.py [--combos sim-inproc,sim-process,host-inproc,host-process]
        [--trial-s 6] [--min-events 3000] [--start-rate 20] [--bounds-ms 1,2] [--repeats 3] [--patience 2]
        [--out bench/hil_realtime/results/latest.json]

Per combination (hil.lb x hil.agent, with simulated traffic and servers; unittest topology, 1 LB,
6 servers, policy sed) the run goes through `hil.swap.run_realtime` exactly as `marllb hil run`
does. Search: a ladder of rates doubling from --start-rate until --patience rates in a row miss
the bound; the sustained rate is the largest that held (every trial is reported). A trial lasts
--trial-s, or longer at low rates so that its p99 rests on about --min-events events (on a
shared VM a few late wake-ups decide the p99 of a short trial). Every trial's
lag figures (and, with a real data plane, the gateway's packet counts) are written.

Reference, same run: the unpaced simulator's speed on the same config at a high rate (simulated
s per wall s); ``ceiling`` = that rate x that speed is the flow rate at which the simulation alone
would need the whole wall clock. Each sustained rate is printed as a ratio to the ceiling. Runs
with lb: host need root (namespaces, AF_PACKET); without it they are skipped, and say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.machine import machine_info  # noqa: E402
from simulator.config import ExperimentConfig, parse_config  # noqa: E402

COMBOS = {"sim-inproc": ("sim", "inproc"), "sim-process": ("sim", "process"),
          "host-inproc": ("host", "inproc"), "host-process": ("host", "process")}


def config(rate: float, seconds: float, lb: str, agent: str) -> ExperimentConfig:
    return parse_config({"name": f"rt_{lb}_{agent}", "seed": 1, "duration_s": seconds,
                         "topology": {"preset": "unittest"}, "traffic": {"rate": rate},
                         "policy": {"name": "sed"}, "lb": {"step_s": 0.25},
                         "hil": {"traffic": "sim", "lb": lb, "servers": "sim", "agent": agent}})


def trial(rate: float, seconds: float, lb: str, agent: str) -> dict:
    from hil.swap import run_realtime

    with tempfile.TemporaryDirectory(prefix="mlb-bench-rt-") as tmp:
        run_realtime(config(rate, seconds, lb, agent), tmp, progress=False)
        info = json.loads((Path(tmp) / "hil.json").read_text())
    rt = info["realtime"]
    row = {"rate": rate, "p99_ms": rt["p99_s"] * 1e3, "mean_ms": rt["mean_s"] * 1e3,
           "max_ms": rt["max_s"] * 1e3, "late_share": rt["late_share"], "events": rt["events"]}
    if info.get("gateway"):
        pk = info["gateway"]["packets"]
        row.update(packets=pk["sent"], lost=pk["lost"], roundtrip_p99_ms=pk.get("roundtrip_p99_s", 0) * 1e3)
    return row


def search(lb: str, agent: str, args: argparse.Namespace) -> dict:
    """A ladder of rates (x2 each) from --start-rate; at each rate --repeats trials and their
    median p99. Not a bisection: on a shared VM single trials near a bound say little, so the
    ladder goes on until --patience rates in a row miss the loosest bound."""
    bounds = sorted(args.bounds_ms)
    trials, medians = [], {}
    rate, misses = args.start_rate, 0
    while rate <= args.max_rate and misses < args.patience:
        seconds = max(args.trial_s, args.min_events / (5.0 * rate))  # ~5 events per flow
        rows = [trial(rate, seconds, lb, agent) for _ in range(args.repeats)]
        for r in rows:
            r["seconds"] = seconds
        trials += rows
        p99 = float(np.median([r["p99_ms"] for r in rows]))
        medians[rate] = p99
        lost = sum(r.get("lost", 0) for r in rows)
        print(f"  {lb}-{agent} {rate:8.1f} flows/s: p99 (median of {len(rows)}) {p99:6.3f} ms, mean "
              f"{np.median([r['mean_ms'] for r in rows]):.3f} ms, late {np.median([r['late_share'] for r in rows]):.4f}"
              + (f", lost {lost}" if any("lost" in r for r in rows) else ""), flush=True)
        misses = 0 if p99 < bounds[-1] else misses + 1
        rate *= 2
    sustained = {f"{b:g}": max([r for r, p in medians.items() if p < b], default=0.0) for b in bounds}
    return {"combo": f"{lb}-{agent}", "median_p99_ms": medians, "sustained_rate": sustained, "trials": trials}


def reference(seconds: float, rate: float) -> dict:
    """The unpaced simulator on the same config: simulated seconds per wall second at ``rate``."""
    from simulator.run import run_experiment

    res = run_experiment(config(rate, seconds, "sim", "inproc"), progress=False)
    speed = seconds / res.summary["wall_s"]
    return {"rate": rate, "sim_s": seconds, "wall_s": res.summary["wall_s"], "speed_x_realtime": speed,
            "ceiling_rate": rate * speed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--combos", default=",".join(COMBOS))
    ap.add_argument("--trial-s", type=float, default=6.0, help="shortest trial, simulated = wall s")
    ap.add_argument("--min-events", type=int, default=3000, help="a trial lasts until about this many events")
    ap.add_argument("--start-rate", type=float, default=20.0)
    ap.add_argument("--max-rate", type=float, default=5000.0)
    ap.add_argument("--bounds-ms", type=lambda x: [float(v) for v in x.split(",")], default=[1.0, 2.0],
                    help="p99 lag bounds to report the sustained rate for (1,2)")
    ap.add_argument("--repeats", type=int, default=3, help="trials per rate (their median p99 counts)")
    ap.add_argument("--patience", type=int, default=2, help="stop after this many rates in a row miss the loosest bound")
    ap.add_argument("--out", default=str(HERE / "results" / "latest.json"))
    args = ap.parse_args()
    ref = reference(20.0, 1000.0)
    print(f"reference: unpaced simulation at {ref['rate']:.0f} flows/s runs {ref['speed_x_realtime']:.1f}x "
          f"real time -> ceiling {ref['ceiling_rate']:.0f} flows/s", flush=True)
    results, skipped = [], {}
    for name in args.combos.split(","):
        lb, agent = COMBOS[name]
        if lb == "host" and os.geteuid() != 0:
            skipped[name] = "needs root (network namespaces, AF_PACKET)"
            print(f"{name}: skipped ({skipped[name]})")
            continue
        t = time.perf_counter()
        res = search(lb, agent, args)
        res["ratio_to_ceiling"] = {b: r / ref["ceiling_rate"] for b, r in res["sustained_rate"].items()}
        res["search_wall_s"] = time.perf_counter() - t
        results.append(res)
    print(f"\nlargest rate with median p99 lag under each bound ({args.repeats} trials per rate):")
    for r in results:
        print(f"  {r['combo']:13s} " + "   ".join(
            f"< {b} ms: {v:7.1f} flows/s ({r['ratio_to_ceiling'][b]:.3f} of the ceiling)"
            for b, v in r["sustained_rate"].items()))
    out = {"benchmark": "hil_realtime", "bounds_ms": args.bounds_ms, "repeats": args.repeats, "trial_s": args.trial_s,
           "reference": ref, "results": results, "skipped": skipped, "machine": machine_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
