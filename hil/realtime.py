"""Pacing a simulation to the wall clock, as ns-3's real-time scheduler does: every event waits
for its wall time ``t0 + t_sim / factor`` (sleeping, then busy-waiting the last ``spin_s``, as
ns-3's WallClockSynchronizer does: on a VM a sleep's wake-up is often late by a millisecond or
more) and the lag (how much later than that it ran) is measured; best effort by default, a hard limit on request (``max_lag_s``: the run stops with
:class:`LagError`).

The pacer drives :class:`simulator.model.Simulation` from outside through its public stepping
calls (``next_time``, ``advance``, ``flush_lbs``): the model has no real-time flags. With
``packets_on_time`` (real data planes) every buffered client->server packet is handed to its
LB's data plane at its own wall time too, not just before the next new flow or step.

(SimPy's ``RealtimeEnvironment`` is no model here: its strict mode tolerates one time unit of
lag, useless at packet time scales.)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from simulator.config import UserError

__all__ = ["Pacer", "LagError", "LagStats", "LATE_S"]

LATE_S = 1e-3  #: an event later than this counts as late


class LagError(UserError):
    """A strict real-time run fell behind by more than its max_lag_s."""


@dataclass
class LagStats:
    """Lag of the events of a paced run (s; an event group at one time counts once per event)."""

    events: int
    wakeups: int
    mean_s: float
    p99_s: float
    max_s: float
    late_share: float  #: share of events later than LATE_S
    wall_s: float
    sim_s: float
    factor: float
    t0_unix_s: float  #: wall-clock (time.time()) instant of simulated time 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Pacer:
    """Run ``sim`` paced to the wall clock. ``clock``/``sleep`` are injectable (tests)."""

    def __init__(self, sim: Any, *, factor: float = 1.0, max_lag_s: float | None = None,
                 spin_s: float = 0.001, packets_on_time: bool = False,
                 clock: Callable[[], float] = time.perf_counter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not factor > 0:
            raise UserError(f"hil.realtime.factor must be > 0, got {factor}")
        self.sim = sim
        self.factor = float(factor)
        self.max_lag_s = max_lag_s
        self.spin_s = spin_s
        self.packets_on_time = packets_on_time
        self.clock = clock
        self.sleep = sleep
        self._lags: list[float] = []
        self._counts: list[int] = []
        self.t0_wall = math.nan
        self.t0_unix = math.nan

    def run(self, progress: Callable[[float], None] | None = None) -> LagStats:
        """Start the simulation, pace it to its end, finish it; returns the lag figures.
        Raises LagError in strict mode (the simulation is left unfinished)."""
        sim = self.sim
        sim.start(progress)
        end = sim.end_s
        lags, counts = self._lags, self._counts
        clock, sleep, inv, spin = self.clock, self.sleep, 1.0 / self.factor, self.spin_s
        packets = self.packets_on_time
        t0 = self.t0_wall = clock()
        self.t0_unix = time.time()
        while True:
            t = sim.next_time(packets)
            if t > end:
                break
            target = t0 + t * inv
            now = clock()
            if now < target:
                if target - now > spin:
                    sleep(target - now - spin)
                while clock() < target:  # the last spin_s: a sleep's wake-up can be late by ms
                    pass
                now = clock()
            lag = now - target
            if self.max_lag_s is not None and lag > self.max_lag_s:
                raise LagError(f"real-time run fell behind: the event at t={t:.6f} s ran {lag * 1e3:.3f} ms "
                               f"late (hil.realtime.max_lag_s = {self.max_lag_s * 1e3:g} ms); "
                               f"lower the traffic rate or hil.realtime.factor, or drop max_lag_s for "
                               "best effort")
            n0 = sim.events
            sim.advance(t)
            if packets:
                # packets already due by the wall clock go together (a train of back-to-back
                # segments is one batch once we are late), never past the next event
                sim.flush_lbs(max(t, min((clock() - t0) * self.factor, sim.next_time(False))))
            lags.append(lag if lag > 0 else 0.0)
            counts.append(max(1, sim.events - n0))
        sim.finish()
        return self.stats()

    def stats(self) -> LagStats:
        """Lag figures so far (also after a LagError)."""
        lags = np.asarray(self._lags, dtype=np.float64)
        cnt = np.asarray(self._counts, dtype=np.int64)
        n = int(cnt.sum())
        wall = self.clock() - self.t0_wall if math.isfinite(self.t0_wall) else 0.0
        if n == 0:
            return LagStats(0, 0, 0.0, 0.0, 0.0, 0.0, wall, float(self.sim.now()), self.factor, self.t0_unix)
        order = np.argsort(lags, kind="stable")
        cum = np.cumsum(cnt[order])
        p99 = float(lags[order][np.searchsorted(cum, 0.99 * n)]) if n else 0.0
        return LagStats(events=n, wakeups=len(lags), mean_s=float((lags * cnt).sum() / n), p99_s=p99,
                        max_s=float(lags.max()), late_share=float(cnt[lags > LATE_S].sum() / n),
                        wall_s=wall, sim_s=float(self.sim.now()), factor=self.factor, t0_unix_s=self.t0_unix)
