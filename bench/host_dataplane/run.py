#!/usr/bin/env python3
"""Benchmark of lb_rl_host on veth: packets per second through the load balancer (layer-2 DSR)
at zero loss, for established flows and for new flows, against `lb_rl_host --forward-only` (same
rings, same parse and MAC rewrite, no core) measured in the same run.

    python bench/host_dataplane/run.py [--out bench/out/host_dataplane.json] [--trial 1.0]
                                       [--topologies bridged,direct] [--no-vip-drop]

Topologies (built here, removed in `finally`; namespaces mlb-bd-*, addresses 198.18.200.0/24,
VIP 198.19.200.1):
* bridged (realistic L2 DSR): mlb-bd-c (trafgen), mlb-bd-lb and servers mlb-bd-s0.. each with a
  veth to bridge br0 in mlb-bd-sw (static forwarding entries). Client -> bridge -> LB; the LB's
  output goes back through the bridge to the servers' veths. forwarded = the servers' eth0
  rx_packets.
* direct (isolates the LB): one veth pair mlb-bd-c eth0 <-> mlb-bd-lb eth0, no bridge, no server
  namespaces. The LB's --server MACs are owned by nobody, so its output arrives on the client's
  eth0 as PACKET_OTHERHOST and is dropped there at layer 2 (cheap). forwarded = the client's eth0
  rx_packets.
With the VIP drop (default; `--no-vip-drop` measures without it, and some cases do anyway) the
LB namespace gets an nftables `netdev` ingress rule on its eth0 dropping IPv4 to the VIP: the
LB's rx ring is an ETH_P_ALL tap, which runs before that hook, so lb_rl_host still sees every VIP
frame while the LB's own IP stack sees none (see vpp_plugin/host/README.md). trafgen is pinned to
CPU 0 and lb_rl_host to CPU 1 (taskset). Softirq work is not pinned: the receive path of frames
trafgen sends (bridge, the LB's tap and ring copy, the LB's IP stack) runs on CPU 0 in trafgen's
sendto, the path of the LB's output (veth, bridge, servers' receive) on CPU 1 in lb_rl_host's
sendto. Each trial records both CPUs' busy fraction (/proc/stat) and lb_rl_host's utime+stime.

Method. trafgen's own rate control (-b/-t) sends one packet per syscall and tops out near
0.1 Mpps here, too coarse. So each case is measured (1) at full blast (trafgen's TX ring, as fast
as it goes for --trial seconds): offered = client eth0 tx_packets delta, forwarded as above; and
(2) if the blast lost frames, by a bisection over the generator's speed, set by a CPU quota on
trafgen (cgroup cpu, period 10 ms; the generator runs in bursts shorter than the rx ring holds):
the highest offered rate whose trial lost nothing (forwarded >= offered) is the zero-loss rate.
Offered rates are what the counters show, not what the quota aimed at. A zero-loss rate equal to
the blast rate means the generator side, not the LB, was the limit.

Cases: forward-only reference (established-flow traffic), lb_rl_host with --flows established
TCP flows (SYNs first, then only ACKs: the core's established path), lb_rl_host with new flows
(SYNs with random source address/port: one policy decision per packet; table 2^20, flow timeout
2 s so entries are reclaimed; `untracked_full` in the JSON says how many found no slot).
Target: >= 0.5 Mpps for established flows.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402

PREFIX = "mlb-bd"
NET = "198.18.200"
VIP = "198.19.200.1"
CGROUP = Path("/sys/fs/cgroup/cpu") / f"{PREFIX}-gen"
TARGET_EST_MPPS = 0.5
GEN_CPU, LB_CPU = "0", "1"
NFT_TABLE = "mlb_bd_lb"
NFT_VIP_DROP = f"""table netdev {NFT_TABLE} {{
  chain vip_in {{
    type filter hook ingress device "eth0" priority -500; policy accept;
    ip daddr {VIP} drop
  }}
}}
"""


def sh(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(a), check=check, capture_output=True, text=True)


class Bed:
    """topology "bridged" (client, LB, servers on a bridge) or "direct" (client <-> LB veth)."""

    def __init__(self, n_servers: int, topology: str) -> None:
        self.topology = topology
        self.sw, self.c, self.lb = f"{PREFIX}-sw", f"{PREFIX}-c", f"{PREFIX}-lb"
        self.n_servers = n_servers
        if topology == "bridged":
            self.servers = [f"{PREFIX}-s{i}" for i in range(n_servers)]
            self.nodes = [self.c, self.lb, *self.servers]
        else:
            self.servers = []
            self.nodes = [self.c, self.lb]
        self.ip = {n: f"{NET}.{k + 1}" if k < 2 else f"{NET}.{8 + k}" for k, n in enumerate(self.nodes)}
        self.mac = {n: f"02:00:c6:12:c9:{k + 1:02x}" for k, n in enumerate(self.nodes)}
        # the LB's --server entries: the server namespaces, or (direct) MACs nobody owns
        if topology == "bridged":
            self.targets = [(self.ip[s], self.mac[s]) for s in self.servers]
        else:
            self.targets = [(f"{NET}.{10 + i}", f"02:00:c6:12:c9:{0xf0 + i:02x}")
                            for i in range(n_servers)]
        self.vip_drop = False

    def up(self) -> None:
        if self.topology == "direct":
            for ns in self.nodes:
                sh("ip", "netns", "add", ns)
            sh("ip", "-n", self.c, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
               "netns", self.lb)
        else:
            sh("ip", "netns", "add", self.sw)
            sh("ip", "-n", self.sw, "link", "add", "br0", "type", "bridge")
            sh("ip", "-n", self.sw, "link", "set", "br0", "up")
            # no iptables on bridged frames in our switch namespace (per-netns sysctls)
            for t in ("iptables", "ip6tables", "arptables"):
                sh("ip", "netns", "exec", self.sw, "sysctl", "-qw",
                   f"net.bridge.bridge-nf-call-{t}=0", check=False)
            for k, ns in enumerate(self.nodes):
                sh("ip", "netns", "add", ns)
                sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{k}",
                   "netns", self.sw)
                sh("ip", "-n", self.sw, "link", "set", f"p{k}", "master", "br0", "up")
                sh("bridge", "-n", self.sw, "fdb", "replace", self.mac[ns], "dev", f"p{k}",
                   "master", "static")
        for ns in self.nodes:
            sh("ip", "-n", ns, "link", "set", "eth0", "address", self.mac[ns])
            sh("ip", "-n", ns, "addr", "add", f"{self.ip[ns]}/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        sh("ip", "netns", "exec", self.lb, "sysctl", "-qw", "net.ipv4.ip_forward=0")

    def set_vip_drop(self, on: bool) -> None:
        """nftables netdev ingress drop of IPv4 to the VIP on the LB's eth0 (LB namespace only)."""
        if on == self.vip_drop:
            return
        if on:
            subprocess.run(["ip", "netns", "exec", self.lb, "nft", "-f", "-"], check=True,
                           capture_output=True, text=True, input=NFT_VIP_DROP)
        else:
            sh("ip", "netns", "exec", self.lb, "nft", "delete", "table", "netdev", NFT_TABLE)
        self.vip_drop = on

    def down(self) -> None:
        for ns in [*reversed(self.nodes), self.sw]:
            sh("ip", "netns", "del", ns, check=False)

    def counter(self, ns: str, name: str) -> int:
        return int(sh("ip", "netns", "exec", ns, "cat", f"/sys/class/net/eth0/statistics/{name}").stdout)

    def forwarded_counter(self) -> int:
        if self.topology == "direct":
            return self.counter(self.c, "rx_packets")
        return sum(self.counter(s, "rx_packets") for s in self.servers)

    def lb_ip_counters(self) -> dict[str, int]:
        """The LB namespace's IP stack input counters (/proc/net/snmp Ip: InReceives, ...)."""
        lines = [ln.split() for ln in sh("ip", "netns", "exec", self.lb, "cat", "/proc/net/snmp")
                 .stdout.splitlines() if ln.startswith("Ip:")]
        d = dict(zip(lines[0][1:], map(int, lines[1][1:])))
        return {k: d.get(k, 0) for k in ("InReceives", "InAddrErrors", "InNoRoutes", "InDiscards")}


