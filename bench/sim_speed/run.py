"""Simulator speed benchmark (not a test): `moderate` at ~700 flows/s for 60 s simulated.

Prints simulated seconds per wall second, events/s, packets/s and requests/s of the packet-level
model, and the requests/s of the minimal plain-SimPy flow-level reference model
(simulator/reference.py) measured in the same run, with the ratio; writes JSON
(bench/out/sim_speed.json by default). Wall-clock and process-CPU rates are both reported (on a
shared machine CPU time is the fairer measure; the ratio compares the two models in the same run).
Jobs are exp with mean 0.025 s so that 700 flows/s is ~0.875 of the 20 cores of `moderate`.
Targets (issue 3): >= 60x real time and ratio >= 1.0.

    python bench/sim_speed/run.py [--duration 60] [--rate 700] [--profile] [--out FILE]

``--profile`` prints a cProfile of one model run (sorted by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import platform
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from simulator.config import ExperimentConfig  # noqa: E402
from simulator.reference import run_reference  # noqa: E402
from simulator.run import run_experiment  # noqa: E402


FLOOR = """\
Where the time goes (cProfile of the 60 s run, 2026-12-04, with the link arithmetic, the event
queue and the reservoir statistics in C: simulator/_netcore.c, _eventq.c, _stats.c): the LB
buffers' flush into the C core ~19 % (10 % its own Python), the PS servers ~20 % (timers, rearm,
advance), the SYN / SYN-ACK / response handlers and request generation 4-6 % each of their own
time, the event queue itself ~4 %, the link arithmetic ~3 %, the features ~2 %. What is left is
Python work per event in the handlers, the LB buffers and the servers; matching the reference
(one coarse SimPy process per request, no packets) while modelling every packet would take those
into compiled code too."""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--rate", type=float, default=700.0)
    ap.add_argument("--mean-job", type=float, default=0.025)
    ap.add_argument("--policy", default="sed")
    ap.add_argument("--repeat", type=int, default=2, help="take the fastest of N runs of each model")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of one model run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "sim_speed.json"))
    a = ap.parse_args()
    cfg = ExperimentConfig.model_validate({
        "name": "sim_speed", "seed": 1, "duration_s": a.duration, "topology": {"preset": "moderate"},
        "traffic": {"rate": a.rate, "job": {"dist": "exp", "mean_s": a.mean_job}},
        "policy": {"name": a.policy}})
    best = None
    for _ in range(a.repeat):
        t, c = time.perf_counter(), time.process_time()
        r = run_experiment(cfg, progress=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        if best is None or wall < best[0]:
            best = (wall, cpu, r.summary)
    wall, cpu, s = best
    refs = []
    for _ in range(a.repeat):
        c = time.process_time()
        x = run_reference([2, 2, 2, 2, 4, 4, 4], a.rate, a.mean_job, a.duration, seed=1)
        x["cpu_s"] = time.process_time() - c
        refs.append(x)
    ref = min(refs, key=lambda x: x["wall_s"])
    out = {
        "config": {"preset": "moderate", "rate": a.rate, "mean_job_s": a.mean_job,
                   "duration_s": a.duration, "policy": a.policy},
        "core": s["core"],
        "wall_s": wall,
        "sim_s_per_wall_s": a.duration / wall,
        "events_per_s": s["events"] / wall,
        "packets_per_s": s["packets"] / wall,
        "requests_per_s": s["arrived"] / wall,
        "requests": s["arrived"], "events": s["events"], "packets": s["packets"],
        "events_per_request": s["events"] / s["arrived"],
        "packets_per_request": s["packets"] / s["arrived"],
        "cpu_s": cpu,
        "sim_s_per_cpu_s": a.duration / cpu,
        "requests_per_cpu_s": s["arrived"] / cpu,
        "reference_requests_per_s": ref["requests_per_s"],
        "reference_requests_per_cpu_s": ref["requests"] / ref["cpu_s"],
        "reference_wall_s": ref["wall_s"],
        "ratio_vs_reference": (s["arrived"] / wall) / ref["requests_per_s"],
        "ratio_vs_reference_cpu": (s["arrived"] / cpu) / (ref["requests"] / ref["cpu_s"]),
        "targets": {"sim_s_per_wall_s": 60.0, "ratio_vs_reference": 1.0},
        "python": platform.python_version(), "machine": platform.machine(),
    }
    for k, v in out.items():
        if isinstance(v, float):
            print(f"{k:28s} {v:,.2f}")
        elif not isinstance(v, dict):
            print(f"{k:28s} {v}")
    us_req = 1e6 * cpu / s["arrived"]
    us_ref = 1e6 * ref["cpu_s"] / ref["requests"]
    out["cpu_us_per_request"] = us_req
    out["reference_cpu_us_per_request"] = us_ref
    print(f"\nper request: {us_req:.1f} us CPU for {out['events_per_request']:.2f} events and "
          f"{out['packets_per_request']:.1f} packets (each client->server packet through the C "
          f"core); reference: {us_ref:.1f} us for one SimPy process (4 timeouts + a Resource "
          f"request), no packets.")
    print(FLOOR)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")
    if a.profile:
        prof = cProfile.Profile()
        prof.runcall(run_experiment, cfg, progress=False)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    main()
