"""The testbed plan: which namespaces, addresses, MACs and CPU quotas a config asks for.

Pure data, derived from the same config as ``marllb sim run`` (topology preset or explicit
servers, ``hil.cpu_per_core``); nothing here touches the host. Layout (one L2 segment):

* namespace ``mlb-sw`` holds the bridge ``mlb-br``; every other namespace has one veth ``eth0``
  whose peer ``mlb-<node>`` is a port of that bridge;
* clients ``mlb-c<i>`` 198.18.1.<i>, LBs ``mlb-lb<k>`` 198.18.2.<k>, servers ``mlb-s<j>``
  198.18.3.<j> (all /16), the VIP 198.19.0.1 (on every server's ``lo``);
* MACs are locally administered and name the node: 02:6d:6c:<role>:00:<index>.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from simulator.config import ExperimentConfig, UserError

__all__ = ["Node", "ServerNode", "TestbedPlan", "make_plan", "pin_servers", "helper_cpus", "cpu_budget", "SWITCH_NS", "BRIDGE",
           "VIP", "HTTP_PORT", "MARK_BASE", "state_dir"]

SWITCH_NS = "mlb-sw"
BRIDGE = "mlb-br"
VIP = "198.19.0.1"
HTTP_PORT = 80
PREFIX_LEN = 16
#: a client socket marked MARK_BASE + k goes through LB k+1 (the client side of the edge router)
MARK_BASE = 0x6D00
_ROLE = {"c": (1, "198.18.1."), "lb": (2, "198.18.2."), "s": (3, "198.18.3.")}
#: Servers the local testbed hosts: each is a namespace with its own Apache (prefork workers)
#: under a CPU quota on this one machine, and beyond a few dozen the quotas become slivers the
#: CFS cannot honour (see pin_servers). Not the data plane's bound: the shm layout and the core
#: take up to 4096 servers per LB (the simulator runs them).
MAX_TESTBED_SERVERS = 64


def state_dir() -> Path:
    """Where the testbed keeps its configs, logs, PID files and state (MARLLB_TESTBED_DIR
    overrides; default /run/mlb-testbed, or /tmp/mlb-testbed without /run)."""
    env = os.environ.get("MARLLB_TESTBED_DIR")
    if env:
        return Path(env)
    return Path("/run/mlb-testbed") if Path("/run").is_dir() else Path("/tmp/mlb-testbed")


@dataclass(frozen=True)
class Node:
    """A namespace with one interface on the bridge. ``index`` is 1-based as in the names."""

    role: str  # "c", "lb" or "s"
    index: int

    @property
    def name(self) -> str:
        return f"{self.role}{self.index}"

    @property
    def ns(self) -> str:
        return f"mlb-{self.name}"

    @property
    def port(self) -> str:
        """The veth peer's name on the bridge (inside mlb-sw)."""
        return f"mlb-{self.name}"

    @property
    def ip(self) -> str:
        return _ROLE[self.role][1] + str(self.index)

    @property
    def mac(self) -> str:
        return f"02:6d:6c:{_ROLE[self.role][0]:02x}:{self.index >> 8:02x}:{self.index & 0xFF:02x}"


@dataclass(frozen=True)
class ServerNode(Node):
    """A server namespace with its Apache parameters and CPU quota (real CPUs)."""

    cores: float = 1.0
    workers: int = 32
    backlog: int = 128
    quota_cpus: float = 1.0
    cpus: tuple[int, ...] = ()  # CPUs its processes are pinned to (see pin_servers)


@dataclass(frozen=True)
class TestbedPlan:
    clients: tuple[Node, ...]
    lbs: tuple[Node, ...]
    servers: tuple[ServerNode, ...]
    cpu_per_core: float
    vip: str = VIP
    port: int = HTTP_PORT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (*self.clients, *self.lbs, *self.servers)

    @property
    def namespaces(self) -> list[str]:
        return [SWITCH_NS, *(n.ns for n in self.nodes)]

    @property
    def cores(self) -> list[float]:
        return [s.cores for s in self.servers]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shape(self) -> dict[str, Any]:
        """What must match for a running testbed to host this plan (network and servers)."""
        return {"clients": len(self.clients), "lbs": len(self.lbs),
                "servers": [(s.cores, s.workers, s.backlog, round(s.quota_cpus, 6), list(s.cpus))
                            for s in self.servers]}


