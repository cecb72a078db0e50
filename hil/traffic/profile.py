"""Traffic profiles as data: what a benchmark offers the load balancer, in one YAML file that
compiles (:func:`compile_profile`) to a :class:`~hil.traffic.program.Program` — the streams TRex
and the local generator both send.

    name: lifecycle
    duration_s: 10
    vip: 198.19.200.1          # where the flows go (vip_port: 80)
    streams:
      - kind: tcp_flows         # whole TCP flows as the simulator models them (see below)
        flow_rate: 2000         # new flows per second
        flow_duration_s: 0.2    # SYN to close: concurrent flows = flow_rate * flow_duration_s
        tuples: 100000          # distinct 5-tuples cycled through
      - kind: tcp_established   # ACKs of `flows` open flows (opened by a ramp-up of SYNs)
        flows: 10000
        rate_pps: 100000
      - kind: tcp_new           # a SYN of a new flow per packet
        rate_pps: 50000
      - kind: udp               # UDP datagrams over `flows` 5-tuples
        flows: 1000
        rate_pps: 10000
        frame_bytes: 60
      - kind: imix              # UDP in the simple IMIX: 60/590/1514-byte frames, 7:4:1
        flows: 1000
        rate_pps: 10000
    latency: {rate_pps: 1000}   # probe packets whose one-way delay is measured

Stateless generators cannot keep TCP state, so a ``tcp_flows`` stream is compiled the way a
stateless TRex profile plays flows: one stream per packet of a flow's life (SYN, the handshake's
ACK, the request segments, the client's delayed ACKs of the response, then RST|ACK or FIN|ACK +
ACK), all at ``flow_rate`` over the same tuple sequence, each starting ``offset`` later. Tuple i
therefore sees its SYN at ``i / flow_rate`` and each later packet at its offset after that: a
flow's packets arrive in order and its life lasts ``flow_duration_s``, as long as the tuple
space is larger than the number of concurrent flows (checked).

Source addresses come from ``src_net`` (client side of the testbed) and ports from 1024 up; a
tuple count ``N`` is split into ``a`` addresses x ``b`` ports with coprime ``a`` and ``b``, so
two lock-step counters visit all ``N`` combinations exactly once per cycle.
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hil.traffic.program import FixL4, Program, Stream, Var
from simulator.config import ConfigError, read_yaml_mapping

__all__ = ["TrafficProfile", "load_profile", "parse_profile", "compile_profile", "split_tuples",
           "PROBE_IP_ID", "MSS", "HEADER_BYTES"]

MSS = 1460
HEADER_BYTES = 40  # IPv4 + TCP without options
ETH_BYTES = 14
MIN_FRAME = 60  # Ethernet minimum without the FCS
MAX_FRAME = 1514
PORT_MIN, PORT_MAX = 1024, 65535
#: IPv4 identification of latency probes (bulk packets carry 0): what a capture's BPF filter
#: looks for ("ML")
PROBE_IP_ID = 0x4D4C
PROBE_SPORT = 7777
IMIX = ((60, 7), (590, 4), (1514, 1))  # frame bytes (no FCS), share
SYN_F, ACK_F, PSH_F, RST_F, FIN_F = 0x02, 0x10, 0x08, 0x04, 0x01


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TcpFlows(_Strict):
    """Whole TCP flows: SYN, ACK, request segment(s), delayed ACKs of the response, close."""

    kind: Literal["tcp_flows"]
    flow_rate: float = Field(gt=0, description="new flows per second")
    flow_duration_s: float = Field(0.2, gt=0, description="SYN to last packet of a flow")
    tuples: int = Field(100_000, ge=1, description="distinct 5-tuples cycled through")
    request_bytes: int = Field(300, ge=1, description="bytes of the client's request")
    response_bytes: int = Field(10_000, ge=1, description="bytes of the server's response (sets the ACKs)")
    close: Literal["rst", "fin"] = "rst"

    @model_validator(mode="after")
    def _tuples_outlive_flows(self) -> "TcpFlows":
        concurrent = self.flow_rate * self.flow_duration_s
        if self.tuples <= concurrent:
            raise ValueError(f"tuples ({self.tuples}) must exceed the concurrent flows "
                             f"flow_rate * flow_duration_s = {concurrent:g}, or a tuple's next SYN "
                             "would arrive before its previous flow closed")
        return self


class TcpEstablished(_Strict):
    """ACKs of ``flows`` open flows, cycled in order; a ramp-up of one SYN per flow opens them."""

    kind: Literal["tcp_established"]
    flows: int = Field(ge=1)
    rate_pps: float = Field(gt=0)
    frame_bytes: int = Field(MIN_FRAME, ge=MIN_FRAME, le=MAX_FRAME)
    ramp_rate_pps: float = Field(20_000, gt=0, description="rate of the ramp-up SYNs")


class TcpNew(_Strict):
    """A SYN of a new flow in every packet (one policy decision per packet)."""

    kind: Literal["tcp_new"]
    rate_pps: float = Field(gt=0)
    tuples: int = Field(256 * 64_511, ge=1, description="distinct 5-tuples before they repeat")


class Udp(_Strict):
    kind: Literal["udp"]
    flows: int = Field(ge=1)
    rate_pps: float = Field(gt=0)
    frame_bytes: int = Field(MIN_FRAME, ge=MIN_FRAME, le=MAX_FRAME)


class Imix(_Strict):
    kind: Literal["imix"]
    flows: int = Field(ge=1)
    rate_pps: float = Field(gt=0, description="all three sizes together")


StreamSpec = Annotated[Union[TcpFlows, TcpEstablished, TcpNew, Udp, Imix], Field(discriminator="kind")]


class LatencySpec(_Strict):
    rate_pps: float = Field(1000, gt=0, le=100_000)


class TrafficProfile(_Strict):
    name: str = "profile"
    duration_s: float = Field(10.0, gt=0)
    vip: str = "198.19.200.1"
    vip_port: int = Field(80, ge=1, le=65535)
    src_net: str = Field("198.18.128.0/17", description="source addresses of the flows")
    streams: list[StreamSpec] = Field(min_length=1)
    latency: LatencySpec | None = None

    @model_validator(mode="after")
    def _addresses(self) -> "TrafficProfile":
        try:
            ipaddress.IPv4Address(self.vip)
        except ValueError:
            raise ValueError(f"vip {self.vip!r} is not an IPv4 address") from None
        try:
            ipaddress.IPv4Network(self.src_net)
        except ValueError as exc:
            raise ValueError(f"src_net {self.src_net!r}: {exc}") from None
        return self

    @property
    def src_addresses(self) -> int:
        return ipaddress.IPv4Network(self.src_net).num_addresses


# -- loading, with the line of the offending field -------------------------------------------

def _line_of(text: str, loc: tuple) -> int | None:
    """1-based line of the YAML node at path loc (keys and list indices), or of its nearest
    existing parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def parse_profile(data: dict[str, Any], source: str = "<profile>", text: str | None = None) -> TrafficProfile:
    """Validate a profile; errors name the source, the field path and (with text) the line."""
    try:
        return TrafficProfile.model_validate(data)
    except ValidationError as err:
        lines = [f"{source}: invalid traffic profile"]
        for e in err.errors():
            # drop the discriminator tag pydantic adds to the path of a stream's fields
            loc = tuple(p for p in e["loc"] if p not in ("tcp_flows", "tcp_established", "tcp_new",
                                                          "udp", "imix"))
            where = ".".join(str(p) for p in loc) or "(top level)"
            ln = _line_of(text, loc) if text is not None else None
            lines.append(f"  {where}{f' (line {ln})' if ln else ''}: {e['msg']}")
        raise ConfigError("\n".join(lines)) from None


