"""DataPlaneCore.process_batch_idx / process_idx (keys by row of a key table) against
process(): the same servers, counters and reservoirs; and their argument checks."""

from __future__ import annotations

from array import array

import numpy as np
import pytest

from simulator.dataplane import DataPlaneCore, DataPlaneError, make_keys
from tests.core.trace import ACK, SYN, random_trace


def _core(**kw) -> DataPlaneCore:
    core = DataPlaneCore(16, table_size=256, flow_timeout_s=0.5, **kw)
    for i in range(8):
        core.add_server(i, 1.0 + i % 3)
    return core


def test_batch_idx_equals_sequential(rng: np.random.Generator) -> None:
    tr = random_trace(rng, 1500, key_space=1200)
    n = len(tr["now"])
    # the key table: the distinct keys of the trace; each packet names its row
    table, idx = np.unique(tr["keys"], return_inverse=True)
    table = np.ascontiguousarray(table)
    forced = np.where(rng.random(n) < 0.1, rng.integers(-1, 9, n), -1).astype(np.int32)
    a, b, c = (_core(policy="sed2", seed=9) for _ in range(3))
    seq = np.array([a.process(tr["now"][i], tr["keys"][i], int(tr["flags"][i]),
                              int(tr["lengths"][i]), int(forced[i])) for i in range(n)])
    b.set_key_table(table)
    c.set_key_table(table)
    out, i = [], 0
    while i < n:  # chunks of random sizes, numpy and array.array buffers alternating
        m = int(rng.integers(1, 50))
        sl = slice(i, i + m)
        if len(out) % 2:
            o = array("i", bytes(4 * len(tr["now"][sl])))
            b.process_batch_idx(array("d", tr["now"][sl]), array("I", idx[sl].tolist()),
                                bytes(tr["flags"][sl]), array("I", tr["lengths"][sl].tolist()),
                                array("i", forced[sl].tolist()), out=o)
            out.append(np.array(o))
        else:
            out.append(b.process_batch_idx(tr["now"][sl], idx[sl], tr["flags"][sl],
                                           tr["lengths"][sl], forced[sl]))
        i += m
    d = _core(policy="sed2", seed=9)
    d.set_key_table(table)
    lists, i = [], 0
    while i < n:  # process_packets (Python lists through the core's own C buffers), no forcing
        m = int(rng.integers(1, 300))
        sl = slice(i, i + m)
        lists += d.process_packets(tr["now"][sl].tolist(), idx[sl].tolist(), tr["flags"][sl].tolist(),
                                   tr["lengths"][sl].tolist())
        i += m
    e = _core(policy="sed2", seed=9)
    e.set_key_table(table)
    ref = [e.process_idx(float(tr["now"][j]), int(idx[j]), int(tr["flags"][j]), int(tr["lengths"][j]))
           for j in range(n)]
    assert lists == ref
    assert d.counters() == e.counters()
    single = [c.process_idx(float(tr["now"][j]), int(idx[j]), int(tr["flags"][j]),
                            int(tr["lengths"][j]), int(forced[j])) for j in range(n)]
    assert np.array_equal(np.concatenate(out), seq)
    assert np.array_equal(np.array(single), seq)
    assert a.counters() == b.counters() == c.counters()
    assert a.counters()["untracked_full"] > 0  # the small table did fill
    for s in range(8):
        assert a.server_counters(s) == b.server_counters(s)
        for kind in ("flow_duration", "fct"):
            ta, va = a.reservoir(s, kind)
            tb, vb = b.reservoir(s, kind)
            assert np.array_equal(ta, tb) and np.array_equal(va, vb)
    assert np.array_equal(a.n_flow_on()[:8], [a.server_counters(s)["n_flow_on"] for s in range(8)])


def test_batch_idx_argument_checks() -> None:
    core = _core()
    with pytest.raises(DataPlaneError, match="key table"):
        core.process_batch_idx(np.zeros(1), np.zeros(1, np.uint32), np.full(1, SYN), np.full(1, 60))
    with pytest.raises(ValueError):
        core.set_key_table(np.zeros(3))
    core.set_key_table(make_keys(np.arange(1, 5) + 0x0A000000, 0x0A640001, 1000, 80))
    with pytest.raises(IndexError):
        core.process_idx(0.0, 4, SYN, 60)
    with pytest.raises(IndexError):
        core.process_batch_idx(np.zeros(2), np.array([0, 4], np.uint32), np.full(2, SYN),
                               np.full(2, 60))
    with pytest.raises(IndexError):
        core.process_batch_idx(np.zeros(1), np.array([-1]), np.full(1, SYN), np.full(1, 60))
    with pytest.raises(ValueError):
        core.process_batch_idx(np.zeros(2), np.zeros(1, np.uint32), np.full(2, SYN), np.full(2, 60))
    with pytest.raises(ValueError):  # wrong width: array('d') of indices
        core.process_batch_idx(array("d", [0.0]), array("d", [0.0]), bytes([SYN]), array("I", [60]))
    out = core.process_batch_idx(np.array([0.0, 0.001]), np.array([2, 2]), np.array([SYN, ACK]),
                                 np.array([60, 52]))
    assert out[0] == out[1] >= 0
    assert core.n_flow_on().sum() == 1
