"""A small layer-2 DSR testbed in network namespaces for the lb_rl_host tests.

Namespaces ``<prefix>-c`` (client), ``<prefix>-lb``, ``<prefix>-s0..`` (servers) each have one
veth ``eth0`` whose peer sits on bridge ``br0`` in ``<prefix>-sw``; every link is created
directly inside the namespaces, so the root namespace's network is never touched. Addresses come
from 198.18.200.0/24; MACs are fixed (02:00:c6:12:c8:<host>). Servers do not hold the VIP: their
kernels drop the frames after the capture sockets have seen them, so no replies (SYN-ACK, RST)
come back through the LB to muddle the counts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

NET = "198.18.200"
VIP = "198.19.200.1"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True)


def netns_list(prefix: str) -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.split() and ln.split()[0].startswith(prefix)]


def can_run() -> str | None:
    """None if the testbed can be built here, else the reason to skip."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, AF_PACKET)"
    if not shutil.which("ip"):
        return "iproute2 `ip` not found"
    if sh("ip", "netns", "list", check=False).returncode != 0:
        return "`ip netns` not available"
    return None


class Topo:
    def __init__(self, prefix: str, n_servers: int) -> None:
        self.prefix = prefix
        self.sw = f"{prefix}-sw"
        self.client = f"{prefix}-c"
        self.lb = f"{prefix}-lb"
        self.servers = [f"{prefix}-s{i}" for i in range(n_servers)]
        self.ip = {self.client: f"{NET}.1", self.lb: f"{NET}.2"}
        self.mac = {self.client: "02:00:c6:12:c8:01", self.lb: "02:00:c6:12:c8:02"}
        for i, s in enumerate(self.servers):
            self.ip[s] = f"{NET}.{10 + i}"
            self.mac[s] = f"02:00:c6:12:c8:{10 + i:02x}"
        self.procs: list[subprocess.Popen] = []

    @property
    def nodes(self) -> list[str]:
        return [self.client, self.lb, *self.servers]

    def up(self) -> None:
        try:
            sh("ip", "netns", "add", self.sw)
            sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.sw, "link", "set", "br0", "up")
            for k, ns in enumerate(self.nodes):
                port = f"p{k}"
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                   "netns", self.sw)
                sh("ip", "-n", self.sw, "link", "set", port, "master", "br0", "up")
                sh("ip", "-n", ns, "link", "set", "eth0", "address", self.mac[ns])
                sh("ip", "-n", ns, "addr", "add", f"{self.ip[ns]}/24", "dev", "eth0")
                sh("ip", "-n", ns, "link", "set", "eth0", "up")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
                # frames carry complete checksums (captures compare bytes)
                sh("ip", "netns", "exec", ns, "ethtool", "-K", "eth0", "tx", "off", check=False)
            sh("ip", "netns", "exec", self.lb, "sysctl", "-qw", "net.ipv4.ip_forward=0")
            sh("ip", "-n", self.client, "route", "add", f"{VIP}/32", "via", self.ip[self.lb])
            # static forwarding entries: unicast frames never flood to other ports
            for k, ns in enumerate(self.nodes):
                sh("bridge", "-n", self.sw, "fdb", "replace", self.mac[ns], "dev", f"p{k}",
                   "master", "static")
        except BaseException:
            self.down()
            raise

    def start(self, ns: str, argv: list[str]) -> "Proc":
        p = Proc(["ip", "netns", "exec", ns, *argv])
        self.procs.append(p.popen)
        return p

    def down(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.kill()
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        for ns in [*reversed(self.nodes), self.sw]:
            sh("ip", "netns", "del", ns, check=False)


class Proc:
    """A subprocess whose stdout/stderr lines are collected by reader threads."""

    def __init__(self, argv: list[str]) -> None:
        self.popen = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.popen.stdout, self.out), daemon=True),
            threading.Thread(target=self._pump, args=(self.popen.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_line(self, pred, timeout: float = 5.0, start: int = 0) -> str:
        t_end = time.monotonic() + timeout
        while time.monotonic() < t_end:
            for ln in self.out[start:]:
                if pred(ln):
                    return ln
            if self.popen.poll() is not None and not any(pred(ln) for ln in self.out[start:]):
                time.sleep(0.05)
                break
            time.sleep(0.02)
        for ln in self.out[start:]:
            if pred(ln):
                return ln
        raise AssertionError(
            f"no matching line within {timeout} s; rc={self.popen.poll()} out={self.out[-5:]} "
            f"err={self.err[-5:]}"
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        rc = self.popen.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=2)
        return rc


def pktio() -> Path:
    return Path(__file__).resolve().parent / "pktio.py"
