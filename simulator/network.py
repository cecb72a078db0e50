"""Links and paths from the topology graph, with FIFO departure times computed arithmetically.

A directed :class:`Link` (one per direction of a graph edge) is a drop-tail FIFO with bandwidth
``bps``, propagation ``delay_s`` and room for ``qcap`` packets (in transmission + waiting).
A packet offered at time t departs at ``max(t, last_departure) + size*8/bps`` and arrives
``delay_s`` later; it is dropped when ``qcap`` packets are still in the link at t. No SimPy
event is needed per hop: a packet's times over its whole path are computed when the model
creates it, which can be before it reaches a hop -- or before it is sent at all (the model
computes a client's ACK train when the server finishes the job). A packet that arrives at a
link *before* trains already computed ahead of time (e.g. a SYN the LB forwards at t on an
LB->server link holding a client's ACK train that arrives at t + 50 us) is served in time order
before those trains, after what arrived before the earliest of them; the trains are not shifted
(error <= that packet's transmission time) and the packet is not recorded in the link's state.
A packet offered *within* the span of a train computed ahead of time waits behind that train
(at most the train's span, a few us on 10 Gb/s links). tests/simulator/test_packet_timing.py
bounds the resulting one-way delays.

A :class:`Path` is a list of links; :meth:`Path.send` / :meth:`Path.send_train` send along it
and, when a copy is dropped, retransmit it from the source after ``rto_s`` (TCP's retransmission
timer), counting the drop. :class:`Template` / :class:`Chain` / :func:`send_chain` are the fast
path for trains of fixed shape on idle links, and for back-to-back trains behind a busy link's
backlog, shifted as a whole (identical results up to float rounding; see ``plan`` in
simulator/_netcore.c).

The arithmetic (links' state, ``Path.send`` / ``send_train`` / ``send_template_at``,
``send_chain``) is C, simulator/_netcore.c: it is the simulator's hottest code. The pure-Python
reference it is tested against to the bit is tests/simulator/network_reference.py.
"""

from __future__ import annotations

import zlib
from functools import partial
from typing import NamedTuple, Sequence

import networkx as nx
import numpy as np

try:
    from simulator import _netcore
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError("simulator._netcore (the link arithmetic in C) is not built; run "
                      "`pip install -e .` in the repository root (needs a C compiler)") from exc

__all__ = ["Link", "Path", "Template", "TemplateCache", "Chain", "send_chain", "build_links",
           "shortest_path_dag", "ecmp_path", "PathTable"]


#: Link(u, v, bandwidth_bps, delay_s, queue_pkts): one direction of a graph edge (C).
Link = _netcore.Link
#: Path(links): links from one node to another, in order (``links``, a tuple). ``delay_s`` = sum
#: of propagation delays; ``shape`` the links' (k8, delay_s, qcap), what templates depend on;
#: ``sid`` a small int per distinct shape in this process (callers key template sets by it).
#: ``reordered`` is set by ``send_train`` when a drop and retransmission may have put the
#: arrivals out of order (otherwise FIFO links keep a non-decreasing train in order). C: its
#: objects hold no Python-level references the cyclic collector would have to visit.
Path = _netcore.Path


class Template(_netcore.Train):
    """A train of fixed shape on one path, precomputed on idle links: packets sent at
    ``base + send_offs[i]`` with ``sizes[i]``. When every link of the path is idle (``last`` <=
    the train's first arrival there) the FIFO arithmetic of the train no longer depends on the
    past, so its departures are ``base + deps[j][i]`` on link j and its arrivals at the path end
    ``base + arr[i]``: ``Path.send_template`` applies that in O(links) steps instead of
    O(links x packets) (same results up to float rounding of the sums). Built in Python (a few
    per topology); its per-link data lives in the C base class for the C arithmetic."""

    __slots__ = ("n", "send", "arr")

    def __init__(self, path: "Path", send_offs: Sequence[float], sizes: Sequence[int]) -> None:
        ts = [float(x) for x in send_offs]
        if any(a > b for a, b in zip(ts, ts[1:])):
            raise ValueError("template send offsets must be non-decreasing")
        self.n = len(ts)
        self.send = tuple(ts)
        first, last_in, deps, tight = [], [], [], []
        for lk in path.links:
            first.append(ts[0])
            last_in.append(ts[-1])
            last = float("-inf")
            d, out = [], []
            waits = True  # every packet after the first arrives before the one ahead left
            for i, (t, size) in enumerate(zip(ts, sizes)):
                if i and t > last:
                    waits = False
                last = (t if t >= last else last) + size * lk.k8
                d.append(last)
                out.append(last + lk.delay_s)
            deps.append(tuple(d))
            tight.append(waits)
            ts = out
        # per link: arrival offsets of the first and the last packet (the latest: FIFO keeps
        # the order), departure offsets, whether the train is back-to-back there (the C
        # plan's "behind" case); fits: no drop possible
        self._set_links(first, last_in, deps, tight, all(self.n <= lk.qcap for lk in path.links))
        self.arr = tuple(ts)


