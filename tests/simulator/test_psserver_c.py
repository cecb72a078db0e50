"""The C-backed processor-sharing server (simulator/_psserver.c under simulator.server.PsServer)
against the pure-Python model it replaced (tests/simulator/server_reference.py): the same
random schedules -- arrivals with and without I/O, backlogs, core and background changes,
hidden effects, failures and recoveries, statistics resets -- must give the same completions
and drops at the same times and leave the same state, to the bit. Then whole simulations of
the scenarios that use each of those paths must write the same tables with either server."""

from __future__ import annotations

import heapq
import types
from pathlib import Path

import numpy as np
import pytest

import simulator.model
from simulator.config import load_config, parse_config
from simulator.model import Request
from simulator.run import build_simulation
from simulator.server import PsServer
from tests.simulator.server_reference import ReferencePsServer

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"


class PlainReq:
    """A request as the tests' own objects are: attributes, no C record."""

    def __init__(self, rid: int, work_s: float, io_s: float) -> None:
        self.id, self.work_s, self.io_s = rid, work_s, io_s
        self.t_srv_arrive = self.t_srv_done = -1.0


class Clock:
    """schedule(t, fn, arg) and a run up to a time; what the server reports goes to ``log``."""

    def __init__(self) -> None:
        self.q: list = []
        self.n = 0
        self.log: list = []

    def schedule(self, t, fn, arg):  # type: ignore[no-untyped-def]
        self.n += 1
        heapq.heappush(self.q, (t, self.n, fn, arg))

    def run_until(self, t_end: float) -> None:
        while self.q and self.q[0][0] < t_end:
            _, _, fn, arg = heapq.heappop(self.q)
            fn(arg)


def effects(rng: np.random.Generator) -> types.SimpleNamespace:
    return types.SimpleNamespace(speed=float(rng.choice([0.7, 1.0, 1.3])),
                                 threads_per_core=int(rng.choice([1, 2])),
                                 smt_gain=float(rng.choice([0.0, 0.25])),
                                 contention=float(rng.choice([0.0, 0.05])),
                                 io_slots=None if rng.random() < 0.5 else int(rng.integers(1, 4)))


def script(seed: int, n_ops: int) -> list[tuple]:
    """Random operations at Poisson times; some requests come in bursts of 2-3 with the same
    work, arriving at once, so they finish at the same virtual time (one timer completes them).
    A request's id is its position in the list."""
    rng = np.random.default_rng(seed)
    t, ops = 0.0, []
    for _ in range(n_ops):
        t += float(rng.exponential(0.08)) if rng.random() < 0.9 else 0.0
        u = rng.random()
        if u < 0.8:
            work = float(rng.choice([0.1, 0.2, rng.exponential(0.2)]))
            if rng.random() < 0.15:  # a burst: same work, no I/O, at the server at once
                ops += [(t, "request", len(ops) + i, work, 0.0, 0.0) for i in range(int(rng.integers(2, 4)))]
                continue
            io = float(rng.exponential(0.05)) if rng.random() < 0.2 else 0.0
            delay = 0.0 if rng.random() < 0.3 else float(rng.exponential(0.01))
            ops.append((t, "request", len(ops), work, io, delay))
        elif u < 0.85:
            ops.append((t, "cores", float(rng.choice([1.0, 2.0, 3.5, 8.0]))))
        elif u < 0.9:
            ops.append((t, "background", float(rng.choice([0.0, 0.3, 0.75]))))
        elif u < 0.93:
            ops.append((t, "effects", effects(rng)))
        elif u < 0.94:
            ops.append((t, "fail"))
        elif u < 0.98:
            ops.append((t, "recover"))
        else:
            ops.append((t, "reset_stats"))
    return ops


def state(s) -> tuple:  # type: ignore[no-untyped-def]
    jobs = s._jobs() if isinstance(s, PsServer) else s._heap
    return (s._v, s._rate, s._t, s._timer_t, s._n_jobs, s.busy_workers(), s.n_requests(), s.n_in_cpu(),
            s.completed, s.refused, s.jobs_area, s.busy_area, s.stats_t0, s.cores, s.logical, s.capacity,
            s.failed, [(vf, seq, r.id) for vf, seq, r in jobs], [r.id for r in s._waitq],
            list(s._awaiting), sorted(s._io_live), [r.id for r in s._io_queue])


