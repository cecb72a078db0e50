"""A compiled traffic program: streams of packets described the way a stateless generator's
field engine sees them — one template packet, counters written at integer byte offsets, and the
checksums fixed afterwards. Every back end reads this one description: the TRex driver turns it
into STL streams (``hil/trex/driver.py``), the local generator ``mlb_gen`` sends it
(``vpp_plugin/host/mlb_gen.c``), and :func:`expand` lists the packets it stands for.

Semantics (those of TRex's ``STLVmFlowVar(op="inc")`` + ``STLVmWrFlowVar`` + ``STLVmFixIpv4`` +
``STLVmFixChecksumHw``): packet ``n`` (0-based) of a stream carries, for every var, the value
``min + (init - min + n * step) mod (max - min + 1)`` written big-endian in ``size`` bytes at
``offset``; then the IPv4 header checksum at ``fix_ipv4`` and the TCP/UDP checksum (with the
pseudo-header) of the L4 segment at ``fix_l4`` are recomputed. Vars advance in lock step, so
two vars with coprime ranges ``a`` and ``b`` give ``a * b`` distinct combinations per cycle.

Timing: a stream sends ``rate_pps`` packets per second from ``start_s`` (relative to the start
of the run); ``count`` > 0 stops it after that many packets (a burst), 0 means it runs until
the run ends. Loads scale every stream's rate by one multiplier (TRex's ``mult``), except
latency probe streams, which keep their own rate at every load.

The text form (:meth:`Program.to_text`) is what ``mlb_gen`` parses: one record per line,
``stream NAME rate_pps START_S COUNT LATENCY HEX``, then that stream's ``var OFFSET SIZE MIN MAX
STEP INIT``, ``fixip L3`` and ``fixl4 L3 L4 PROTO`` lines (PROTO 6 or 17).
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

__all__ = ["Var", "FixL4", "Stream", "Program", "packet_at", "expand", "write_pcap"]

PROGRAM_VERSION = 1


@dataclass(frozen=True)
class Var:
    """An incrementing counter written into the packet (big-endian, ``size`` bytes)."""

    name: str
    offset: int
    size: int  # 1, 2 or 4
    min: int
    max: int
    step: int = 1
    init: int | None = None  # None: min

    @property
    def start(self) -> int:
        return self.min if self.init is None else self.init

    def value(self, n: int) -> int:
        """The value packet n carries."""
        span = self.max - self.min + 1
        return self.min + (self.start - self.min + n * self.step) % span


@dataclass(frozen=True)
class FixL4:
    l3: int  # offset of the IPv4 header
    l4: int  # offset of the TCP/UDP header
    proto: int  # 6 (TCP) or 17 (UDP)


@dataclass(frozen=True)
class Stream:
    name: str
    packet: bytes  # the template frame (Ethernet first), checksums as built
    rate_pps: float
    start_s: float = 0.0
    count: int = 0  # 0: continuous
    latency: bool = False  # a latency probe stream (TRex: flow stats with latency)
    vars: tuple[Var, ...] = ()
    fix_ipv4: int | None = None
    fix_l4: FixL4 | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["packet"] = self.packet.hex()
        return d

    @staticmethod
    def from_dict(d: dict) -> "Stream":
        return Stream(
            name=d["name"], packet=bytes.fromhex(d["packet"]), rate_pps=float(d["rate_pps"]),
            start_s=float(d.get("start_s", 0.0)), count=int(d.get("count", 0)),
            latency=bool(d.get("latency", False)),
            vars=tuple(Var(**v) for v in d.get("vars", ())),
            fix_ipv4=d.get("fix_ipv4"),
            fix_l4=FixL4(**d["fix_l4"]) if d.get("fix_l4") else None,
        )


@dataclass(frozen=True)
class Program:
    """What a profile compiles to: its streams, the run's duration and where the flows go."""

    name: str
    streams: tuple[Stream, ...]
    duration_s: float
    ramp_up: tuple[Stream, ...] = ()  # sent (once, to completion) before each measured trial
    info: dict = field(default_factory=dict)  # what the profile said (flows, vip, ...), for reports

    @property
    def rate_pps(self) -> float:
        """Packets per second of the measured streams at multiplier 1, latency probes left out
        (bursts count while they run)."""
        return sum(s.rate_pps for s in self.streams if not s.latency)

    def to_json(self) -> str:
        return json.dumps({
            "version": PROGRAM_VERSION, "name": self.name, "duration_s": self.duration_s,
            "streams": [s.to_dict() for s in self.streams],
            "ramp_up": [s.to_dict() for s in self.ramp_up], "info": self.info,
        }, indent=1)

    @staticmethod
    def from_json(text: str) -> "Program":
        d = json.loads(text)
        if d.get("version") != PROGRAM_VERSION:
            raise ValueError(f"traffic program version {d.get('version')!r}, expected {PROGRAM_VERSION}")
        return Program(name=d["name"], duration_s=float(d["duration_s"]),
                       streams=tuple(Stream.from_dict(s) for s in d["streams"]),
                       ramp_up=tuple(Stream.from_dict(s) for s in d.get("ramp_up", ())),
                       info=d.get("info", {}))

    def to_text(self, streams: tuple[Stream, ...] | None = None, mult: float = 1.0) -> str:
        """The line format mlb_gen reads, for ``streams`` (default: the measured ones) with every
        rate but the latency probes' multiplied by ``mult``."""
        lines = []
        for s in self.streams if streams is None else streams:
            rate = s.rate_pps if s.latency else s.rate_pps * mult
            lines.append(f"stream {s.name} {rate:.6f} {s.start_s:.9f} {s.count} "
                         f"{int(s.latency)} {s.packet.hex()}")
            lines += [f"var {v.offset} {v.size} {v.min} {v.max} {v.step} {v.start}" for v in s.vars]
            if s.fix_ipv4 is not None:
                lines.append(f"fixip {s.fix_ipv4}")
            if s.fix_l4 is not None:
                lines.append(f"fixl4 {s.fix_l4.l3} {s.fix_l4.l4} {s.fix_l4.proto}")
        return "\n".join(lines) + "\n"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def packet_at(s: Stream, n: int) -> bytes:
    """Packet n of stream s, with its vars written and its checksums fixed."""
    p = bytearray(s.packet)
    for v in s.vars:
        p[v.offset:v.offset + v.size] = v.value(n).to_bytes(v.size, "big")
    if s.fix_ipv4 is not None:
        o = s.fix_ipv4
        ihl = (p[o] & 0x0F) * 4
        p[o + 10:o + 12] = b"\0\0"
        p[o + 10:o + 12] = _csum(bytes(p[o:o + ihl])).to_bytes(2, "big")
    if s.fix_l4 is not None:
        f = s.fix_l4
        total_len = int.from_bytes(p[f.l3 + 2:f.l3 + 4], "big")
        seg_len = f.l3 + total_len - f.l4
        ck = f.l4 + (16 if f.proto == 6 else 6)
        p[ck:ck + 2] = b"\0\0"
        pseudo = bytes(p[f.l3 + 12:f.l3 + 20]) + struct.pack("!BBH", 0, f.proto, seg_len)
        c = _csum(pseudo + bytes(p[f.l4:f.l4 + seg_len]))
        if f.proto == 17 and c == 0:
            c = 0xFFFF
        p[ck:ck + 2] = c.to_bytes(2, "big")
    return bytes(p)


def expand(s: Stream, n: int) -> Iterator[bytes]:
    """The first n packets of stream s."""
    return (packet_at(s, i) for i in range(n))


def write_pcap(path: Path, frames: list[tuple[float, bytes]]) -> None:
    """A classic pcap (Ethernet, microsecond timestamps) of (time_s, frame) pairs: what tcpreplay
    and Wireshark read."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for t, fr in frames:
            sec = int(t)
            f.write(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(fr), len(fr)))
            f.write(fr)
