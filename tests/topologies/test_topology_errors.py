"""Bad topologies fail with one ConfigError naming the preset, parameter, node, edge or attribute."""

from __future__ import annotations

import networkx as nx
import pytest

from simulator.config import ConfigError, ServerSpec, TopologyConfig
from topologies import build, flat, servers, validate


def err(cfg: TopologyConfig) -> str:
    with pytest.raises(ConfigError) as info:
        build(cfg)
    return str(info.value)


def test_unknown_preset_lists_known_ones() -> None:
    msg = err(TopologyConfig(preset="modrate"))
    assert "topology.preset" in msg and "'modrate'" in msg
    for name in ("unittest", "moderate", "large", "leaf_spine", "fat_tree"):
        assert name in msg


@pytest.mark.parametrize(
    "preset, params, needle",
    [
        ("moderate", {"wokers": 3}, "topology.params.wokers: unknown parameter for preset 'moderate'"),
        ("moderate", {"workers": "many"}, "topology.params.workers: expected an integer"),
        ("moderate", {"workers": 2.5}, "topology.params.workers: expected an integer"),
        ("moderate", {"workers": 0}, "workers must be >= 1"),
        ("moderate", {"backlog": -1}, "backlog must be >= 0"),
        ("moderate", {"lbs": 0}, "lbs must be >= 1"),
        ("fat_tree", {"k": 3}, "k must be an even integer"),
        ("fat_tree", {"k": 4, "servers": 20}, "servers must be in 1..14"),
        ("fat_tree", {"k": 4, "lbs": 16}, "lbs must be in 1..15"),
        ("fat_tree", {"cores": [2, -1]}, "topology.params.cores: expected a number > 0"),
        ("leaf_spine", {"lb_attach": "core"}, "lb_attach must be 'leaves' or 'spines'"),
        ("leaf_spine", {"spines": 0}, ">= 1"),
    ],
)
def test_bad_preset_params(preset: str, params: dict, needle: str) -> None:
    assert needle in err(TopologyConfig(preset=preset, params=params))


def test_param_in_spec_and_params_is_ambiguous() -> None:
    msg = err(TopologyConfig(preset="moderate,workers=4", params={"workers": 8}))
    assert "'workers' given both" in msg


def test_bad_spec_item() -> None:
    assert "expected key=value" in err(TopologyConfig(preset="moderate,workers"))


def test_preset_and_explicit_servers_conflict() -> None:
    msg = err(TopologyConfig(preset="moderate", lbs=1, servers=[ServerSpec(cores=1)]))
    assert "not both" in msg


def test_too_many_servers() -> None:
    # the bound is the shm layout's (4096 servers per LB), named with the field
    msg = err(TopologyConfig(lbs=1, servers=[ServerSpec(cores=1)] * 5000))
    assert msg == "topology.servers: 5000 servers, the shm layout allows at most 4096"
    g = flat(1, [ServerSpec(cores=1)] * 4097)
    with pytest.raises(ConfigError, match=r"^t.yaml: topology.servers: 4097 servers, the shm "
                                          r"layout allows at most 4096$"):
        validate(g, "t.yaml: topology")


def test_servers_beyond_64_accepted() -> None:
    # the old 64-server bound (a 64-bit shm bitmap) is gone: 4096 is fine, and so is a preset
    # with more than 64 servers
    assert len(servers(validate(flat(1, [ServerSpec(cores=1)] * 4096)))) == 4096
    assert len(servers(build(TopologyConfig(preset="fat_tree", params={"k": 8})))) > 64


def test_zero_servers_names_the_field() -> None:
    g = _good()
    g.remove_nodes_from(["s1", "s2"])
    with pytest.raises(ConfigError, match=r"^t.yaml: topology.servers: 0 servers, a topology "
                                          r"needs at least one \(s1\)$"):
        validate(g, "t.yaml: topology")


def _good() -> nx.Graph:
    return flat(1, [ServerSpec(cores=2), ServerSpec(cores=4)])


def verr(g: nx.Graph) -> str:
    with pytest.raises(ConfigError) as info:
        validate(g, "t.yaml: topology")
    msg = str(info.value)
    assert msg.startswith("t.yaml: topology: ")
    return msg


def test_good_graph_passes() -> None:
    g = _good()
    assert validate(g) is g


def test_disconnected_server_is_named() -> None:
    g = _good()
    g.remove_edges_from(list(g.edges("s2")))
    msg = verr(g)
    assert "disconnected graph: server 's2' has no path to the router 'er'" in msg


def test_disconnected_lb_is_named() -> None:
    g = _good()
    g.remove_edges_from(list(g.edges("lb1")))
    assert "lb 'lb1' has no path" in verr(g)


def test_disconnected_client_is_named() -> None:
    g = _good()
    g.remove_edge("c1", "er")
    assert "client 'c1' has no path" in verr(g)


@pytest.mark.parametrize("attr, value, needle", [
    ("cores", 0, "server 's1' attribute 'cores' must be a number > 0"),
    ("cores", float("nan"), "attribute 'cores'"),
    ("workers", 1.5, "server 's1' attribute 'workers' must be an integer >= 1"),
    ("backlog", -2, "server 's1' attribute 'backlog' must be an integer >= 0"),
])
def test_bad_server_attribute(attr: str, value: object, needle: str) -> None:
    g = _good()
    g.nodes["s1"][attr] = value
    assert needle in verr(g)


def test_missing_server_attribute() -> None:
    g = _good()
    del g.nodes["s2"]["workers"]
    assert "server 's2' is missing attribute 'workers'" in verr(g)


@pytest.mark.parametrize("attr, value, needle", [
    ("bandwidth_bps", 0, "attribute 'bandwidth_bps' must be a number > 0"),
    ("delay_s", -1e-3, "attribute 'delay_s' must be a number >= 0"),
    ("queue_pkts", 0, "attribute 'queue_pkts' must be an integer >= 1"),
    ("queue_pkts", 10.0, "attribute 'queue_pkts' must be an integer >= 1"),
])
def test_bad_edge_attribute(attr: str, value: object, needle: str) -> None:
    g = _good()
    g.edges["lb1", "s1"][attr] = value
    msg = verr(g)
    assert needle in msg and ("edge lb1-s1" in msg or "edge s1-lb1" in msg)


def test_missing_edge_attribute() -> None:
    g = _good()
    del g.edges["er", "lb1"]["delay_s"]
    assert "is missing attribute 'delay_s'" in verr(g)


def test_missing_kind_and_bad_names() -> None:
    g = _good()
    g.add_node("x")
    assert "node 'x' has no 'kind'" in verr(g)
    g = _good()
    g.add_node("x", kind="toaster")
    assert "kind 'toaster'" in verr(g)
    g = _good()
    nx.relabel_nodes(g, {"s2": "server2"}, copy=False)
    assert "node 'server2' of kind 'server' must be named s1..sN" in verr(g)


def test_gaps_in_names() -> None:
    g = _good()
    nx.relabel_nodes(g, {"s2": "s3"}, copy=False)
    assert "server names must be s1..s2 without gaps (missing s2)" in verr(g)


def test_needs_router_lb_server_client() -> None:
    g = _good()
    g.remove_node("lb1")
    assert "needs at least one lb" in verr(g)
    g = _good()
    g.remove_node("er")
    assert "exactly one edge router" in verr(g)


def test_directed_graph_rejected() -> None:
    assert "undirected" in verr(nx.DiGraph(_good()))