def trafgen_cfg(bed: Bed, kind: str, n_flows: int) -> str:
    eth = f"eth(da={bed.mac[bed.lb]}, sa={bed.mac[bed.c]})"
    if kind == "new":  # random 16 bits of source address and random source port per packet
        return (f"{{ {eth}, ipv4(sa=198.18.201.1, sa[2]=drnd(), sa[3]=drnd(), da={VIP}, ttl=64), "
                f"tcp(sp=drnd(), dp=80, syn) }}\n")
    flag = "syn" if kind == "syn" else "ack"
    return (f"{{ {eth}, ipv4(sa=198.18.201.1, da={VIP}, ttl=64), "
            f"tcp(sp=dinc(1024, {1023 + n_flows}), dp=80, {flag}) }}\n")


def set_quota(frac: float | None) -> None:
    if frac is None or frac >= 1.0:
        (CGROUP / "cpu.cfs_quota_us").write_text("-1")
    else:
        # the kernel's minimum quota is 1 ms: period 10 ms, so quotas from 0.1 CPU
        (CGROUP / "cpu.cfs_period_us").write_text("10000")
        (CGROUP / "cpu.cfs_quota_us").write_text(str(max(1000, int(10000 * frac))))


def run_trafgen(bed: Bed, cfg: Path, seconds: float | None = None, n: int | None = None,
                gap_us: int | None = None) -> None:
    cmd = ["ip", "netns", "exec", bed.c, "taskset", "-c", GEN_CPU, "trafgen", "-o", "eth0", "-i",
           str(cfg), "--cpus", "1", "-q"]
    if n is not None:
        cmd += ["-n", str(n)]
    if gap_us is not None:
        cmd += ["-t", f"{gap_us}us"]
    inner = " ".join(cmd)
    if seconds is not None:
        inner = f"timeout -s INT {seconds} {inner}"
    subprocess.run(["sh", "-c", f"echo $$ > {CGROUP}/cgroup.procs && exec {inner}"],
                   capture_output=True, text=True)


