"""Link FIFO arithmetic: exact tiny cases, and the template fast path (Path.send_template)
against the link-by-link arithmetic on random train sequences, including congested links
with drop-tail losses (where the lazily kept template departures must be exact)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.network import Link, Path, Template


def test_fifo_and_drop_tail_exact():
    lk = Link("a", "b", 8e3, 0.5, 2)  # 1 byte = 1 ms; queue of 2 packets
    assert lk.send(0.0, 1000) == pytest.approx(1.5)  # departs 1.0, +0.5 delay
    assert lk.send(0.1, 1000) == pytest.approx(2.5)  # waits for the first
    assert lk.send(0.2, 1000) == -1.0  # two in the link: dropped
    assert lk.send(1.0, 1000) == pytest.approx(3.5)  # the first left at 1.0: room again
    assert lk.drops == 1
    assert lk.send(5.0, 500) == pytest.approx(6.0)  # idle link


def _paths(qcap: int, slow_bw: float):
    def mk():
        return Path([Link("c", "r", 1e10, 1e-5, qcap), Link("r", "s", slow_bw, 2e-5, qcap)])
    return mk(), mk()


@pytest.mark.parametrize("qcap, slow_bw, gap_s", [(1000, 1e10, 2e-4), (8, 1e9, 1e-4)])
def test_templates_equal_link_by_link(qcap: int, slow_bw: float, gap_s: float):
    rng = np.random.default_rng(7)
    a, b = _paths(qcap, slow_bw)
    shapes = [((0.0,) * 7, (1500,) * 7), ((0.0, 2e-6, 5e-6), (40, 40, 40)), ((0.0, 0.0), (40, 340))]
    tms = [Template(a, off, sz) for off, sz in shapes]
    t = 0.0
    hits = 0
    for _ in range(3000):
        t += rng.exponential(gap_s if rng.random() < 0.85 else 20 * gap_s)
        k = int(rng.integers(len(shapes)))
        off, sz = shapes[k]
        got = a.send_template(t, tms[k])
        if got is None:
            got = a.send_train([t + x for x in off], list(sz), 1e-3)
        else:
            hits += 1
        want = b.send_train([t + x for x in off], list(sz), 1e-3)
        assert got == pytest.approx(want, abs=1e-12)
        if rng.random() < 0.3:  # single packets in between (e.g. SYNs)
            x = a.send(t + 1e-6, 60, 1e-3)
            assert x == pytest.approx(b.send(t + 1e-6, 60, 1e-3), abs=1e-12)
    assert [lk.drops for lk in a.links] == [lk.drops for lk in b.links]
    assert hits > 50
    if qcap == 6:
        assert b.links[1].drops > 0  # the congested case did drop
        assert hits < 3000
