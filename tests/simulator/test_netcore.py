"""The C link arithmetic (simulator/_netcore.c through simulator.network) against the
pure-Python reference it replaced (tests/simulator/network_reference.py): the same random
traffic -- single packets, trains, templates and chains, sent now and ahead of time, over
links short enough to overflow -- must give the same times and leave the same link states,
to the bit. Plus the C types' checks of bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator import _eventq, _netcore, _stats
from simulator import network as cnet
from tests.simulator import network_reference as ref

RTO_S = 1e-3
# (u, v, bandwidth, delay, queue): a small fabric c - r1 - r2 - s plus a cross link into r1
LINKS = [("c", "r1", 1e9, 1e-5, 10), ("r1", "c", 1e9, 1e-5, 10), ("r1", "r2", 2e8, 2e-5, 8),
         ("r2", "r1", 2e8, 2e-5, 8), ("r2", "s", 1e10, 5e-6, 40), ("s", "r2", 1e10, 5e-6, 40),
         ("x", "r1", 1e9, 1e-6, 6)]
PATHS = {"sc": ["s", "r2", "r1", "c"], "cs": ["c", "r1", "r2", "s"], "cl": ["c", "r1"],
         "ls": ["r1", "r2", "s"], "xc": ["x", "r1", "c"]}
SHAPES = [((0.0,) * 7, (1500,) * 7), ((0.0, 2e-6, 5e-6), (40, 40, 40)), ((0.0, 0.0), (40, 340)),
          ((0.0,), (60,))]


class World:
    """One implementation's links, paths, templates and chains for LINKS / PATHS / SHAPES."""

    def __init__(self, mod) -> None:  # type: ignore[no-untyped-def]
        self.mod = mod
        self.links = {(u, v): mod.Link(u, v, bw, d, q) for u, v, bw, d, q in LINKS}
        self.paths = {k: mod.Path([self.links[(a, b)] for a, b in zip(n, n[1:])]) for k, n in PATHS.items()}
        self.tms = {(k, j): mod.Template(p, off, sz) for k, p in self.paths.items() for j, (off, sz) in enumerate(SHAPES)}
        resp = self.tms[("sc", 0)]
        ack_offs = [resp.arr[i] for i in (1, 3, 5, 6)]
        acks = mod.Template(self.paths["cs"], ack_offs, (40,) * 4)
        syn_ack = self.tms[("sc", 3)]
        req1 = mod.Template(self.paths["cl"], (syn_ack.arr[0],) * 2, (40, 340))
        req2 = mod.Template(self.paths["ls"], req1.arr, (40, 340))
        # a response and the ACKs it triggers; a SYN-ACK and the request it triggers (3 paths)
        self.chains = [(("sc", "cs"), mod.Chain([resp, acks])),
                       (("sc", "cl", "ls"), mod.Chain([syn_ack, req1, req2]))]

    def state(self) -> list:
        out = []
        for lk in self.links.values():
            tqd = tuple(lk.tqd)
            out.append((lk.last, list(lk.q), tqd, lk.tqb if tqd else None,
                        [tuple(h) for h in lk.hist], lk.drops))
        out += [(p.drops, p.reordered, p.delay_s) for p in self.paths.values()]
        return out


def _ops(seed: int, n: int):  # type: ignore[no-untyped-def]
    """A random operation sequence: (kind, args) with times from a Poisson clock, some sent
    ahead of time (a client's ACKs computed when a response leaves) and bursts of cross
    traffic that fill the short queues."""
    rng = np.random.default_rng(seed)
    t = 0.0
    for _ in range(n):
        t += float(rng.exponential(6e-5))
        base = t + (float(rng.uniform(1e-4, 5e-4)) if rng.random() < 0.15 else 0.0)
        u = rng.random()
        if u < 0.15:
            k = int(rng.integers(len(SHAPES)))
            yield "template", (str(rng.choice(list(PATHS))), k, base)
        elif u < 0.45:
            yield "chain", (int(rng.integers(2)), t)  # the model sends chains at the current time
        elif u < 0.65:
            m = int(rng.integers(1, 12))
            gaps = np.cumsum(rng.exponential(2e-6, m)) * (rng.random() < 0.5)
            sizes = [int(x) for x in rng.choice([40, 60, 1500], m)]
            yield "train", (str(rng.choice(list(PATHS))), [base + float(g) for g in gaps], sizes)
        elif u < 0.85:
            yield "send", (str(rng.choice(list(PATHS))), base, int(rng.choice([40, 60, 1500])))
        else:
            yield "link", (("x", "r1"), base, 1500)


