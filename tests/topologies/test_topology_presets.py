"""Presets and generators: node/edge counts against closed-form formulas, attributes, spec strings."""

from __future__ import annotations

from collections import Counter

import networkx as nx
import pytest

import topologies
from simulator.config import ConfigError, LinkSpec, ServerSpec, TopologyConfig
from topologies import PRESETS, build, parse_spec

LINK = LinkSpec(bandwidth_bps=1e9, delay_s=1e-4, queue_pkts=64)


def kinds(g: nx.Graph) -> Counter:
    return Counter(k for _, k in g.nodes(data="kind"))


def cores_of(g: nx.Graph) -> list[float]:
    return [g.nodes[s]["cores"] for s in topologies.servers(g)]


def assert_links(g: nx.Graph, link: LinkSpec) -> None:
    for u, v, d in g.edges(data=True):
        assert d == {"bandwidth_bps": link.bandwidth_bps, "delay_s": link.delay_s,
                     "queue_pkts": link.queue_pkts}, (u, v)


@pytest.mark.parametrize(
    "name, n_lbs, groups",
    [
        ("unittest", 1, [(3, 2.0), (3, 4.0)]),
        ("moderate", 2, [(4, 2.0), (3, 4.0)]),
        ("large", 6, [(12, 4.0), (12, 8.0)]),
    ],
)
def test_flat_presets_match_the_paper_tables(name: str, n_lbs: int, groups: list[tuple[int, float]]) -> None:
    g = build(TopologyConfig(preset=name, clients=3, link=LINK))
    n_srv = sum(n for n, _ in groups)
    assert kinds(g) == Counter(client=3, router=1, lb=n_lbs, server=n_srv)
    assert topologies.lbs(g) == [f"lb{k + 1}" for k in range(n_lbs)]
    assert topologies.servers(g) == [f"s{i + 1}" for i in range(n_srv)]
    assert cores_of(g) == [c for n, c in groups for _ in range(n)]
    for s in topologies.servers(g):
        assert (g.nodes[s]["workers"], g.nodes[s]["backlog"]) == (32, 128)
    # edges: clients-er, er-lb, lb-server mesh, server-er (DSR return)
    assert g.number_of_edges() == 3 + n_lbs + n_lbs * n_srv + n_srv
    assert_links(g, LINK)
    # replies do not cross an LB: the shortest reply path is s -> er -> c
    assert nx.shortest_path(g, "s1", "c1", weight="delay_s") == ["s1", "er", "c1"]
    assert nx.shortest_path(g, f"lb{n_lbs}", f"s{n_srv}") == [f"lb{n_lbs}", f"s{n_srv}"]


def test_moderate_totals_20_cpus() -> None:
    g = build(TopologyConfig(preset="moderate"))
    assert sum(cores_of(g)) == 4 * 2 + 3 * 4


def test_preset_params_override() -> None:
    g = build(TopologyConfig(preset="moderate,workers=64,backlog=0", params={"lbs": 3}))
    assert len(topologies.lbs(g)) == 3
    assert {g.nodes[s]["workers"] for s in topologies.servers(g)} == {64}
    assert {g.nodes[s]["backlog"] for s in topologies.servers(g)} == {0}
    assert g.graph["preset"] == "moderate"
    assert g.graph["params"] == {"lbs": 3, "workers": 64, "backlog": 0}


def test_explicit_topology() -> None:
    specs = [ServerSpec(cores=1, workers=1, backlog=0), ServerSpec(cores=2.5, workers=3, backlog=7)]
    g = build(TopologyConfig(lbs=2, servers=specs, link=LINK))
    assert kinds(g) == Counter(client=1, router=1, lb=2, server=2)
    assert [dict(g.nodes[s]) for s in topologies.servers(g)] == [
        {"kind": "server", "cores": 1.0, "workers": 1, "backlog": 0},
        {"kind": "server", "cores": 2.5, "workers": 3, "backlog": 7},
    ]
    assert g.graph["preset"] == "explicit"


@pytest.mark.parametrize("spines, leaves, per_leaf, n_lbs", [(2, 4, 4, 2), (4, 6, 3, 3), (1, 1, 1, 1)])
@pytest.mark.parametrize("attach", ["leaves", "spines"])
def test_leaf_spine_counts(spines: int, leaves: int, per_leaf: int, n_lbs: int, attach: str) -> None:
    cfg = TopologyConfig(preset="leaf_spine", link=LINK, params=dict(
        spines=spines, leaves=leaves, servers_per_leaf=per_leaf, lbs=n_lbs, lb_attach=attach))
    g = build(cfg)
    n_srv = leaves * per_leaf
    assert kinds(g) == Counter(client=1, router=1, lb=n_lbs, server=n_srv, switch=spines + leaves)
    lb_links = n_lbs if attach == "leaves" else n_lbs * spines
    assert g.number_of_edges() == 1 + spines + spines * leaves + lb_links + n_srv
    assert_links(g, LINK)
    tiers = Counter(g.nodes[s]["tier"] for s in topologies.switches(g))
    assert tiers == Counter(spine=spines, leaf=leaves)
    # every leaf is adjacent to every spine; server i sits on leaf i // per_leaf + 1
    for j in range(leaves):
        assert {f"sw_spine{i + 1}" for i in range(spines)} <= set(g[f"sw_leaf{j + 1}"])
    for i in range(n_srv):
        assert set(g[f"s{i + 1}"]) == {f"sw_leaf{i // per_leaf + 1}"}
    # an LB -> server path is at most lb-leaf-spine-leaf-server (4 hops)
    assert nx.shortest_path_length(g, "lb1", f"s{n_srv}") <= 4


