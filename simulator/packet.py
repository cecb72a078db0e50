"""Packets of the simulated TCP-like flows.

A :class:`Packet` is what the packet log and the pcap export hold: one TCP segment with its
5-tuple, flags, size and the times it left its source, passed the LB (client->server packets
only) and reached its destination. Inside the hot loop the model keeps packets columnar
(times, flags, sizes per request) and materialises :class:`Packet` objects only when a packet
log is asked for (tests, ``--pcap``); every packet is still modelled (its times are computed
through every link FIFO and client->server packets are handed to the data-plane core).

Addresses: client ``c{i+1}`` is 10.0.0.{i+1}; the service VIP is 10.0.1.1:80 (DSR: servers
reply from the VIP, so server identity is not in the 5-tuple; the log carries ``server``).
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "Packet", "FIN", "SYN", "RST", "PSH", "ACK", "MSS", "HEADER_BYTES", "VIP", "VIP_PORT",
    "client_ip", "ip_str", "flags_str",
]

FIN, SYN, RST, PSH, ACK = 1, 2, 4, 8, 16
MSS = 1460  #: bytes of payload per segment
HEADER_BYTES = 40  #: IPv4 + TCP header without options (payload size is added)
VIP = int(ipaddress.IPv4Address("10.0.1.1"))
VIP_PORT = 80
_CLIENT_BASE = int(ipaddress.IPv4Address("10.0.0.0"))


def client_ip(c: int) -> int:
    """IPv4 address (as int) of client index c (0-based): 10.0.0.{c+1} (+ carries into .1.x)."""
    return _CLIENT_BASE + c + 1


def ip_str(ip: int) -> str:
    return str(ipaddress.IPv4Address(ip))


def flags_str(flags: int) -> str:
    """tcpdump-style flag letters, e.g. 'S', 'SA', 'PA', 'RA', 'FA'."""
    out = ""
    for bit, ch in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "A")):
        if flags & bit:
            out += ch
    return out or "."


class Packet:
    """One TCP segment. Times in seconds of simulated time; ``size`` is bytes on the wire
    (headers + payload). ``t_lb_s`` is NaN for packets that do not cross an LB (server->client).
    ``dropped`` marks a copy lost on a full link queue (its retransmission is another packet)."""

    __slots__ = ("flow", "src", "dst", "sport", "dport", "flags", "size", "payload",
                 "t_send_s", "t_lb_s", "t_recv_s", "lb", "server", "dropped")

    def __init__(self, flow: int, src: int, dst: int, sport: int, dport: int, flags: int,
                 size: int, payload: int, t_send_s: float, t_lb_s: float, t_recv_s: float,
                 lb: int, server: int, dropped: bool = False) -> None:
        self.flow = flow
        self.src = src
        self.dst = dst
        self.sport = sport
        self.dport = dport
        self.flags = flags
        self.size = size
        self.payload = payload
        self.t_send_s = t_send_s
        self.t_lb_s = t_lb_s
        self.t_recv_s = t_recv_s
        self.lb = lb
        self.server = server
        self.dropped = dropped

    @property
    def to_server(self) -> bool:
        """True for client->server packets (the ones an LB sees)."""
        return self.dst == VIP

    def five_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.src, self.dst, self.sport, self.dport, 6)

    def __repr__(self) -> str:
        return (f"Packet(flow={self.flow} {ip_str(self.src)}:{self.sport}>{ip_str(self.dst)}:"
                f"{self.dport} {flags_str(self.flags)} {self.size}B t={self.t_send_s:.6f} "
                f"server={self.server})")