def _apply(w: World, kind: str, args: tuple):  # type: ignore[no-untyped-def]
    if kind == "template":
        key, k, base = args
        return w.paths[key].send_template_at(base, w.tms[(key, k)])
    if kind == "chain":
        i, t = args
        keys, ch = w.chains[i]
        return w.mod.send_chain(t, [w.paths[k] for k in keys], ch)
    if kind == "train":
        key, times, sizes = args
        return w.paths[key].send_train(times, sizes, RTO_S)
    if kind == "send":
        key, t, size = args
        return w.paths[key].send(t, size, RTO_S)
    lk, t, size = args
    return w.links[lk].send(t, size)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_c_link_arithmetic_equals_the_python_reference_to_the_bit(seed: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    plans: dict[str, int] = {"idle": 0, "ahead": 0, "behind": 0, "none": 0}
    inner = ref._plan

    def counted(*a):  # type: ignore[no-untyped-def]
        p = inner(*a)
        kind = "none" if p is None else "behind" if p[1] else "ahead" if p[0] else "idle"
        plans[kind] += 1
        return p

    monkeypatch.setattr(ref, "_plan", counted)
    c, py = World(cnet), World(ref)
    for i, (kind, args) in enumerate(_ops(seed, 6000)):
        got, want = _apply(c, kind, args), _apply(py, kind, args)
        assert got == want, (i, kind, args)
        assert c.state() == py.state(), (i, kind, args)
    # every branch of the fast path and of drop-tail was taken
    assert min(plans.values()) > 50, plans
    assert sum(lk.drops for lk in py.links.values()) > 20
    assert sum(p.drops for p in py.paths.values()) > 20  # retransmissions after drops


@pytest.mark.parametrize("module", [_netcore, _eventq, _stats], ids=lambda m: m.__name__)
def test_the_built_module_is_not_older_than_its_source(module) -> None:  # type: ignore[no-untyped-def]
    """Editing a C source (simulator/_netcore.c, _eventq.c, _stats.c) without rebuilding would test the old code."""
    name = module.__name__.rsplit(".", 1)[1]
    so, src = Path(module.__file__), Path(cnet.__file__).with_name(name + ".c")
    if src.parent != so.parent:
        pytest.skip(f"{so} is a non-editable install: no source next to it to compare with")
    assert so.stat().st_mtime >= src.stat().st_mtime, f"{src.name} is newer than {so.name}: run `pip install -e .`"


def test_chain_with_a_link_twice_sends_nothing() -> None:
    w = World(cnet)
    p = w.paths["cl"]
    ch = cnet.Chain([w.tms[("cl", 3)], w.tms[("cl", 3)]])
    assert cnet.send_chain(0.0, [p, p], ch) is None
    assert [lk.last for lk in p.links] == [0.0]  # untouched


def test_bad_input_is_one_clear_error() -> None:
    w = World(cnet)
    with pytest.raises(ValueError, match="bandwidth_bps must be > 0"):
        cnet.Link("a", "b", 0.0, 1e-6, 10)
    with pytest.raises(ValueError, match="queue_pkts >= 1"):
        cnet.Link("a", "b", 1e9, 1e-6, 0)
    with pytest.raises(TypeError, match="must be real number"):
        w.paths["cl"].send_train([0.0, "late"], [40, 40], RTO_S)
    with pytest.raises(TypeError, match="Link objects"):
        cnet.Path([w.links[("c", "r1")], "r1->r2"])
    with pytest.raises(TypeError, match="initialised"):
        cnet.Path([cnet.Link.__new__(cnet.Link)])
    with pytest.raises(ValueError, match="another length"):
        w.paths["cl"].send_template_at(0.0, w.tms[("sc", 0)])
    with pytest.raises(ValueError, match="paths of other lengths"):
        cnet.send_chain(0.0, [w.paths["sc"]], w.chains[0][1])
    with pytest.raises(TypeError, match="send_chain"):
        cnet.send_chain(0.0, [w.paths["sc"]])
    with pytest.raises(ValueError, match="ends"):
        _netcore.Train()._set_links((0.0,), (0.0,), ((1.0,),), (True,), True, (3,))


def test_path_row_builds_each_path_once_and_checks_its_index():
    """_netcore.PathRow (a PathTable row): a missing path is built by the row's callback on
    first use and read from the array afterwards; indices outside the row are IndexError."""
    import gc
    import weakref

    calls = []

    def missing(j):  # type: ignore[no-untyped-def]
        calls.append(j)
        row[j] = ("path", j)
        return row[j]

    row = _netcore.PathRow(5, missing)
    assert len(row) == 5 and 3 not in row
    assert row[3] == ("path", 3) and row[3] == ("path", 3) and calls == [3]
    assert 3 in row and 4 not in row and 7 not in row
    del row[3]
    assert 3 not in row and row[3] == ("path", 3) and calls == [3, 3]
    for bad in (5, -1, 10**20):
        with pytest.raises(IndexError):
            row[bad]
    with pytest.raises(TypeError):
        row["a"]
    with pytest.raises(ValueError):
        _netcore.PathRow(-1, missing)

    class Table:  # a row's callback that refers back to it: collected as a cycle
        pass

    t = Table()
    t.row = _netcore.PathRow(2, lambda j: t)
    gone = weakref.ref(t)
    del t
    gc.collect()
    assert gone() is None
