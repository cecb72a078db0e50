"""Fixtures for the controller tests: a real data plane (the C core through the cffi binding)
that owns a file shm region (C writer ``lb_rl_shm_publish``, C reader ``lb_rl_shm_poll_in``),
and real TCP / HTTP servers on 127.0.0.1 ephemeral ports that can be stopped and restarted."""

from __future__ import annotations

import http.server
import socket
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

dataplane = pytest.importorskip("simulator.dataplane", reason="cffi binding not built (pip install -e .)")
ffi, lib = dataplane.ffi, dataplane.lib


class CoreRegion:
    """A DataPlaneCore with ``n`` servers (static weights ``cores``) and the DATAPLANE handle of
    the shm region file ``path``, both real C code."""

    def __init__(self, path: Path, cores: list[float], max_servers: int = 8, slots: int = 16,
                 policy: str = "sed") -> None:
        self.path = path
        self.core = dataplane.DataPlaneCore(max_servers, table_size=4096, reservoir_size=slots,
                                            policy=policy, seed=7)
        for i, c in enumerate(cores):
            self.core.add_server(i, c)
        p = ffi.new("lb_rl_shm_params_t *")
        lib.lb_rl_shm_params_default(p)
        p.max_servers, p.reservoir_slots = max_servers, slots
        out = ffi.new("lb_rl_shm_t **")
        rc = lib.lb_rl_shm_open(str(path).encode(), p, lib.LB_RL_SHM_ROLE_DATAPLANE, out)
        assert rc == 0, ffi.string(lib.lb_rl_shm_last_error()).decode()
        self.shm = out[0]
        self._seq = ffi.new("uint64_t *")
        self.sport = 1000
        self.now_s = 1.0

    def open_flows(self, n: int) -> list[int]:
        """n new TCP flows (SYN then ACK); returns the server the core chose for each."""
        chosen = []
        for _ in range(n):
            self.sport += 1
            key = (0x0A000001, 0x0A0000FE, self.sport, 80, 6)
            self.now_s += 0.001
            s = self.core.process(self.now_s, key, lib.LB_RL_TCP_SYN, 60)
            self.core.process(self.now_s + 0.0002, key, lib.LB_RL_TCP_ACK, 52)
            chosen.append(s)
        return chosen

    def close_flows(self, sports: list[int]) -> None:
        for sp in sports:
            key = (0x0A000001, 0x0A0000FE, sp, 80, 6)
            self.now_s += 0.01
            self.core.process(self.now_s, key, lib.LB_RL_TCP_FIN | lib.LB_RL_TCP_ACK, 52)

    def publish(self, wall_s: float = 0.0) -> int:
        self.now_s += 0.01
        assert lib.lb_rl_shm_publish(self.shm, self.core.ctx, self.now_s, wall_s, self._seq) == 0
        return int(self._seq[0])

    def poll(self) -> int:
        """The data plane's poll: apply a newer msg_in frame to the core."""
        self.now_s += 0.001
        return int(lib.lb_rl_shm_poll_in(self.shm, self.core.ctx, self.now_s, 0.0))

    def weights(self, n: int) -> np.ndarray:
        return self.core.weights[:n]

    def close(self) -> None:
        if self.shm is not None:
            lib.lb_rl_shm_close(self.shm)
            self.shm = None


@pytest.fixture
def core_region(tmp_path: Path) -> Iterator[CoreRegion]:
    cr = CoreRegion(tmp_path / "lb1.shm", [1.0, 2.0, 4.0])
    yield cr
    cr.close()


class TcpServer:
    """A real TCP listener on 127.0.0.1 that accepts and closes; stop() / start() on the same port."""

    def __init__(self) -> None:
        self.port = 0
        self.sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.start()

    def start(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        s.settimeout(0.05)
        self.port = s.getsockname()[1]
        self.sock = s
        self._stop = threading.Event()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    c, _ = s.accept()
                    c.close()
                except (socket.timeout, OSError):
                    continue

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@pytest.fixture
def tcp_servers() -> Iterator[list[TcpServer]]:
    servers = [TcpServer() for _ in range(3)]
    yield servers
    for s in servers:
        s.stop()


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        code = 503 if self.path.startswith("/down") else 200
        body = b"ok\n" if code == 200 else b"unavailable\n"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[http.server.ThreadingHTTPServer]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join()


@pytest.fixture(scope="session")
def sim_pcap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A simulated run's pcap for the parity tests: 40 s of the unittest topology at load 0.6
    (17,306 client->VIP packets of 2,172 flows)."""
    from simulator.config import parse_config
    from simulator.run import run_experiment

    path = tmp_path_factory.mktemp("parity") / "run.pcap"
    cfg = parse_config({"name": "parity", "seed": 3, "duration_s": 40.0, "topology": {"preset": "unittest"},
                        "traffic": {"load": 0.6}, "policy": {"name": "sed"}})
    run_experiment(cfg, progress=False, pcap_path=str(path))
    return path
