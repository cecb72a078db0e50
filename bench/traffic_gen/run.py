#!/usr/bin/env python3
"""Benchmark of mlb_gen, the local traffic generator: how exactly it hits a requested rate on
veth, and how fast it goes at most, against trafgen at full blast measured in the same run.

    python bench/traffic_gen/run.py [--trial 3] [--rates 10000,50000,100000,200000,300000,400000]
                                    [--out bench/out/traffic_gen.json] [--no-sink-drop]

Topology (built here, removed in `finally`): namespaces mlb-tgb-a and mlb-tgb-b joined by one
veth pair (eth0 each), no addresses, IPv6 off, so nothing but the generator sends on it. The
peer drops every frame at its ingress hook (nftables `netdev` table mlb_tgb_sink, policy drop),
after veth has counted it in rx_packets: the receive path runs in the sender's syscall on the
sender's CPU, and the peer's IP stack (route lookup, drop) would otherwise cost more than the
generator itself (an exploratory run: mlb_gen max 0.32 Mpps through the peer's stack, 0.49
Mpps with the ingress drop). `--no-sink-drop` measures through the stack.

Method. For each frame (60-byte UDP with a source-port counter and the UDP checksum fixed;
64-byte TCP SYN, i.e. a 54-byte SYN plus 10 bytes of Ethernet padding, with source-address and
source-port counters, IPv4 and TCP checksums fixed: both rewritten per packet as a TRex field
engine would) and each requested rate, mlb_gen runs one stream for --trial seconds pinned to
CPU 0 (`--cpu 0`):
* achieved = the peer's eth0 rx_packets delta / mlb_gen's own elapsed_s; ratio = achieved /
  requested. mlb_gen also reports sent (kernel accepted), failed (refused), due (what a perfect
  sender had sent by the end) and the lag of each packet behind its due time (p99).
* max = the same at `--mult` 1e4 on a 1 Mpps stream (every packet always due: it sends back to
  back in batches of 256, one sendmmsg each).
* trafgen reference: `trafgen --cpus 1` pinned to CPU 0, the same frame as a constant (its
  fastest case), its TX ring with qdisc bypass, no rate, stopped by SIGINT after --trial s.
For the two maxima the rate is also measured over the middle of the run (peer rx_packets read
at 1/6 and 5/6 of the trial, from outside), so that process start-up and ring set-up cost
neither of them; "mlb_gen max / trafgen max" uses these. In this topology the receive path
(veth, the peer's IP input that drops the frame) runs in the sender's syscall, on CPU 0, so a
generator's rate is also bounded by the kernel's per-packet cost there.
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
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from bench.machine import first_line, machine_info  # noqa: E402

PREFIX = "mlb-tgb"
NFT_SINK = """table netdev mlb_tgb_sink {
  chain sink {
    type filter hook ingress device "eth0" priority -500; policy drop;
  }
}
"""
NS_A, NS_B = f"{PREFIX}-a", f"{PREFIX}-b"
MAC_A, MAC_B = "02:00:c6:12:02:01", "02:00:c6:12:02:02"
GEN_CPU = 0
MAX_RATE, MAX_MULT = 1_000_000.0, 1e4


def sh(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(a), check=check, capture_output=True, text=True)


def netns_list() -> list[str]:
    out = sh("ip", "netns", "list", check=False).stdout
    return [ln.split()[0] for ln in out.splitlines() if ln.split() and ln.split()[0].startswith(PREFIX)]


def up(sink_drop: bool) -> None:
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "add", ns)
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
    sh("ip", "-n", NS_A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", NS_B)
    for ns, mac in ((NS_A, MAC_A), (NS_B, MAC_B)):
        sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    if sink_drop:
        subprocess.run(["ip", "netns", "exec", NS_B, "nft", "-f", "-"], input=NFT_SINK, check=True,
                       capture_output=True, text=True)


def down() -> None:
    for ns in (NS_A, NS_B):
        sh("ip", "netns", "del", ns, check=False)


def rx_packets() -> tuple[float, int]:
    """(monotonic time of the read, peer eth0 rx_packets)."""
    t0 = time.monotonic()
    v = int(sh("ip", "netns", "exec", NS_B, "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)
    return (t0 + time.monotonic()) / 2, v


def frames():
    """name -> (frame, vars, fix_ipv4, fix_l4) of the two benchmark frames."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    from hil.traffic.program import FixL4, Var

    eth = Ether(src=MAC_A, dst=MAC_B)
    udp = bytes(eth / IP(src="198.18.2.1", dst="198.19.2.1") / UDP(sport=1024, dport=9) / Raw(b"\0" * 18))
    syn = bytes(eth / IP(src="198.18.2.1", dst="198.19.2.1")
                / TCP(sport=1024, dport=80, flags="S")) + b"\0" * 10  # Ethernet padding
    assert len(udp) == 60 and len(syn) == 64
    return {
        "udp60": (udp, (Var("sport", 34, 2, 1024, 65535),), None, FixL4(14, 34, 17)),
        "tcp64": (syn, (Var("src", 28, 2, 0x0201, 0x02FF), Var("sport", 34, 2, 1024, 65535)), 14,
                  FixL4(14, 34, 6)),
    }


