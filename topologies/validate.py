"""Check that a graph follows topologies/schema.py; every problem becomes a ConfigError naming it.

The simulator only accepts graphs that pass :func:`validate`, so its code can index attributes
without defensive checks.
"""

from __future__ import annotations

import math
import re

import networkx as nx

from simulator.config import ConfigError
from simulator.shm import MAX_SERVERS
from topologies.schema import EDGE_ATTRS, NODE_KINDS

__all__ = ["MAX_SERVERS", "validate", "servers", "lbs", "clients", "switches"]

# MAX_SERVERS (4096), the bound on servers behind one LB, is the shm layout's max_servers
# (LB_RL_MAX_SERVERS of vpp_plugin/core/lb_rl_core.h, pinned to simulator.shm by tests/shm).

_NAME_RE = {
    "client": re.compile(r"c([1-9][0-9]*)"),
    "router": re.compile(r"er"),
    "lb": re.compile(r"lb([1-9][0-9]*)"),
    "server": re.compile(r"s([1-9][0-9]*)"),
    "switch": re.compile(r"sw\S*"),
}


def _of_kind(g: nx.Graph, kind: str) -> list[str]:
    """Nodes of one kind, in index order (c1, c2, ..., c10; not lexical)."""
    names = [n for n, k in g.nodes(data="kind") if k == kind]
    if kind in ("client", "lb", "server"):
        names.sort(key=lambda n: int(_NAME_RE[kind].fullmatch(n).group(1)))  # type: ignore[union-attr]
    else:
        names.sort()
    return names


def servers(g: nx.Graph) -> list[str]:
    """Server names in index order: s1..sN (server index i is ``servers(g)[i]``)."""
    return _of_kind(g, "server")


def lbs(g: nx.Graph) -> list[str]:
    """LB names in index order: lb1..lbK."""
    return _of_kind(g, "lb")


def clients(g: nx.Graph) -> list[str]:
    """Client names in index order: c1..cC."""
    return _of_kind(g, "client")


def switches(g: nx.Graph) -> list[str]:
    """Switch names, sorted."""
    return _of_kind(g, "switch")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_nodes(g: nx.Graph, where: str) -> None:
    for node, data in g.nodes(data=True):
        kind = data.get("kind")
        if kind is None:
            raise ConfigError(f"{where}: node {node!r} has no 'kind' attribute")
        if kind not in NODE_KINDS:
            raise ConfigError(
                f"{where}: node {node!r} has kind {kind!r}; expected one of {', '.join(NODE_KINDS)}"
            )
        if not isinstance(node, str) or not _NAME_RE[kind].fullmatch(node):
            pattern = {"client": "c1..cN", "router": "er", "lb": "lb1..lbK",
                       "server": "s1..sN", "switch": "sw*"}[kind]
            raise ConfigError(f"{where}: node {node!r} of kind {kind!r} must be named {pattern}")
        if kind == "server":
            cores, workers, backlog = data.get("cores"), data.get("workers"), data.get("backlog")
            for attr, value in (("cores", cores), ("workers", workers), ("backlog", backlog)):
                if value is None:
                    raise ConfigError(f"{where}: server {node!r} is missing attribute {attr!r}")
            if not _is_number(cores) or cores <= 0:
                raise ConfigError(f"{where}: server {node!r} attribute 'cores' must be a number > 0, got {cores!r}")
            if not _is_int(workers) or workers < 1:
                raise ConfigError(f"{where}: server {node!r} attribute 'workers' must be an integer >= 1, got {workers!r}")
            if not _is_int(backlog) or backlog < 0:
                raise ConfigError(f"{where}: server {node!r} attribute 'backlog' must be an integer >= 0, got {backlog!r}")


def _check_edges(g: nx.Graph, where: str) -> None:
    for u, v, data in g.edges(data=True):
        for attr in EDGE_ATTRS:
            if attr not in data:
                raise ConfigError(f"{where}: edge {u}-{v} is missing attribute {attr!r}")
        bw, delay, queue = data["bandwidth_bps"], data["delay_s"], data["queue_pkts"]
        if not _is_number(bw) or bw <= 0:
            raise ConfigError(f"{where}: edge {u}-{v} attribute 'bandwidth_bps' must be a number > 0, got {bw!r}")
        if not _is_number(delay) or delay < 0:
            raise ConfigError(f"{where}: edge {u}-{v} attribute 'delay_s' must be a number >= 0, got {delay!r}")
        if not _is_int(queue) or queue < 1:
            raise ConfigError(f"{where}: edge {u}-{v} attribute 'queue_pkts' must be an integer >= 1, got {queue!r}")


def _check_contiguous(names: list[str], kind: str, prefix: str, where: str) -> None:
    expected = [f"{prefix}{i + 1}" for i in range(len(names))]
    if names != expected:
        missing = sorted(set(expected) - set(names), key=lambda n: int(n[len(prefix):]))
        raise ConfigError(
            f"{where}: {kind} names must be {prefix}1..{prefix}{len(names)} without gaps "
            f"(missing {', '.join(missing)})"
        )


def validate(g: nx.Graph, where: str = "topology") -> nx.Graph:
    """Check `g` against the schema and return it unchanged.

    Checks: every node has a known ``kind`` and a conforming name; exactly one router ``er``; at
    least one client, LB and server; at most MAX_SERVERS servers; names contiguous (s1..sN,
    lb1..lbK, c1..cC); server and edge attributes present with valid types and ranges; no
    self-loops; every node reachable from ``er`` (so every client, LB and server has a path to
    the others). Raises ConfigError naming the offending node, edge and attribute; `where`
    prefixes every message (e.g. the config file).
    """
    if not isinstance(g, nx.Graph) or g.is_directed() or g.is_multigraph():
        raise ConfigError(f"{where}: a topology must be an undirected networkx.Graph")
    _check_nodes(g, where)
    _check_edges(g, where)
    loops = list(nx.selfloop_edges(g))
    if loops:
        raise ConfigError(f"{where}: self-loop on node {loops[0][0]!r}")
    routers = _of_kind(g, "router")
    if len(routers) != 1:
        raise ConfigError(f"{where}: needs exactly one edge router 'er', found {len(routers)}")
    n_servers = len(servers(g))
    if n_servers == 0:
        raise ConfigError(f"{where}.servers: 0 servers, a topology needs at least one (s1)")
    if n_servers > MAX_SERVERS:
        raise ConfigError(
            f"{where}.servers: {n_servers} servers, the shm layout allows at most {MAX_SERVERS}"
        )
    for kind, prefix in (("client", "c"), ("lb", "lb"), ("server", "s")):
        names = _of_kind(g, kind)
        if not names:
            raise ConfigError(f"{where}: needs at least one {kind} ({prefix}1)")
        _check_contiguous(names, kind, prefix, where)
    reachable = nx.node_connected_component(g, "er")
    unreachable = [n for n in g.nodes if n not in reachable]
    if unreachable:
        order = {"server": 0, "lb": 1, "client": 2, "switch": 3}
        unreachable.sort(key=lambda n: (order.get(g.nodes[n]["kind"], 9), str(n)))
        first = unreachable[0]
        kind = g.nodes[first]["kind"]
        more = f" (and {len(unreachable) - 1} more: {', '.join(map(str, unreachable[1:6]))})" if len(unreachable) > 1 else ""
        raise ConfigError(
            f"{where}: disconnected graph: {kind} {first!r} has no path to the router 'er'"
            f" and the clients{more}"
        )
    return g
