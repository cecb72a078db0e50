"""Link FIFO arithmetic: exact tiny cases, and the template fast path (Path.send_template)
against the link-by-link arithmetic on random train sequences, including congested links
with drop-tail losses (where the lazily kept template departures must be exact)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.network import Link, Path, Template, TemplateCache, send_chain


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
    if qcap == 8:
        assert b.links[1].drops > 0  # the congested case did drop
        assert hits < 3000


@pytest.mark.parametrize("use_chain", [False, True])
def test_templates_ahead_of_trains_computed_ahead_of_time(use_chain: bool):
    """Trains sent for later times (the client ACKs a response triggers, computed when the
    server finishes) and then trains sent earlier: a template that fits before them must give
    what the link-by-link arithmetic gives, and leave the links as it leaves them."""
    rng = np.random.default_rng(11)
    a, b = _paths(64, 1e9)
    shapes = [((0.0,) * 7, (1500,) * 7), ((0.0, 2e-6, 5e-6), (40, 40, 40))]
    cache = TemplateCache()
    tms = [cache.get(a, off, sz) for off, sz in shapes]
    chains = [cache.chain([tm]) for tm in tms]
    t, idle, ahead = 0.0, 0, 0
    for _ in range(4000):
        t += rng.exponential(1e-4)
        later = rng.random() < 0.15
        base = t + (rng.uniform(2e-4, 6e-4) if later else 0.0)  # some ahead of time
        k = int(rng.integers(len(shapes)))
        off, sz = shapes[k]
        busy = any(lk.last > base + f for lk, f in zip(a.links, tms[k].first))
        if later:
            got = None
        elif use_chain:  # the model sends chains at the current time only (Chain.hist)
            waits = send_chain(base, [a], chains[k])
            got = None if waits is None else [base + waits[0] + x for x in tms[k].arr]
        else:
            got = a.send_template(base, tms[k])
        if got is None:
            got = a.send_train([base + x for x in off], list(sz), 1e-3)
        else:
            ahead += busy
            idle += not busy
        want = b.send_train([base + x for x in off], list(sz), 1e-3)
        assert got == pytest.approx(want, abs=1e-12)
        for la, lb in zip(a.links, b.links):
            assert la.last == pytest.approx(lb.last, abs=1e-12)
            if not use_chain:  # a chain does not record a train on its first link
                assert [x for x, _ in la.hist] == pytest.approx([x for x, _ in lb.hist], abs=1e-12)
    assert ahead > 200 and idle > 200  # both cases of the fast path were taken


@pytest.mark.parametrize("qcap", [200, 12])
@pytest.mark.parametrize("use_chain", [False, True])
def test_back_to_back_trains_wait_behind_a_backlog_exactly(use_chain: bool, qcap: int):
    """Trains that are back-to-back on a link (a response's segments, one SYN-ACK) and meet
    that link still busy with cross traffic start when it empties and keep their shape: the
    template shifted by the wait must equal the link-by-link arithmetic, per packet and in the
    links' last departures, and the wait must carry over to a second path (a chain: the ACKs it
    triggers). Cross traffic joins at the last link of the first path (the client link); with
    a short queue and larger bursts there the link also drops, and a train waits only where
    all of it fits."""
    rng = np.random.default_rng(5)

    def mk():
        up = Path([Link("s", "sw", 1e10, 5e-5, 200), Link("sw", "er", 1e10, 5e-5, 200),
                   Link("er", "c", 1e10, 5e-5, qcap)])
        back = Path([Link("c", "er", 1e10, 5e-5, 200), Link("er", "lb", 1e10, 5e-5, 200)])
        cross = Path([up.links[2]])  # other flows' packets into the client
        return up, back, cross

    (a, a_back, a_cross), (b, b_back, b_cross) = mk(), mk()
    cache = TemplateCache()
    resp = cache.get(a, (0.0,) * 7, (1500,) * 7)
    acks = cache.get(a_back, [resp.arr[i] for i in (1, 3, 5, 6)], (40,) * 4)
    assert all(resp.tight) and not acks.tight[0]
    chain = cache.chain([resp, acks])
    t, behind, idle = 0.0, 0, 0
    for _ in range(3000):
        t += rng.exponential(1e-5)  # the client link about 55 % busy
        if rng.random() < 0.5:  # cross traffic: a few full segments into the client
            n = int(rng.integers(1, 4 if qcap > 100 else 10))
            at = [t + resp.first[2]] * n  # in time order with the responses' arrivals there
            got = a_cross.send_train(at, [1500] * n, 1e-3)
            assert got == pytest.approx(b_cross.send_train(at, [1500] * n, 1e-3), abs=1e-12)
            continue
        busy = a.links[2].last > t + resp.first[2]
        if use_chain:
            waits = send_chain(t, [a, a_back], chain)
            got = None if waits is None else [t + waits[0] + x for x in resp.arr]
            got_back = None if waits is None else [t + waits[1] + x for x in acks.arr]
        else:
            got = a.send_template(t, resp)
            got_back = None
        if got is None:
            continue
        behind += busy
        idle += not busy
        want = b.send_train([t] * 7, [1500] * 7, 1e-3)
        assert got == pytest.approx(want, abs=1e-12)
        if got_back is not None:
            sent = [want[i] for i in (1, 3, 5, 6)]
            assert got_back == pytest.approx(b_back.send_train(sent, [40] * 4, 1e-3), abs=1e-12)
        for la, lb in zip(a.links + a_back.links, b.links + b_back.links):
            assert la.last == pytest.approx(lb.last, abs=1e-12)
    # every later packet agreed too (so did the links' queues), drops included
    assert [lk.drops for lk in a.links] == [lk.drops for lk in b.links]
    assert behind > 300  # trains did wait behind a backlog
    if qcap < 20:
        assert b.links[2].drops > 0  # and the queue did overflow (those trains took send_train)
    else:
        assert idle > 300


# -- paths ------------------------------------------------------------------------------------

def _delay(g, nodes: list[str]) -> float:
    return sum(g[a][b]["delay_s"] for a, b in zip(nodes, nodes[1:]))


@pytest.mark.parametrize("spec", ["leaf_spine,spines=3,leaves=4,servers_per_leaf=3,lbs=3",
                                  "leaf_spine,spines=2,leaves=3,servers_per_leaf=2,lbs=2,lb_attach=spines",
                                  "fat_tree,k=4,lbs=3", "large,lbs=3",
                                  "datacenter,spines=2,leaves=4,servers_per_leaf=4,lbs=4"])
def test_path_table_gives_shortest_paths_through_allowed_nodes(spec: str) -> None:
    """Against networkx on the subgraph without the avoided kinds (the definition): every path
    is made of graph edges, has the shortest delay and, among those, the fewest hops; no
    intermediate node is of an avoided kind; the Path's links are those edges, built once."""
    import networkx as nx

    import topologies
    from simulator.config import TopologyConfig
    from simulator.network import PathTable, build_links

    g = topologies.build(TopologyConfig(preset=spec))
    links = build_links(g)
    lbs, servers, clients = topologies.lbs(g), topologies.servers(g), topologies.clients(g)
    kind = dict(g.nodes(data="kind"))
    for sources, targets, avoid in ((clients, lbs, ("server", "lb")), (lbs, servers, ("client", "lb")),
                                    (servers, clients, ("lb",))):
        table = PathTable(g, links, sources, targets, avoid)
        for i, src in enumerate(sources):
            for j, dst in enumerate(targets):
                nodes = table.nodes(i, j)
                assert nodes[0] == src and nodes[-1] == dst
                assert all(kind[n] not in avoid for n in nodes[1:-1]), nodes
                sub = g.subgraph([n for n in g if kind[n] not in avoid or n in (src, dst)])
                best = nx.shortest_path_length(sub, src, dst, weight="delay_s")
                assert _delay(g, nodes) == pytest.approx(best, rel=1e-9, abs=1e-15)
                fewest = min(len(p) for p in nx.all_shortest_paths(sub, src, dst, weight="delay_s"))
                assert len(nodes) == fewest
                path = table[i][j]
                assert [(lk.u, lk.v) for lk in path.links] == list(zip(nodes, nodes[1:]))
                assert table[i][j] is path