@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_fat_tree_textbook_counts(k: int) -> None:
    """Al-Fares et al.: (k/2)^2 core, k^2/2 agg, k^2/2 edge switches = 5k^2/4; k^3/4 hosts;
    k^3/4 host links + k^3/4 edge-agg + k^3/4 agg-core links."""
    n_lbs = 2 if k > 2 else 1
    servers = None if k ** 3 // 4 - n_lbs <= 64 else 40  # data plane caps servers at 64
    params = {"k": k, "lbs": n_lbs} | ({} if servers is None else {"servers": servers})
    g = build(TopologyConfig(preset="fat_tree", link=LINK, params=params))
    hosts = k ** 3 // 4
    tiers = Counter(g.nodes[s]["tier"] for s in topologies.switches(g))
    assert tiers == Counter(core=(k // 2) ** 2, aggregation=k * k // 2, edge=k * k // 2)
    assert len(topologies.switches(g)) == 5 * k * k // 4
    n_srv = hosts - n_lbs if servers is None else servers
    assert kinds(g)["server"] == n_srv and kinds(g)["lb"] == n_lbs
    fabric = [(u, v) for u, v in g.edges if g.nodes[u]["kind"] == "switch" and g.nodes[v]["kind"] == "switch"]
    assert len(fabric) == 2 * k ** 3 // 4
    host_links = [(u, v) for u, v in g.edges if {g.nodes[u]["kind"], g.nodes[v]["kind"]} & {"lb", "server"}]
    assert len(host_links) == n_lbs + n_srv
    assert g.degree("er") == (k // 2) ** 2 + 1  # every core switch + one client
    # every switch has exactly k ports when all host slots are filled
    if servers is None:
        for s in topologies.switches(g):
            ports = g.degree(s) - (1 if g.has_edge(s, "er") else 0)
            assert ports == k, s
    assert_links(g, LINK)


def test_fat_tree_k4_is_20_switches_16_hosts() -> None:
    g = build(TopologyConfig(preset="fat_tree,k=4,lbs=2"))
    assert len(topologies.switches(g)) == 20
    assert len(topologies.servers(g)) + len(topologies.lbs(g)) == 16
    # LBs evenly spaced: slots 0 and 8 -> pods 1 and 3
    assert g.nodes[next(iter(g["lb1"]))]["pod"] == 1
    assert g.nodes[next(iter(g["lb2"]))]["pod"] == 3


def test_cores_list_is_cycled() -> None:
    g = build(TopologyConfig(preset="leaf_spine,leaves=2,servers_per_leaf=3,cores=2:4:8"))
    assert cores_of(g) == [2.0, 4.0, 8.0, 2.0, 4.0, 8.0]


def test_parse_spec() -> None:
    assert parse_spec("moderate") == ("moderate", {})
    assert parse_spec("moderate,workers=64") == ("moderate", {"workers": 64})
    assert parse_spec("fat_tree, k=4 ,cores=2:4.5,lb_attach=spines") == (
        "fat_tree", {"k": 4, "cores": [2, 4.5], "lb_attach": "spines"})


def test_every_preset_builds_and_validates() -> None:
    for name in PRESETS:
        g = build(TopologyConfig(preset=name))
        assert nx.is_connected(g), name
        assert g.graph["preset"] == name


def test_clients_count() -> None:
    g = build(TopologyConfig(preset="unittest", clients=5))
    assert topologies.clients(g) == ["c1", "c2", "c3", "c4", "c5"]
    assert all(set(g[c]) == {"er"} for c in topologies.clients(g))


def test_server_ordering_is_numeric() -> None:
    g = build(TopologyConfig(preset="large"))
    assert topologies.servers(g)[:11] == [f"s{i}" for i in range(1, 12)]


def test_topologies_imports_only_simulator_config() -> None:
    # and simulator.shm, a leaf (it imports only simulator.config) that owns the one bound on
    # servers per LB, MAX_SERVERS
    import subprocess
    import sys

    code = ("import sys, topologies; "
            "print(sorted(m for m in sys.modules if m == 'simulator' or m.startswith('simulator.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['simulator', 'simulator.config', 'simulator.shm']"


def test_config_error_is_raised_not_value_error() -> None:
    with pytest.raises(ConfigError):
        build(TopologyConfig(preset="nope"))
