"""Prometheus metrics of the real-time controller (prometheus-client, own registry).

Each :class:`ControllerMetrics` has its own ``CollectorRegistry`` (several controllers or tests in
one process do not collide) and, after ``serve(port)``, an HTTP endpoint ``/metrics`` on that port.
The default port 9464 is not 9090 (the Prometheus server's own).

Exposed (prefix ``marllb_controller_``):

=================================  =========  =================================================
name                               type       meaning
=================================  =========  =================================================
step_seconds                       histogram  shm read -> weights written, s, per step
steps_total                        counter    steps run
failures_total{kind}               counter    failed steps by kind (no_frame, read_error,
                                              policy_error, invalid_weights, overrun, write_error,
                                              all_down)
stale_frames_total                 counter    steps whose newest frame had the seq of the last one
weights_written_total              counter    msg_in frames written
static_fallback                    gauge      1 while static weights are used after N failures
server_weight{server}              gauge      weight written for the server (0 = drained/down)
server_healthy{server}             gauge      1 healthy, 0 down
frame_seq                          gauge      seq of the newest msg_out frame read
frame_age_seconds                  gauge      wall now - the frame's wall clock, s
weights_seq                        gauge      seq of the last msg_in frame written
=================================  =========  =================================================
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ControllerMetrics", "FAILURE_KINDS", "DEFAULT_METRICS_PORT"]

DEFAULT_METRICS_PORT = 9464
FAILURE_KINDS = ("no_frame", "read_error", "policy_error", "invalid_weights", "overrun",
                 "write_error", "all_down")
#: step latency buckets, s: 50 us .. 1 s
STEP_BUCKETS = (5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0)


class ControllerMetrics:
    """The controller's metrics for ``n_servers`` servers (labels "0".."n-1")."""

    def __init__(self, n_servers: int, prefix: str = "marllb_controller") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = prefix
        self.step_seconds = Histogram(f"{p}_step_seconds", "shm read -> weights written, seconds",
                                      buckets=STEP_BUCKETS, registry=r)
        self.steps = Counter(f"{p}_steps", "controller steps run", registry=r)
        self.failures = Counter(f"{p}_failures", "failed steps by kind", ["kind"], registry=r)
        for k in FAILURE_KINDS:
            self.failures.labels(kind=k)  # export zeros from the start
        self.stale_frames = Counter(f"{p}_stale_frames", "steps that saw no new msg_out frame",
                                    registry=r)
        self.weights_written = Counter(f"{p}_weights_written", "msg_in frames written", registry=r)
        self.static_fallback = Gauge(f"{p}_static_fallback",
                                     "1 while static weights are in use after repeated failures",
                                     registry=r)
        self.server_weight = Gauge(f"{p}_server_weight", "weight written per server", ["server"],
                                   registry=r)
        self.server_healthy = Gauge(f"{p}_server_healthy", "1 healthy, 0 down", ["server"],
                                    registry=r)
        for i in range(n_servers):
            self.server_healthy.labels(server=str(i)).set(1)
            self.server_weight.labels(server=str(i)).set(0)
        self.frame_seq = Gauge(f"{p}_frame_seq", "seq of the newest msg_out frame read", registry=r)
        self.frame_age = Gauge(f"{p}_frame_age_seconds",
                               "wall clock now minus the frame's wall clock, seconds", registry=r)
        self.weights_seq = Gauge(f"{p}_weights_seq", "seq of the last msg_in frame written",
                                 registry=r)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    def serve(self, port: int, addr: str = "0.0.0.0") -> int:
        """Serve ``/metrics`` over HTTP on ``addr:port`` (0 = an ephemeral port) in a daemon
        thread; returns the bound port."""
        server, thread = start_http_server(port, addr=addr, registry=self.registry)
        self._server, self._thread = server, thread
        self.port = int(server.server_address[1])
        return self.port

    def close(self) -> None:
        """Stop the HTTP endpoint. Idempotent."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
