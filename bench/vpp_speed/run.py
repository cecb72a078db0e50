#!/usr/bin/env python3
"""lb_rl against VPP's own load balancer, in one VPP, on the same traffic.

    VPP_PREFIX=/opt/vpp python bench/vpp_speed/run.py [--seconds 4] [--flows 10000]
        [--policies ecmp,wcmp,sed] [--out bench/vpp_speed/results/vpp_speed.json]

One VPP (release build at $VPP_PREFIX, main thread only, af_packet on veth) runs both plugins:
the stock ``lb`` plugin with a GRE4 VIP (node ``lb4-gre4``) and ``lb_rl`` with a GRE4 VIP (node
``lb_rl4``), both over the same three servers. trafgen sends every packet twice, once to each
VIP (two templates in one config, sent alternately), so both nodes see identical traffic in the
same frames. Per traffic kind and lb_rl policy, --reps trials of: ``clear runtime``, trafgen at
full speed for --seconds, ``show runtime``; the figure is each node's clocks per packet and their
ratio, the trial with the median ratio kept (all ratios are in the JSON).

Traffic kinds (as in the issue's measurement):
* new: distinct SYNs (random source address low 16 bits and port per packet);
* established: ACKs of --flows flows opened beforehand (SYN then ACK), cycled; measured first,
  on tables the SYN floods of the new-flow trials have not filled yet.

trafgen runs on CPU 0, VPP (all threads) on the last CPU. Targets (issue 10): established <= 1.5x, new <= 2x lb4-gre4's clocks/packet. Absolute clocks
on a shared VM vary between runs; the ratio within a run is the figure. Needs root, trafgen
(Debian netsniff-ng) and a VPP with the lb and af_packet plugins. Everything created is removed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import machine_info  # noqa: E402
from hil import vpp as hv  # noqa: E402

NS_C, NS_S = "mlb-vs-c", "mlb-vs-s"
VETH_C, VETH_S = "mlbvsc", "mlbvss"  # root-namespace ends, VPP's host-<name> interfaces
LB_SRC = "198.18.1.1"
SERVERS = ["198.18.1.11", "198.18.1.12", "198.18.1.13"]
VIP_RL, VIP_STOCK = "198.18.100.1", "198.18.200.1"
NODES = {"lb_rl": "lb_rl4", "stock": "lb4-gre4"}
TARGETS = {"established": 1.5, "new": 2.0}
# trafgen (and the client->VPP veth path it drives) on CPU 0, every VPP thread on the last CPU
GEN_CPU, VPP_CPU = "0", str((os.cpu_count() or 2) - 1)


def sh(*argv: str, check: bool = True) -> str:
    r = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stdout}{r.stderr}")
    return r.stdout


def skip_reason() -> str | None:
    prefix = os.environ.get("VPP_PREFIX")
    if not prefix or not (Path(prefix) / "bin" / "vpp").exists():
        return "VPP_PREFIX unset or without bin/vpp (point it at a VPP install)"
    if not list(Path(prefix).glob("lib/**/vpp_plugins/lb_plugin.so")):
        return f"no lb_plugin.so under {prefix}: the stock lb plugin is the reference"
    if os.geteuid() != 0:
        return "needs root (network namespaces, af_packet)"
    for tool, pkg in (("trafgen", "netsniff-ng"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install {pkg})"
    return None


class Bed:
    """Client namespace -> VPP (host-mlbvsc / host-mlbvss) -> server namespace (3 addresses;
    its kernel drops the GRE packets, which is all the benchmark needs)."""

    def up(self) -> None:
        sh("ip", "netns", "add", NS_C)
        sh("ip", "netns", "add", NS_S)
        sh("ip", "link", "add", VETH_C, "type", "veth", "peer", "name", "c0", "netns", NS_C)
        sh("ip", "link", "add", VETH_S, "type", "veth", "peer", "name", "s0", "netns", NS_S)
        for dev in (VETH_C, VETH_S):
            sh("ip", "link", "set", dev, "up")
        for ns, dev in ((NS_C, "c0"), (NS_S, "s0")):
            sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        for a in SERVERS:
            sh("ip", "netns", "exec", NS_S, "ip", "addr", "add", f"{a}/24", "dev", "s0")
        # Drop the GRE packets at the servers' ingress: VPP's veth transmit runs the receiving
        # stack inline on VPP's CPU, and a full stack (ICMP unreachables) would be most of the
        # noise in the nodes' clocks. ARP is not needed (static neighbours in VPP).
        sh("ip", "netns", "exec", NS_S, "nft",
           "add table netdev mlbvs; add chain netdev mlbvs in "
           "{ type filter hook ingress device s0 priority 0; policy drop; }")

    def down(self) -> None:
        for ns in (NS_C, NS_S):
            sh("ip", "netns", "del", ns, check=False)
        for dev in (VETH_C, VETH_S):
            sh("ip", "link", "del", dev, check=False)

    @staticmethod
    def mac(ns: str, dev: str) -> str:
        return json.loads(sh("ip", "netns", "exec", ns, "ip", "-j", "link", "show", dev))[0]["address"]


def startup_cli(server_mac: str) -> str:
    lines = [f"create host-interface name {VETH_C}", f"create host-interface name {VETH_S}",
             f"set interface ip address host-{VETH_C} 198.18.0.1/24",
             f"set interface ip address host-{VETH_S} {LB_SRC}/24",
             f"set interface state host-{VETH_C} up", f"set interface state host-{VETH_S} up"]
    lines += [f"set ip neighbor host-{VETH_S} {a} {server_mac}" for a in SERVERS]
    return "\n".join(lines) + "\n"


def configure(cli: hv.CliTransport) -> None:
    cli.cli(f"lb conf ip4-src-address {LB_SRC} timeout 40")
    cli.cli(f"lb vip {VIP_STOCK}/32 encap gre4 new_len 1024")
    cli.cli(f"lb as {VIP_STOCK}/32 {' '.join(SERVERS)}")
    cli.cli(hv.cli_conf(ip4_src=LB_SRC, policy="sed"))
    cli.cli(hv.cli_vip(f"{VIP_RL}/32", "gre4"))
    for a, w in zip(SERVERS, (1.0, 2.0, 3.0)):
        cli.cli(hv.cli_as(f"{VIP_RL}/32", [a], w))


def trafgen_cfg(kind: str, vpp_mac: str, n_flows: int) -> str:
    """Two templates, identical but for the VIP: trafgen sends them alternately."""
    out = []
    for vip in (VIP_RL, VIP_STOCK):
        if kind == "new":
            ip = f"ipv4(sa=198.18.64.1, sa[2]=drnd(), sa[3]=drnd(), da={vip}, ttl=64)"
            tcp = "tcp(sp=drnd(), dp=80, syn)"
        else:
            ip = f"ipv4(sa=198.18.64.1, da={vip}, ttl=64)"
            tcp = f"tcp(sp=dinc(1024, {1023 + n_flows}), dp=80, {'syn' if kind == 'open' else 'ack'})"
        out.append(f"{{ eth(da={vpp_mac}), {ip}, {tcp} }}")
    return "\n".join(out) + "\n"


def trafgen(cfg: Path, seconds: float | None = None, n: int | None = None, gap_us: int | None = None) -> None:
    cmd = ["ip", "netns", "exec", NS_C, "taskset", "-c", GEN_CPU, "trafgen", "-o", "c0", "-i", str(cfg),
           "-q", "--cpus", "1"]
    if n is not None:
        cmd += ["-n", str(n)]
    if gap_us is not None:
        cmd += ["-t", f"{gap_us}us"]
    if seconds is not None:
        cmd = ["timeout", "-s", "INT", str(seconds)] + cmd
    subprocess.run(cmd, capture_output=True, text=True, check=False)


def parse_runtime(text: str) -> dict[str, dict[str, float]]:
    """Rows of `show runtime`: name -> calls, vectors, clocks (per packet), vectors/call."""
    rows = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[0] in NODES.values():
            try:
                calls, vectors = int(parts[2]), int(parts[3])  # parts[4]: suspends
                clocks, vpc = float(parts[5]), float(parts[6])
            except ValueError:
                continue
            rows[parts[0]] = {"calls": calls, "vectors": vectors, "clocks_per_packet": clocks,
                              "vectors_per_call": vpc}
    return rows


def trial(cli: hv.CliTransport, cfg: Path, seconds: float,
          perf: tuple[int, Path] | None = None) -> dict[str, dict[str, float]]:
    """One trial; with perf = (vpp pid, data file) a cpu-clock profile of VPP is recorded."""
    cli.cli("clear runtime")
    rec = None
    if perf is not None:
        rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "4000", "-p", str(perf[0]),
                                "-o", str(perf[1]), "--", "sleep", str(seconds)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trafgen(cfg, seconds=seconds)
    if rec is not None:
        rec.wait()
    rows = parse_runtime(cli.cli("show runtime"))
    missing = [n for n in NODES.values() if n not in rows]
    if missing:
        raise RuntimeError(f"no `show runtime` row for {missing}: did the traffic reach the VIPs?")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="trial length")
    ap.add_argument("--reps", type=int, default=3, help="trials per case; the median ratio is kept")
    ap.add_argument("--flows", type=int, default=10_000, help="established flows")
    ap.add_argument("--policies", default="ecmp,wcmp,sed")
    ap.add_argument("--sample-prob", type=float, default=None,
                    help="lb_rl { sample-prob } (default: the plugin's default)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "vpp_speed.json")
    ap.add_argument("--perf-dir", type=Path, default=None,
                    help="also record a perf cpu-clock profile of VPP per trial (perf report -i ...)")
    args = ap.parse_args(argv)
    if (why := skip_reason()) is not None:
        print(f"skipped: {why}")
        return 0
    prefix = Path(os.environ["VPP_PREFIX"])
    bed = Bed()
    with tempfile.TemporaryDirectory(prefix="mlb-vpp-speed-") as tmp_s:
        tmp = Path(tmp_s)
        plugin_dir = hv.build_plugin(prefix, tmp / "build", tmp / "inst")
        bed.down()  # leftovers of an interrupted run
        bed.up()
        proc = None
        try:
            (tmp / "startup.cli").write_text(startup_cli(bed.mac(NS_S, "s0")))
            paths = hv.VppPaths.from_env(tmp / "run")
            proc = hv.VppProcess(
                paths, ROOT / "vpp_plugin" / "startup" / "af_packet.conf", tmp / "run",
                plugin_dir=str(plugin_dir), startup_cli=str(tmp / "startup.cli"),
                api_prefix=f"mlbvs{os.getpid()}", workers="0",
                extra_plugins="plugin lb_plugin.so { enable }",
                lb_rl_extra=f"sample-prob {args.sample_prob}" if args.sample_prob else "")
            proc.start()
            sh("taskset", "-a", "-cp", VPP_CPU, str(proc.proc.pid))
            cli = hv.CliTransport(paths)
            deadline = time.monotonic() + 15
            while f"host-{VETH_S}" not in cli.cli("show interface") and time.monotonic() < deadline:
                time.sleep(0.2)
            configure(cli)
            vpp_mac = re.search(r"Ethernet address (\S+)",
                                cli.cli(f"show hardware-interfaces host-{VETH_C}")).group(1)
            results = []
            # Established first, on empty tables: open the flows once, slowly enough to lose
            # none (a SYN flood before would leave the tables full and the flows untracked);
            # they stay open through the policy changes (policies only decide new flows).
            opener = tmp / "open.trafgen"
            opener.write_text(trafgen_cfg("open", vpp_mac, args.flows))
            trafgen(opener, n=2 * args.flows, gap_us=20)
            for kind in ("established", "new"):
                for policy in args.policies.split(","):
                    cli.cli(hv.cli_conf(policy=policy))
                    cfg = tmp / f"{kind}.trafgen"
                    cfg.write_text(trafgen_cfg(kind, vpp_mac, args.flows))
                    perf = None
                    if args.perf_dir is not None:
                        args.perf_dir.mkdir(parents=True, exist_ok=True)
                        perf = (proc.proc.pid, args.perf_dir / f"{policy}_{kind}.perf.data")
                    trials = []
                    for _ in range(args.reps):
                        rows = trial(cli, cfg, args.seconds, perf)
                        trials.append((rows[NODES["lb_rl"]]["clocks_per_packet"]
                                       / rows[NODES["stock"]]["clocks_per_packet"], rows))
                    trials.sort(key=lambda t: t[0])
                    ratio, rows = trials[len(trials) // 2]
                    rl, st = rows[NODES["lb_rl"]], rows[NODES["stock"]]
                    results.append({"policy": policy, "traffic": kind, "lb_rl4": rl, "lb4-gre4": st,
                                    "ratio": ratio, "ratios_all": [t[0] for t in trials],
                                    "target": TARGETS[kind], "meets_target": ratio <= TARGETS[kind]})
                    print(f"{policy:5s} {kind:12s} lb_rl4 {rl['clocks_per_packet']:7.1f} "
                          f"lb4-gre4 {st['clocks_per_packet']:7.1f} clocks/pkt  ratio {ratio:4.2f} "
                          f"(target <= {TARGETS[kind]}; trials {' '.join(f'{t[0]:.2f}' for t in trials)})  "
                          f"vectors/call {rl['vectors_per_call']:.1f}",
                          flush=True)
            version = cli.cli("show version").strip()
        finally:
            if proc is not None:
                proc.stop()
            bed.down()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "vpp": version, "machine": machine_info(),
        "seconds": args.seconds, "flows": args.flows, "sample_prob": args.sample_prob,
        "method": "one VPP (main thread, af_packet on veth), trafgen alternating identical packets "
                  "to an lb_rl GRE4 VIP and a stock lb GRE4 VIP; clocks/packet from show runtime",
        "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
