"""Health checks of real servers for the real-time controller.

A :class:`HealthChecker` probes every server concurrently (one thread per probe from a small
pool), each probe bounded by ``timeout_s``, so one dead or black-holed server never delays the
verdict on the others and a whole round takes at most about ``timeout_s``. Probes:

* ``tcp``  -- a TCP connect to ``host:port`` that completes within the timeout;
* ``http`` -- ``GET <path>`` over HTTP/1.1 whose status line arrives within the timeout with a
  status below 500 (any 2xx/3xx/4xx answer shows a live server process).

A server is marked down after ``fall`` consecutive failed probes and up again after ``rise``
consecutive successes (HAProxy's fall/rise). Every server starts up (optimistic, so the first
step does not zero everything before a probe ran).

``start(interval_s)`` runs rounds in a background thread; the controller's step only reads the
latest verdicts (``healthy()``), so probing never sits on the step's critical path. ``probe_round``
runs one round synchronously (tests, tools).
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from simulator.config import UserError

__all__ = ["ServerAddr", "parse_servers", "probe_tcp", "probe_http", "HealthChecker", "ProbeKind"]

log = logging.getLogger("marllb.hil.health")

ProbeKind = Literal["tcp", "http", "none"]


@dataclass(frozen=True)
class ServerAddr:
    """One server's probe address (index = data-plane server index)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_servers(text: str) -> list[ServerAddr]:
    """Parse ``host:port,host:port,...`` (IPv6 hosts in brackets: ``[::1]:80``).
    Raises UserError naming the bad item."""
    out: list[ServerAddr] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host:
            raise UserError(f"--servers: {item!r} is not host:port")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            p = int(port)
        except ValueError:
            raise UserError(f"--servers: {item!r}: port {port!r} is not an integer") from None
        if not 0 < p < 65536:
            raise UserError(f"--servers: {item!r}: port {p} out of range 1..65535")
        out.append(ServerAddr(host, p))
    if not out:
        raise UserError("--servers: no server given")
    return out


def probe_tcp(addr: ServerAddr, timeout_s: float) -> bool:
    """True if a TCP connection to ``addr`` is established within ``timeout_s`` seconds."""
    try:
        with socket.create_connection((addr.host, addr.port), timeout=timeout_s):
            return True
    except OSError:
        return False


def probe_http(addr: ServerAddr, timeout_s: float, path: str = "/") -> bool:
    """True if ``GET path`` gets a response status < 500 within ``timeout_s`` seconds (connect
    and each socket read are bounded by the timeout; the body is not read)."""
    conn = http.client.HTTPConnection(addr.host, addr.port, timeout=timeout_s)
    try:
        conn.request("GET", path, headers={"User-Agent": "marllb-controller", "Connection": "close"})
        status = conn.getresponse().status
        return status < 500
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class HealthChecker:
    """Concurrent health probes of N servers with fall/rise hysteresis (see the module doc).

    ``kind="none"`` disables probing: every server is always healthy. ``on_change(i, healthy)``
    is called (from the probing thread) whenever a server's verdict flips."""

    def __init__(
        self,
        servers: Sequence[ServerAddr],
        kind: ProbeKind = "tcp",
        timeout_s: float = 0.2,
        *,
        http_path: str = "/",
        fall: int = 1,
        rise: int = 1,
        on_change: Callable[[int, bool], None] | None = None,
    ) -> None:
        if kind not in ("tcp", "http", "none"):
            raise UserError(f"--health: unknown probe {kind!r} (tcp, http or none)")
        if not timeout_s > 0:
            raise UserError(f"--health-timeout must be > 0 s, got {timeout_s}")
        if fall < 1 or rise < 1:
            raise UserError(f"health fall/rise must be >= 1, got {fall}/{rise}")
        self.servers = list(servers)
        self.kind: ProbeKind = kind
        self.timeout_s = float(timeout_s)
        self.http_path = http_path
        self.fall, self.rise = fall, rise
        self.on_change = on_change
        n = len(self.servers)
        self._healthy = np.ones(n, dtype=bool)
        self._fails = np.zeros(n, dtype=np.int64)
        self._oks = np.zeros(n, dtype=np.int64)
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(n, 32)), thread_name_prefix="probe")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0
        self.last_round_s = 0.0  # wall time of the last round, s

    def _probe(self, i: int) -> bool:
        addr = self.servers[i]
        if self.kind == "http":
            return probe_http(addr, self.timeout_s, self.http_path)
        return probe_tcp(addr, self.timeout_s)

    def probe_round(self) -> np.ndarray:
        """Probe every server once, concurrently; update and return the verdicts (copy, bool (N,))."""
        if self.kind == "none":
            return self.healthy()
        t0 = time.perf_counter()
        results = list(self._pool.map(self._probe, range(len(self.servers))))
        changes: list[tuple[int, bool]] = []
        with self._lock:
            for i, ok in enumerate(results):
                if ok:
                    self._oks[i] += 1
                    self._fails[i] = 0
                    if not self._healthy[i] and self._oks[i] >= self.rise:
                        self._healthy[i] = True
                        changes.append((i, True))
                else:
                    self._fails[i] += 1
                    self._oks[i] = 0
                    if self._healthy[i] and self._fails[i] >= self.fall:
                        self._healthy[i] = False
                        changes.append((i, False))
            out = self._healthy.copy()
            self.rounds += 1
        self.last_round_s = time.perf_counter() - t0
        for i, up in changes:
            log.warning("server %d (%s) is %s", i, self.servers[i], "up" if up else "down",
                        extra={"event": "health", "server": i, "addr": str(self.servers[i]),
                               "healthy": up})
            if self.on_change is not None:
                self.on_change(i, up)
        return out

    def healthy(self) -> np.ndarray:
        """Latest verdicts, bool (N,) (a copy)."""
        with self._lock:
            return self._healthy.copy()

    def start(self, interval_s: float) -> None:
        """Probe in a background thread every ``interval_s`` seconds (first round at once)."""
        if self.kind == "none" or self._thread is not None:
            return

        def loop() -> None:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    self.probe_round()
                except Exception:  # noqa: BLE001 - a probe bug must not kill health checking
                    log.exception("health probe round failed")
                self._stop.wait(max(0.0, interval_s - (time.monotonic() - t0)))

        self._thread = threading.Thread(target=loop, name="health", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background thread (waits for the running round, at most ~timeout_s) and the
        probe pool. Idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._pool.shutdown(wait=True)
