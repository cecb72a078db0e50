"""One-way latency through the data plane from kernel timestamps on both sides.

The profile's latency stream sends probe packets (IPv4 identification ``PROBE_IP_ID``, a
sequence number in the first four payload bytes) through a socket the packet taps see. A
capture socket on the generator's interface takes each probe's kernel timestamp as it leaves
(``PACKET_OUTGOING``); one on every server's interface takes it as it arrives. Both are
``SO_TIMESTAMPNS`` (the same real-time clock of one kernel). A classic BPF filter lets only
probes into these sockets, so bulk traffic costs them nothing. Latency = arrival - departure,
recorded in an HDR histogram (``hdrhistogram``; 3 significant digits: a stated relative error
of at most 0.1 %).
"""

from __future__ import annotations

import ctypes
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Sequence

from hil.testbed import sh
from hil.traffic.profile import ETH_BYTES, PROBE_IP_ID
from simulator.config import UserError

__all__ = ["LatencyCapture", "LatencyStats", "probe_filter"]

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
SEQ_OFFSET = ETH_BYTES + 20 + 8  # after Ethernet, IPv4 (no options), UDP
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def probe_filter() -> bytes:
    """cBPF: accept IPv4 frames whose identification is PROBE_IP_ID, drop everything else."""
    ins = [
        (0x28, 0, 0, 12),  # ldh [12]            ethertype
        (0x15, 0, 3, 0x0800),  # jeq #IPv4
        (0x28, 0, 0, ETH_BYTES + 4),  # ldh [18]   IPv4 identification
        (0x15, 0, 1, PROBE_IP_ID),  # jeq #probe
        (0x06, 0, 0, 0xFFFF),  # ret accept
        (0x06, 0, 0, 0),  # ret drop
    ]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def _probe_socket(ns: str, iface: str) -> socket.socket:
    """A filtered, timestamping AF_PACKET socket on iface of namespace ns. The filter is
    attached before the socket is bound, so no bulk frame ever queues on it."""
    prog = probe_filter()

    def open_socket() -> socket.socket:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        buf = ctypes.create_string_buffer(prog)
        fprog = struct.pack("HL", len(prog) // 8, ctypes.addressof(buf))
        s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((iface, ETH_P_ALL))
        return s

    try:
        return sh.in_netns_thread(ns, open_socket)
    except OSError as e:
        raise UserError(f"cannot open a probe capture on {iface} in namespace {ns}: {e}") from None


@dataclass
class LatencyStats:
    sent: int  # probes seen leaving the generator
    received: int  # probes seen at a server (each counted once)
    percentiles_us: dict[str, float] = field(default_factory=dict)  # "p50", ..., "max", "min", "mean"
    histogram: str = ""  # HDR histogram, base64 (hdrhistogram's encode())

    @property
    def p99_us(self) -> float | None:
        return self.percentiles_us.get("p99")

    def to_dict(self) -> dict:
        return {"sent": self.sent, "received": self.received, "lost": max(0, self.sent - self.received),
                "percentiles_us": self.percentiles_us, "hdr_histogram": self.histogram}


class LatencyCapture:
    """Capture probes while a trial runs: ``start()``, send, ``stop()`` -> LatencyStats."""

    def __init__(self, gen: tuple[str, str], servers: Sequence[tuple[str, str]]) -> None:
        self._tx = _probe_socket(*gen)
        self._rx = [_probe_socket(ns, ifc) for ns, ifc in servers]
        self._tx_ns: dict[int, int] = {}
        self._rx_ns: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="latency-capture", daemon=True)

    def start(self) -> "LatencyCapture":
        self._thread.start()
        return self

    def _read(self, s: socket.socket, outgoing: bool) -> None:
        while True:
            try:
                data, anc, _flags, addr = s.recvmsg(128, 64, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if len(data) < SEQ_OFFSET + 4:
                continue
            if outgoing != (addr[2] == PACKET_OUTGOING):
                continue
            ts = next((struct.unpack("qq", d[:16]) for lvl, typ, d in anc
                       if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS), None)
            if ts is None:
                continue
            seq = int.from_bytes(data[SEQ_OFFSET:SEQ_OFFSET + 4], "big")
            (self._tx_ns if outgoing else self._rx_ns).setdefault(seq, ts[0] * 1_000_000_000 + ts[1])

    def _loop(self) -> None:
        socks = [self._tx, *self._rx]
        while not self._stop.is_set():
            ready, _, _ = select.select(socks, [], [], 0.05)
            for s in ready:
                self._read(s, s is self._tx)

    def stop(self, drain_s: float = 0.1) -> LatencyStats:
        time.sleep(drain_s)
        self._stop.set()
        self._thread.join()
        for s in [self._tx, *self._rx]:
            self._read(s, s is self._tx)
            s.close()
        return self._stats()

    def _stats(self) -> LatencyStats:
        from hdrh.histogram import HdrHistogram

        hist = HdrHistogram(1, 60 * 1_000_000_000, 3)  # 1 ns .. 60 s, 3 significant digits
        lat = [self._rx_ns[q] - t for q, t in self._tx_ns.items() if q in self._rx_ns]
        for v in lat:
            hist.record_value(max(1, v))
        st = LatencyStats(sent=len(self._tx_ns), received=len(lat))
        if lat:
            st.percentiles_us = {f"p{p:g}": hist.get_value_at_percentile(p) / 1e3 for p in PERCENTILES}
            st.percentiles_us |= {"min": min(lat) / 1e3, "max": max(lat) / 1e3,
                                  "mean": sum(lat) / len(lat) / 1e3}
            st.histogram = hist.encode().decode()
        return st
