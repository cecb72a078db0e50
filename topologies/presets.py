"""Topology presets as data, a registry by name, and fabric generators.

Every builder returns an undirected ``networkx.Graph`` following topologies/schema.py.

Flat presets (``unittest``, ``moderate``, ``large``, explicit ``lbs``/``servers``) are the
MARLLB testbed shape with one link per hop::

    c1..cC --- er --- lb1..lbK --- s1..sN      (every LB links to every server)
                \\________________________/     (s_j --- er: the DSR return path)

so requests go c -> er -> lb -> s and replies go s -> er -> c without crossing an LB.

Fabric generators put the LBs and servers at the edge of a switched fabric whose top tier links
to the edge router ``er``; the clients hang off ``er``:

* ``leaf_spine``: ``spines`` spine switches ``sw_spine<i>``, ``leaves`` leaf switches
  ``sw_leaf<j>`` (full bipartite spine-leaf mesh), ``servers_per_leaf`` servers per leaf,
  ``er`` linked to every spine; LBs on the leaves round-robin (``lb_attach=leaves``) or each LB
  linked to every spine (``lb_attach=spines``).
* ``fat_tree``: the k-ary fat-tree (Al-Fares et al., SIGCOMM'08): (k/2)^2 core switches
  ``sw_core<i>``, k pods of k/2 aggregation ``sw_agg<p>_<i>`` and k/2 edge switches
  ``sw_edge<p>_<i>``, k^3/4 host slots (k/2 per edge switch). LBs take evenly spaced host
  slots, servers the remaining ones in order; ``er`` links to every core switch.

Every edge carries ``bandwidth_bps``, ``delay_s`` and ``queue_pkts`` from ``cfg.topology.link``.

A CLI spec string ``"name,k=v,..."`` (Mininet-style) selects a preset with parameters, e.g.
``moderate,workers=64`` or ``fat_tree,k=4,lbs=2,cores=2:4`` (``a:b`` is a list, cycled over the
servers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import networkx as nx
import yaml

from simulator.config import ConfigError, LinkSpec, ServerSpec, TopologyConfig
from topologies.schema import client_name, lb_name, server_name
from topologies.validate import validate

__all__ = ["Preset", "PRESETS", "build", "parse_spec", "flat", "leaf_spine", "fat_tree"]


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------

def _link_attrs(link: LinkSpec) -> dict[str, Any]:
    return {"bandwidth_bps": float(link.bandwidth_bps), "delay_s": float(link.delay_s),
            "queue_pkts": int(link.queue_pkts)}


def _add_edge(g: nx.Graph, u: str, v: str, link: LinkSpec) -> None:
    g.add_edge(u, v, **_link_attrs(link))


def _add_clients_and_router(g: nx.Graph, clients: int, link: LinkSpec) -> None:
    g.add_node("er", kind="router")
    for c in range(clients):
        g.add_node(client_name(c), kind="client")
        _add_edge(g, client_name(c), "er", link)


def _add_server(g: nx.Graph, i: int, spec: ServerSpec) -> str:
    name = server_name(i)
    g.add_node(name, kind="server", cores=float(spec.cores), workers=int(spec.workers),
               backlog=int(spec.backlog))
    return name


def flat(lbs: int, servers: Sequence[ServerSpec], *, clients: int = 1,
         link: LinkSpec | None = None) -> nx.Graph:
    """The MARLLB testbed shape: c* - er - lb* - s* (full LB-server mesh) plus s* - er for DSR.

    `servers` are in index order (server i is named s{i+1}). Not validated; use :func:`build`.
    """
    link = link or LinkSpec()
    g = nx.Graph()
    _add_clients_and_router(g, clients, link)
    for k in range(lbs):
        g.add_node(lb_name(k), kind="lb")
        _add_edge(g, "er", lb_name(k), link)
    for i, spec in enumerate(servers):
        s = _add_server(g, i, spec)
        _add_edge(g, s, "er", link)
        for k in range(lbs):
            _add_edge(g, lb_name(k), s, link)
    return g


def _check_server_params(workers: int, backlog: int) -> None:
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if backlog < 0:
        raise ValueError(f"backlog must be >= 0, got {backlog}")


def _server_specs(n: int, cores: float | Sequence[float], workers: int, backlog: int) -> list[ServerSpec]:
    """n server specs; `cores` is one value or a list cycled over the servers."""
    _check_server_params(workers, backlog)
    pattern = [cores] if isinstance(cores, (int, float)) else list(cores)
    if not pattern:
        raise ValueError("cores: empty list")
    return [ServerSpec(cores=pattern[i % len(pattern)], workers=workers, backlog=backlog)
            for i in range(n)]


def leaf_spine(*, spines: int = 2, leaves: int = 4, servers_per_leaf: int = 4, lbs: int = 2,
               lb_attach: str = "leaves", cores: float | Sequence[float] = 4.0, workers: int = 32,
               backlog: int = 128, clients: int = 1, link: LinkSpec | None = None) -> nx.Graph:
    """Two-tier Clos fabric: spines x leaves full mesh, servers_per_leaf servers on each leaf.

    Server i sits on leaf i // servers_per_leaf + 1. ``er`` links to every spine. With
    lb_attach="leaves" LB k sits on leaf k % leaves + 1; with "spines" each LB links to every
    spine. Counts: spines + leaves switches, leaves * servers_per_leaf servers,
    spines * leaves fabric links.
    """
    if spines < 1 or leaves < 1 or servers_per_leaf < 1 or lbs < 1:
        raise ValueError("spines, leaves, servers_per_leaf and lbs must be >= 1")
    if lb_attach not in ("leaves", "spines"):
        raise ValueError(f"lb_attach must be 'leaves' or 'spines', got {lb_attach!r}")
    link = link or LinkSpec()
    g = nx.Graph()
    _add_clients_and_router(g, clients, link)
    spine_names = [f"sw_spine{i + 1}" for i in range(spines)]
    leaf_names = [f"sw_leaf{j + 1}" for j in range(leaves)]
    for s in spine_names:
        g.add_node(s, kind="switch", tier="spine")
        _add_edge(g, "er", s, link)
    for lf in leaf_names:
        g.add_node(lf, kind="switch", tier="leaf")
        for s in spine_names:
            _add_edge(g, s, lf, link)
    for k in range(lbs):
        g.add_node(lb_name(k), kind="lb")
        if lb_attach == "leaves":
            _add_edge(g, lb_name(k), leaf_names[k % leaves], link)
        else:
            for s in spine_names:
                _add_edge(g, lb_name(k), s, link)
    specs = _server_specs(leaves * servers_per_leaf, cores, workers, backlog)
    for i, spec in enumerate(specs):
        _add_edge(g, _add_server(g, i, spec), leaf_names[i // servers_per_leaf], link)
    return g


def fat_tree(*, k: int = 4, lbs: int = 2, servers: int | None = None,
             cores: float | Sequence[float] = 4.0, workers: int = 32, backlog: int = 128,
             clients: int = 1, link: LinkSpec | None = None) -> nx.Graph:
    """k-ary fat-tree with LBs and servers in its k^3/4 host slots.

    Host slots are numbered pod by pod, edge switch by edge switch. LB j takes slot
    j * (k^3/4 // lbs); servers fill the other slots in order, `servers` of them (default: all
    the rest). Counts: 5k^2/4 switches, k^3/4 host slots, 3k^3/4 fabric links.
    """
    if k < 2 or k % 2:
        raise ValueError(f"k must be an even integer >= 2, got {k}")
    half = k // 2
    slots = k ** 3 // 4
    if lbs < 1 or lbs >= slots:
        raise ValueError(f"lbs must be in 1..{slots - 1} for k={k} ({slots} host slots)")
    free = slots - lbs
    if servers is None:
        servers = free
    if servers < 1 or servers > free:
        raise ValueError(f"servers must be in 1..{free} for k={k} with {lbs} LBs")
    link = link or LinkSpec()
    g = nx.Graph()
    _add_clients_and_router(g, clients, link)
    cores_sw = [f"sw_core{i + 1}" for i in range(half * half)]
    for c in cores_sw:
        g.add_node(c, kind="switch", tier="core")
        _add_edge(g, "er", c, link)
    edge_of_slot: list[str] = []
    for p in range(k):
        aggs = [f"sw_agg{p + 1}_{i + 1}" for i in range(half)]
        edges = [f"sw_edge{p + 1}_{i + 1}" for i in range(half)]
        for i, a in enumerate(aggs):
            g.add_node(a, kind="switch", tier="aggregation", pod=p + 1)
            for j in range(half):  # agg i of every pod links to core group i
                _add_edge(g, a, cores_sw[i * half + j], link)
        for e in edges:
            g.add_node(e, kind="switch", tier="edge", pod=p + 1)
            for a in aggs:
                _add_edge(g, e, a, link)
            edge_of_slot.extend([e] * half)
    stride = slots // lbs
    lb_slots = {j * stride for j in range(lbs)}
    for j, slot in enumerate(sorted(lb_slots)):
        g.add_node(lb_name(j), kind="lb")
        _add_edge(g, lb_name(j), edge_of_slot[slot], link)
    server_slots = [s for s in range(slots) if s not in lb_slots][:servers]
    specs = _server_specs(len(server_slots), cores, workers, backlog)
    for i, (slot, spec) in enumerate(zip(server_slots, specs)):
        _add_edge(g, _add_server(g, i, spec), edge_of_slot[slot], link)
    return g


def _testbed(groups: Sequence[tuple[int, float]], default_lbs: int) -> Callable[..., nx.Graph]:
    """A flat preset with server groups (count, cores); params lbs, workers, backlog."""

    def builder(*, lbs: int = default_lbs, workers: int = 32, backlog: int = 128,
                clients: int = 1, link: LinkSpec | None = None) -> nx.Graph:
        if lbs < 1:
            raise ValueError(f"lbs must be >= 1, got {lbs}")
        _check_server_params(workers, backlog)
        specs = [ServerSpec(cores=c, workers=workers, backlog=backlog)
                 for n, c in groups for _ in range(n)]
        return flat(lbs, specs, clients=clients, link=link)

    return builder


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

#: the ``datacenter`` preset: a leaf-spine fabric at data-center scale
DATACENTER: dict[str, Any] = {"spines": 8, "leaves": 32, "servers_per_leaf": 32, "lbs": 64,
                              "lb_attach": "leaves", "cores": [4.0, 8.0], "workers": 32, "backlog": 128}


@dataclass(frozen=True)
class Preset:
    """A named topology: `builder(**params, clients=, link=)` with `defaults` as its params."""

    name: str
    description: str
    builder: Callable[..., nx.Graph]
    defaults: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("unittest", "1 LB; 6 servers: 3 x 2-CPU, 3 x 4-CPU (small and fast for tests)",
               _testbed([(3, 2.0), (3, 4.0)], 1), {"lbs": 1, "workers": 32, "backlog": 128}),
        Preset("moderate", "CIKM'22 moderate testbed: 2 LBs; 7 servers: 4 x 2-CPU, 3 x 4-CPU; "
               "Apache 32 workers, backlog 128",
               _testbed([(4, 2.0), (3, 4.0)], 2), {"lbs": 2, "workers": 32, "backlog": 128}),
        Preset("large", "CIKM'22 large scale: 6 LBs; 24 servers: 12 x 4-CPU, 12 x 8-CPU",
               _testbed([(12, 4.0), (12, 8.0)], 6), {"lbs": 6, "workers": 32, "backlog": 128}),
        Preset("leaf_spine", "two-tier Clos: spines x leaves, servers_per_leaf servers per leaf",
               leaf_spine, {"spines": 2, "leaves": 4, "servers_per_leaf": 4, "lbs": 2,
                            "lb_attach": "leaves", "cores": 4.0, "workers": 32, "backlog": 128}),
        Preset("datacenter", "data-center scale leaf-spine: 8 spines, 32 leaves x 32 servers = 1,024 "
               "servers (4 and 8 CPUs alternating), 64 LBs, two per leaf",
               lambda **kw: leaf_spine(**{**DATACENTER, **kw}), dict(DATACENTER)),
        Preset("fat_tree", "k-ary fat-tree, LBs and servers in the k^3/4 host slots",
               fat_tree, {"k": 4, "lbs": 2, "servers": None, "cores": 4.0, "workers": 32,
                          "backlog": 128}),
    )
}


def _coerce(preset: Preset, key: str, value: Any, where: str) -> Any:
    """Check one parameter's type against the preset's default; ints accepted for floats."""
    default = preset.defaults[key]
    path = f"{where}.params.{key}"

    def is_num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if key == "cores":
        items = value if isinstance(value, list) else [value]
        if not items or not all(is_num(x) and x > 0 for x in items):
            raise ConfigError(f"{path}: expected a number > 0 or a list of them, got {value!r}")
        return [float(x) for x in items] if isinstance(value, list) else float(value)
    if isinstance(default, bool) or isinstance(default, str):
        if not isinstance(value, type(default)):
            raise ConfigError(f"{path}: expected {type(default).__name__}, got {value!r}")
        return value
    if isinstance(default, int) or (default is None and key == "servers"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if not is_num(value):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    return value


def _parse_value(raw: str) -> Any:
    if ":" in raw:
        return [yaml.safe_load(part) for part in raw.split(":")]
    return yaml.safe_load(raw)


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"name,k=v,k2=a:b"`` into ``("name", {"k": v, "k2": [a, b]})``.

    Values are parsed as YAML scalars (``4`` -> int, ``2.5`` -> float, ``spines`` -> str);
    ``a:b:c`` is a list. Raises ConfigError on an empty name or an item without ``=``.
    """
    parts = [p.strip() for p in spec.split(",")]
    name, items = parts[0], parts[1:]
    if not name:
        raise ConfigError(f"topology spec {spec!r}: empty preset name")
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"topology spec {spec!r}: expected key=value, got {item!r}")
        try:
            params[key] = _parse_value(raw.strip())
        except yaml.YAMLError:
            raise ConfigError(f"topology spec {spec!r}: cannot parse value of {key!r}") from None
    return name, params