def program(frame: str, rate: float):
    from hil.traffic.program import Program, Stream

    fr, vars_, fix_ip, fix_l4 = frames()[frame]
    return Program(f"bench-{frame}", (Stream(frame, fr, rate, vars=vars_, fix_ipv4=fix_ip, fix_l4=fix_l4),),
                   duration_s=0.0)


def window_sampler(trial: float, out: list[tuple[float, int]]) -> threading.Thread:
    """Reads the peer's rx_packets at 1/6 and 5/6 of a trial that starts now (into out)."""
    t0 = time.monotonic()

    def run() -> None:
        for frac in (1 / 6, 5 / 6):
            time.sleep(max(0.0, t0 + frac * trial - time.monotonic()))
            out.append(rx_packets())

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def window_rate(samples: list[tuple[float, int]]) -> float:
    (ta, a), (tb, b) = samples
    return (b - a) / (tb - ta)


def run_mlb_gen(frame: str, rate: float, mult: float, trial: float) -> dict[str, object]:
    from hil.traffic.localgen import run_generator

    samples: list[tuple[float, int]] = []
    _, rx0 = rx_packets()
    th = window_sampler(trial, samples)
    res = run_generator(program(frame, rate), NS_A, "eth0", duration_s=trial, mult=mult, cpu=GEN_CPU)
    th.join()
    _, rx1 = rx_packets()
    rx = rx1 - rx0
    requested = rate * mult
    achieved = rx / res.elapsed_s
    return {"generator": "mlb_gen", "frame": frame, "requested_pps": requested, "mult": mult,
            "received": rx, "sent": res.sent, "failed": res.failed, "due": res.due,
            "elapsed_s": res.elapsed_s, "achieved_pps": achieved, "ratio": achieved / requested,
            "window_pps": window_rate(samples), "lag_us": res.lag_us, "cpu_s": res.cpu_s,
            "cpu": res.cpu_s / res.elapsed_s, "syscalls": res.raw.get("syscalls"),
            "last_error": res.raw.get("last_error")}


