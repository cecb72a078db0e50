"""Exact tiny scenarios for the processor-sharing server (no randomness)."""

from __future__ import annotations

import heapq

import pytest

from simulator.server import PsServer


class Req:
    def __init__(self, rid: int, work_s: float) -> None:
        self.id = rid
        self.work_s = work_s
        self.t_srv_arrive = -1.0
        self.t_srv_done = -1.0


class Clock:
    """A minimal event loop: schedule(t, fn, arg)."""

    def __init__(self) -> None:
        self.q: list = []
        self.n = 0
        self.log: list = []

    def schedule(self, t, fn, arg):
        self.n += 1
        heapq.heappush(self.q, (t, self.n, fn, arg))

    def run(self):
        while self.q:
            t, _, fn, arg = heapq.heappop(self.q)
            fn(arg)


def _server(cores, workers, backlog, clock):
    return PsServer(0, cores, workers, backlog, clock.schedule,
                    lambda r, t: clock.log.append(("done", r.id, t)),
                    lambda r, t: clock.log.append(("drop", r.id, t)))


def test_processor_sharing_two_jobs_one_core():
    ck = Clock()
    s = _server(1, 10, 0, ck)
    a, b = Req(1, 1.0), Req(2, 2.0)
    assert s.admit(a, 0.0) and s.admit(b, 0.0)
    s.request_arrived(a, 0.0)
    s.request_arrived(b, 0.0)
    ck.run()
    # both at rate 1/2 until a finishes at t=2 (1 s of work), then b alone: 1 s left -> t=3
    assert ck.log == [("done", 1, pytest.approx(2.0)), ("done", 2, pytest.approx(3.0))]
    s.close_stats(3.0)
    assert s.busy_area == pytest.approx(3.0)
    assert s.jobs_area == pytest.approx(2 * 2.0 + 1 * 1.0)


def test_fifo_one_worker_and_backlog_refusal():
    ck = Clock()
    s = _server(1, 1, 1, ck)
    reqs = [Req(i, 1.0) for i in range(3)]
    assert s.admit(reqs[0], 0.0)
    assert s.admit(reqs[1], 0.0)  # backlog slot
    assert not s.admit(reqs[2], 0.0)  # workers + backlog full: refused
    assert s.refused == 1
    s.request_arrived(reqs[0], 0.0)
    s.request_arrived(reqs[1], 0.5)
    ck.run()
    assert ck.log == [("done", 0, pytest.approx(1.0)), ("done", 1, pytest.approx(2.0))]


def test_more_cores_than_jobs_each_runs_at_full_speed():
    ck = Clock()
    s = _server(4, 4, 0, ck)
    for i, w in enumerate((1.0, 2.0, 3.0)):
        r = Req(i, w)
        s.admit(r, 0.0)
        s.request_arrived(r, 0.0)
    ck.run()
    assert [e[2] for e in ck.log] == pytest.approx([1.0, 2.0, 3.0])


def test_capacity_change_and_failure():
    ck = Clock()
    s = _server(1, 10, 10, ck)
    a = Req(1, 2.0)
    s.admit(a, 0.0)
    s.request_arrived(a, 0.0)
    s.set_cores(0.5, 1.0)  # 1 s done, 1 s left at half speed -> t=3
    ck.run()
    assert ck.log == [("done", 1, pytest.approx(3.0))]
    b, c = Req(2, 5.0), Req(3, 5.0)
    s.admit(b, 3.0)
    s.request_arrived(b, 3.0)
    s.admit(c, 3.0)  # awaiting its request
    s.fail(4.0)
    assert sorted(ck.log[1:]) == [("drop", 2, 4.0), ("drop", 3, 4.0)]
    assert not s.admit(Req(4, 1.0), 4.5)
    s.recover(5.0)
    assert s.admit(Req(5, 1.0), 5.0)
    ck.run()
    assert len(ck.log) == 3  # the dropped job's stale timer does nothing
