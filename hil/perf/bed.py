"""The bench bed: the local testbed's layer-2 DSR segment reduced to what a throughput test
needs — a generator, one LB running ``lb_rl_host`` and packet sinks for servers, each a network
namespace with one veth to a bridge in ``mlb-pf-sw``:

    mlb-pf-g (generator) --\\
    mlb-pf-lb (lb_rl_host) -- br0 in mlb-pf-sw
    mlb-pf-s0 .. s<n-1>  --/

The generator sends to the LB's MAC; the LB rewrites the destination MAC to the chosen server's
and sends the frame back to the bridge; what reached a server is counted where it enters the
server's ``eth0``: an nftables netdev ingress rule counts and drops IPv4 frames to the VIP with
that server's MAC (only the LB's output; dropped there, they cost the sink's IP stack nothing —
that work would otherwise run on the LB's CPU, in its sendto). The LB's own IP stack never sees
VIP frames either (an ingress drop after lb_rl_host's tap).
Its names (``mlb-pf-*``) differ from the testbed's, so a bench can run while a testbed is up.
Addresses 198.18.210.0/24, VIP 198.19.210.1. ``down()`` removes everything by name.
"""

from __future__ import annotations

import json
import select
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hil.testbed import sh
from hil.testbed.cgroups import detect
from simulator.config import UserError

__all__ = ["PerfBed", "LbRun", "PREFIX", "VIP", "leftovers"]

PREFIX = "mlb-pf"
NET = "198.18.210"
VIP = "198.19.210.1"
NFT_TABLE = "mlb_pf_lb"
NFT_SINK = "mlb_pf_sink"
READY_TIMEOUT_S = 20.0
CGROUP = "mlb-pf-lb"
GEN_CPU, LB_CPU = 0, 1


def leftovers() -> list[str]:
    """Namespaces and the cgroup of a bench bed that are still there."""
    left = [ns for ns in sh.namespaces() if ns.startswith(PREFIX + "-")]
    try:
        left += [f"cgroup {g}" for g in detect().groups(CGROUP)]
    except UserError:
        pass
    return left


class PerfBed:
    def __init__(self, n_servers: int = 4) -> None:
        if not 1 <= n_servers <= 200:
            raise UserError(f"bench bed: {n_servers} servers (1..200)")
        self.sw, self.gen, self.lb = f"{PREFIX}-sw", f"{PREFIX}-g", f"{PREFIX}-lb"
        self.servers = [f"{PREFIX}-s{j}" for j in range(n_servers)]
        self.nodes = [self.gen, self.lb, *self.servers]
        self.ip = {n: f"{NET}.{k + 1}" for k, n in enumerate(self.nodes)}
        self.mac = {n: f"02:6d:70:66:00:{k + 1:02x}" for k, n in enumerate(self.nodes)}
        self.vip = VIP

    # -- life cycle ------------------------------------------------------------------------
    def up(self) -> "PerfBed":
        for tool, pkg in (("ip", "iproute2"), ("nft", "nftables"), ("ethtool", "ethtool")):
            sh.require_tool(tool, f"apt-get install {pkg}")
        if leftovers():
            raise UserError(f"a bench bed is already up ({', '.join(leftovers())}); remove it with "
                            "`marllb hil down` or wait for the other bench to finish")
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        sh.run(["ip", "netns", "add", self.sw])
        self._no_ipv6(self.sw)
        sh.run(["ip", "-n", self.sw, "link", "add", "br0", "type", "bridge"])
        sh.run(["ip", "-n", self.sw, "link", "set", "br0", "up"])
        for k, ns in enumerate(self.nodes):
            sh.run(["ip", "netns", "add", ns])
            self._no_ipv6(ns)
            sh.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{k}",
                    "netns", self.sw])
            sh.run(["ip", "-n", self.sw, "link", "set", f"p{k}", "master", "br0", "up"])
            # static forwarding entries: no flooding while the bridge learns
            sh.run(["bridge", "-n", self.sw, "fdb", "replace", self.mac[ns], "dev", f"p{k}",
                    "master", "static"])
            sh.run(["ip", "-n", ns, "link", "set", "eth0", "address", self.mac[ns]])
            sh.run(["ip", "-n", ns, "addr", "add", f"{self.ip[ns]}/24", "dev", "eth0"])
            sh.run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            sh.run(["ip", "-n", ns, "link", "set", "lo", "up"])
            sh.run(["ethtool", "-K", "eth0", "tx", "off"], ns=ns)
        sh.run(["sysctl", "-qw", "net.ipv4.ip_forward=0"], ns=self.lb)
        sh.run(["nft", "-f", "-"], ns=self.lb, input_text=self._ingress_rule(NFT_TABLE, f"ip daddr {self.vip}"))
        for srv in self.servers:
            match = f"ether daddr {self.mac[srv]} ip daddr {self.vip} counter"
            sh.run(["nft", "-f", "-"], ns=srv, input_text=self._ingress_rule(NFT_SINK, match))

    @staticmethod
    def _ingress_rule(table: str, match: str) -> str:
        """An nftables netdev table dropping ``match`` at eth0's ingress."""
        return (f"table netdev {table} {{\n chain vip_in {{\n"
                '  type filter hook ingress device "eth0" priority -500; policy accept;\n'
                f"  {match} drop\n }}\n}}\n")

    @staticmethod
    def _no_ipv6(ns: str) -> None:
        """No IPv6 (router solicitations, MLD reports) on any link made later in ns: the
        servers' rx counters must count only what the LB forwarded."""
        sh.run(["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"],
               ns=ns)

    def down(self) -> None:
        for ns in [*reversed(self.nodes), self.sw]:
            if ns in sh.namespaces():
                sh.kill_pids(sh.ns_pids(ns))  # a generator or LB left by an interrupted trial
            sh.run(["ip", "netns", "del", ns], check=False)
        try:
            cg = detect()
            if CGROUP in cg.groups():
                cg.remove(CGROUP)
        except UserError:
            pass  # no CPU controller: no group was made

    def __enter__(self) -> "PerfBed":
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- counters --------------------------------------------------------------------------
    def counter(self, ns: str, name: str) -> int:
        return int(sh.run(["cat", f"/sys/class/net/eth0/statistics/{name}"], ns=ns).stdout)

    def received(self) -> list[int]:
        """VIP frames that entered every server's eth0 (its ingress counter)."""
        out = []
        for srv in self.servers:
            js = json.loads(sh.run(["nft", "-j", "list", "table", "netdev", NFT_SINK], ns=srv).stdout)
            counters = [e["counter"]["packets"] for item in js["nftables"] if "rule" in item
                        for e in item["rule"]["expr"] if "counter" in e]
            out.append(sum(counters))
        return out

    def sent(self) -> int:
        return self.counter(self.gen, "tx_packets")

    def describe(self) -> dict:
        return {"generator": self.gen, "lb": self.lb, "servers": self.servers, "vip": self.vip,
                "interfaces": "veth pairs to a Linux bridge (br0 in mlb-pf-sw), MTU 1500",
                "lb_mac": self.mac[self.lb], "cpus": {"generator": GEN_CPU, "lb": LB_CPU}}


