"""Helpers of the testbed's netns tests: skip reasons, configs, and sending real requests
through the testbed with the real client (hil.testbed.client) from a client namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hil.testbed.plan import TestbedPlan
from hil.testbed.replay import replay
from hil.testbed.schedule import Schedule
from simulator.config import ExperimentConfig, parse_config


def skip_reason() -> str | None:
    """Why the testbed cannot run here (None: it can)."""
    if os.geteuid() != 0:
        return "the testbed needs root (network namespaces, cgroups)"
    if shutil.which("ip") is None or subprocess.run(["ip", "netns", "list"], capture_output=True).returncode:
        return "ip netns is not available"
    if shutil.which("apache2") is None or not Path("/usr/lib/apache2/modules").is_dir():
        return "apache2 / libapache2-mod-php not installed"
    if shutil.which("ethtool") is None:
        return "ethtool not installed"
    return None


needs_testbed = [pytest.mark.netns, pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")]


def config(cores: list[float], *, policy: str | dict = "wcmp", cpu_per_core: float = 0.1,
           **extra: object) -> ExperimentConfig:
    data: dict[str, object] = {
        "name": "netns_test", "seed": 1, "duration_s": 5.0,
        "topology": {"lbs": 1, "servers": [{"cores": c, "workers": 16, "backlog": 64} for c in cores]},
        "traffic": {"kind": "poisson", "rate": 10.0, "job": {"dist": "deterministic", "mean_s": 0.02}},
        "policy": policy if isinstance(policy, dict) else {"name": policy}, "lb": {"step_s": 0.1},
        "hil": {"cpu_per_core": cpu_per_core, "fallback_s": 0.5},
    }
    data.update(extra)
    return parse_config(data)


def uniform_schedule(n: int, rate_per_s: float, n_iter: int = 0) -> Schedule:
    ids = np.arange(n, dtype=np.int64)
    return Schedule(id=ids, t_s=ids / rate_per_s, work_s=np.zeros(n), n_iter=np.full(n, n_iter, dtype=np.int64),
                    lb=np.zeros(n, dtype=np.int32), client=np.zeros(n, dtype=np.int32))


def send(plan: TestbedPlan, sched: Schedule, work_dir: Path, *, timeout_s: float = 10.0,
         response_bytes: int = 200) -> pd.DataFrame:
    """Replay sched with the real client in the first client namespace; its records."""
    return replay(plan, sched, work_dir, timeout_s=timeout_s, response_bytes=response_bytes)


#: a client that opens connections now and sends their requests later (on a line on stdin)
HOLD_OPEN = r"""
import socket, sys
vip, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.create_connection((vip, 80), timeout=5)
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
sys.stdin.readline()
out = []
for s in socks:
    s.sendall(b"GET /work.php?n=0&b=10 HTTP/1.0\r\nHost: x\r\n\r\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode()
    server = [l.split(":", 1)[1].strip() for l in head.split("\r\n") if l.lower().startswith("x-server:")]
    out.append(f"{s.getsockname()[1]}:{head.split()[1]}:{server[0] if server else -1}")
    s.close()
print(" ".join(out), flush=True)
"""