def cpu_budget() -> float:
    """Real CPUs the servers' quotas may take together: this process's CPUs minus one kept for
    the client, the LBs and the controllers (at least half a CPU)."""
    return max(0.5, len(os.sched_getaffinity(0)) - 1.0)


def make_plan(cfg: ExperimentConfig, where: str = "config") -> TestbedPlan:
    """The testbed for cfg. Raises UserError if this machine cannot host it."""
    from simulator.run import build_graph

    graph = build_graph(cfg)  # validates the topology (names node and field on error)
    kinds = dict(graph.nodes(data="kind"))
    server_names = sorted((n for n, k in kinds.items() if k == "server"), key=lambda n: int(n[1:]))
    n_lbs = sum(1 for k in kinds.values() if k == "lb")
    n_clients = sum(1 for k in kinds.values() if k == "client")
    if n_lbs > 250 or n_clients > 250:
        raise UserError(f"{where}: the testbed hosts at most 250 LBs and 250 clients")
    if len(server_names) > MAX_TESTBED_SERVERS:
        raise UserError(
            f"{where}: topology.servers: {len(server_names)} servers, the local testbed hosts at "
            f"most {MAX_TESTBED_SERVERS} (one namespace with Apache under a CPU quota each, on "
            "this one machine); run larger server counts in the simulator")
    f = cfg.hil.cpu_per_core
    servers = []
    for j, name in enumerate(server_names, 1):
        a = graph.nodes[name]
        servers.append(ServerNode("s", j, cores=float(a["cores"]), workers=int(a["workers"]),
                                  backlog=int(a["backlog"]), quota_cpus=float(a["cores"]) * f))
    total = sum(s.quota_cpus for s in servers)
    budget = cpu_budget()
    if total > budget + 1e-9:
        raise UserError(
            f"{where}: hil.cpu_per_core: {sum(s.cores for s in servers):g} server cores x {f:g} = "
            f"{total:.2f} CPUs of quota, but this machine has {budget:.2f} CPUs for servers "
            f"({len(os.sched_getaffinity(0))} CPUs, one kept for client, LBs and controllers); "
            f"set hil.cpu_per_core <= {budget / sum(s.cores for s in servers):.4f}")
    return TestbedPlan(clients=tuple(Node("c", i) for i in range(1, n_clients + 1)),
                       lbs=tuple(Node("lb", k) for k in range(1, n_lbs + 1)),
                       servers=pin_servers(servers, sorted(os.sched_getaffinity(0))), cpu_per_core=f)


def pin_servers(servers: list[ServerNode], cpus: list[int]) -> tuple[ServerNode, ...]:
    """Pin each server to ceil(quota) of the server CPUs (all but the first, which is kept for
    the client, the LBs and the controllers: see :func:`helper_cpus`), largest quota first onto
    the least loaded ones.

    Why: CFS hands a group's quota to each CPU's run queue in slices (5 ms by default); a quota
    of a few ms per period spread over several CPUs is grabbed whole by one of them and the group
    is throttled on the others while its quota is unused, so the server gets far less than its
    quota. Pinned to as many CPUs as its quota needs, and away from the busy client, it gets all
    of it."""
    pool = cpus[1:] or cpus
    load = {c: 0.0 for c in pool}
    pinned: dict[int, tuple[int, ...]] = {}
    for s in sorted(servers, key=lambda s: (-s.quota_cpus, s.index)):
        k = min(len(pool), max(1, math.ceil(s.quota_cpus - 1e-9)))
        chosen = sorted(sorted(pool, key=lambda c: (load[c], c))[:k])
        for c in chosen:
            load[c] += s.quota_cpus / k
        pinned[s.index] = tuple(chosen)
    return tuple(replace(s, cpus=pinned[s.index]) for s in servers)


def helper_cpus() -> tuple[int, ...]:
    """The CPU the client, the LBs and the controllers run on (the first of this process's;
    servers are pinned to the others when there are others)."""
    return tuple(sorted(os.sched_getaffinity(0))[:1])
