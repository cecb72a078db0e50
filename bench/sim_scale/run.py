#!/usr/bin/env python3
"""Simulator scale benchmark (not a test): requests/s and peak memory from 24 to 4,096 servers.

Each case runs in its own process (peak RSS is the process's ru_maxrss) on the `datacenter`
leaf-spine family at load 0.8 of the servers' cores (jobs exp(200 ms), 0.25 s steps), with WCMP
(static weights = cores) by default:

    servers:LBs   24:1 (3 leaves x 8)  256:8  1,024:64  4,096:64 (32 servers per leaf)

and reports per case: requests per CPU-second of the whole run (set-up included) and of its
second half (paths, templates and chains of the pairs in use already built), the share of
it spent in the LB steps (shm publish + frame read + features + controller + step rows), peak
RSS, the busiest server's busy fraction. Ratios are against the 24-server case of the same
invocation. Targets (issue 14): requests/s at 1,024 servers and 64 LBs >= 0.7x the 24-server
figure. Next to each load-0.8 case the plain-SimPy reference model (simulator/reference.py,
WCMP: one SimPy process per request, a Resource per server, no packets, O(1) routing) runs on
the same servers, rate and jobs, so its ratio shows what a minimal Python event loop loses
at that size by itself (``--no-reference`` skips it).

Why WCMP: with many LBs that each see only their own flows, SED herds: at 1,024 servers and 64
LBs every LB finds an 8-CPU server with none of *its* flows, so the 4-CPU servers get nothing
and the 8-CPU ones run at 1.2 (`--policy sed` shows it in the busy fractions); that case is then
not at load 0.8 but unstable, its queues and in-flight set growing for the whole run. WCMP puts
every server at the stated load whatever the number of LBs. ``--fixed-rate`` adds cases at one
offered rate for every size (load falling as servers grow): cost per request against the number
of servers alone, traffic held constant. ``--rss`` also runs the 24-server case for
``--rss-short`` and ``--rss-long`` simulated seconds (20 min and 2 h by default) with the tables
streamed to disk, and compares their peak RSS (target: the long run within 1.3x of the short
one).

``--repeat N`` runs every case N times, round after round (this VM's speed drifts by more than
the effects measured): each round's ratios are against its own 24-server run, and the verdict
takes their median.

    python bench/sim_scale/run.py [--cases 24:1,256:8,1024:64,4096:64] [--requests 200000]
                                  [--fixed-rate 6000] [--repeat 3] [--rss] [--out bench/out/sim_scale.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402

LOAD = 0.8
JOB_MEAN_S = 0.2
CORES = [4.0, 8.0]  # cycled over the servers: mean 6 cores
TARGET_RATIO_1024 = 0.7
TARGET_RSS_RATIO = 1.3


def topology(servers: int, lbs: int) -> dict:
    """The leaf-spine case: 8 servers per leaf up to 24 servers, else 32; a spine per 4 leaves."""
    per_leaf = 8 if servers <= 24 else 32
    leaves = -(-servers // per_leaf)
    if leaves * per_leaf != servers:
        raise SystemExit(f"--cases: {servers} servers is not a multiple of {per_leaf} per leaf")
    return {"preset": "datacenter", "params": {
        "spines": max(2, leaves // 4), "leaves": leaves, "servers_per_leaf": per_leaf,
        "lbs": lbs, "cores": CORES}}


def case_config(servers: int, lbs: int, duration_s: float, args: argparse.Namespace,
                rate: float | None = None) -> dict:
    offered = {"load": LOAD} if rate is None else {"rate": rate}
    return {"name": f"scale_{servers}x{lbs}", "seed": 1, "duration_s": duration_s,
            "warmup_s": min(1.0, duration_s / 4), "topology": topology(servers, lbs),
            "traffic": {"kind": "poisson", **offered, "job": {"dist": "exp", "mean_s": JOB_MEAN_S}},
            "policy": {"name": args.policy},
            "lb": {"step_s": 0.25, "reservoir_size": args.reservoir, "table_size": args.table_size,
                   "record_every": args.record_every}}


def reference_child(spec: dict) -> dict:
    """The plain-SimPy reference model (simulator/reference.py, WCMP: O(1) per request) on the
    case's servers, rate and jobs: what a minimal event loop costs per request at this size."""
    from simulator.reference import run_reference

    c0 = time.process_time()
    r = run_reference(spec["cores"], spec["rate"], JOB_MEAN_S, spec["duration_s"], seed=1, policy="wcmp")
    cpu = time.process_time() - c0
    return {"requests": int(r["requests"]), "cpu_s": cpu, "requests_per_cpu_s": r["requests"] / cpu}