def cpu_s(pid: int) -> float:
    """utime + stime of a process, s."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def cpu_times() -> list[tuple[int, int, int]]:
    """Per CPU (busy, softirq, total) jiffies from /proc/stat."""
    out = []
    for ln in Path("/proc/stat").read_text().splitlines():
        if ln.startswith("cpu") and ln[3].isdigit():
            v = list(map(int, ln.split()[1:]))
            idle = v[3] + v[4]
            out.append((sum(v[:8]) - idle, v[6], sum(v[:8])))
    return out


def trial(bed: Bed, cfg: Path, seconds: float, frac: float | None, lb_pid: int) -> dict[str, object]:
    set_quota(frac)
    c0 = cpu_s(lb_pid)
    tx0 = bed.counter(bed.c, "tx_packets")
    rx0 = bed.forwarded_counter()
    ip0 = bed.lb_ip_counters()
    pc0 = cpu_times()
    t0 = time.monotonic()
    run_trafgen(bed, cfg, seconds=seconds)
    t1 = time.monotonic()
    time.sleep(0.3)  # let the LB drain its ring
    pc1 = cpu_times()
    tx = bed.counter(bed.c, "tx_packets") - tx0
    rx = bed.forwarded_counter() - rx0
    ip1 = bed.lb_ip_counters()
    el = max(t1 - t0, 1e-9)
    lb_cpu_s = cpu_s(lb_pid) - c0
    lb_cpu = lb_cpu_s / (el + 0.3)
    cpus = [{"busy": round((b1 - b0) / max(t1_ - t0_, 1), 3),
             "softirq": round((s1 - s0) / max(t1_ - t0_, 1), 3)}
            for (b0, s0, t0_), (b1, s1, t1_) in zip(pc0, pc1)]
    return {"lb_cpu": lb_cpu, "lb_cpu_us_per_pkt": lb_cpu_s / max(rx, 1) * 1e6,
            "quota": 1.0 if frac is None else frac, "seconds": el, "offered": tx, "forwarded": rx,
            "lost": tx - rx, "offered_mpps": tx / el / 1e6, "forwarded_mpps": rx / el / 1e6,
            "cpus": cpus, "lb_ip_in_receives": ip1["InReceives"] - ip0["InReceives"]}


def start_lb(bed: Bed, exe: Path, stats: Path, extra: list[str]) -> subprocess.Popen:
    argv = ["ip", "netns", "exec", bed.lb, "taskset", "-c", LB_CPU, str(exe), "--interface", "eth0",
            "--vip", VIP, "--stats-json", str(stats), "--quiet"]
    for ip, mac in bed.targets:
        argv += ["--server", f"{ip}={mac}"]
    p = subprocess.Popen(argv + extra, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    if p.poll() is not None:
        raise RuntimeError(f"lb_rl_host exited: {p.stderr.read()}")
    return p


def measure_case(bed: Bed, exe: Path, tmp: Path, name: str, kind: str, extra: list[str],
                 args: argparse.Namespace) -> dict[str, object]:
    stats = tmp / f"{name}.json"
    lb = start_lb(bed, exe, stats, extra)
    try:
        if kind == "est":
            syn = tmp / "syn.cfg"
            syn.write_text(trafgen_cfg(bed, "syn", args.flows))
            set_quota(None)
            run_trafgen(bed, syn, n=args.flows, gap_us=20)  # slow, lossless: every flow tracked
            time.sleep(0.2)
        cfg = tmp / f"{kind}.cfg"
        cfg.write_text(trafgen_cfg(bed, "new" if kind == "new" else "ack", args.flows))
        blast = trial(bed, cfg, args.trial, None, lb.pid)
        print(f"  {name}: full blast offered {blast['offered_mpps']:.3f} Mpps, "
              f"forwarded {blast['forwarded_mpps']:.3f} Mpps, lost {blast['lost']}, "
              f"LB CPU {blast['lb_cpu']:.2f}, CPU0/CPU1 busy "
              f"{'/'.join(str(c['busy']) for c in blast['cpus'])}, LB IP stack rx "
              f"{blast['lb_ip_in_receives']}", flush=True)
        trials = [blast]
        best = blast if blast["lost"] <= 0 else None
        lo, hi = 0.0, 1.0  # quota bounds: lo passed (0 = none yet), hi lost
        if best is None:
            for _ in range(args.steps):
                q = (lo + hi) / 2
                t = trial(bed, cfg, args.trial, q, lb.pid)
                trials.append(t)
                ok = t["lost"] <= 0
                print(f"    quota {q:.3f}: offered {t['offered_mpps']:.3f} Mpps, "
                      f"forwarded {t['forwarded_mpps']:.3f} Mpps, lost {t['lost']}, LB CPU {t['lb_cpu']:.2f}"
                      f"{'' if ok else ' LOSS'}", flush=True)
                if ok:
                    lo = q
                    if best is None or t["offered_mpps"] > best["offered_mpps"]:
                        best = t
                else:
                    hi = q
    finally:
        lb.send_signal(signal.SIGTERM)
        try:
            lb.wait(timeout=5)
        except subprocess.TimeoutExpired:
            lb.kill()
            lb.wait()
    lbstats = json.loads(stats.read_text()) if stats.exists() else {}
    return {
        "name": name, "topology": bed.topology, "vip_drop": bed.vip_drop,
        "lb_flags": extra,
        "zero_loss_mpps": best["offered_mpps"] if best else 0.0,
        "full_blast": blast,
        "trials": trials,
        "lb_stats": {k: lbstats.get(k) for k in ("rx_frames", "vip_frames", "forwarded",
                                                  "ring_drops", "ring_freeze", "tx_ring_full",
                                                  "tx_errors", "rx_blocks", "tx_kicks")}
        | {"core": lbstats.get("core")},
    }


CASES = {  # name -> (traffic, lb_rl_host flags)
    "forward_only": ("est", ["--forward-only"]),
    "lb_rl_est": ("est", ["--flow-timeout", "300"]),
    "lb_rl_new": ("new", ["--table-size", str(1 << 20), "--flow-timeout", "2"]),
    # the previous tx path (PACKET_TX_RING + one sendto per block) for comparison
    "lb_rl_est_txring": ("est", ["--flow-timeout", "300", "--tx-mode", "ring"]),
}


def plan(topologies: list[str], vip_drop: bool) -> list[tuple[str, str, bool]]:
    """(topology, case, vip_drop) in run order: per topology all three cases with the VIP drop
    (if enabled) and lb_rl_est with the previous tx path (--tx-mode ring), then forward_only and
    lb_rl_est without the drop (the LB stack's cost, same run)."""
    out = []
    for topo in topologies:
        out += [(topo, c, vip_drop) for c in CASES]
        if vip_drop:
            out += [(topo, c, False) for c in ("forward_only", "lb_rl_est")]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "host_dataplane.json")
    ap.add_argument("--trial", type=float, default=1.0, help="seconds per trial")
    ap.add_argument("--steps", type=int, default=5, help="bisection steps per case")
    ap.add_argument("--flows", type=int, default=4096, help="established flows")
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--topologies", default="bridged,direct",
                    help="comma-separated: bridged (client/LB/servers on a bridge), direct "
                         "(client veth <-> LB veth, output dropped at L2 by the client)")
    ap.add_argument("--no-vip-drop", action="store_true",
                    help="never add the nftables ingress drop of the VIP in the LB namespace")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, AF_PACKET, cgroups)", file=sys.stderr)
        return 2
    topologies = [t for t in args.topologies.split(",") if t]
    if not topologies or any(t not in ("bridged", "direct") for t in topologies):
        ap.error(f"--topologies {args.topologies}: expected bridged and/or direct")
    vip_drop = not args.no_vip_drop
    if vip_drop and not shutil.which("nft"):
        print("nft not found (apt-get install nftables): measuring without the VIP drop",
              file=sys.stderr)
        vip_drop = False
    from hil.hostbin import host_binary

    exe = host_binary()
    info = machine_info()
    results = []
    for b in (Bed(args.servers, "bridged"), Bed(args.servers, "direct")):
        b.down()  # leftovers of a crashed earlier run (our prefix only)
    try:
        CGROUP.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="mlb-bd-") as tmp:
            for topo in topologies:
                bed = Bed(args.servers, topo)
                try:
                    bed.up()
                    for t, name, drop in plan([topo], vip_drop):
                        bed.set_vip_drop(drop)
                        print(f"case {topo}/{name} vip_drop={drop} ...", flush=True)
                        kind, extra = CASES[name]
                        results.append(measure_case(bed, exe, Path(tmp), name, kind, extra, args))
                finally:
                    bed.down()
    finally:
        if CGROUP.exists():
            try:
                CGROUP.rmdir()
            except OSError as e:
                print(f"warning: cannot remove {CGROUP}: {e}", file=sys.stderr)
    info["loadavg_end"] = os.getloadavg()
    print()
    print(f"method: zero-loss rate = full-blast rate if it lost nothing, else bisection over a CPU "
          f"quota on trafgen ({args.trial} s trials); offered = client eth0 tx_packets, forwarded "
          "= servers' eth0 rx_packets (bridged) or client eth0 rx_packets (direct); trafgen on "
          "CPU 0, lb_rl_host on CPU 1")
    print(f"{'topology':<8} {'case':<16} {'vip drop':>8} {'zero-loss Mpps':>14} {'vs fwd-only':>11} "
          f"{'blast offered':>13} {'blast fwd':>9} {'blast lost':>10} {'LB us/pkt':>9} "
          f"{'CPU0/CPU1 busy':>14} {'LB stack rx':>11}")
    for r in results:
        ref = next((x["zero_loss_mpps"] for x in results if x["name"] == "forward_only"
                    and x["topology"] == r["topology"] and x["vip_drop"] == r["vip_drop"]), 0.0)
        b = r["full_blast"]
        busy = "/".join(f"{c['busy']:.2f}" for c in b["cpus"])
        print(f"{r['topology']:<8} {r['name']:<16} {'yes' if r['vip_drop'] else 'no':>8} "
              f"{r['zero_loss_mpps']:>14.3f} {r['zero_loss_mpps'] / ref if ref else float('nan'):>11.2f} "
              f"{b['offered_mpps']:>13.3f} {b['forwarded_mpps']:>9.3f} {b['lost']:>10} "
              f"{b['lb_cpu_us_per_pkt']:>9.2f} {busy:>14} {b['lb_ip_in_receives']:>11}")
    print("LB us/pkt = lb_rl_host's utime+stime per forwarded packet at full blast; it includes the "
          "kernel's tx path of its output (veth, and bridged: bridge and the servers' receive) run "
          "in its sendto. CPU busy = /proc/stat over the blast trial (+0.3 s drain). LB stack rx = "
          "IP packets the LB namespace's own stack received during the blast (InReceives). "
          "A small negative loss = frames of the previous trial delivered late.")
    est = [r for r in results if r["name"] == "lb_rl_est"]
    best = max(est, key=lambda r: r["zero_loss_mpps"]) if est else None
    if best:
        print(f"target: established flows >= {TARGET_EST_MPPS} Mpps: "
              f"{'met' if best['zero_loss_mpps'] >= TARGET_EST_MPPS else 'NOT met'} (best "
              f"{best['zero_loss_mpps']:.3f} Mpps, {best['topology']}, vip_drop="
              f"{best['vip_drop']}); load average {info['loadavg_start']} -> {info['loadavg_end']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": info,
        "method": "zero-loss = full-blast rate if it lost nothing, else bisection over a trafgen "
                  "CPU quota (cgroup cpu, 10 ms period); offered = client tx_packets, forwarded = "
                  "servers' rx_packets (bridged) or the client's rx_packets (direct: the LB's "
                  "output to unowned server MACs, dropped at L2); trafgen taskset CPU 0, "
                  "lb_rl_host CPU 1, softirq unpinned (runs in the sender's context)",
        "topologies": topologies, "vip_drop_rule": NFT_VIP_DROP if vip_drop else None,
        "trial_s": args.trial, "flows": args.flows, "servers": args.servers,
        "target_est_mpps": TARGET_EST_MPPS, "results": results}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