def test_equal_cost_paths_spread_over_the_spines() -> None:
    """ECMP: the 1,024 server->client and the LB->server paths of the datacenter preset use all
    8 spines, each within a multinomial's spread of 1/8 (chi-square, p > 0.001); a pair keeps its
    path (rebuilt from a fresh table)."""
    from scipy.stats import chisquare

    import topologies
    from simulator.config import TopologyConfig
    from simulator.network import PathTable, build_links

    g = topologies.build(TopologyConfig(preset="datacenter"))
    links = build_links(g)
    lbs, servers, clients = topologies.lbs(g), topologies.servers(g), topologies.clients(g)
    spine = {n for n in g if g.nodes[n].get("tier") == "spine"}
    assert len(spine) == 8
    for sources, targets, avoid in ((servers, clients, ("lb",)), (lbs, servers[::5], ("client", "lb"))):
        table = PathTable(g, links, sources, targets, avoid)
        used = [next(n for n in table.nodes(i, j) if n in spine)
                for i in range(len(sources)) for j in range(len(targets))
                if any(n in spine for n in table.nodes(i, j))]
        counts = [used.count(s) for s in sorted(spine)]
        assert min(counts) > 0 and chisquare(counts).pvalue > 1e-3, counts
        again = PathTable(g, links, sources, targets, avoid)
        assert again.nodes(3, 0) == table.nodes(3, 0)