def build(cfg: TopologyConfig, where: str = "topology") -> nx.Graph:
    """Build and validate the graph a TopologyConfig describes.

    ``cfg.preset`` may be a spec string (``"moderate,workers=64"``); its parameters merge with
    ``cfg.params`` (a key in both is an error). Without a preset, ``cfg.lbs`` and
    ``cfg.servers`` give a flat topology. Links get ``cfg.link``; there are ``cfg.clients``
    clients. Raises ConfigError naming the field path (`where` is its prefix).
    """
    if cfg.preset is None:
        if cfg.lbs is None or not cfg.servers:
            raise ConfigError(f"{where}: give either 'preset' or both 'lbs' and 'servers'")
        g = flat(cfg.lbs, cfg.servers, clients=cfg.clients, link=cfg.link)
        g.graph.update(preset="explicit", params={})
        return validate(g, where)
    if cfg.lbs is not None or cfg.servers:
        raise ConfigError(f"{where}: give either 'preset' or 'lbs'/'servers', not both")
    name, spec_params = parse_spec(cfg.preset)
    preset = PRESETS.get(name)
    if preset is None:
        raise ConfigError(
            f"{where}.preset: unknown topology {name!r}; known presets: {', '.join(PRESETS)}"
        )
    both = sorted(set(spec_params) & set(cfg.params))
    if both:
        raise ConfigError(f"{where}: parameter {both[0]!r} given both in 'preset' and 'params'")
    raw = {**spec_params, **cfg.params}
    unknown = sorted(set(raw) - set(preset.defaults))
    if unknown:
        raise ConfigError(
            f"{where}.params.{unknown[0]}: unknown parameter for preset {name!r}; "
            f"accepted: {', '.join(preset.defaults) or '(none)'}"
        )
    params = {key: _coerce(preset, key, value, where) for key, value in raw.items()}
    try:
        g = preset.builder(clients=cfg.clients, link=cfg.link, **params)
    except ValueError as exc:
        raise ConfigError(f"{where}.params: preset {name!r}: {exc}") from None
    g.graph.update(preset=name, params={**preset.defaults, **params})
    return validate(g, where)