def drive(cls, make_req, ops: list[tuple], workers: int, backlog: int) -> tuple[list, list]:  # type: ignore[no-untyped-def]
    """Run ``ops`` on a server of class ``cls``: (its log, its state after every operation)."""
    ck = Clock()
    srv = cls(0, 2.0, workers, backlog, ck.schedule, lambda r, t: ck.log.append(("done", r.id, t)),
              lambda r, t: ck.log.append(("drop", r.id, t)))
    states = []

    def arrive(arg):  # type: ignore[no-untyped-def]
        req, t = arg
        srv.request_arrived(req, t)

    for op in ops:
        t = op[0]
        ck.run_until(t)
        kind = op[1]
        if kind == "request":
            _, _, rid, work, io, delay = op
            req = make_req(rid, work, io)
            ok = srv.admit(req, t)
            ck.log.append(("admit", rid, ok))
            if ok:
                ck.schedule(t + delay, arrive, (req, t + delay))
        elif kind == "cores":
            srv.set_cores(op[2], t)
        elif kind == "background":
            srv.set_background(op[2], t)
        elif kind == "effects":
            srv.set_effects(op[2], t)
        elif kind == "fail":
            srv.fail(t)
        elif kind == "recover":
            srv.recover(t)
        else:
            srv.reset_stats(t)
        ck.log.append(("rem", srv.remaining_work_s(t), srv.total_rate(3)))
        states.append(state(srv))
    ck.run_until(float("inf"))
    srv.close_stats(ops[-1][0] + 100.0)
    states.append(state(srv))
    return ck.log, states


def record_req(rid: int, work: float, io: float) -> Request:
    return Request(rid, 0, rid, 0, 0.0, work, io)


SEEDS = range(6)
WORKERS_BACKLOG = [(3, 4), (64, 0), (1, 100)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make_req", [record_req, PlainReq], ids=["record", "plain"])
@pytest.mark.parametrize("workers, backlog", WORKERS_BACKLOG)
def test_same_log_and_state_as_the_python_model(seed, make_req, workers, backlog):
    ops = script(seed, 2200)
    ref_log, ref_states = drive(ReferencePsServer, make_req, ops, workers, backlog)
    c_log, c_states = drive(PsServer, make_req, ops, workers, backlog)
    assert c_log == ref_log  # == on floats: equal to the bit (no NaN is logged)
    assert c_states == ref_states
    kinds = {e[0] for e in ref_log}
    assert {"done", "drop", "admit"} <= kinds  # the schedules reach completions and failures
    assert sum(1 for e in ref_log if e[0] == "done") > 350


def test_the_schedules_reach_ties_backlogs_and_io_waits():
    """What the comparison above covers, counted on the reference over the same schedules:
    completions in one timer (equal virtual finish times), connections that waited in the
    backlog, requests that waited for an I/O slot."""
    seen = {"batch": 0, "backlog": 0, "io_wait": 0}
    for workers, backlog in WORKERS_BACKLOG:
        for seed in SEEDS:
            log, states = drive(ReferencePsServer, PlainReq, script(seed, 2200), workers, backlog)
            done = [e for e in log if e[0] == "done"]
            seen["batch"] += sum(a[2] == b[2] for a, b in zip(done, done[1:]))
            seen["backlog"] += sum(bool(st[-4]) for st in states)  # state(): the backlog's ids
            seen["io_wait"] += sum(bool(st[-1]) for st in states)  # state(): the I/O queue's ids
    assert min(seen.values()) > 0, seen


def test_construction_errors_name_the_argument():
    ck = Clock()
    with pytest.raises(TypeError):
        PsServer(0, "two", 1, 1, ck.schedule, print, print)
    with pytest.raises(TypeError):
        PsServer(0, 2.0, 1.5, 1, ck.schedule, print, print)
    s = PsServer(0, 2.0, 1, 1, ck.schedule, print, print)
    with pytest.raises(TypeError, match=r"admit\(req, now_s\)"):
        s.admit(PlainReq(0, 1.0, 0.0))
    with pytest.raises(AttributeError):
        s.admit(object(), 0.0)  # a request needs an id
    r = PlainReq(1, 1.0, 0.0)
    assert s.admit(r, 0.0)
    s.request_arrived(r, 0.0)
    s._clear_jobs()  # misuse: the live timer's job is gone
    with pytest.raises(RuntimeError, match="no job in service"):
        ck.run_until(float("inf"))


def _tables(cfg, monkeypatch, server_cls):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(simulator.model, "PsServer", server_cls)
    sim = build_simulation(cfg)
    assert all(type(s) is server_cls for s in sim.servers)
    sim.run()
    return sim.recorder.close()


@pytest.mark.parametrize("name, duration", [("hidden_smt.yaml", 20.0), ("hidden_dynamic.yaml", 45.0),
                                            ("paper_dynamic.yaml", 45.0),
                                            ("train_moderate_colocated.yaml", 20.0)])
def test_whole_runs_write_the_same_tables(name, duration, monkeypatch):
    """Effects and I/O slots (hidden_smt), capacity changes and a failure (hidden_dynamic,
    paper_dynamic), co-located background load (colocated): the same tables either way."""
    raw = load_config(CONFIGS / name).model_dump()
    raw.update(duration_s=duration, warmup_s=min(raw["warmup_s"], duration / 4))
    cfg = parse_config(raw, name)
    ref_req, ref_steps = _tables(cfg, monkeypatch, ReferencePsServer)
    c_req, c_steps = _tables(cfg, monkeypatch, PsServer)
    assert len(ref_req) > 1000
    assert c_req.equals(ref_req) and c_steps.equals(ref_steps)
