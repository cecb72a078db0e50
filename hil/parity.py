"""`marllb hil parity PCAP`: the simulator's LB is the data plane -- replay one recorded packet
sequence through the simulator's core binding and through ``lb_rl_host`` on real frames (with
the same core seed, policy and static weights) and report the first packet where their server
choices differ; identical choices for every packet is the pass.

Packets: every IPv4/TCP packet of the pcap addressed to the VIP and port (a simulator
``--pcap``, or any capture of TCP flows to the VIP), in file order. The simulated core gets the
pcap's time stamps; ``lb_rl_host`` stamps each frame with its own clock as it arrives (the
frames go in chunks, each sent once the previous one came back, so none is lost to a full
ring). The two clocks differ, and the core's choices depend on time only through its timeouts
(flow idle ``lb.flow_timeout_s``, pending SYN ``lb.syn_timeout_s``), so a divergence that
follows a time-out is reported as such by the time stamps printed with it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from simulator.config import ExperimentConfig, UserError
from simulator.packet import ip_str

__all__ = ["Packets", "read_pcap", "replay_sim", "replay_host", "parity"]

CHUNK = 256  # frames in flight at once towards the real LB


@dataclass
class Packets:
    """Client->VIP TCP packets in file order (parallel arrays)."""

    t_s: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    sport: np.ndarray
    dport: np.ndarray
    flags: np.ndarray
    ip_len: np.ndarray
    payload: np.ndarray  # TCP payload bytes

    def __len__(self) -> int:
        return len(self.t_s)

    def flows(self) -> int:
        return len(set(zip(self.src.tolist(), self.sport.tolist())))


def read_pcap(path: str | Path, vip: int | None, vip_port: int | None) -> Packets:
    """The pcap's IPv4/TCP packets to vip:vip_port (None: any address / port; Ethernet or
    raw-IP link types)."""
    from scapy.utils import RawPcapReader

    rows: list[tuple[float, int, int, int, int, int, int, int]] = []
    try:
        reader = RawPcapReader(str(path))
    except OSError as e:
        raise UserError(f"{path}: cannot read as pcap ({e})") from None
    except Exception as e:  # noqa: BLE001 - scapy raises its own Exception type for bad magic
        raise UserError(f"{path}: not a pcap file ({e})") from None
    link = reader.linktype
    if link not in (1, 101, 228):
        raise UserError(f"{path}: link type {link} (only Ethernet and raw IPv4 pcaps)")
    with reader:
        for data, meta in reader:
            off = 14 if link == 1 else 0
            if link == 1 and data[12:14] != b"\x08\x00":
                continue
            if len(data) < off + 40 or data[off] >> 4 != 4 or data[off + 9] != 6:
                continue
            ihl = (data[off] & 0x0F) * 4
            src, dst = struct.unpack_from("!II", data, off + 12)
            if vip is not None and dst != vip:
                continue
            sport, dport = struct.unpack_from("!HH", data, off + ihl)
            if vip_port is not None and dport != vip_port:
                continue
            t = meta.sec + meta.usec / (1e9 if getattr(meta, "tshift", 0) else 1e6)
            tot = struct.unpack_from("!H", data, off + 2)[0]
            payload = tot - ihl - (data[off + ihl + 12] >> 4) * 4
            rows.append((t, src, dst, sport, dport, data[off + ihl + 13], tot, payload))
    if not rows:
        to = "" if vip is None else f" to {ip_str(vip)}:{vip_port}"
        raise UserError(f"{path}: no TCP packets{to}")
    a = np.array(rows, dtype=np.float64)
    as_int = [a[:, j].astype(np.int64) for j in range(1, 8)]
    return Packets(a[:, 0], *as_int)


def _keys(p: Packets) -> tuple[np.ndarray, np.ndarray]:
    """A key table with one row per distinct 5-tuple, and each packet's row."""
    from simulator.dataplane import make_keys

    tuples = np.stack([p.src, p.dst, p.sport, p.dport], axis=1)
    uniq, idx = np.unique(tuples, axis=0, return_inverse=True)
    keys = make_keys(uniq[:, 0].astype(np.uint64), uniq[:, 1].astype(np.uint64), uniq[:, 2], uniq[:, 3])
    return keys, idx.reshape(-1).astype(np.int64)


PARITY_TIMEOUT_S = 2.0  # a chunk waits for its last frame at most this long: a busy host is slow, not lossy


def _run_cfg(policy: str, seed: int, lb: str = "host") -> ExperimentConfig:
    cfg = ExperimentConfig()
    return cfg.model_copy(update={"seed": seed, "lb": cfg.lb.model_copy(update={"step_s": 0.1}),
                                  "hil": cfg.hil.model_copy(update={"lb": lb, "packet_timeout_s": PARITY_TIMEOUT_S})})


def replay_sim(p: Packets, policy: str, weights: Sequence[float], seed: int) -> np.ndarray:
    """Servers the simulator's core (``simulator.run.make_dataplane``) chooses, per packet."""
    from simulator.run import make_dataplane

    cfg = _run_cfg(policy, seed)
    dp = make_dataplane(len(weights), policy, cfg.lb, seed)
    for i, w in enumerate(weights):
        dp.add_server(i, w)
    keys, idx = _keys(p)
    dp.set_key_table(keys)
    out = dp.process_packets(p.t_s.tolist(), idx.tolist(), p.flags.tolist(), p.ip_len.tolist())
    return np.asarray(out, dtype=np.int64)