class TemplateCache:
    """Templates by what they depend on: the path's link parameters (bandwidth, delay, queue
    per hop), the send offsets and the sizes. Paths with the same parameters share one Template
    (a leaf-spine fabric's 65,536 LB->server paths have a handful of shapes: ``Path.sid``
    numbers them, so a caller can key its own template sets by a few small ints)."""

    def __init__(self) -> None:
        self._by_key: dict[tuple, Template] = {}
        self._chains: dict[tuple[int, ...], Chain] = {}  # by the templates' ids (kept: ids stable)

    def get(self, path: "Path", send_offs: Sequence[float], sizes: Sequence[int]) -> Template:
        key = (path.shape, tuple(send_offs), tuple(sizes))
        tm = self._by_key.get(key)
        if tm is None:
            tm = self._by_key[key] = Template(path, send_offs, sizes)
        return tm

    def chain(self, tms: Sequence[Template]) -> "Chain":
        """The Chain of templates ``tms`` (from this cache) sent one after another."""
        key = tuple(id(tm) for tm in tms)
        ch = self._chains.get(key)
        if ch is None:
            ch = self._chains[key] = Chain(tms)
        return ch

    def __len__(self) -> int:
        return len(self._by_key)


class Chain(_netcore.Train):
    """Template trains on several paths sent from one base time (e.g. a response s->c and
    the client ACKs it triggers c->lb->s): :func:`send_chain` applies all of them or none.
    Link-independent, so one Chain serves every path triple of the same shapes. Per link, in
    path order: the train's first and last arrival offsets there, its departure offsets, last
    departure and whether it is back-to-back there; ``ends``: index of each path's last link."""

    __slots__ = ()

    def __init__(self, tms: Sequence[Template]) -> None:
        ends, n = [], 0
        for tm in tms:
            n += len(tm.deps)
            ends.append(n - 1)
        self._set_links([f for tm in tms for f in tm.first], [f for tm in tms for f in tm.last_in],
                        [d for tm in tms for d in tm.deps], [x for tm in tms for x in tm.tight],
                        all(tm.fits for tm in tms), ends)


#: send_chain(base_s, paths, ch): send the trains of ``ch`` on ``paths`` at ``base_s`` as
#: :meth:`Path.send_template_at` would, if it can on every link; returns per path by how much
#: its train arrives later than on idle links (a wait on one path delays the trains it triggers
#: on the next), or None (nothing sent), also when a directed link appears twice (then the
#: trains interact: all or nothing cannot hold). The train reaches a link after base_s: only
#: there can a later-offered packet arrive before it (see Path.send), so only there is it
#: recorded in the link's history. C (simulator/_netcore.c).
send_chain = _netcore.send_chain


def build_links(g: nx.Graph) -> dict[tuple[str, str], Link]:
    """One Link per direction of every edge, from the edge attributes of topologies/schema.py."""
    links: dict[tuple[str, str], Link] = {}
    for u, v, a in g.edges(data=True):
        for x, y in ((u, v), (v, u)):
            links[(x, y)] = Link(x, y, a["bandwidth_bps"], a["delay_s"], a["queue_pkts"])
    return links


class SearchGraph(NamedTuple):
    """A graph in the form :func:`shortest_path_dag` searches (:func:`search_graph`): node i is
    ``names[i]`` (``index`` maps back); its neighbours are ``neighbours[offsets[i]:offsets[i + 1]]``
    (int64) with their edge ``costs`` (float64) alongside; ``carries[i]``: may a path pass
    through it (1) or only start or end there (0)."""

    names: list[str]
    index: dict[str, int]
    offsets: np.ndarray
    neighbours: np.ndarray
    costs: np.ndarray
    carries: bytes


def search_graph(g: nx.Graph, avoid_kinds: tuple[str, ...] = ()) -> SearchGraph:
    """What :func:`shortest_path_dag` searches: per node its neighbours with the edge weights
    (``delay_s`` + 1e-12 s: each hop counts, so among equal-delay paths only those with the
    fewest hops remain), in the graph's order, and whether a path may pass through it (nodes of
    ``avoid_kinds`` may start or end a path but never carry one)."""
    names = list(g.adj)
    index = {u: i for i, u in enumerate(names)}
    offsets = [0]
    neighbours: list[int] = []
    costs: list[float] = []
    for u in names:
        for v, a in g.adj[u].items():
            neighbours.append(index[v])
            costs.append(a["delay_s"] + 1e-12)
        offsets.append(len(neighbours))
    kinds = dict(g.nodes.data("kind"))
    carries = bytes(kinds[u] not in avoid_kinds for u in names)
    return SearchGraph(names, index, np.array(offsets, dtype=np.int64),
                       np.array(neighbours, dtype=np.int64), np.array(costs, dtype=np.float64), carries)