def test_paths_built_per_search_follow_the_python_walk_and_miss_only_unreachable_pairs() -> None:
    """PathTable builds a search's paths together in C (_netcore.ecmp_routes); on random graphs
    with many equal-cost ties, searched from the sources and (fewer targets) from the targets,
    every path's links are the pairs of the Python ECMP walk (PathTable.nodes, the reference);
    a pair with no path -- an isolated server, or a node only avoided kinds connect -- raises
    one ValueError naming both ends, while the other pairs of its search are there."""
    import networkx as nx

    from simulator.network import PathTable, build_links

    rng = np.random.default_rng(11)
    checked = unreachable = 0
    for _ in range(10):
        g = nx.relabel_nodes(nx.gnm_random_graph(36, 70, seed=int(rng.integers(1 << 30))),
                             lambda n: f"n{n}")
        for n in g:
            g.nodes[n]["kind"] = ("client", "lb", "server", "switch")[int(rng.integers(4))]
        for u, v in g.edges:
            g[u][v].update(delay_s=float(rng.integers(1, 4)) * 1e-6, bandwidth_bps=1e9, queue_pkts=64)
        g.add_node("lonely", kind="server")
        links = build_links(g)
        kinds = dict(g.nodes(data="kind"))
        by_kind = {k: [n for n in g if kinds[n] == k] for k in ("client", "lb", "server")}
        for sources, targets, avoid in ((by_kind["lb"], by_kind["server"], ("client", "lb")),
                                        (by_kind["server"], by_kind["client"][:2], ("lb",))):
            table = PathTable(g, links, sources, targets, avoid)
            for i, src in enumerate(sources):
                for j, dst in enumerate(targets):
                    via = g.subgraph([n for n in g if kinds[n] not in avoid or n in (src, dst)])
                    if not nx.has_path(via, src, dst):
                        with pytest.raises(ValueError, match=f"no path from {src} to {dst}"):
                            table[i][j]
                        unreachable += 1
                        continue
                    nodes = table.nodes(i, j)
                    assert [(lk.u, lk.v) for lk in table[i][j].links] == list(zip(nodes, nodes[1:]))
                    checked += 1
            with pytest.raises(IndexError):
                table[0][len(targets)]
    assert checked > 500 and unreachable > 20  # "lonely" alone gives some in every graph


def _one_path(g, src: str, dst: str, avoid: tuple[str, ...] = ()) -> list[str]:
    from simulator.network import ecmp_path, shortest_path_dag

    return ecmp_path(shortest_path_dag(g, src, avoid), src, dst, "flow")


def test_a_slow_direct_edge_loses_to_a_faster_detour() -> None:
    import networkx as nx

    g = nx.Graph()
    for n, k in (("lb1", "lb"), ("s1", "server"), ("sw1", "switch"), ("sw2", "switch")):
        g.add_node(n, kind=k)
    g.add_edge("lb1", "s1", delay_s=5e-6)   # direct but slow
    g.add_edge("lb1", "sw1", delay_s=1e-6)  # two fast hops: 2 us < 5 us
    g.add_edge("sw1", "s1", delay_s=1e-6)
    g.add_edge("lb1", "sw2", delay_s=2e-6)  # two hops of 4 us
    g.add_edge("sw2", "s1", delay_s=2e-6)
    assert _one_path(g, "lb1", "s1") == ["lb1", "sw1", "s1"]
    # switches avoided: the direct edge (a switch may still end a path)
    assert _one_path(g, "lb1", "s1", ("switch",)) == ["lb1", "s1"]
    assert _one_path(g, "lb1", "sw1", ("switch",)) == ["lb1", "sw1"]
    g["lb1"]["s1"]["delay_s"] = 2e-6  # equal delay to the detour: fewer hops wins
    assert _one_path(g, "lb1", "s1") == ["lb1", "s1"]


