"""Simulated backend servers (Apache-like): cores, workers, backlog, processor sharing.

Model of one server:

* A SYN that arrives (``admit``) takes a free worker, else a backlog slot (FIFO), else it is
  refused (the client gets a RST; the request counts as dropped). A failed server refuses all.
* A worker that holds a connection whose request has not arrived yet is busy but uses no CPU.
  When the request arrives (``request_arrived``) on a connection holding a worker, its CPU work
  starts; on a connection in the backlog, it waits for a worker (FIFO).
* The CPU is shared by the n requests in CPU service (processor sharing): each progresses at
  rate min(1, cores / n) CPU-seconds per second. workers=1, cores=1 is a FIFO M/./1 queue;
  workers=c, cores=c is M/./c; many workers on 1 core is processor sharing.
* Implementation: a virtual time V (service attained by every job in CPU service, in CPU
  seconds) advances at the common rate; each job finishes at V_start + work, kept in a heap, so an
  arrival or departure costs O(log n) and the server owns ONE pending completion timer
  (stale timers are recognised by a token and ignored). The state and the per-request path
  (admit, request arrival, completion, the rate and timer) are C (simulator/_psserver.c,
  ``PsCore``): at 1,024 servers each visit finds a server cold, and a struct misses the caches
  far less than a Python object whose every number is an object of its own. Capacity changes,
  effects, I/O, failures and statistics are the Python below.
* ``fail``: every admitted connection (in service, waiting or awaiting its request) is dropped;
  new SYNs are refused until ``recover``. ``set_cores`` changes capacity at once.
* Co-located background load (``set_background``): a fraction f of the cores is taken by another
  tenant, so the requests share cores * (1 - f) logical CPUs (each still at most one core):
  with workers=1, cores=1 and a constant f the server is an M/M/1 queue of rate mu (1 - f).
* Hidden effects (``set_effects``, config ``effects``; the LB never sees them): with C = cores *
  (1 - f) logical CPUs and P = C / threads_per_core physical cores, n requests in CPU service
  share the total rate R(n) = speed * (min(n, P) + smt_gain * clamp(n - P, 0, C - P)) /
  (1 + contention * max(0, n - C)), each progressing at R(n) / n. ``capacity`` is the saturated
  rate R(C) (what the oracles divide by). Defaults give R(n) = min(n, C).
* A request with a non-CPU part (``req.io_s`` > 0: blocking I/O, a database call) first holds its
  worker for io_s without the CPU, through ``io_slots`` parallel slots of a shared resource
  (FIFO when all are busy; default unlimited), then starts its CPU work.

Statistics are time integrals since ``reset_stats``: ``mean_jobs`` = time-average number of
requests at the server (request arrived, not yet completed: in CPU service + waiting for a
worker); ``busy_fraction`` = time-average of min(n_cpu, capacity) / cores (the share of the
machine the service uses; background load is not counted).
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from simulator.config import UserError

try:
    from simulator._psserver import PsCore
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError("simulator._psserver (C extension) is not built; run `pip install -e .` "
                      "in the repository root (needs a C compiler)") from exc

__all__ = ["PsServer", "saturated_rate", "effects_by_server"]

Schedule = Callable[[float, Callable[[Any], None], Any], None]


def saturated_rate(logical: float, effects: Any) -> float:
    """R(C): the total service rate of a server with ``logical`` CPUs available when all are busy
    (CPU-seconds of nominal work per second), under hidden ``effects`` (None: ``logical``)."""
    if effects is None:
        return logical
    p = logical / effects.threads_per_core
    return effects.speed * (p + effects.smt_gain * (logical - p))


def effects_by_server(effects: Any, n_servers: int) -> dict[int, Any]:
    """{server index: its entry of the config's ``effects`` list}; UserError naming the field
    for an index outside the topology or a server in two entries."""
    out: dict[int, Any] = {}
    where: dict[int, int] = {}
    for k, eff in enumerate(effects):
        for i in range(n_servers) if eff.servers is None else eff.servers:
            if not 0 <= i < n_servers:
                raise UserError(f"effects.{k}.servers: no server {i} (the topology has "
                                f"{n_servers}: 0..{n_servers - 1})")
            if i in where:
                raise UserError(f"effects.{k}.servers: server {i} is already in effects.{where[i]}")
            where[i], out[i] = k, eff
    return out


class PsServer(PsCore):
    """One server. ``schedule(t_s, fn, arg)`` runs fn(arg) at simulated time t_s;
    ``on_done(req, t_s)`` / ``on_drop(req, t_s)`` report each admitted request's fate.

    From PsCore (C): ``admit``, ``request_arrived``, ``n_requests``, ``busy_workers``,
    ``n_in_cpu``, the fields ``cores``, ``background``, ``logical``, ``capacity``, ``workers``,
    ``backlog``, ``failed``, ``completed``, ``refused``, ``jobs_area``, ``busy_area``,
    ``stats_t0``, and the model's steps ``_advance``, ``_rearm``, ``_start``, ``_jobs``."""

    __slots__ = ("idx", "effects", "io_slots", "_io_busy", "_io_queue", "_io_live", "_epoch")

    def __init__(self, idx: int, cores: float, workers: int, backlog: int, schedule: Schedule,
                 on_done: Callable[[Any, float], None], on_drop: Callable[[Any, float], None]) -> None:
        super().__init__(cores, workers, backlog, schedule, on_done, on_drop)
        self.idx = idx
        self.effects: Any = None  # hidden effects (speed, SMT, contention, io_slots); None: none
        self.io_slots: int | None = None
        self._io_busy = 0
        self._io_queue: deque[Any] = deque()  # requests waiting for an I/O slot
        self._io_live: dict[int, Any] = {}  # id -> request in its non-CPU part
        self._epoch = 0  # bumped by fail(): I/O completions of dropped requests are ignored

    def total_rate(self, n: int) -> float:
        """R(n): CPU-seconds of work per second that n requests in CPU service get together.

        The completion timers use the C copy of this formula (``total_rate`` in
        simulator/_psserver.c, fed by ``_effect_params``): a new effect on the rate changes both,
        and tests/simulator/test_psserver_c.py (against server_reference.py) checks they agree."""
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

    def _begin_io(self, req: Any, now: float) -> None:
        """The non-CPU part of a request that holds a worker (PsCore calls it when io_s > 0)."""
        if self.io_slots is None or self._io_busy < self.io_slots:
            self._io_busy += 1
            self._io_live[req.id] = req
            self._schedule(now + req.io_s, self._io_done, (self._epoch, req, now + req.io_s))
        else:
            self._io_queue.append(req)

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

    def remaining_work_s(self, now_s: float) -> float:
        rem = sum(self._cpu_left(now_s))
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
        self._effect_params((effects.speed, effects.threads_per_core, effects.smt_gain, effects.contention))
        self._set_capacity()
        self._rearm(now_s)

    def fail(self, now_s: float) -> None:
        self._advance(now_s)
        self.failed = True
        in_cpu = [r for _, _, r in self._jobs()]
        in_io = list(self._io_live.values()) + list(self._io_queue)
        victims = in_cpu + list(self._waitq) + list(self._awaiting.values()) + in_io
        self._n_jobs -= len(in_cpu) + sum(1 for r in self._waitq if r.t_srv_arrive >= 0) + len(in_io)
        self._clear_jobs()
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