def run_trafgen(frame: str, trial: float, tmp: Path) -> dict[str, object]:
    fr = frames()[frame][0]
    cfg = tmp / f"{frame}.trafgen"
    cfg.write_text("{ " + ", ".join(f"0x{b:02x}" for b in fr) + " }\n")
    samples: list[tuple[float, int]] = []
    _, rx0 = rx_packets()
    t0 = time.monotonic()
    th = window_sampler(trial, samples)
    p = subprocess.Popen(["ip", "netns", "exec", NS_A, "taskset", "-c", str(GEN_CPU), "trafgen", "-o",
                          "eth0", "-i", str(cfg), "--cpus", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        time.sleep(trial)
        # SIGINT to trafgen's own process group (it forks its workers): what Ctrl-C does
        os.killpg(p.pid, signal.SIGINT)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    t1 = time.monotonic()
    th.join()
    _, rx1 = rx_packets()
    rx = rx1 - rx0
    return {"generator": "trafgen", "frame": frame, "requested_pps": None, "received": rx,
            "elapsed_s": t1 - t0, "achieved_pps": rx / (t1 - t0), "window_pps": window_rate(samples),
            "exit": p.returncode, "stderr_tail": err.strip().splitlines()[-3:]}


def table(results: list[dict], trial: float, sink_drop: bool) -> list[str]:
    sink = "peer drops at nftables ingress" if sink_drop else "peer's IP stack drops"
    lines = [f"method: one stream per trial ({trial} s) on a veth pair between namespaces ({sink}), "
             f"generator on CPU {GEN_CPU}; achieved = peer rx_packets / mlb_gen elapsed_s; max = --mult "
             f"{MAX_MULT:g} on a {MAX_RATE:g} pps stream; window = peer rx_packets rate between "
             "1/6 and 5/6 of the trial (start-up excluded); trafgen: full blast, TX ring, constant frame",
             f"{'frame':<6} {'generator':<8} {'requested pps':>13} {'achieved pps':>12} {'ratio':>7} "
             f"{'window pps':>10} {'sent':>8} {'due':>13} {'failed':>6} {'lag p99 us':>10} {'CPU':>5}"]
    for r in results:
        req = "max" if r["generator"] == "trafgen" or r.get("mult", 1) > 1 else f"{r['requested_pps']:.0f}"
        ratio = "-" if req == "max" else f"{r['ratio']:.4f}"
        if r["generator"] == "mlb_gen":
            extra = (f"{r['sent']:>8} {r['due']:>13} {r['failed']:>6} {r['lag_us']['p99']:>10.0f} "
                     f"{r['cpu']:>5.2f}")
        else:
            extra = f"{'-':>8} {'-':>13} {'-':>6} {'-':>10} {'-':>5}"
        lines.append(f"{r['frame']:<6} {r['generator']:<8} {req:>13} {r['achieved_pps']:>12.0f} {ratio:>7} "
                     f"{r['window_pps']:>10.0f} {extra}")
    for fr in dict.fromkeys(r["frame"] for r in results):
        g = next((r for r in results if r["frame"] == fr and r["generator"] == "mlb_gen"
                  and r.get("mult", 1) > 1), None)
        t = next((r for r in results if r["frame"] == fr and r["generator"] == "trafgen"), None)
        if g and t:
            lines.append(f"{fr}: mlb_gen max / trafgen max = {g['window_pps']:.0f} / {t['window_pps']:.0f} "
                         f"= {g['window_pps'] / t['window_pps']:.2f} (window rates)")
    lines.append("ratio = achieved / requested; due = packets a perfect sender had sent by the end "
                 "(sent < due: behind; a ratio below 1 with sent == due: the run ended late, "
                 "elapsed_s > trial); CPU = mlb_gen utime+stime / elapsed (includes the veth and "
                 "the peer's receive path, run in its syscalls); lag p99 = send time - due time "
                 "per packet (1-us bins to 10 ms, then 1-ms bins)")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "traffic_gen.json")
    ap.add_argument("--results", default=str(HERE / "results"),
                    help="where latest.txt / latest.json go ('' to skip)")
    ap.add_argument("--trial", type=float, default=3.0, help="seconds per trial")
    ap.add_argument("--rates", default="10000,50000,100000,200000,300000,400000",
                    help="comma-separated requested rates, packets/s")
    ap.add_argument("--frames", default="udp60,tcp64")
    ap.add_argument("--no-sink-drop", action="store_true",
                    help="let the peer's IP stack drop the frames (no nftables ingress drop)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (network namespaces, AF_PACKET)", file=sys.stderr)
        return 2
    if not shutil.which("trafgen"):
        print("trafgen not found (Debian: apt-get install netsniff-ng)", file=sys.stderr)
        return 2
    sink_drop = not args.no_sink_drop
    if sink_drop and not shutil.which("nft"):
        print("nft not found (apt-get install nftables): the peer's IP stack drops the frames",
              file=sys.stderr)
        sink_drop = False
    rates = [float(x) for x in args.rates.split(",") if x]
    frame_names = [f for f in args.frames.split(",") if f]
    if any(f not in ("udp60", "tcp64") for f in frame_names):
        ap.error(f"--frames {args.frames}: expected udp60 and/or tcp64")
    from hil.hostbin import host_binary

    gen = host_binary(name="mlb_gen")
    info = machine_info(mlb_gen=str(gen), trafgen=first_line("trafgen", "--version"),
                        compiler=first_line("cc", "--version"))
    results: list[dict] = []
    down()  # leftovers of a crashed earlier run (our prefix only)
    try:
        up(sink_drop)
        with tempfile.TemporaryDirectory(prefix="mlb-tgb-") as tmp:
            for fr in frame_names:
                for rate in rates:
                    r = run_mlb_gen(fr, rate, 1.0, args.trial)
                    print(f"{fr} mlb_gen {rate:.0f} pps: achieved {r['achieved_pps']:.0f} "
                          f"(ratio {r['ratio']:.4f}), failed {r['failed']}, CPU {r['cpu']:.2f}", flush=True)
                    results.append(r)
                r = run_mlb_gen(fr, MAX_RATE, MAX_MULT, args.trial)
                print(f"{fr} mlb_gen max: {r['achieved_pps']:.0f} pps (window {r['window_pps']:.0f}), "
                      f"failed {r['failed']}, CPU {r['cpu']:.2f}", flush=True)
                results.append(r)
                r = run_trafgen(fr, args.trial, Path(tmp))
                print(f"{fr} trafgen max: {r['achieved_pps']:.0f} pps (window {r['window_pps']:.0f})",
                      flush=True)
                results.append(r)
    finally:
        down()
        left = netns_list()
        if left:
            print(f"warning: namespaces left behind: {left}", file=sys.stderr)
    info["loadavg_end"] = os.getloadavg()
    lines = table(results, args.trial, sink_drop)
    lines.append(f"load average {info['loadavg_start']} -> {info['loadavg_end']}")
    print()
    print("\n".join(lines))
    doc = {"when": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": info,
           "method": __doc__.split("Method. ", 1)[1].strip(), "trial_s": args.trial,
           "sink_drop_rule": NFT_SINK if sink_drop else None,
           "max_rate_pps": MAX_RATE, "max_mult": MAX_MULT, "results": results, "table": lines}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    if args.results:
        res_dir = Path(args.results)
        res_dir.mkdir(parents=True, exist_ok=True)
        (res_dir / "latest.json").write_text(json.dumps(doc, indent=2))
        (res_dir / "latest.txt").write_text("\n".join(lines) + "\n")
        print(f"wrote {args.results}/latest.txt, latest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