def replay_host(p: Packets, policy: str, weights: Sequence[float], seed: int, log_dir: Path,
                vip_port: int, lb: str = "host") -> tuple[np.ndarray, dict[str, Any]]:
    """Servers ``lb_rl_host`` (``lb="vpp"``: VPP with lb_rl) chooses, per packet (-1: not
    forwarded), and the gateway's counters."""
    from hil.gateway.session import Gateway

    cfg = _run_cfg(policy, seed, lb)
    gw = Gateway(cfg, log_dir, vip=int(p.dst[0]), vip_port=vip_port, fallback_s=0.0)
    try:
        dp = gw.factory(len(weights), policy, cfg.lb, seed)
        for i, w in enumerate(weights):
            dp.add_server(i, w)
        dp.open_shm()
        dp.wait_all = True  # every packet's own server, not its flow's
        keys, idx = _keys(p)
        dp.set_key_table(keys)
        out = np.empty(len(p), dtype=np.int64)
        for a in range(0, len(p), CHUNK):
            b = min(a + CHUNK, len(p))
            out[a:b] = dp.process_packets(p.t_s[a:b].tolist(), idx[a:b].tolist(), p.flags[a:b].tolist(),
                                          p.ip_len[a:b].tolist())
    finally:
        gw.close()
    return out, {"packets": gw.counters(), "lb_stats": gw.lb_stats}


def parity(pcap: str | Path, *, policy: str, weights: Sequence[float], seed: int, vip: int, vip_port: int,
           log_dir: Path, vpp: bool = False) -> dict[str, Any]:
    """Replay the pcap through the simulator's core, lb_rl_host and (``vpp``) VPP with lb_rl,
    and compare each real data plane's choices with the simulator's (see the module docstring)."""
    pk = read_pcap(pcap, vip, vip_port)
    sim = replay_sim(pk, policy, weights, seed)
    report: dict[str, Any] = {"pcap": str(pcap), "packets": len(pk), "flows": pk.flows(), "policy": policy,
                              "weights": list(weights), "seed": seed,
                              "per_server": {"sim": _per_server(sim, len(weights))}}
    for name in ("host", "vpp") if vpp else ("host",):
        real, info = replay_host(pk, policy, weights, seed, log_dir / name, vip_port, lb=name)
        diff = np.flatnonzero(sim != real)
        rep: dict[str, Any] = {"identical": int(len(pk) - len(diff)), "differ": int(len(diff)),
                               "pass": len(diff) == 0, **info}
        report["per_server"][name] = _per_server(real, len(weights))
        if len(diff):
            i = int(diff[0])
            rep["first_divergence"] = {
                "packet": i, "t_s": float(pk.t_s[i]), "src": ip_str(int(pk.src[i])), "sport": int(pk.sport[i]),
                "flags": int(pk.flags[i]), "ip_len": int(pk.ip_len[i]), "sim_server": int(sim[i]),
                f"{name}_server": int(real[i])}
        report[name] = rep
    report["pass"] = all(report[n]["pass"] for n in ("host", "vpp") if n in report)
    return report


def _per_server(servers: np.ndarray, n: int) -> list[int]:
    return np.bincount(servers[servers >= 0], minlength=n).tolist()


def main(args: Any) -> int:
    """``marllb hil parity``; exit 0 on identical choices, 1 on a divergence."""
    from rich.console import Console

    from hil.gateway.link import check_host

    why = check_host()
    if why:
        raise UserError(f"hil parity: {why}")
    if args.vpp:
        from hil.gateway.vpp_link import vpp_prefix

        vpp_prefix()  # UserError naming what is missing
    try:
        weights = [float(x) for x in args.weights.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--weights {args.weights!r}: expected comma-separated numbers") from None
    import ipaddress

    try:
        vip = int(ipaddress.IPv4Address(args.vip))
    except ValueError:
        raise UserError(f"--vip {args.vip!r}: not an IPv4 address") from None
    log_dir = Path(args.log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    rep = parity(args.pcap, policy=args.policy, weights=weights, seed=args.seed, vip=vip,
                 vip_port=args.vip_port, log_dir=log_dir, vpp=args.vpp)
    if args.json:
        Path(args.json).write_text(json.dumps(rep, indent=1, default=str) + "\n")
    con = Console()
    con.print(f"{rep['packets']} packets, {rep['flows']} flows, policy {rep['policy']}, seed {rep['seed']}")
    for name, label in (("host", "lb_rl_host"), ("vpp", "VPP lb_rl")):
        if name not in rep:
            continue
        r = rep[name]
        verdict = "[bold green]PASS[/]" if r["pass"] else "[bold red]FAIL[/]"
        con.print(f"{verdict} {label}: {r['identical']} identical, {r['differ']} differ; per server "
                  f"sim {rep['per_server']['sim']} {label} {rep['per_server'][name]}")
        if not r["pass"]:
            con.print(f"  first divergence: {r['first_divergence']}")
    return 0 if rep["pass"] else 1
