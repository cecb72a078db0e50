#!/usr/bin/env python3
"""Benchmark of the testbed's client (hil/testbed/client.py): sustained new connections/s and
send lateness at offered Poisson rates, against a local Apache prefork (+ mod_php) on
127.0.0.1, with the same server's capacity measured in the same run as the reference.

    python bench/client_rate/run.py [--rates 500,1000,1500,2000,3000] [--seconds 4]
        [--targets static,php] [--workers 16] [--out bench/out/client_rate.json]

Per (target, rate): the client runs as the testbed runs it (``python -m hil.testbed.client``)
with a schedule built by hil.testbed.schedule from a Poisson config at that rate, and we report
achieved sends/s and completions/s, lateness (t_send - t_arrive) mean/p99/max, JCT p50/p99,
outcome counts and the client's own CPU seconds per connection. Targets: ``static`` = a 64-byte
file (the client is the bottleneck candidate), ``php`` = work.php?n=0 (the real page, no work).

Reference, same server, same run: ``wrk -t1 -c16 -H 'Connection: close'`` (a C closed-loop
client: the server's connection capacity on this machine with wrk competing for the CPUs) and a
plain blocking-socket loop in Python (one connection at a time). Each client rate is printed as
a ratio to wrk. Target: >= 1000 new connections/s with p99 lateness < 10 ms. Needs root (Apache
runs its workers as www-data).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import first_line, machine_info  # noqa: E402
from hil.testbed import apache  # noqa: E402
from hil.testbed.schedule import build_schedule  # noqa: E402
from simulator.config import ExperimentConfig  # noqa: E402

PHP_MODULE = apache.MODULE_DIR / apache.PHP_MODULE
TARGET_RATE = 1000.0
TARGET_P99_S = 0.010
PATHS = {"static": "/tiny.txt", "php": "/work.php"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Apache:
    """Apache prefork + mod_php on 127.0.0.1 from a private config: the testbed's own config and
    instance (hil.testbed.apache) in this namespace, without the access log, serving work.php and
    a 64-byte tiny.txt."""

    def __init__(self, workers: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mlb-bench-apache-"))
        os.chmod(self.dir, 0o755)
        www = self.dir / "www"
        www.mkdir()
        shutil.copy(ROOT / "hil" / "testbed" / "www" / "work.php", www / "work.php")
        (www / "tiny.txt").write_bytes(b"x" * 63 + b"\n")
        for p in (www, *www.iterdir()):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        self.port = free_port()
        self.inst = apache.ApacheInstance(ns=None, run_dir=self.dir)
        self.inst.write_config(apache.render_config(
            server_index=1, listen=f"127.0.0.1:{self.port}", workers=workers, backlog=1024,
            run_dir=self.dir, www=www, php_module=PHP_MODULE, access_log=False))

    def start(self) -> None:
        self.inst.start()
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("apache did not start: " + self.inst.error_tail())

    def stop(self) -> None:
        self.inst.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wrk_rate(port: int, path: str, seconds: float) -> dict[str, float]:
    """wrk's completed requests/s with Connection: close (one new connection per request)."""
    p = subprocess.run(["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", "-H", "Connection: close",
                        f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True, check=True)
    m = re.search(r"Requests/sec:\s+([\d.]+)", p.stdout)
    err = re.search(r"Socket errors: (.*)", p.stdout)
    return {"conn_per_s": float(m.group(1)) if m else float("nan"),
            "socket_errors": err.group(1).strip() if err else ""}


def blocking_rate(port: int, path: str, seconds: float) -> dict[str, float]:
    """A plain blocking Python loop: connect, send, read to EOF, close; one at a time."""
    req = f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode()
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(req)
            while s.recv(65536):
                pass
        n += 1
    return {"conn_per_s": n / (time.perf_counter() - t0)}


def run_client(port: int, path: str, rate: float, seconds: float, tmp: Path, seed: int) -> dict:
    cfg = ExperimentConfig.model_validate({
        "name": f"bench_{rate:g}", "seed": seed, "duration_s": seconds,
        "traffic": {"kind": "poisson", "rate": rate, "job": {"dist": "deterministic", "mean_s": 1e-6}}})
    sched = build_schedule(cfg, iters_per_cpu_s=1.0, cpu_per_core=1.0, n_lbs=1, n_clients=1)
    sched.n_iter[:] = 0  # work.php?n=0
    sched.save(tmp / "s.npz")
    out = tmp / "r.parquet"
    t0 = time.time() + 1.0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run([sys.executable, "-m", "hil.testbed.client", "--schedule", str(tmp / "s.npz"),
                        "--client", "0", "--vip", "127.0.0.1", "--port", str(port),
                        "--start-wall", f"{t0:.6f}", "--duration-s", str(seconds), "--out", str(out),
                        "--path", path, "--response-bytes", "64", "--timeout", "5"],
                       capture_output=True, text=True, cwd=ROOT, timeout=seconds + 60)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    js = json.loads(p.stdout)
    df = pd.read_parquet(out)
    sent = df["t_send_s"].notna()
    done = df["outcome"] == "completed"
    span = float(df.loc[sent, "t_send_s"].max() - df.loc[sent, "t_send_s"].min())
    t_done = df.loc[done, "t_last_byte_s"]
    jct = (df["t_last_byte_s"] - df["t_send_s"])[done].to_numpy()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {
        "offered_per_s": rate,
        "scheduled": int(len(df)),
        "sent_per_s": round(float((sent.sum() - 1) / span), 1) if span > 0 else None,
        "completed_per_s": round(float((done.sum() - 1) / float(t_done.max() - t_done.min())), 1)
        if done.sum() > 1 else None,
        "lateness_mean_ms": round(js["lateness_mean_s"] * 1e3, 3),
        "lateness_p99_ms": round(js["lateness_p99_s"] * 1e3, 3),
        "lateness_max_ms": round(js["lateness_max_s"] * 1e3, 3),
        "jct_p50_ms": round(float(np.quantile(jct, 0.5)) * 1e3, 3) if len(jct) else None,
        "jct_p99_ms": round(float(np.quantile(jct, 0.99)) * 1e3, 3) if len(jct) else None,
        "outcomes": {k: int(v) for k, v in df["outcome"].value_counts().items() if v},
        # the event loop's CPU (the client's own process_time around the loop)
        "client_loop_cpu_ms_per_conn": round(js["loop_cpu_s"] / max(1, int(sent.sum())) * 1e3, 4),
        # the whole client process (interpreter start, numpy/pandas import, parquet write included)
        "client_process_cpu_s": round(cpu, 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "client_rate.json")
    ap.add_argument("--rates", default="500,1000,1500,2000,3000", help="offered conn/s, comma-separated")
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each client run")
    ap.add_argument("--targets", default="static,php", help="static and/or php")
    ap.add_argument("--workers", type=int, default=16, help="Apache prefork workers")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if shutil.which("apache2") is None or not PHP_MODULE.exists():
        print("needs apache2 and libapache2-mod-php (apt-get install apache2 libapache2-mod-php)")
        return 2
    if os.geteuid() != 0:
        print("needs root (Apache's workers run as www-data)")
        return 2
    rates = [float(r) for r in args.rates.split(",")]
    targets = [t.strip() for t in args.targets.split(",")]
    info = machine_info(apache=first_line("apache2", "-v"))
    apache = Apache(args.workers)
    apache.start()
    results: dict[str, dict] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for target in targets:
                path = PATHS[target]
                ref_path = path + ("?n=0&b=64" if target == "php" else "")
                ref = {"wrk": wrk_rate(apache.port, ref_path, args.seconds) if shutil.which("wrk") else None,
                       "python_blocking": blocking_rate(apache.port, ref_path, min(args.seconds, 3.0))}
                runs = [run_client(apache.port, path, r, args.seconds, Path(tmp), args.seed) for r in rates]
                wrk = ref["wrk"]["conn_per_s"] if ref["wrk"] else float("nan")
                for r in runs:
                    r["completed_vs_wrk"] = round(r["completed_per_s"] / wrk, 3) if r["completed_per_s"] else None
                    r["kept_up"] = bool(r["sent_per_s"] and r["sent_per_s"] >= 0.97 * r["offered_per_s"]
                                        and r["lateness_p99_ms"] < TARGET_P99_S * 1e3
                                        and r["outcomes"].get("completed", 0) == r["scheduled"])
                results[target] = {"path": path, "reference": ref, "runs": runs}
    finally:
        apache.stop()
    info["loadavg_end"] = os.getloadavg()

    met = {t: any(r["kept_up"] and r["offered_per_s"] >= TARGET_RATE for r in v["runs"])
           for t, v in results.items()}
    for target, v in results.items():
        ref = v["reference"]
        wrk = ref["wrk"]["conn_per_s"] if ref["wrk"] else float("nan")
        print(f"== {target} ({v['path']}): reference wrk -c16 {wrk:.0f} conn/s, "
              f"python blocking loop {ref['python_blocking']['conn_per_s']:.0f} conn/s")
        print(f"{'offered':>8}{'sent/s':>9}{'done/s':>9}{'x wrk':>7}{'late mean':>10}{'p99':>8}"
              f"{'max':>8}{'jct p50':>9}{'p99':>8}{'loop cpu':>10}  outcomes")
        for r in v["runs"]:
            print(f"{r['offered_per_s']:>8.0f}{r['sent_per_s'] or 0:>9.0f}{r['completed_per_s'] or 0:>9.0f}"
                  f"{r['completed_vs_wrk'] or 0:>7.2f}{r['lateness_mean_ms']:>9.2f}m{r['lateness_p99_ms']:>7.2f}m"
                  f"{r['lateness_max_ms']:>7.1f}m{r['jct_p50_ms'] or 0:>8.2f}m{r['jct_p99_ms'] or 0:>7.1f}m"
                  f"{r['client_loop_cpu_ms_per_conn']:>9.3f}m  {r['outcomes']}")
    print(f"target >= {TARGET_RATE:.0f} conn/s with p99 lateness < {TARGET_P99_S * 1e3:.0f} ms, all "
          f"completed: {met}")
    print(f"load average start/end: {info['loadavg_start']} / {info['loadavg_end']}")
    result = {
        "benchmark": "client_rate",
        "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "setup": {"rates": rates, "seconds": args.seconds, "workers": args.workers, "seed": args.seed,
                  "arrivals": "Poisson (hil.testbed.schedule from a poisson config)",
                  "close": "rst", "response_bytes": 64,
                  "reference": "wrk -t1 -c16 -H 'Connection: close' (same server, same run); "
                               "python blocking loop"},
        "machine": info,
        "results": results,
        "target": {"rate": TARGET_RATE, "p99_lateness_s": TARGET_P99_S, "met": met},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
