"""Health probes against real servers, the Prometheus endpoint scraped over HTTP, and the
``marllb hil controller`` command as a process (SIGTERM, missing region, JSON logs)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hil.controller import Controller, StaticPolicy
from hil.health import HealthChecker, ServerAddr, parse_servers, probe_http, probe_tcp
from hil.metrics import ControllerMetrics
from simulator.config import UserError
from simulator.shm import ShmRegion

from .conftest import CoreRegion, TcpServer, lib

ROOT = Path(__file__).resolve().parents[2]
CORES = [1.0, 2.0, 4.0]


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_parse_servers() -> None:
    assert parse_servers("10.0.0.1:80, [::1]:8080") == [ServerAddr("10.0.0.1", 80), ServerAddr("::1", 8080)]
    for bad in ("", "host", "h:x", "h:70000"):
        with pytest.raises(UserError):
            parse_servers(bad)


def test_http_probe_status_and_closed_port(http_server) -> None:
    port = http_server.server_address[1]
    addr = ServerAddr("127.0.0.1", port)
    assert probe_http(addr, 0.5, "/")
    assert not probe_http(addr, 0.5, "/down")  # 503
    assert not probe_http(ServerAddr("127.0.0.1", _closed_port()), 0.5)
    assert probe_tcp(addr, 0.5)
    assert not probe_tcp(ServerAddr("127.0.0.1", _closed_port()), 0.5)


def test_black_holed_servers_are_probed_concurrently(http_server) -> None:
    """Three listeners that accept but never answer (backlog, no accept loop) and one live
    server: an HTTP round ends after about one timeout, not three, and only the live one is up."""
    holes = []
    for _ in range(3):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        holes.append(s)
    addrs = [ServerAddr("127.0.0.1", http_server.server_address[1])] + \
        [ServerAddr("127.0.0.1", s.getsockname()[1]) for s in holes]
    hc = HealthChecker(addrs, "http", timeout_s=0.3)
    try:
        t0 = time.perf_counter()
        up = hc.probe_round()
        dt = time.perf_counter() - t0
        assert up.tolist() == [True, False, False, False]
        assert 0.29 <= dt < 0.75  # sequential probes would take >= 0.9 s
    finally:
        hc.close()
        for s in holes:
            s.close()


def test_fall_rise_hysteresis(tcp_servers: list[TcpServer]) -> None:
    addrs = [ServerAddr("127.0.0.1", s.port) for s in tcp_servers]
    changes: list[tuple[int, bool]] = []
    hc = HealthChecker(addrs, "tcp", 0.2, fall=2, rise=2, on_change=lambda i, up: changes.append((i, up)))
    try:
        tcp_servers[0].stop()
        assert hc.probe_round()[0]  # one failure < fall
        assert not hc.probe_round()[0]
        tcp_servers[0].start()
        assert not hc.probe_round()[0]  # one success < rise
        assert hc.probe_round()[0]
        assert changes == [(0, False), (0, True)]
    finally:
        hc.close()


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_prometheus_endpoint_scraped(core_region: CoreRegion, tcp_servers: list[TcpServer]) -> None:
    cr = core_region
    addrs = [ServerAddr("127.0.0.1", s.port) for s in tcp_servers]
    health = HealthChecker(addrs, "tcp", 0.2)
    metrics = ControllerMetrics(3)
    port = metrics.serve(0, "127.0.0.1")
    assert port != 9090
    region = ShmRegion.open(cr.path)

    class Flaky(StaticPolicy):
        n = 0

        def weights(self, frame, obs):
            Flaky.n += 1
            if Flaky.n == 3:
                raise ValueError("boom")
            return super().weights(frame, obs)

    ctl = Controller(region, Flaky("wcmp", CORES), n_servers=3, static_weights=CORES,
                     health=health, metrics=metrics)
    try:
        wall = time.time() - 0.5  # a frame published half a second ago (wall clock)
        cr.publish(wall_s=wall)
        ctl.step()
        ctl.step()  # stale
        cr.publish(wall_s=wall)
        ctl.step()  # policy raises
        tcp_servers[1].stop()
        health.probe_round()
        cr.publish(wall_s=wall)
        r = ctl.step()
        m = _scrape(port)
        assert m[("marllb_controller_steps_total", ())] == 4
        assert m[("marllb_controller_stale_frames_total", ())] == 1
        assert m[("marllb_controller_failures_total", (("kind", "policy_error"),))] == 1
        assert m[("marllb_controller_failures_total", (("kind", "overrun"),))] == 0
        assert m[("marllb_controller_step_seconds_count", ())] == 4
        assert m[("marllb_controller_weights_written_total", ())] == 4
        assert m[("marllb_controller_frame_seq", ())] == 3
        assert m[("marllb_controller_weights_seq", ())] == r.weights_seq
        assert 0.5 <= m[("marllb_controller_frame_age_seconds", ())] < 5.0
        for i, w in enumerate([1.0, 0.0, 4.0]):
            assert m[("marllb_controller_server_weight", (("server", str(i)),))] == w
            assert m[("marllb_controller_server_healthy", (("server", str(i)),))] == (i != 1)
        assert m[("marllb_controller_static_fallback", ())] == 0
        assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
        np.testing.assert_allclose(cr.weights(3), [1.0, 0.0, 4.0])
    finally:
        metrics.close()
        health.close()
        region.close()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_missing_region_is_a_clear_error(tmp_path: Path) -> None:
    from experiments.cli import main

    missing = tmp_path / "nope.shm"
    res = subprocess.run([sys.executable, "-m", "experiments.cli", "hil", "controller",
                          "--shm", str(missing), "--policy", "sed", "--servers", "127.0.0.1:1",
                          "--metrics-port", "-1"], capture_output=True, text=True, env=_env(),
                         timeout=60)
    assert res.returncode == 2
    assert f"{missing}: cannot open shm region" in res.stderr and "Traceback" not in res.stderr
    assert main(["hil", "controller", "--shm", str(missing), "--policy", "nope",
                 "--servers", "127.0.0.1:1"]) == 2


def test_cli_process_runs_scrapes_and_stops_on_sigterm(core_region: CoreRegion,
                                                       http_server) -> None:
    cr = core_region
    cr.open_flows(6)
    cr.publish(wall_s=time.time())
    live = http_server.server_address[1]
    servers = f"127.0.0.1:{live},127.0.0.1:{live},127.0.0.1:{_closed_port()}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.cli", "hil", "controller", "--shm", str(cr.path),
         "--policy", "wcmp", "--cores", "1,2,4", "--servers", servers, "--step", "0.05",
         "--metrics-port", "0", "--metrics-addr", "127.0.0.1", "--health", "http",
         "--health-timeout", "0.2", "--log-json"],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env())
    try:
        lines: list[dict] = []
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            rec = json.loads(line)
            lines.append(rec)
            if rec.get("event") == "metrics":
                port = rec["port"]
        assert port is not None, lines
        region = ShmRegion.open(cr.path, role="reader")
        while region.in_seq_latest < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert region.in_seq_latest >= 3
        region.close()
        m = _scrape(port)
        assert m[("marllb_controller_steps_total", ())] >= 3
        assert m[("marllb_controller_server_healthy", (("server", "2"),))] == 0
        assert cr.poll() == lib.LB_RL_SHM_POLL_APPLIED
        np.testing.assert_allclose(cr.weights(3), [1.0, 2.0, 0.0])  # closed port: weight 0
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    recs = lines + [json.loads(x) for x in err.splitlines() if x.strip()]
    events = [r.get("event") for r in recs]
    assert "start" in events and "signal" in events and events[-1] == "stop"
    assert any(r.get("event") == "health" and r.get("server") == 2 and r.get("healthy") is False
               for r in recs)
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in recs)
