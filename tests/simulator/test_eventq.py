"""The simulation's event queue in C (simulator/_eventq.c) against heapq, which it replaced:
the same reentrant random schedules must run in the same order at the same times; plus its
merge with SimPy's own events, its clamping, its errors and its garbage collection."""

from __future__ import annotations

import gc
import heapq
import math
import weakref

import numpy as np
import pytest
import simpy

from simulator._eventq import EventQueue
from simulator.config import parse_config
from simulator.model import Simulation
from simulator.run import build_simulation, collect


def random_schedule(queue_push, now, seed: int, n_events: int) -> list[tuple[float, int]]:
    """Drive a queue through a reentrant random schedule: each call logs (now, its label) and,
    until n_events ran, schedules 1-2 more at now + a gap from {0, 0.5, 1, 1.5} (many equal
    times). ``queue_push(t, fn, arg)`` and ``now()`` are the queue under test's; returns the log
    (filled as the caller runs the queue)."""
    rng = np.random.default_rng(seed)
    log: list[tuple[float, int]] = []
    counter = iter(range(10**9))

    def handler(label: int) -> None:
        log.append((now(), label))
        if len(log) < n_events:
            for _ in range(rng.integers(1, 3)):
                queue_push(now() + 0.5 * rng.integers(0, 4), handler, next(counter))

    for _ in range(20):
        queue_push(0.5 * rng.integers(0, 8), handler, next(counter))
    return log


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_it_runs_a_reentrant_schedule_in_heapq_order(seed: int) -> None:
    # heapq over (t, seq, fn, arg): the queue the C one replaced
    heap: list = []
    seq = iter(range(10**9))
    clock = [0.0]
    ref_log = random_schedule(lambda t, fn, a: heapq.heappush(heap, (t, next(seq), fn, a)),
                                 lambda: clock[0], seed, 3000)
    while heap:
        t, _, fn, a = heapq.heappop(heap)
        clock[0] = t
        fn(a)

    env = simpy.Environment()
    q = EventQueue(env)
    c_log = random_schedule(q.push, lambda: env._now, seed, 3000)
    ran = q.run(math.inf, [])
    assert len(c_log) >= 3000 and ran == len(c_log) and len(q) == 0
    assert c_log == ref_log  # same labels at the same times, in the same order
    ties = sum(a[0] == b[0] for a, b in zip(c_log, c_log[1:]))
    assert ties > 1000  # the insertion order at equal times was exercised


def test_run_stops_at_its_end_and_leaves_the_rest() -> None:
    env = simpy.Environment()
    q = EventQueue(env)
    seen: list[float] = []
    for t in (3.0, 1.0, 2.0, 2.0, 5.0):
        q.push(t, lambda _: seen.append(env._now), None)
    assert q.peek() == 1.0
    assert q.run(2.0, []) == 3 and seen == [1.0, 2.0, 2.0]
    assert len(q) == 2 and q.peek() == 3.0
    assert q.run(10.0, []) == 2 and q.peek() == math.inf


def test_schedule_runs_a_past_time_now() -> None:
    env = simpy.Environment()
    q = EventQueue(env)
    seen: list[float] = []
    q.push(2.0, lambda _: q.schedule(0.5, lambda _: seen.append(env._now), None), None)
    q.run(math.inf, [])
    assert seen == [2.0]


def test_simpy_processes_interleave_in_time_order() -> None:
    """A SimPy process next to the simulation's own calls (a controller may run one): every
    event in time order, ours first at equal times."""
    cfg = parse_config({"name": "t", "seed": 1, "duration_s": 3.0, "warmup_s": 0.0,
                        "topology": {"preset": "moderate"},
                        "traffic": {"kind": "poisson", "rate": 100.0,
                                    "job": {"dist": "exp", "mean_s": 0.02}},
                        "policy": {"name": "lsq"}}, "test")
    sim: Simulation = build_simulation(cfg)
    log: list[tuple[float, str]] = []

    def ticker(env):  # type: ignore[no-untyped-def]
        while True:
            yield env.timeout(0.3)
            log.append((env.now, "simpy"))

    def ours(t: float) -> None:
        log.append((sim.now(), "ours"))
        if t + 0.3 <= 3.0:
            sim.schedule(t + 0.3, ours, t + 0.3)

    sim.env.process(ticker(sim.env))
    sim.schedule(0.15, ours, 0.15)
    sim.schedule(0.3, ours, 0.3)  # at the ticker's times: ours first
    sim.run()
    times = [t for t, _ in log]
    assert times == sorted(times)
    assert sum(k == "simpy" for _, k in log) == 10  # 0.3 .. 3.0
    for (t1, k1), (t2, k2) in zip(log, log[1:]):
        if math.isclose(t1, t2) and k1 != k2:
            assert (k1, k2) == ("ours", "simpy")
    assert sim.n_arrived > 200 and collect(sim, 0.0).summary["completed"] > 200


def test_bad_input_is_refused() -> None:
    q = EventQueue(simpy.Environment())
    with pytest.raises(ValueError, match="NaN"):
        q.push(math.nan, print, None)
    with pytest.raises(ValueError, match="NaN"):
        q.schedule(math.nan, print, None)
    with pytest.raises(TypeError):
        q.push("soon", print, None)
    with pytest.raises(TypeError, match="3 arguments"):
        q.push(1.0, print)
    with pytest.raises(TypeError, match="simpy_queue"):
        q.run(1.0, ())
    with pytest.raises(TypeError, match="not initialised"):
        EventQueue.__new__(EventQueue).run(1.0, [])
    assert len(q) == 0


def test_a_failing_call_propagates_and_the_queue_stays_usable() -> None:
    env = simpy.Environment()
    q = EventQueue(env)
    seen: list[int] = []

    def boom(_):  # type: ignore[no-untyped-def]
        raise RuntimeError("handler failed")

    q.push(1.0, seen.append, 1)
    q.push(2.0, boom, None)
    q.push(3.0, seen.append, 3)
    with pytest.raises(RuntimeError, match="handler failed"):
        q.run(10.0, [])
    assert seen == [1] and len(q) == 1
    assert q.run(10.0, []) == 1 and seen == [1, 3]


def test_a_cycle_through_the_queue_is_collected() -> None:
    class Model:
        def __init__(self) -> None:
            self.q = EventQueue(simpy.Environment())
            self.q.push(1.0, self.handle, self)  # model -> queue -> bound method -> model

        def handle(self, _) -> None:  # type: ignore[no-untyped-def]
            pass

    m = Model()
    alive = weakref.ref(m)
    del m
    gc.collect()
    assert alive() is None
