#!/usr/bin/env python3
"""Benchmark of the lb_rl data-plane core: builds bench_core.c against the core sources, runs it,
optionally runs it again under callgrind for instructions per packet, prints a table with ratios
against the trivial hash-and-forward reference measured in the same run, and writes JSON.

    python bench/core_speed/run.py [--out bench/out/core_speed.json] [--reps 5] [--no-callgrind]
                                   [--scaling 64,256,1024,4096]

--scaling adds the LSQ/SED new-flow cost at each server count, once with the linear scan and
once with the tournament tree (forced through bench_core --scan-max), to compare the two.

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


def run_timing(exe: Path, reps: int, extra: tuple[str, ...] = ()
               ) -> tuple[dict[str, dict[str, float]], list[str]]:
    p = subprocess.run([str(exe), "--reps", str(reps), *extra], check=True, capture_output=True,
                       text=True)
    info = [ln for ln in p.stdout.splitlines() if ln.startswith("INFO")]
    return parse_results(p.stdout), info


def run_callgrind(exe: Path, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Instructions (Ir) per packet for every phase, from one callgrind run with one dump per
    phase (collection toggled on only inside the timed loops)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", "--collect-atstart=no",
             f"--callgrind-out-file={out}", str(exe), "--callgrind", *extra],
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


ARGMIN_PHASES = ("new_lsq", "new_sed", "decide_lsq", "decide_sed")


def run_scaling(exe: Path, counts: list[int], reps: int, use_cg: bool) -> list[dict]:
    """LSQ/SED phases at each server count with the scan (--scan-max 1e9) and the tree
    (--scan-max 0): ns per new flow (best of reps) and, with callgrind, instructions."""
    rows = []
    for n in counts:
        for mode, scan_max in (("scan", "1000000000"), ("tree", "0")):
            extra = ("--only-new", "--servers", str(n), "--scan-max", scan_max)
            timing, _ = run_timing(exe, reps, extra)
            ir = run_callgrind(exe, extra) if use_cg else {}
            rows.append({
                "servers": n, "mode": mode,
                "ns": {k: round(timing[k]["ns_total"] / timing[k]["packets"], 1)
                       for k in ARGMIN_PHASES},
                "instr": {k: round(ir[k], 1) for k in ARGMIN_PHASES if k in ir},
            })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "core_speed.json")
    ap.add_argument("--reps", type=int, default=5, help="repetitions per phase (best is kept)")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--scaling", default="",
                    help="comma-separated server counts: LSQ/SED new-flow cost, scan vs tree")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.scaling.split(",") if x.strip()]

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
        scaling = (run_scaling(exe, counts, args.reps, use_cg=not cg_note) if counts else [])
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
    if scaling:
        print("LSQ/SED per new flow (SYN through the batch path) and the decision alone, "
              "scan vs tree:")
        print(f"{'servers':>8} {'mode':<5}{'new_lsq':>9}{'new_sed':>9}{'dec_lsq':>9}{'dec_sed':>9}"
              f"{'Ir new_lsq':>12}{'Ir new_sed':>12}{'Ir dec_lsq':>12}{'Ir dec_sed':>12}")
        for r in scaling:
            irs = "".join(f"{r['instr'].get(k, float('nan')):>12.0f}"
                          for k in ("new_lsq", "new_sed", "decide_lsq", "decide_sed"))
            print(f"{r['servers']:>8} {r['mode']:<5}{r['ns']['new_lsq']:>9.1f}"
                  f"{r['ns']['new_sed']:>9.1f}{r['ns']['decide_lsq']:>9.1f}"
                  f"{r['ns']['decide_sed']:>9.1f}{irs}")
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
        "argmin_scaling": scaling,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
