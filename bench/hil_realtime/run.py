#!/usr/bin/env python3
"""Benchmark of swap-in runs: the largest flow rate each combination sustains in real time on
this machine with p99 event lag under a bound (1 ms by default).

    python bench/hil_realtime/run.py [--combos sim-inproc,sim-process,host-inproc,host-process]
        [--trial-s 6] [--min-events 3000] [--start-rate 20] [--bound-ms 1.0]
        [--out bench/hil_realtime/results/latest.json]

Per combination (hil.lb x hil.agent, with simulated traffic and servers; unittest topology, 1 LB,
6 servers, policy sed) the run goes through `hil.swap.run_realtime` exactly as `marllb hil run`
does. Search: the rate doubles from --start-rate until a trial's p99 lag passes the bound, then
two bisection steps between the last rate that held and the first that did not. A trial lasts
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
    trials = []

    def holds(rate: float) -> bool:
        # long enough for a p99 over >= min_events events (about 5 events per flow)
        seconds = max(args.trial_s, args.min_events / (5.0 * rate))
        row = trial(rate, seconds, lb, agent)
        row["seconds"] = seconds
        row["holds"] = row["p99_ms"] < args.bound_ms
        trials.append(row)
        print(f"  {lb}-{agent} {rate:8.1f} flows/s: p99 {row['p99_ms']:6.3f} ms, mean {row['mean_ms']:.3f} ms, "
              f"late {row['late_share']:.4f}" + (f", lost {row['lost']}/{row['packets']}" if "lost" in row else ""),
              flush=True)
        return row["holds"]

    good, bad, rate = 0.0, None, args.start_rate
    while rate <= args.max_rate:
        if holds(rate):
            good, rate = rate, rate * 2
        else:
            bad = rate
            break
    if bad is not None and good > 0:
        for _ in range(2):
            mid = (good + bad) / 2
            if holds(mid):
                good = mid
            else:
                bad = mid
    return {"combo": f"{lb}-{agent}", "sustained_rate": good, "first_failing_rate": bad, "trials": trials}


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
    ap.add_argument("--bound-ms", type=float, default=1.0)
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
        res["ratio_to_ceiling"] = res["sustained_rate"] / ref["ceiling_rate"]
        res["search_wall_s"] = time.perf_counter() - t
        results.append(res)
    print(f"\nlargest rate with p99 lag < {args.bound_ms:g} ms ({args.trial_s:g} s trials):")
    for r in results:
        print(f"  {r['combo']:13s} {r['sustained_rate']:8.1f} flows/s  "
              f"({r['ratio_to_ceiling']:.3f} of the unpaced ceiling; first failing {r['first_failing_rate']})")
    out = {"benchmark": "hil_realtime", "bound_ms": args.bound_ms, "trial_s": args.trial_s,
           "reference": ref, "results": results, "skipped": skipped, "machine": machine_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