def child(spec: dict) -> dict:
    """Run one case in this process; the step time is measured by wrapping Simulation._on_step."""
    if "reference" in spec:
        return reference_child(spec["reference"])
    from functools import partial

    from simulator.config import parse_config
    from simulator.model import Simulation
    from simulator.records import ParquetRecorder
    from simulator.run import build_simulation, collect

    step = {"s": 0.0, "n": 0}
    inner = Simulation._on_step

    def timed(self, k):  # type: ignore[no-untyped-def]
        t = time.process_time()
        inner(self, k)
        step["s"] += time.process_time() - t
        step["n"] += 1

    Simulation._on_step = timed  # type: ignore[method-assign]
    if spec.get("numpy_hugepages"):  # for comparison: numpy's huge-page advice left on in the run
        import contextlib

        import simulator.model
        import simulator.run

        simulator.model.small_pages = simulator.run.small_pages = contextlib.nullcontext  # type: ignore[assignment]
    cfg = parse_config(spec["config"], "sim_scale")
    half: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        rec = partial(ParquetRecorder, out_dir=tmp) if spec.get("stream") else None
        sim = build_simulation(cfg, recorder=rec)

        def at_half(t_s: float) -> None:  # progress ticks every 1 % of the run
            if not half and t_s >= cfg.duration_s / 2:
                half.update(cpu=time.process_time(), arrived=sim.n_arrived)

        sim.run(progress=at_half)
        late = (sim.n_arrived - half["arrived"]) / (time.process_time() - half["cpu"])
        s = collect(sim, time.perf_counter() - t0).summary
    busy = [p["busy_fraction"] for p in s["per_server"]]
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return {"requests": s["arrived"], "completed": s["completed"], "dropped": s["dropped"],
            "in_flight": s["in_flight"], "packets": s["packets"], "events": s["events"],
            "cpu_s": cpu, "wall_s": wall, "requests_per_cpu_s": s["arrived"] / cpu,
            "second_half_requests_per_cpu_s": late,
            "step_cpu_s": step["s"], "steps": step["n"], "step_share": step["s"] / cpu,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "jct_mean_s": s["jct_mean_s"], "busy_max": max(busy), "busy_mean": sum(busy) / len(busy)}


def run_child(spec: dict, name: str) -> dict:
    """One case in a fresh interpreter (its own peak RSS)."""
    out = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(spec),
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"case {name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.splitlines()[-1])


def run_case(config: dict, stream: bool = False, numpy_hugepages: bool = False) -> dict:
    return run_child({"config": config, "stream": stream, "numpy_hugepages": numpy_hugepages}, config["name"])


def run_reference_case(servers: int, rate: float, duration_s: float) -> dict:
    cores = [CORES[i % len(CORES)] for i in range(servers)]
    return run_child({"reference": {"cores": cores, "rate": rate, "duration_s": duration_s}},
                     f"reference {servers}")


