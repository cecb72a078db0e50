"""Real LBs for simulated packets: one ``lb_rl_host`` per LB in namespace ``mlb-glb<k>``, each
joined by one veth to the gateway namespace ``mlb-gw``, where this process sends and captures.

    gw(mlb-gw) g<k> <--veth--> eth0 (mlb-glb<k>): lb_rl_host --interface eth0

A frame the gateway sends to the LB's MAC goes through the core and comes back out the same
veth towards the chosen server's MAC (layer-2 DSR, MAC rewrite only); the gateway's capture
reads the server from that MAC. The servers are simulated: their MACs and addresses exist only
in lb_rl_host's ``--server IP=MAC`` list. The root namespace's network is never touched, and
:meth:`RealLbs.down` removes everything (also after a failure; ``marllb hil down`` finds
leftovers by name).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hil.testbed import sh
from hil.testbed.dataplane import SHM_DIR
from simulator.config import UserError

__all__ = ["GW_NS", "lb_ns", "lb_shm_path", "server_mac", "server_ip", "RealLbs", "LbSpec", "packet_socket",
           "gateway_namespaces", "teardown", "check_host"]

log = logging.getLogger("marllb.hil.gateway")

GW_NS = "mlb-gw"
ETH_P_ALL = 0x0003
GW_MAC = "02:6d:6c:67:00:{:02x}"  # the gateway's end of LB k's veth
LB_MAC = "02:6d:6c:67:01:{:02x}"  # LB k's eth0
SERVER_MAC = "02:6d:6c:67:{:02x}:{:02x}"  # simulated server j: 02:6d:6c:67:(2 + j // 256):(j % 256)


def lb_ns(k: int) -> str:
    return f"mlb-glb{k}"


def lb_shm_path(k: int) -> Path:
    return SHM_DIR / f"mlb-glb{k}.shm"


def server_mac(j: int) -> str:
    return SERVER_MAC.format(2 + j // 256, j % 256)


def server_ip(j: int) -> str:
    return f"198.18.4.{j + 1}" if j < 254 else f"198.18.{5 + j // 254}.{j % 254 + 1}"


def packet_socket(ns: str, iface: str) -> socket.socket:
    """An AF_PACKET socket bound to ``iface`` of namespace ``ns`` (opened from a thread that
    entered the namespace; the socket stays in it)."""

    def open_socket() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.bind((iface, 0))
        return s

    try:
        return sh.in_netns_thread(ns, open_socket)
    except OSError as e:
        raise UserError(f"cannot open a packet socket on {iface} in namespace {ns}: {e}") from None


@dataclass
class LbSpec:
    """How to start every lb_rl_host: the core's settings (as ``marllb sim run`` gives its
    cores) and the shm step."""

    policy: str
    static_weights: Sequence[float]
    seeds: Sequence[int]
    vip: str
    vip_port: int
    step_s: float
    fallback_s: float
    table_size: int = 1 << 16
    flow_timeout_s: float = 40.0
    syn_timeout_s: float = 3.0
    reservoir_size: int = 128
    sample_prob: float = 1.0


class RealLbs:
    """``n_lbs`` lb_rl_host processes for ``n_servers`` simulated servers (see the module
    docstring): call :meth:`up` and (always) :meth:`down`."""

    def __init__(self, n_lbs: int, n_servers: int, spec: LbSpec, log_dir: Path) -> None:
        if len(spec.seeds) != n_lbs:
            raise ValueError(f"{len(spec.seeds)} seeds for {n_lbs} LBs")
        self.n_lbs = n_lbs
        self.n_servers = n_servers
        self.spec = spec
        self.log_dir = Path(log_dir)
        self.pids: list[int] = []
        self.argv: list[list[str]] = []
        self.shm_paths = [lb_shm_path(k) for k in range(n_lbs)]
        self.gw_macs = [GW_MAC.format(k) for k in range(n_lbs)]
        self.lb_macs = [LB_MAC.format(k) for k in range(n_lbs)]
        self.server_macs = [server_mac(j) for j in range(n_servers)]

    # -- life cycle ------------------------------------------------------------------------
    def up(self) -> None:
        """Namespaces, veths and one lb_rl_host per LB (its shm region exists on return)."""
        left = gateway_namespaces()
        if left:
            raise UserError(f"gateway namespaces {left} exist already (another run, or a crashed "
                            "one: `marllb hil down` removes them)")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            sh.run(["ip", "netns", "add", GW_NS])
            sh.run(["ip", "-n", GW_NS, "link", "set", "lo", "up"])
            for k in range(self.n_lbs):
                self._link(k)
            for k in range(self.n_lbs):
                self._start_lb(k)
        except BaseException:
            self.down()
            raise

    def _link(self, k: int) -> None:
        ns, gw_if = lb_ns(k), f"g{k}"
        sh.run(["ip", "netns", "add", ns])
        sh.run(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", gw_if,
                "netns", GW_NS])
        sh.run(["ip", "-n", ns, "link", "set", "eth0", "address", self.lb_macs[k], "up"])
        # the gateway end takes every frame lb_rl_host sends (they are addressed to servers)
        sh.run(["ip", "-n", GW_NS, "link", "set", gw_if, "address", self.gw_macs[k],
                "promisc", "on", "up"])
        for who, ifname in ((ns, "eth0"), (GW_NS, gw_if)):
            sh.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"], ns=who)
            sh.run(["ethtool", "-K", ifname, "tx", "off"], ns=who, check=False)

    def _start_lb(self, k: int) -> None:
        from hil.hostbin import host_binary

        binary = host_binary(build=True)
        s = self.spec
        shm = self.shm_paths[k]
        shm.unlink(missing_ok=True)
        argv = [str(binary), "--interface", "eth0", "--vip", s.vip, "--vip-port", str(s.vip_port),
                *[a for j in range(self.n_servers) for a in ("--server", f"{server_ip(j)}={server_mac(j)}")],
                "--weights", ",".join(f"{w:.17g}" for w in s.static_weights), "--policy", s.policy,
                "--step", f"{s.step_s:g}", "--fallback", f"{s.fallback_s:g}", "--shm", str(shm),
                "--seed", str(s.seeds[k]), "--table-size", str(s.table_size),
                "--flow-timeout", f"{s.flow_timeout_s:.17g}", "--syn-timeout", f"{s.syn_timeout_s:.17g}",
                "--reservoir-size", str(s.reservoir_size), "--sample-prob", f"{s.sample_prob:.17g}",
                "--max-servers", str(self.n_servers),  # frames sized for these servers, not 64
                "--stats-json", str(self.log_dir / f"glb{k}.stats.json"), "--rx-ring", "frame"]
        log_path = self.log_dir / f"glb{k}.log"
        with open(log_path, "ab") as out:
            p = subprocess.Popen(sh.in_ns(lb_ns(k), argv), stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        self.pids.append(p.pid)
        self.argv.append(argv)
        deadline = time.monotonic() + 10.0
        while not shm.exists():
            if p.poll() is not None:
                raise UserError(f"lb_rl_host (LB {k}) exited at start: "
                                f"{log_path.read_text(errors='replace').strip()[-800:]}")
            if time.monotonic() > deadline:
                raise UserError(f"lb_rl_host (LB {k}) did not create {shm} within 10 s")
            time.sleep(0.01)

    def stats(self, k: int) -> dict | None:
        """LB k's counters as lb_rl_host wrote them on exit (after :meth:`down`)."""
        import json

        path = self.log_dir / f"glb{k}.stats.json"
        try:
            return json.loads(path.read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            return None

    def down(self) -> None:
        """Stop the LBs, delete the namespaces and shm files. Safe to call twice."""
        if self.pids:
            left = sh.kill_pids(self.pids)
            if left:
                log.error("lb_rl_host processes %s would not exit", left)
            self.pids = []
        teardown()


def gateway_namespaces() -> list[str]:
    """The gateway's namespaces that exist now."""
    return [ns for ns in sh.namespaces() if ns == GW_NS or ns.startswith("mlb-glb")]


def teardown() -> list[str]:
    """Remove every gateway namespace (killing what lives in it) and shm file; returns the
    namespaces removed."""
    nss = gateway_namespaces()
    for ns in nss:
        pids = sh.ns_pids(ns)
        if pids:
            sh.kill_pids(pids)
    for ns in nss:
        sh.run(["ip", "netns", "del", ns], check=False)
    for f in SHM_DIR.glob("mlb-glb*.shm"):
        f.unlink(missing_ok=True)
    return nss


def check_host() -> str | None:
    """None if real LBs can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET)"
    for tool in ("ip", "ethtool"):
        if not shutil.which(tool):
            return f"`{tool}` not found"
    return None
