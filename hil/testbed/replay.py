"""Replay a hand-made schedule with the real client in the first client namespace and return
its records: for tests and benchmarks that drive the testbed without a whole `hil run`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from hil.testbed import sh
from hil.testbed.plan import TestbedPlan, helper_cpus
from hil.testbed.schedule import Schedule

__all__ = ["replay"]

REPO = Path(__file__).resolve().parents[2]


def replay(plan: TestbedPlan, sched: Schedule, work_dir: Path, *, timeout_s: float = 10.0,
           response_bytes: int = 200, target: str | None = None, start_delay_s: float = 0.8) -> pd.DataFrame:
    """Send sched's requests (all of them, from client 0) to ``target`` (default: the VIP, i.e.
    through the LBs; a server's address bypasses them) and return the client's records."""
    work_dir.mkdir(parents=True, exist_ok=True)
    tag = time.monotonic_ns()
    path, out = work_dir / f"schedule_{tag}.npz", work_dir / f"records_{tag}.parquet"
    sched.save(path)
    duration = float(sched.t_s[-1]) + 1e-3
    t0 = time.time() + start_delay_s
    argv = [sys.executable, "-m", "hil.testbed.client", "--schedule", str(path), "--client", "0",
            "--vip", target or plan.vip, "--port", str(plan.port), "--start-wall", repr(t0),
            "--duration-s", repr(duration), "--out", str(out), "--timeout", repr(timeout_s),
            "--response-bytes", str(response_bytes)]
    cp = subprocess.run(sh.in_ns(plan.clients[0].ns, argv, helper_cpus()), capture_output=True, text=True,
                        timeout=start_delay_s + duration + timeout_s + 30, cwd=REPO)
    if cp.returncode != 0:
        raise RuntimeError(f"client failed (exit {cp.returncode}): {cp.stderr[-2000:]}")
    return pd.read_parquet(out)