def print_round(results: list[dict]) -> None:
    """One round's table; adds each case's (and its reference's) ratios to its first case."""
    ref = results[0]["requests_per_cpu_s"]
    ref_late = results[0]["second_half_requests_per_cpu_s"]
    print(f"{'servers':>8} {'LBs':>4} {'flows/s':>8} {'sim s':>6} {'requests':>9} {'req/CPU-s':>10} {'vs first':>8} "
          f"{'2nd half':>9} {'vs first':>8} {'step share':>10} {'peak RSS MB':>11} {'busy max':>8} "
          f"{'ref req/CPU-s':>13} {'ref vs first':>12}")
    ref_first = results[0].get("reference")
    for r in results:
        r["ratio_vs_first"] = r["requests_per_cpu_s"] / ref
        r["second_half_ratio_vs_first"] = r["second_half_requests_per_cpu_s"] / ref_late
        print(f"{r['servers']:>8} {r['lbs']:>4} {r['offered_rate']:>8.0f} {r['duration_s']:>6.0f} {r['requests']:>9} "
              f"{r['requests_per_cpu_s']:>10.0f} {r['ratio_vs_first']:>8.2f} "
              f"{r['second_half_requests_per_cpu_s']:>9.0f} {r['second_half_ratio_vs_first']:>8.2f} "
              f"{r['step_share']:>10.2f} {r['peak_rss_mb']:>11.0f} {r['busy_max']:>8.2f}", end="")
        if "reference" in r and ref_first is not None:
            x = r["reference"]
            x["ratio_vs_first"] = x["requests_per_cpu_s"] / ref_first["requests_per_cpu_s"]
            print(f" {x['requests_per_cpu_s']:>13.0f} {x['ratio_vs_first']:>12.2f}", end="")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="24:1,256:8,1024:64,4096:64", help="servers:LBs,...")
    ap.add_argument("--requests", type=int, default=200_000,
                    help="about this many requests per case (duration = requests / offered rate, >= --min-duration)")
    ap.add_argument("--min-duration", type=float, default=10.0, help="simulated seconds per case at least")
    ap.add_argument("--reservoir", type=int, default=32, help="lb.reservoir_size (slots per server and kind)")
    ap.add_argument("--table-size", type=int, default=1 << 14, help="lb.table_size (flow-table entries per LB)")
    ap.add_argument("--policy", default="wcmp",
                    help="LB policy of every case (default wcmp: each server at the stated load)")
    ap.add_argument("--record-every", type=int, default=20, help="lb.record_every (steps between step-table rows)")
    ap.add_argument("--fixed-rate", type=float, default=None,
                    help="also run every case with more than 24 servers at this offered rate (flows/s)")
    ap.add_argument("--no-reference", dest="reference", action="store_false",
                    help="skip the plain-SimPy reference model run next to each load-0.8 case")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of every case, in order (this VM's speed drifts: each round's ratios "
                         "are against its own 24-server run; the verdict takes their median)")
    ap.add_argument("--numpy-hugepages", action="store_true",
                    help="leave numpy's transparent-huge-page advice on during the runs (for comparison: "
                         "the simulator turns it off, simulator/hugepages.py)")
    ap.add_argument("--rss", action="store_true", help="also compare peak RSS of a short and a long run")
    ap.add_argument("--rss-short", type=float, default=1200.0)
    ap.add_argument("--rss-long", type=float, default=7200.0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "sim_scale.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(json.loads(sys.stdin.read()))))
        return
    if a.repeat < 1:
        raise SystemExit(f"--repeat {a.repeat}: must be >= 1")
    cases = [tuple(int(x) for x in c.split(":")) for c in a.cases.split(",")]
    rounds: list[list[dict]] = []
    from rich.progress import Progress

    with Progress(transient=True) as prog:
        fixed = [(s, k) for s, k in cases if s > 24] if a.fixed_rate else []
        plan = [(s, k, None) for s, k in cases] + [(s, k, a.fixed_rate) for s, k in fixed]
        task = prog.add_task("cases", total=a.repeat * len(plan) + (2 if a.rss else 0))
        for _ in range(a.repeat):  # whole rounds: each compares with its own 24-server run
            results = []
            for servers, lbs, fixed_rate in plan:
                rate = fixed_rate or LOAD * servers * (sum(CORES) / len(CORES)) / JOB_MEAN_S
                duration = max(a.min_duration, a.requests / rate)
                prog.update(task, description=f"{servers} servers x {lbs} LBs, {rate:.0f} flows/s, {duration:.0f} sim s")
                r = run_case(case_config(servers, lbs, duration, a, fixed_rate), numpy_hugepages=a.numpy_hugepages)
                r.update(servers=servers, lbs=lbs, duration_s=duration, offered_rate=rate,
                         series="fixed_rate" if fixed_rate else "load_0.8")
                if a.reference and not fixed_rate:
                    prog.update(task, description=f"reference model: {servers} servers, {rate:.0f} flows/s")
                    r["reference"] = run_reference_case(servers, rate, duration)
                results.append(r)
                prog.advance(task)
            rounds.append(results)
        rss = None
        if a.rss:
            servers, lbs = cases[0]
            runs = {}
            for label, dur in (("short", a.rss_short), ("long", a.rss_long)):
                prog.update(task, description=f"RSS: {servers}x{lbs}, {dur:.0f} sim s, tables streamed")
                runs[label] = run_case(case_config(servers, lbs, dur, a), stream=True)
                runs[label]["duration_s"] = dur
                prog.advance(task)
            rss = {**runs, "ratio": runs["long"]["peak_rss_mb"] / runs["short"]["peak_rss_mb"],
                   "target": TARGET_RSS_RATIO}
    for k, results in enumerate(rounds):
        if a.repeat > 1:
            print(f"round {k + 1} of {a.repeat}")
        print_round(results)
    verdicts = {}
    targets = [next((r for r in results if (r["servers"], r["lbs"], r["series"]) == (1024, 64, "load_0.8")), None)
               for results in rounds]
    if targets[0] is not None:
        ratios = [t["ratio_vs_first"] for t in targets]
        median = statistics.median(ratios)
        verdicts["requests_1024x64_vs_first"] = {"ratio": median, "rounds": ratios, "target": TARGET_RATIO_1024,
                                                 "met": median >= TARGET_RATIO_1024}
        refs = [t["reference"]["ratio_vs_first"] for t in targets if "ratio_vs_first" in t.get("reference", {})]
        if refs:
            print(f"the plain-SimPy reference model (one process per request, no packets, O(1) "
                  f"routing) at 1,024 servers: {statistics.median(refs):.2f}x its 24-server figure"
                  + (f" (median of {', '.join(f'{x:.2f}' for x in refs)})" if len(refs) > 1 else " in this run"))
        if len(refs) == len(ratios):  # how this model scales against a minimal event loop, same round
            rel = [x / y for x, y in zip(ratios, refs)]
            verdicts["requests_1024x64_vs_first"]["vs_reference_ratio"] = {"median": statistics.median(rel),
                                                                           "rounds": rel}
            print(f"this model's ratio over the reference model's, round by round: "
                  f"{', '.join(f'{x:.2f}' for x in rel)} (median {statistics.median(rel):.2f})")
        if len(ratios) > 1:
            print(f"1,024 / 64 against 24 servers, round by round: {', '.join(f'{x:.2f}' for x in ratios)}")
    if rss is not None:
        verdicts["rss_long_vs_short"] = {"ratio": rss["ratio"], "target": TARGET_RSS_RATIO,
                                         "met": rss["ratio"] <= TARGET_RSS_RATIO}
        print(f"peak RSS, {a.rss_short:.0f} vs {a.rss_long:.0f} simulated s: {rss['short']['peak_rss_mb']:.0f} "
              f"vs {rss['long']['peak_rss_mb']:.0f} MB = {rss['ratio']:.2f}x (target <= {TARGET_RSS_RATIO})")
    for name, v in verdicts.items():
        print(f"{name}: {v['ratio']:.2f} (target {v['target']}) {'met' if v['met'] else 'NOT met'}")
    out = {"machine": machine_info(), "policy": a.policy, "load": LOAD, "job_mean_s": JOB_MEAN_S, "cores": CORES,
           "numpy_hugepages": a.numpy_hugepages,
           "lb": {"reservoir_size": a.reservoir, "table_size": a.table_size, "record_every": a.record_every},
           "cases": rounds[0], "rounds": rounds, "rss": rss, "verdicts": verdicts,
           "method": "each case in a fresh process, --repeat rounds of every case in order, each round's "
                     "ratios against its own first case, the verdict on their median; "
                     "requests/s = arrived requests / process CPU "
                     "seconds of the whole run (set-up, path and template building included; the "
                     "target's measure); second half = requests arriving in the second half of the "
                     "simulated time / CPU seconds spent on it (caches warm, summary excluded); step "
                     "share = CPU in Simulation._on_step / total; peak RSS = ru_maxrss of the case's process; "
                     "reference = simulator/reference.py with policy wcmp on the same servers, rate, "
                     "jobs and simulated time, in its own process (requests / CPU seconds of its run)"}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