@dataclass
class LbRun:
    """One ``lb_rl_host`` process on the bed's LB (a fresh flow table per start)."""

    bed: PerfBed
    exe: Path
    policy: str = "wcmp"
    weights: Sequence[float] = ()
    vip_port: int = 80
    table_size: int = 1 << 20
    flow_timeout_s: float = 40.0
    shm: Path | None = None
    step_s: float = 0.25
    rx_ring: str = "block"  # lb_rl_host --rx-ring: block (TPACKET_V3, fewer wake-ups) or frame
    cpus: float | None = None  # a CPU quota (cgroup CGROUP): a slower data plane, e.g. in tests
    stats_path: Path | None = None
    proc: subprocess.Popen | None = None

    def start(self) -> "LbRun":
        b = self.bed
        argv = [str(self.exe), "--interface", "eth0", "--vip", b.vip, "--vip-port", str(self.vip_port),
                "--policy", self.policy, "--table-size", str(self.table_size),
                "--flow-timeout", str(self.flow_timeout_s), "--step", str(self.step_s),
                "--rx-ring", self.rx_ring]
        for s in b.servers:
            argv += ["--server", f"{b.ip[s]}={b.mac[s]}"]
        if self.weights:
            argv += ["--weights", ",".join(f"{w:g}" for w in self.weights)]
        if self.shm is not None:
            argv += ["--shm", str(self.shm)]
        if self.stats_path is not None:
            argv += ["--stats-json", str(self.stats_path)]
        cmd = sh.in_ns(b.lb, argv, cpus=[LB_CPU] if shutil.which("taskset") else ())
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if self.cpus is not None:  # `ip netns exec` and taskset exec: the PID is lb_rl_host's
            cg = detect()
            cg.create(CGROUP, self.cpus)
            cg.move(self.proc.pid, CGROUP)
        self._wait_ready()
        return self

    def _wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Until lb_rl_host prints its startup line (its rings are bound then). Under a small CPU
        quota its start (a zeroed flow table, the rings) can take a second or more; a trial begun
        before then loses the first packets (measured: the first 1-s trial of a run at 0.1 CPU lost
        34-77 % of its packets; its start took 2.4 s)."""
        p = self.proc
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([p.stdout], [], [], 0.05)
            if ready:
                line = p.stdout.readline()
                if line.startswith("lb_rl_host: ready"):
                    return
                if line:
                    continue
            if p.poll() is not None:
                raise UserError(f"lb_rl_host exited at start (exit {p.returncode}): {p.stderr.read().strip()}")
        self.stop()
        raise UserError(f"lb_rl_host printed no startup line within {timeout_s:g} s")

    def stop(self) -> dict:
        """SIGTERM; returns the counters it wrote (--stats-json), {} if none."""
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.proc = None
        if self.cpus is not None:
            detect().remove(CGROUP)
        if self.stats_path is not None and self.stats_path.exists():
            try:
                return json.loads(self.stats_path.read_text())
            except json.JSONDecodeError:
                return {}
        return {}
