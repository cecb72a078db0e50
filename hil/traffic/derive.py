"""Traffic profiles derived from what users already have: a simulator config (its ``traffic``
section) or a pcap of client traffic toward a VIP (a simulated run's ``--pcap`` or a capture).

Both give a ``tcp_flows`` stream: the flow arrival rate, the flow duration and the packets of a
flow, so that a benchmark offers the data plane the traffic the simulator (or the capture) saw,
at its real rate.
"""

from __future__ import annotations

import collections
import ipaddress
from pathlib import Path

from hil.traffic.profile import MSS, TrafficProfile, parse_profile, split_tuples
from simulator.config import ConfigError, ExperimentConfig

__all__ = ["profile_from_config", "profile_from_pcap", "tuples_for"]


def tuples_for(concurrent_flows: float, max_addresses: int = 32_768) -> int:
    """A tuple count at least 10x the concurrent flows (and >= 1,000) that splits into coprime
    address and port counts."""
    n = max(1000, int(10 * concurrent_flows) + 1)
    while True:
        try:
            split_tuples(n, max_addresses)
            return n
        except ValueError:
            n += 1


def _mean_rate(cfg: ExperimentConfig) -> tuple[float, float]:
    """(mean arrivals per second, mean job seconds) of the config's traffic."""
    from simulator.run import build_graph, server_nodes
    from simulator.traffic import mean_job_s, read_trace

    t = cfg.traffic
    if t.kind == "trace":
        times, work = read_trace(t.path, t.work_per_iteration_s)
        if len(times) < 2 or times[-1] <= times[0]:
            raise ConfigError(f"{t.path}: a trace needs requests at two different times to give a rate")
        return (len(times) - 1) / float(times[-1] - times[0]), float(work.mean())
    if t.rate is not None:
        return t.rate, mean_job_s(t.job)
    graph = build_graph(cfg)
    cores = float(sum(graph.nodes[n]["cores"] for n in server_nodes(graph)))
    return t.load * cores / mean_job_s(t.job), mean_job_s(t.job)


def profile_from_config(cfg: ExperimentConfig, duration_s: float | None = None) -> TrafficProfile:
    """The config's traffic as a ``tcp_flows`` profile: its mean arrival rate (diurnal and
    trace traffic: the mean over the run), request and response sizes and close; a flow lasts
    the mean job time (the network's RTTs are not added: a stateless generator cannot wait for
    the server)."""
    rate, flow_s = _mean_rate(cfg)
    t = cfg.traffic
    data = {
        "name": f"{cfg.name}-traffic", "duration_s": duration_s or cfg.duration_s,
        "streams": [{"kind": "tcp_flows", "flow_rate": rate, "flow_duration_s": flow_s,
                     "tuples": tuples_for(rate * flow_s), "request_bytes": t.request_bytes,
                     "response_bytes": t.response_bytes, "close": t.close}],
    }
    return parse_profile(data, f"config {cfg.name!r} traffic")


def profile_from_pcap(path: str | Path, vip: str | None = None, name: str | None = None) -> TrafficProfile:
    """A ``tcp_flows`` profile fitted to the TCP flows toward ``vip`` (default: the address most
    packets go to) in a pcap: flow rate = SYNs / capture span, flow duration = mean time from a
    flow's SYN to its last client packet, request bytes = mean client payload per flow,
    response bytes = 2 x MSS per delayed ACK (so a flow has as many client ACKs as in the
    capture), close = RST if most flows end with one, else FIN. Flows that started before the
    capture, UDP and packets to other addresses are ignored."""
    from hil.parity import read_pcap
    from simulator.packet import ip_str

    path = Path(path)
    vip_int = None if vip is None else int(ipaddress.IPv4Address(vip))
    pk = read_pcap(path, vip_int, None)
    if vip_int is None:
        vip_int = int(collections.Counter(pk.dst.tolist()).most_common(1)[0][0])
    flows: dict[tuple[int, int], dict] = {}
    opened = []
    for t, dst, src, sport, dport, flags, payload in zip(pk.t_s.tolist(), pk.dst.tolist(), pk.src.tolist(),
                                                         pk.sport.tolist(), pk.dport.tolist(),
                                                         pk.flags.tolist(), pk.payload.tolist()):
        if dst != vip_int:
            continue
        if flags & 0x02 and not flags & 0x10:  # a SYN opens a new flow on this tuple
            flows[(src, sport)] = f = {"t0": t, "t1": t, "bytes": 0, "acks": 0, "rst": False, "port": dport}
            opened.append(f)
            continue
        f = flows.get((src, sport))
        if f is None:
            continue
        f["t1"] = t
        f["bytes"] += payload
        if flags & 0x04:
            f["rst"] = True
        elif flags & 0x10 and payload == 0 and not flags & 0x01:
            f["acks"] += 1
    vip_s = ip_str(vip_int)
    if len(opened) < 2:
        raise ConfigError(f"{path}: fewer than two TCP flows toward {vip_s} start in this capture")
    span = opened[-1]["t0"] - opened[0]["t0"]
    if span <= 0:
        raise ConfigError(f"{path}: all flows toward {vip_s} start at the same instant; no rate to fit")
    n = len(opened)
    rate = (n - 1) / span
    duration = max(sum(f["t1"] - f["t0"] for f in opened) / n, 1e-4)
    req = max(1, round(sum(f["bytes"] for f in opened) / n))
    close = "rst" if sum(f["rst"] for f in opened) * 2 >= n else "fin"
    # the handshake's ACK (and with FIN, the last ACK) are pure ACKs too; the rest acknowledge
    # response segments
    dacks = max(1, round(sum(f["acks"] for f in opened) / n) - 1 - (close == "fin"))
    port = collections.Counter(f["port"] for f in opened).most_common(1)[0][0]
    data = {
        "name": name or path.stem, "duration_s": span, "vip": vip_s, "vip_port": port,
        "streams": [{"kind": "tcp_flows", "flow_rate": rate, "flow_duration_s": duration,
                     "tuples": tuples_for(rate * duration), "request_bytes": req,
                     "response_bytes": 2 * dacks * MSS, "close": close}],
    }
    return parse_profile(data, f"{path}")