def shortest_path_dag(g: nx.Graph, root: str, avoid_kinds: tuple[str, ...] = (),
                      search: SearchGraph | None = None) -> dict[str, list[str]]:
    """Every node's predecessors on the shortest paths by ``delay_s`` from ``root`` (one Dijkstra
    search, in C: _netcore.dag_search; ``search``: :func:`search_graph` of g, computed once by a
    caller searching from many roots). Equal-cost alternatives (the spines of a leaf-spine
    fabric) all stay, in the order networkx's ``dijkstra_predecessor_and_distance`` gives them
    (the same search: heap of (distance, push count, node), neighbours in the graph's order;
    tests/simulator/test_network.py compares the two), without its per-edge weight callback."""
    sg = search_graph(g, avoid_kinds) if search is None else search
    return _netcore.dag_search(sg.names, sg.offsets, sg.neighbours, sg.costs, sg.carries,
                               sg.index[root])


def ecmp_path(pred: dict[str, list[str]], root: str, leaf: str, flow: str) -> list[str]:
    """The nodes from ``root`` to ``leaf`` on the shortest-path DAG ``pred``: where several
    equal-cost predecessors remain, one is chosen by a hash of ``flow`` and the node, as a
    fabric's ECMP hashes a flow's addresses (deterministic: CRC-32, not Python's salted hash)."""
    if leaf not in pred:
        raise KeyError(leaf)
    nodes = [leaf]
    while nodes[-1] != root:
        options = pred[nodes[-1]]
        pick = 0 if len(options) == 1 else zlib.crc32(f"{flow}|{nodes[-1]}".encode()) % len(options)
        nodes.append(options[pick])
    return nodes[::-1]


class PathTable(list):
    """``table[i][j]``: a shortest path from sources[i] to targets[j] (see
    :func:`shortest_path_dag`) as a :class:`Path`; among equal-cost paths the source/target pair
    hashes to one (:func:`ecmp_path`), so a fabric's traffic spreads over its spines as under
    ECMP. One Dijkstra search per source -- or, when there are fewer targets than sources, per
    target, with its paths reversed (links are symmetric in delay): 64 LBs x 1,024 servers take
    64 searches, not 65,536. A search's paths are built together, in C, when traffic first uses
    one of them (:meth:`fill`): one by one as each pair first carried a packet, the paths of a
    1,024-server run cost it ~10 % of its time, mostly in cache misses. A list of the sources'
    rows (:class:`_netcore.PathRow`: a C array per row, so indexing stays C-level in the
    model's per-packet code; the model keeps them in a plain list)."""

    def __init__(self, g: nx.Graph, links: dict[tuple[str, str], Link], sources: Sequence[str],
                 targets: Sequence[str], avoid_kinds: tuple[str, ...]) -> None:
        self._g, self._links, self._avoid = g, links, avoid_kinds
        self._sources, self._targets = list(sources), list(targets)
        self._from_targets = len(self._targets) < len(self._sources)
        self._dags: dict[str, dict[str, list[str]]] = {}
        self._search: SearchGraph | None = None  # search_graph(g), on the first search
        n = len(self._targets)
        super().__init__(_netcore.PathRow(n, partial(self._missing, i)) for i in range(len(self._sources)))

    def _missing(self, i: int, j: int) -> Path:
        """Row i's path to target j on its first use: built with its search's others."""
        self.fill(i, j)
        row = self[i]
        if j not in row:
            raise ValueError(f"no path from {self._sources[i]} to {self._targets[j]}")
        return row[j]

    def _dag(self, root: str) -> dict[str, list[str]]:
        """The shortest-path DAG searched from ``root`` (kept)."""
        dag = self._dags.get(root)
        if dag is None:
            if self._search is None:
                self._search = search_graph(self._g, self._avoid)
            dag = self._dags[root] = shortest_path_dag(self._g, root, self._avoid, self._search)
        return dag

    def nodes(self, i: int, j: int) -> list[str]:
        """Node names along the path from sources[i] to targets[j] (:func:`ecmp_path`, in
        Python: what the C walk of :meth:`fill` is tested against)."""
        src, dst = self._sources[i], self._targets[j]
        root, leaf = (dst, src) if self._from_targets else (src, dst)
        nodes = ecmp_path(self._dag(root), root, leaf, f"{min(src, dst)}|{max(src, dst)}")
        return nodes[::-1] if self._from_targets else nodes

    def fill(self, i: int, j: int) -> None:
        """Build every path of the search that sources[i] -> targets[j] belongs to: row i
        (searched from sources[i]) or, searching from targets, column j; a pair the search
        does not reach stays missing."""
        if self._from_targets:
            root = self._targets[j]
            paths = _netcore.ecmp_routes(self._dag(root), self._links, root, self._sources, True)
            for row, path in zip(self, paths):
                if path is not None:
                    row[j] = path
        else:
            root = self._sources[i]
            paths = _netcore.ecmp_routes(self._dag(root), self._links, root, self._targets, False)
            row = self[i]
            for k, path in enumerate(paths):
                if path is not None:
                    row[k] = path