def load_profile(path: str | Path) -> TrafficProfile:
    data, text = read_yaml_mapping(path, "traffic profile")
    return parse_profile(data, str(path), text)


# -- tuples ------------------------------------------------------------------------------------

def _prime_powers(n: int) -> list[int]:
    out, p = [], 2
    while p * p <= n:
        if n % p == 0:
            q = 1
            while n % p == 0:
                n //= p
                q *= p
            out.append(q)
        p += 1
    if n > 1:
        out.append(n)
    return out


def split_tuples(n: int, max_addresses: int, max_ports: int = PORT_MAX - PORT_MIN + 1) -> tuple[int, int]:
    """(addresses, ports) with addresses * ports == n, gcd 1, within the limits; the fewest
    addresses that work. Raises ValueError naming valid neighbours of n when there is none."""
    def fits(m: int) -> tuple[int, int] | None:
        pp = _prime_powers(m)
        best = None
        for mask in range(1 << len(pp)):
            a = math.prod(q for i, q in enumerate(pp) if mask >> i & 1)
            b = m // a
            if a <= max_addresses and b <= max_ports and (best is None or a < best[0]):
                best = (a, b)
        return best

    got = fits(n)
    if got:
        return got
    near = [m for d in range(1, 10_000) for m in (n - d, n + d) if m > 0 and fits(m)][:2]
    raise ValueError(f"{n} tuples cannot be split into coprime counts of at most {max_addresses} "
                     f"source addresses x {max_ports} ports; e.g. {' or '.join(map(str, near))} can")


