"""The processor-sharing server as it was in Python before its hot path moved to C
(simulator/_psserver.c): kept as the reference that tests/simulator/test_psserver_c.py
compares the C-backed simulator.server.PsServer with, schedule for schedule, to the bit.
Not used by the simulator."""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any, Callable

from simulator.server import saturated_rate

Schedule = Callable[[float, Callable[[Any], None], Any], None]


class ReferencePsServer:
    """One server. ``schedule(t_s, fn, arg)`` runs fn(arg) at simulated time t_s;
    ``on_done(req, t_s)`` / ``on_drop(req, t_s)`` report each admitted request's fate."""

    # slots: a data center's 1,024 servers are touched at random; their fields in one block
    __slots__ = ("idx", "cores", "background", "logical", "capacity", "effects", "io_slots",
                 "_io_busy", "_io_queue", "_io_live", "_epoch", "workers", "backlog", "failed",
                 "_schedule", "_on_done", "_on_drop", "_busy_workers", "_waitq", "_awaiting",
                 "_heap", "_seq", "_v", "_rate", "_t", "_n_jobs", "_token", "_timer_t",
                 "completed", "refused", "jobs_area", "busy_area", "stats_t0")

    def __init__(self, idx: int, cores: float, workers: int, backlog: int, schedule: Schedule,
                 on_done: Callable[[Any, float], None], on_drop: Callable[[Any, float], None]) -> None:
        self.idx = idx
        self.cores = float(cores)
        self.background = 0.0  # fraction of the cores taken by co-located load
        self.logical = self.cores  # cores * (1 - background): logical CPUs the requests share
        self.capacity = self.cores  # R(logical): the saturated service rate
        self.effects: Any = None  # hidden effects (speed, SMT, contention, io_slots); None: none
        self.io_slots: int | None = None
        self._io_busy = 0
        self._io_queue: deque[Any] = deque()  # requests waiting for an I/O slot
        self._io_live: dict[int, Any] = {}  # id -> request in its non-CPU part
        self._epoch = 0  # bumped by fail(): I/O completions of dropped requests are ignored
        self.workers = workers
        self.backlog = backlog
        self.failed = False
        self._schedule = schedule
        self._on_done = on_done
        self._on_drop = on_drop
        self._busy_workers = 0
        self._waitq: deque[Any] = deque()  # connections waiting for a worker
        self._awaiting: dict[int, Any] = {}  # id -> connection holding a worker, request not here
        self._heap: list[tuple[float, int, Any]] = []  # (v_finish, seq, req) in CPU service
        self._seq = 0
        self._v = 0.0
        self._rate = 0.0
        self._t = 0.0
        self._n_jobs = 0  # requests at the server (arrived, not completed)
        self._token = 0
        self._timer_t = -1.0
        self.completed = 0
        self.refused = 0
        self.jobs_area = 0.0
        self.busy_area = 0.0
        self.stats_t0 = 0.0

    # -- bookkeeping ---------------------------------------------------------------------------
    def _advance(self, now: float) -> None:
        dt = now - self._t
        if dt > 0:
            n = len(self._heap)
            if n:
                self._v += dt * self._rate
                c = self.logical
                self.busy_area += dt * (n if n < c else c) / self.cores
            self.jobs_area += dt * self._n_jobs
            self._t = now

    def _rearm(self, now: float) -> None:
        heap = self._heap
        n = len(heap)
        if not n:
            self._rate = 0.0
            self._token += 1
            self._timer_t = -1.0
            return
        if self.effects is None:
            c = self.logical
            self._rate = rate = 1.0 if n <= c else c / n
        else:
            self._rate = rate = self.total_rate(n) / n
        t_next = now + (heap[0][0] - self._v) / rate
        if t_next != self._timer_t:
            self._token += 1
            self._timer_t = t_next
            self._schedule(t_next, self._on_timer, self._token)

    def _on_timer(self, token: int) -> None:
        if token != self._token:
            return
        now = self._timer_t
        self._advance(now)
        heap = self._heap
        _, _, req = heapq.heappop(heap)  # the head is due by construction
        done = [req]
        v_eps = self._v + 1e-12 * (1.0 + self._v)
        while heap and heap[0][0] <= v_eps:
            done.append(heapq.heappop(heap)[2])
        for r in done:
            self._finish(r, now)
        self._rearm(now)
        for r in done:
            self._on_done(r, now)

    def _finish(self, req: Any, now: float) -> None:
        self._n_jobs -= 1
        self._busy_workers -= 1
        self.completed += 1
        req.t_srv_done = now
        waitq = self._waitq
        while waitq and self._busy_workers < self.workers:
            nxt = waitq.popleft()
            self._busy_workers += 1
            if nxt.t_srv_arrive >= 0:
                self._begin(nxt, now)
            else:
                self._awaiting[nxt.id] = nxt

    def total_rate(self, n: int) -> float:
        """R(n): CPU-seconds of work per second that n requests in CPU service get together."""
        c = self.logical
        e = self.effects
        if e is None:
            return float(n if n < c else c)
        p = c / e.threads_per_core
        r = min(n, p) + e.smt_gain * min(max(n - p, 0.0), c - p)
        if n > c:
            r /= 1.0 + e.contention * (n - c)
        return e.speed * r

    def _set_capacity(self) -> None:
        self.logical = self.cores * (1.0 - self.background)
        self.capacity = saturated_rate(self.logical, self.effects)

    def _begin(self, req: Any, now: float) -> None:
        """A request that holds a worker and has arrived: its non-CPU part, then its CPU work."""
        if getattr(req, "io_s", 0.0) > 0.0:
            if self.io_slots is None or self._io_busy < self.io_slots:
                self._io_busy += 1
                self._io_live[req.id] = req
                self._schedule(now + req.io_s, self._io_done, (self._epoch, req, now + req.io_s))
            else:
                self._io_queue.append(req)
            return
        self._start(req)

    def _io_done(self, arg: tuple[int, Any, float]) -> None:
        epoch, req, now = arg
        if epoch != self._epoch:
            return  # dropped by a failure
        self._io_busy -= 1
        del self._io_live[req.id]
        if self._io_queue:
            nxt = self._io_queue.popleft()
            self._io_busy += 1
            self._io_live[nxt.id] = nxt
            self._schedule(now + nxt.io_s, self._io_done, (self._epoch, nxt, now + nxt.io_s))
        self._advance(now)
        self._start(req)
        self._rearm(now)

    def _start(self, req: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (self._v + req.work_s, self._seq, req))

    # -- Server protocol -------------------------------------------------------------------------
    def admit(self, req: Any, now_s: float) -> bool:
        if self.failed:
            self.refused += 1
            return False
        if self._busy_workers < self.workers:
            self._busy_workers += 1
            self._awaiting[req.id] = req
            return True
        if len(self._waitq) < self.backlog:
            self._waitq.append(req)
            return True
        self.refused += 1
        return False

    def request_arrived(self, req: Any, now_s: float) -> None:
        self._advance(now_s)
        self._n_jobs += 1
        req.t_srv_arrive = now_s
        if self._awaiting.pop(req.id, None) is not None:
            self._begin(req, now_s)
            self._rearm(now_s)

    def n_requests(self) -> int:
        return self._busy_workers + len(self._waitq)

    def busy_workers(self) -> int:
        return self._busy_workers

    def n_in_cpu(self) -> int:
        return len(self._heap)

    def remaining_work_s(self, now_s: float) -> float:
        v = self._v + (self._rate * (now_s - self._t) if self._heap else 0.0)
        rem = sum(vf - v for vf, _, _ in self._heap)
        rem += sum(r.work_s for r in self._waitq)
        rem += sum(r.work_s for r in self._awaiting.values())
        rem += sum(r.work_s for r in self._io_live.values()) + sum(r.work_s for r in self._io_queue)
        return rem

    def set_cores(self, cores: float, now_s: float) -> None:
        self._advance(now_s)
        self.cores = float(cores)
        self._set_capacity()
        self._rearm(now_s)

    def set_background(self, fraction: float, now_s: float) -> None:
        """From now_s on, co-located load takes ``fraction`` (0 <= f < 1) of the cores."""
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"background fraction must be in [0, 1), got {fraction}")
        self._advance(now_s)
        self.background = float(fraction)
        self._set_capacity()
        self._rearm(now_s)

    def set_effects(self, effects: Any, now_s: float = 0.0) -> None:
        """Hidden effects (a ServerEffectsConfig: speed, threads_per_core, smt_gain, contention,
        io_slots) from now_s on."""
        self._advance(now_s)
        self.effects = effects
        self.io_slots = effects.io_slots
        self._set_capacity()
        self._rearm(now_s)

    def fail(self, now_s: float) -> None:
        self._advance(now_s)
        self.failed = True
        in_io = list(self._io_live.values()) + list(self._io_queue)
        victims = [r for _, _, r in self._heap] + list(self._waitq) + list(self._awaiting.values()) + in_io
        self._n_jobs -= len(self._heap) + sum(1 for r in self._waitq if r.t_srv_arrive >= 0) + len(in_io)
        self._heap.clear()
        self._waitq.clear()
        self._awaiting.clear()
        self._io_live.clear()
        self._io_queue.clear()
        self._io_busy = 0
        self._epoch += 1
        self._busy_workers = 0
        self._rearm(now_s)
        for r in victims:
            self._on_drop(r, now_s)

    def recover(self, now_s: float) -> None:
        self.failed = False

    # -- statistics ------------------------------------------------------------------------------
    def reset_stats(self, now_s: float) -> None:
        self._advance(now_s)
        self.jobs_area = 0.0
        self.busy_area = 0.0
        self.completed = 0
        self.stats_t0 = now_s

    def close_stats(self, now_s: float) -> None:
        self._advance(now_s)
