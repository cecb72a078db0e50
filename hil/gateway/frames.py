"""Real Ethernet/IPv4/TCP frames for simulated packets, and reading back what a real LB made of
them.

A simulated client->server packet (5-tuple, TCP flags, IPv4 total length) becomes one frame
with valid IPv4 and TCP checksums: a SYN carries 20 bytes of the options Linux sends (MSS,
SACK permitted, timestamps, window scale), other segments a zero payload up to the length. The
gateway's 32-bit tag of the packet travels in the TCP sequence number (and its low 16 bits in
the IPv4 ID), which a layer-2 LB (MAC rewrite) and a GRE-encapsulating one both leave intact.
"""

from __future__ import annotations

import struct

__all__ = ["mac_bytes", "FrameBuilder", "read_forwarded", "SYN_OPTIONS", "ETH_HLEN"]

ETH_HLEN = 14
ETH_P_IP = 0x0800
IPPROTO_TCP, IPPROTO_GRE = 6, 47
TCP_SYN, TCP_RST, TCP_ACK = 0x02, 0x04, 0x10
#: MSS 1460, SACK permitted, timestamps (0, 0), NOP, window scale 7: 20 bytes as Linux sends
SYN_OPTIONS = bytes([2, 4, 0x05, 0xB4, 4, 2, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 7])
_IP = struct.Struct("!BBHHHBBH4s4s")
_TCP = struct.Struct("!HHIIBBHHH")


def mac_bytes(mac: str) -> bytes:
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC {mac!r}")
    return bytes(int(x, 16) for x in parts)


def _fold(s: int) -> int:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


class FrameBuilder:
    """Frames from ``src_mac`` to ``dst_mac`` (the LB's MAC: the frame enters the LB)."""

    def __init__(self, src_mac: str, dst_mac: str) -> None:
        self.eth = mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ETH_P_IP)

    def tcp(self, src_ip: int, dst_ip: int, sport: int, dport: int, flags: int, ip_len: int,
            tag: int) -> bytes:
        """One TCP segment of IPv4 total length ``ip_len`` (>= 40) carrying ``tag``."""
        opts = SYN_OPTIONS if flags & TCP_SYN and ip_len >= 60 else b""
        tcp_hlen = 20 + len(opts)
        pay_len = ip_len - 20 - tcp_hlen
        if pay_len < 0:
            raise ValueError(f"IPv4 length {ip_len} below the {20 + tcp_hlen} bytes of headers")
        src, dst = src_ip.to_bytes(4, "big"), dst_ip.to_bytes(4, "big")
        ip = _IP.pack(0x45, 0, ip_len, tag & 0xFFFF, 0x4000, 64, IPPROTO_TCP, 0, src, dst)
        ip_csum = ~_fold(_sum16(ip)) & 0xFFFF
        ack = 1 if flags & TCP_ACK else 0
        tcp = _TCP.pack(sport, dport, tag & 0xFFFFFFFF, ack, (tcp_hlen // 4) << 4, flags, 64240, 0, 0) + opts
        # pseudo header + header + options (the zero payload adds nothing but its length)
        s = _sum16(src + dst) + IPPROTO_TCP + tcp_hlen + pay_len + _sum16(tcp)
        tcp_csum = ~_fold(s) & 0xFFFF
        return b"".join((self.eth, ip[:10], struct.pack("!H", ip_csum), ip[12:],
                         tcp[:16], struct.pack("!H", tcp_csum), tcp[18:], bytes(pay_len)))


def read_forwarded(frame: bytes) -> tuple[bytes, int, int, int] | None:
    """What an LB made of one of our frames: ``(dst_mac, outer_dst_ip, tag, src_port)`` --
    ``outer_dst_ip`` is the GRE tunnel's destination for an encapsulated frame (VPP's lb), else
    the IPv4 destination. None for anything that is not IPv4/TCP (or IPv4/GRE/IPv4/TCP)."""
    if len(frame) < ETH_HLEN + 40 or frame[12:14] != b"\x08\x00":
        return None
    off = ETH_HLEN
    ihl = (frame[off] & 0x0F) * 4
    proto = frame[off + 9]
    outer_dst = int.from_bytes(frame[off + 16:off + 20], "big")
    if proto == IPPROTO_GRE:  # GRE (4 bytes, no options) carrying IPv4
        if frame[off + ihl + 2:off + ihl + 4] != b"\x08\x00":
            return None
        off += ihl + 4
        if len(frame) < off + 40:
            return None
        ihl = (frame[off] & 0x0F) * 4
        proto = frame[off + 9]
    if proto != IPPROTO_TCP:
        return None
    l4 = off + ihl
    sport, _dport, seq = struct.unpack_from("!HHI", frame, l4)
    return frame[0:6], outer_dst, seq, sport