def test_the_dag_search_equals_networkx_dijkstra() -> None:
    """shortest_path_dag runs its own Dijkstra over a precomputed adjacency; its predecessor
    lists (and their order, which ECMP indexes by hash) must be networkx's
    dijkstra_predecessor_and_distance with the per-edge weight it replaced, from every root, on
    the presets and on random graphs with many equal-cost ties."""
    import networkx as nx

    import topologies
    from simulator.config import TopologyConfig
    from simulator.network import search_graph, shortest_path_dag

    def reference(g, root, avoid):  # type: ignore[no-untyped-def]
        kind = g.nodes.data("kind")

        def weight(u: str, v: str, a: dict) -> float | None:
            return None if u != root and kind[u] in avoid else a["delay_s"] + 1e-12

        return nx.dijkstra_predecessor_and_distance(g, root, weight=weight)[0]

    rng = np.random.default_rng(3)
    graphs = [topologies.build(TopologyConfig(preset=p)) for p in ("moderate", "large", "datacenter")]
    for _ in range(6):
        g = nx.gnm_random_graph(40, 90, seed=int(rng.integers(1 << 30)))
        g = nx.relabel_nodes(g, {n: f"n{n}" for n in g})
        kinds = ["client", "lb", "server", "switch"]
        for n in g:
            g.nodes[n]["kind"] = kinds[int(rng.integers(4))]
        for u, v in g.edges:
            g[u][v]["delay_s"] = float(rng.integers(1, 4)) * 1e-6  # few values: many ties
        graphs.append(g)
    compared = ties = 0
    for g in graphs:
        for avoid in (("server", "lb"), ("client", "lb"), ("lb",), ()):
            search = search_graph(g, avoid)
            roots = list(g)[:: max(1, len(g) // 40)]  # up to ~40 roots per graph
            for root in roots:
                got = shortest_path_dag(g, root, avoid, search)
                assert got == reference(g, root, avoid), (root, avoid)
                compared += 1
                ties += sum(len(p) > 1 for p in got.values())
    assert compared > 500 and ties > 1000  # equal-cost alternatives were there to order


def test_dag_search_refuses_malformed_graphs() -> None:
    """The C search trusts nothing it is handed: sizes, ranges and undirectedness are checked
    (a bad index would read outside its arrays), each with one ValueError saying what is wrong."""
    from simulator import _netcore

    i64 = lambda xs: np.array(xs, dtype=np.int64)  # noqa: E731
    f64 = lambda xs: np.array(xs, dtype=np.float64)  # noqa: E731
    names = ["a", "b", "c"]
    ok = (names, i64([0, 1, 3, 4]), i64([1, 0, 2, 1]), f64([1, 1, 1, 1]), b"\x01\x01\x01")
    assert _netcore.dag_search(*ok, 0) == {"a": [], "b": ["a"], "c": ["b"]}
    bad = {
        "offsets need 4 int64": (names, i64([0, 1, 3]), *ok[2:]),
        "costs one float64 each": (*ok[:3], f64([1, 1, 1]), ok[4]),
        "carries need one byte per node": (*ok[:4], b"\x01\x01"),
        "must rise": (names, i64([0, 3, 1, 4]), *ok[2:]),
        "out of range": (names, ok[1], i64([1, 0, 2, 7]), *ok[3:]),
        # b -> a twice: a would have two predecessors but one neighbour (a directed multigraph)
        "undirected": (names, i64([0, 0, 2, 2]), i64([0, 0]), f64([1, 1]), b"\x01\x01\x01"),
    }
    for what, args in bad.items():
        with pytest.raises(ValueError, match=what):
            _netcore.dag_search(*args, 1 if what == "undirected" else 0)
    with pytest.raises(ValueError, match="root 3 is not a node index"):
        _netcore.dag_search(*ok, 3)
