"""The bench commands' errors, without root or a TRex server: each one clear, naming the thing,
within 5 s (a missing server: within the connect's 5-s budget after the command's start-up)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    cp = subprocess.run([sys.executable, "bench/throughput/run.py", *args], cwd=ROOT, capture_output=True,
                        text=True, timeout=60)
    return cp, time.monotonic() - t0


def test_no_trex_server_answering(tmp_path: Path):
    # the command's own start-up: the same imports, then it stops at the missing --dut-mac,
    # just before the connect (this first run also takes a cold start's extra seconds)
    first, startup = _bench("--trex", "127.0.0.1:1")
    assert first.returncode == 2 and "--dut-mac" in first.stderr
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cp, took = _bench("--trex", f"127.0.0.1:{port}", "--dut-mac", "02:00:00:00:00:09",
                      "--out", str(tmp_path / "x.json"))
    assert cp.returncode == 2
    assert f"127.0.0.1:{port}" in cp.stderr and ("no TRex server answering" in cp.stderr or "venv" in cp.stderr)
    assert took < startup + 5 + 1, (took, startup)  # connect's budget, driver start-up included
    assert not (tmp_path / "x.json").exists()


def test_a_profile_with_an_invalid_field(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text("name: p\nstreams:\n  - kind: udp\n    flows: 0\n    rate_pps: 1000\n")
    cp, took = _bench("--profile", str(f), "--trex", "127.0.0.1:1", "--dut-mac", "02:00:00:00:00:09")
    assert cp.returncode == 2 and took < 5
    assert str(f) in cp.stderr and "streams.0.flows (line 4)" in cp.stderr


def test_unknown_profile_name():
    cp, took = _bench("--profile", "nosuch", "--trex", "127.0.0.1:1", "--dut-mac", "02:00:00:00:00:09")
    assert cp.returncode == 2 and took < 5
    assert "--profile nosuch" in cp.stderr and "established" in cp.stderr


def test_trex_needs_the_devices_mac():
    cp, _ = _bench("--trex", "127.0.0.1:1")
    assert cp.returncode == 2 and "--dut-mac" in cp.stderr
