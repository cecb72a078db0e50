"""The testbed's network: namespaces joined by one bridge in ``mlb-sw``, the VIP on every
server's ``lo`` with ARP suppressed (layer-2 direct server return), and the clients' routes to
the VIP through the LBs. Veths are created inside the namespaces: the root namespace's network is
never touched."""

from __future__ import annotations

import logging
import shutil
from typing import Any

from hil.testbed import sh
from hil.testbed.plan import BRIDGE, MARK_BASE, PREFIX_LEN, SWITCH_NS, Node, TestbedPlan

__all__ = ["build_network"]

log = logging.getLogger("marllb.hil.testbed")


def _link_node(node: Node) -> None:
    ns = node.ns
    sh.run(["ip", "netns", "add", ns])
    sh.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", node.port,
            "netns", SWITCH_NS])
    sh.run(["ip", "-n", ns, "link", "set", "eth0", "address", node.mac])
    sh.run(["ip", "-n", ns, "addr", "add", f"{node.ip}/{PREFIX_LEN}", "dev", "eth0"])
    sh.run(["ip", "-n", ns, "link", "set", "lo", "up"])
    sh.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
    sh.run(["ip", "-n", SWITCH_NS, "link", "set", node.port, "master", BRIDGE, "up"])
    # full checksums in every frame (a frame the LB re-sends from AF_PACKET is not offloaded)
    sh.run(["ethtool", "-K", "eth0", "tx", "off"], ns=ns)
    _sysctl(ns, {"net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.eth0.rp_filter": 0,
                 "net.ipv4.conf.default.rp_filter": 0})


def _sysctl(ns: str, values: dict[str, Any]) -> None:
    sh.run(["sysctl", "-q", "-w", *(f"{k}={v}" for k, v in values.items())], ns=ns)


def build_network(plan: TestbedPlan) -> None:
    sh.run(["ip", "netns", "add", SWITCH_NS])
    sh.run(["ip", "-n", SWITCH_NS, "link", "add", BRIDGE, "type", "bridge"])
    sh.run(["ip", "-n", SWITCH_NS, "link", "set", BRIDGE, "up"])
    for node in plan.nodes:
        _link_node(node)
    for s in plan.servers:
        # the VIP on lo, never announced or answered by ARP: clients reach it through an LB (the
        # next hop of their VIP route), and the servers answer them straight from it
        sh.run(["ip", "-n", s.ns, "addr", "add", f"{plan.vip}/32", "dev", "lo"])
        _sysctl(s.ns, {"net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2,
                       "net.ipv4.conf.eth0.arp_ignore": 1, "net.ipv4.conf.eth0.arp_announce": 2,
                       "net.ipv4.tcp_abort_on_overflow": 1})
    for lb in plan.lbs:
        _drop_vip_in_stack(lb, plan.vip)
    for c in plan.clients:
        _client_routes(c, plan)


def _drop_vip_in_stack(lb: Node, vip: str) -> None:
    """In an LB namespace, drop VIP frames at ingress (nftables netdev hook): lb_rl_host's tap
    sees them first, and the LB's own IP stack no longer receives, routes and drops each one
    (vpp_plugin/host/README.md). Optional: without nft the LB works the same, only slower."""
    if shutil.which("nft") is None:
        log.info("nft not found (apt-get install nftables): %s's stack also receives the VIP frames", lb.ns)
        return
    rule = ("table netdev mlb_lb {\n chain vip_in {\n"
            '  type filter hook ingress device "eth0" priority -500; policy accept;\n'
            f"  ip daddr {vip} drop\n }}\n}}\n")
    sh.run(["nft", "-f", "-"], ns=lb.ns, input_text=rule)


def _client_routes(c: Node, plan: TestbedPlan) -> None:
    """The edge router's job in the client: the VIP via the LBs. Unmarked flows take a
    multipath route hashed on the 5-tuple (fib_multipath_hash_policy=1); a socket marked
    ``MARK_BASE + k`` (the client's own hash) goes through LB k (policy routing table 100+k)."""
    lbs = plan.lbs
    _sysctl(c.ns, {"net.ipv4.fib_multipath_hash_policy": 1})
    if len(lbs) == 1:
        sh.run(["ip", "-n", c.ns, "route", "add", f"{plan.vip}/32", "via", lbs[0].ip])
    else:
        hops: list[str] = []
        for lb in lbs:
            hops += ["nexthop", "via", lb.ip]
        sh.run(["ip", "-n", c.ns, "route", "add", f"{plan.vip}/32", *hops])
    for k, lb in enumerate(lbs):
        table = str(100 + k)
        sh.run(["ip", "-n", c.ns, "route", "add", f"{plan.vip}/32", "via", lb.ip, "table", table])
        sh.run(["ip", "-n", c.ns, "rule", "add", "fwmark", str(MARK_BASE + k), "table", table])