# -- compiling -----------------------------------------------------------------------------------

def _segments(nbytes: int) -> list[int]:
    return [MSS] * (nbytes // MSS) + ([nbytes % MSS] if nbytes % MSS else [])


class _Builder:
    """Template frames and the tuple counters of one profile."""

    def __init__(self, prof: TrafficProfile, dst_mac: str, src_mac: str):
        self.prof, self.dst_mac, self.src_mac = prof, dst_mac, src_mac
        self.net = ipaddress.IPv4Network(prof.src_net)

    def frame(self, proto: int, sport: int, flags: int = 0, payload: int = 0, ip_id: int = 0,
              frame_bytes: int = 0) -> bytes:
        from scapy.layers.inet import IP, TCP, UDP
        from scapy.layers.l2 import Ether
        from scapy.packet import Raw

        ip = IP(src=str(self.net.network_address), dst=self.prof.vip, id=ip_id, ttl=64)
        l4 = (TCP(sport=sport, dport=self.prof.vip_port, flags=flags, seq=1, ack=1 if flags & ACK_F else 0,
                  window=65535) if proto == 6 else UDP(sport=sport, dport=self.prof.vip_port))
        hdr = ETH_BYTES + 20 + (20 if proto == 6 else 8)
        size = max(payload, frame_bytes - hdr, 0)
        pkt = Ether(dst=self.dst_mac, src=self.src_mac) / ip / l4 / Raw(b"\0" * size)
        return bytes(pkt).ljust(MIN_FRAME, b"\0")

    def tuple_vars(self, tuples: int, field: str) -> tuple[Var, ...]:
        try:
            a, b = split_tuples(tuples, self.net.num_addresses)
        except ValueError as exc:
            raise ConfigError(f"profile {self.prof.name!r}: {field}: {exc}") from None
        base = int(self.net.network_address)
        return (Var("src_ip", 26, 4, base, base + a - 1), Var("src_port", 34, 2, PORT_MIN, PORT_MIN + b - 1))

    def stream(self, name: str, frame: bytes, proto: int, rate: float, tuples: int, field: str,
               start_s: float = 0.0, count: int = 0, latency: bool = False) -> Stream:
        return Stream(name=name, packet=frame, rate_pps=rate, start_s=start_s, count=count,
                      latency=latency, vars=self.tuple_vars(tuples, field), fix_ipv4=ETH_BYTES,
                      fix_l4=FixL4(ETH_BYTES, ETH_BYTES + 20, proto))


def _tcp_flow_packets(s: TcpFlows) -> list[tuple[str, int, int]]:
    """(name, flags, payload bytes) of the client's packets of one flow, in order."""
    pk = [("syn", SYN_F, 0), ("ack", ACK_F, 0)]
    req = _segments(s.request_bytes)
    pk += [(f"req{i}", ACK_F | (PSH_F if i == len(req) - 1 else 0), n) for i, n in enumerate(req)]
    n_resp = len(_segments(s.response_bytes))
    n_ack = sum(1 for i in range(n_resp) if i % 2 == 1 or i == n_resp - 1)  # delayed ACKs
    pk += [(f"dack{i}", ACK_F, 0) for i in range(n_ack)]
    pk += [("rst", RST_F | ACK_F, 0)] if s.close == "rst" else [("fin", FIN_F | ACK_F, 0), ("last_ack", ACK_F, 0)]
    return pk


def compile_profile(prof: TrafficProfile, dst_mac: str = "02:00:00:00:00:01",
                    src_mac: str = "02:00:00:00:00:02") -> Program:
    """The profile's streams as a Program; ``dst_mac`` is the load balancer's MAC (the frames
    go to it), ``src_mac`` the generator's."""
    b = _Builder(prof, dst_mac, src_mac)
    streams: list[Stream] = []
    ramp: list[Stream] = []
    flows = 0
    for k, s in enumerate(prof.streams):
        field = f"streams.{k}"
        tag = f"{k}_{s.kind}"
        if isinstance(s, TcpFlows):
            pk = _tcp_flow_packets(s)
            gap = s.flow_duration_s / (len(pk) - 1)
            for j, (name, flags, payload) in enumerate(pk):
                streams.append(b.stream(f"{tag}_{name}", b.frame(6, PORT_MIN, flags, payload), 6,
                                        s.flow_rate, s.tuples, field, start_s=j * gap))
            flows += round(s.flow_rate * s.flow_duration_s)
        elif isinstance(s, TcpEstablished):
            ramp.append(b.stream(f"{tag}_syn", b.frame(6, PORT_MIN, SYN_F), 6, s.ramp_rate_pps, s.flows,
                                 field, count=s.flows))
            streams.append(b.stream(f"{tag}_ack", b.frame(6, PORT_MIN, ACK_F, frame_bytes=s.frame_bytes), 6,
                                    s.rate_pps, s.flows, field))
            flows += s.flows
        elif isinstance(s, TcpNew):
            streams.append(b.stream(f"{tag}_syn", b.frame(6, PORT_MIN, SYN_F), 6, s.rate_pps, s.tuples, field))
        elif isinstance(s, Udp):
            streams.append(b.stream(f"{tag}", b.frame(17, PORT_MIN, frame_bytes=s.frame_bytes), 17,
                                    s.rate_pps, s.flows, field))
            flows += s.flows
        elif isinstance(s, Imix):
            total = sum(w for _, w in IMIX)
            for size, w in IMIX:
                streams.append(b.stream(f"{tag}_{size}", b.frame(17, PORT_MIN, frame_bytes=size), 17,
                                        s.rate_pps * w / total, s.flows, field))
            flows += s.flows
    if prof.latency is not None:
        probe = b.frame(17, PROBE_SPORT, ip_id=PROBE_IP_ID, frame_bytes=MIN_FRAME)
        # a sequence number in the payload (after the UDP header) tells probes apart
        seq = Var("probe_seq", ETH_BYTES + 28, 4, 0, 2**32 - 1)
        streams.append(Stream("latency", probe, prof.latency.rate_pps, latency=True, vars=(seq,),
                              fix_ipv4=ETH_BYTES, fix_l4=FixL4(ETH_BYTES, ETH_BYTES + 20, 17)))
    info = {"vip": prof.vip, "vip_port": prof.vip_port, "flows": flows, "profile": prof.model_dump()}
    return Program(name=prof.name, streams=tuple(streams), duration_s=prof.duration_s,
                   ramp_up=tuple(ramp), info=info)
