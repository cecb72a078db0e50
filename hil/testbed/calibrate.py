"""`marllb hil calibrate`: how many PHP loop iterations one CPU-second is on this machine.

Measured through the same Apache + mod_php that serves the testbed (not the PHP CLI): a
standalone instance in namespace ``mlb-cal`` (loopback only) answers ``work.php?n=N`` several
times; each answer carries the CPU time the request used (getrusage in PHP), and the median of
N / cpu_s is the rate.

The rate depends on how the testbed runs PHP: a worker limited to ``cpu_per_core`` CPUs by a
CFS quota is stopped and restarted every period and loses its caches each time (measured here:
about 7.3e7 iterations per CPU-second unlimited, 6.0e7 at 0.1 CPU). So a calibration is made,
and kept, per ``cpu_per_core``: the instance runs in cgroup ``mlb-cal`` with the same quota and
period as one testbed worker, pinned to a server CPU (``cpu_per_core`` None: no quota, no pin).
Stored under the user's cache directory (``$XDG_CACHE_HOME/marllb/hil_calibration.json``);
`marllb hil status` shows it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from hil.testbed import apache, cgroups, sh
from hil.testbed.plan import helper_cpus, state_dir
from simulator.config import UserError

__all__ = ["calibrate", "load_calibration", "calibration_path", "iters_per_cpu_s", "CAL_NS"]

CAL_NS = "mlb-cal"
UNLIMITED = "unlimited"
_PROBE = """
import json, sys, time, urllib.request
n, reps = int(sys.argv[1]), int(sys.argv[2])
out = []
for _ in range(reps):
    with urllib.request.urlopen('http://127.0.0.1/work.php?n=%d&b=0' % n, timeout=120) as r:
        r.read()
        out.append({'cpu_s': float(r.headers['X-Cpu-S']), 'service_s': float(r.headers['X-Service-S'])})
print(json.dumps(out))
"""


def calibration_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "marllb" / "hil_calibration.json"


def _key(cpu_per_core: float | None) -> str:
    return UNLIMITED if cpu_per_core is None else f"{cpu_per_core:g}"


def load_calibration() -> dict[str, Any] | None:
    """All calibrations of this machine: ``{"by_cpu_per_core": {key: calibration}}``."""
    try:
        data = json.loads(calibration_path().read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "by_cpu_per_core" in data else None


def iters_per_cpu_s(cpu_per_core: float | None = None, *, auto: bool = True) -> float:
    """The stored rate for this cpu_per_core; with auto, calibrate now if none is stored."""
    cal = (load_calibration() or {}).get("by_cpu_per_core", {}).get(_key(cpu_per_core))
    if cal is None:
        if not auto:
            flag = "" if cpu_per_core is None else f" --cpu-per-core {cpu_per_core:g}"
            raise UserError(f"no PHP calibration on this machine: run `marllb hil calibrate{flag}`")
        cal = calibrate(cpu_per_core)
    return float(cal["iters_per_cpu_s"])


def calibrate(cpu_per_core: float | None = None, *, target_cpu_s: float = 0.05,
              reps: int = 11) -> dict[str, Any]:
    """Measure, store and return the calibration for cpu_per_core (None: unlimited CPU)."""
    binary, php = apache.check_installed()
    if os.geteuid() != 0:
        raise UserError("calibration starts Apache in a network namespace: run it as root (sudo)")
    run_dir = state_dir() / CAL_NS
    cg = cgroups.detect() if cpu_per_core is not None else None
    limits: dict[str, int] = {}
    cpus: tuple[int, ...] = ()
    sh.run(["ip", "netns", "del", CAL_NS], check=False)
    try:
        if cg is not None:
            assert cpu_per_core is not None
            limits = cg.create(CAL_NS, cpu_per_core)
            all_cpus = sorted(os.sched_getaffinity(0))
            cpus = tuple([c for c in all_cpus if c not in helper_cpus()][-1:] or all_cpus[-1:])
        inst = apache.ApacheInstance(ns=CAL_NS, run_dir=run_dir, cpus=cpus,
                                     cgroup_enter=cg.enter_command(CAL_NS) if cg is not None else None)
        sh.run(["ip", "netns", "add", CAL_NS])
        sh.run(["ip", "-n", CAL_NS, "link", "set", "lo", "up"])
        www = apache.install_www(state_dir())
        inst.write_config(apache.render_config(server_index=1, listen="127.0.0.1:80", workers=2,
                                               backlog=16, run_dir=run_dir, www=www, php_module=php))
        run_dir.chmod(0o755)
        inst.start()
        _wait_ready()
        # a first short round sizes N so that one request is about target_cpu_s of CPU
        first = _probe(500_000, 2)
        rate0 = 500_000 / max(1e-4, statistics.median(r["cpu_s"] for r in first))
        n = max(100_000, int(rate0 * target_cpu_s))
        rows = _probe(n, reps)
    finally:
        for pid in sh.ns_pids(CAL_NS):
            sh.kill_pids([pid])
        sh.run(["ip", "netns", "del", CAL_NS], check=False)
        if cg is not None:
            sh.kill_pids(cg.procs(CAL_NS))
            cg.remove(CAL_NS)
        shutil.rmtree(run_dir, ignore_errors=True)
    rates = [n / r["cpu_s"] for r in rows if r["cpu_s"] > 0]
    if not rates:
        raise UserError("calibration: PHP reported no CPU time (getrusage); cannot calibrate")
    cal = {
        "iters_per_cpu_s": statistics.median(rates),
        "cpu_per_core": cpu_per_core,
        "cfs": limits,
        "pinned_cpus": list(cpus),
        "n_iter": n,
        "samples": rows,
        "rate_spread": (min(rates), max(rates)),
        "php_module": str(php),
        "apache2": binary,
        "machine": platform.node(),
        "cpu": _cpu_model(),
        "measured_wall_s": time.time(),
    }
    data = load_calibration() or {"by_cpu_per_core": {}}
    data["by_cpu_per_core"][_key(cpu_per_core)] = cal
    p = calibration_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(data, indent=1))
    return cal


def _wait_ready(timeout_s: float = 10.0) -> None:
    code = ("import time,urllib.request\nd=time.time()+%f\nwhile True:\n try:\n"
            "  urllib.request.urlopen('http://127.0.0.1/work.php?n=0&b=0',timeout=1).read(); break\n"
            " except Exception:\n  time.sleep(0.05)\n  assert time.time()<d\n") % timeout_s
    sh.run(["python3", "-c", code], ns=CAL_NS, timeout_s=timeout_s + 5)


def _probe(n: int, reps: int) -> list[dict[str, float]]:
    cp = sh.run(["python3", "-c", _PROBE, str(n), str(reps)], ns=CAL_NS, timeout_s=600)
    return json.loads(cp.stdout)  # type: ignore[no-any-return]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
