#!/usr/bin/env python3
"""Benchmark of the lb_rl data-plane core: builds bench_core.c against the core sources, runs it,
optionally runs it again under callgrind for instructions per packet, prints a table with ratios
against the trivial hash-and-forward reference measured in the same run, and writes JSON.

    python bench/core_speed/run.py [--out bench/out/core_speed.json] [--reps 5] [--no-callgrind]

Timings are thread CPU time (time spent descheduled on a shared machine is excluded), best of
--reps; callgrind instruction counts are deterministic and the stable figure. Targets from
issue 2 (one core): established-flow packet <= 60 ns, new-flow decision <= 200 ns.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import first_line, machine_info  # noqa: E402
CORE = ROOT / "vpp_plugin" / "core"
POLICIES = ("ecmp", "wcmp", "lsq", "sed", "lsq2", "sed2")
TARGET_EST_NS = 60.0
TARGET_NEW_NS = 200.0


def core_sources() -> list[Path]:
    """The core's own .c files (the shm writer/reader is not on the packet path)."""
    return sorted(p for p in CORE.glob("lb_rl_*.c") if not p.name.startswith("lb_rl_shm"))


def build(cc: str, out_dir: Path) -> tuple[Path, bool]:
    """Compile the driver with -O2; returns (binary, callgrind client requests compiled in)."""
    has_cg = Path("/usr/include/valgrind/callgrind.h").exists()
    exe = out_dir / "bench_core"
    cmd = [cc, "-O2", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{CORE}"]
    if has_cg:
        cmd.append("-DLB_RL_HAVE_CALLGRIND")
    cmd += [str(HERE / "bench_core.c"), *map(str, core_sources()), "-lm", "-o", str(exe)]
    subprocess.run(cmd, check=True)
    return exe, has_cg


def parse_results(text: str) -> dict[str, dict[str, float]]:
    res: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] == "RESULT":
            res[parts[1]] = {"packets": int(parts[2]), "ns_total": float(parts[3])}
    return res


def run_timing(exe: Path, reps: int) -> tuple[dict[str, dict[str, float]], list[str]]:
    p = subprocess.run([str(exe), "--reps", str(reps)], check=True, capture_output=True, text=True)
    info = [ln for ln in p.stdout.splitlines() if ln.startswith("INFO")]
    return parse_results(p.stdout), info


def run_callgrind(exe: Path) -> dict[str, float]:
    """Instructions (Ir) per packet for every phase, from one callgrind run with one dump per
    phase (collection toggled on only inside the timed loops)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             f"--callgrind-out-file={out}", str(exe), "--callgrind"],
            check=True, capture_output=True, text=True,
        )
        packets = {k: v["packets"] for k, v in parse_results(p.stdout).items()}
        ir: dict[str, float] = {}
        for f in Path(tmp).glob("cg.out*"):
            text = f.read_text(errors="replace")
            m_name = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.M)
            m_tot = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if m_name and m_tot and m_name.group(1) in packets:
                ir[m_name.group(1)] = int(m_tot.group(1)) / packets[m_name.group(1)]
        return ir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "core_speed.json")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per phase (best is kept)")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = ap.parse_args(argv)

    info = machine_info(compiler=first_line("cc", "--version"))
    with tempfile.TemporaryDirectory() as tmp:
        exe, has_cg = build(args.cc, Path(tmp))
        timing, notes = run_timing(exe, args.reps)
        ir: dict[str, float] = {}
        cg_note = ""
        if args.no_callgrind:
            cg_note = "skipped (--no-callgrind)"
        elif shutil.which("valgrind") is None:
            cg_note = "valgrind not installed (apt-get install valgrind)"
        elif not has_cg:
            cg_note = "valgrind/callgrind.h missing (apt-get install valgrind)"
        else:
            ir = run_callgrind(exe)
    info["loadavg_end"] = os.getloadavg()

    ref_ns = timing["ref_hash_fwd"]["ns_total"] / timing["ref_hash_fwd"]["packets"]
    ref_ir = ir.get("ref_hash_fwd")
    rows = []
    for name, r in timing.items():
        ns = r["ns_total"] / r["packets"]
        row = {"phase": name, "packets": r["packets"], "ns_per_pkt": round(ns, 2),
               "ratio_vs_ref": round(ns / ref_ns, 2)}
        if name in ir:
            row["instr_per_pkt"] = round(ir[name], 1)
            row["instr_ratio_vs_ref"] = round(ir[name] / ref_ir, 2) if ref_ir else None
        rows.append(row)
    by = {r["phase"]: r for r in rows}
    targets = {
        "established_ns_target": TARGET_EST_NS,
        "established_ns": by["est_batch"]["ns_per_pkt"],
        "established_met": by["est_batch"]["ns_per_pkt"] <= TARGET_EST_NS,
        "new_flow_ns_target": TARGET_NEW_NS,
        "new_flow_ns": {p: by[f"new_{p}"]["ns_per_pkt"] for p in POLICIES},
        "new_flow_met": all(by[f"new_{p}"]["ns_per_pkt"] <= TARGET_NEW_NS for p in POLICIES),
    }

    print(f"{'phase':<15}{'ns/pkt':>9}{'x ref':>8}{'instr/pkt':>11}{'x ref':>8}")
    for r in rows:
        ipp = f"{r['instr_per_pkt']:>11.1f}" if "instr_per_pkt" in r else f"{'-':>11}"
        irr = f"{r['instr_ratio_vs_ref']:>8.2f}" if r.get("instr_ratio_vs_ref") else f"{'-':>8}"
        print(f"{r['phase']:<15}{r['ns_per_pkt']:>9.1f}{r['ratio_vs_ref']:>8.2f}{ipp}{irr}")
    for n in notes:
        print(n)
    if cg_note:
        print(f"callgrind: {cg_note}")
    print(f"targets: established {targets['established_ns']} ns (<= {TARGET_EST_NS}: "
          f"{targets['established_met']}), new-flow max "
          f"{max(targets['new_flow_ns'].values())} ns (<= {TARGET_NEW_NS}: "
          f"{targets['new_flow_met']})")
    print(f"load average start/end: {info['loadavg_start']} / {info['loadavg_end']}")

    result = {
        "benchmark": "core_speed",
        "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "setup": {"servers": 64, "concurrent_flows": 100_000, "table_size": 1 << 18,
                  "packets_per_flow_mix": 10, "batch": 256, "reps": args.reps,
                  "timer": "CLOCK_THREAD_CPUTIME_ID, best of reps",
                  "reference": "ref_hash_fwd: hash 5-tuple, index 1024-entry table, store"},
        "machine": info,
        "results": rows,
        "targets": targets,
        "callgrind": cg_note or "ok",
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
