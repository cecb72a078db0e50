"""Ethernet/IPv4/TCP/UDP frames with valid checksums, built byte by byte (independent of the
code under test)."""

from __future__ import annotations

import socket
import struct

TCP_FIN, TCP_SYN, TCP_RST, TCP_PSH, TCP_ACK = 1, 2, 4, 8, 16


def mac_bytes(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 1, frag: int = 0) -> bytes:
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + payload


def tcp(src: str, dst: str, sport: int, dport: int, flags: int, seq: int = 1, ack: int = 0,
        data: bytes = b"") -> bytes:
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def udp(src: str, dst: str, sport: int, dport: int, data: bytes = b"") -> bytes:
    seg = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, len(seg))
    c = csum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def eth(dst_mac: str, src_mac: str, payload: bytes, ethertype: int = 0x0800) -> bytes:
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype) + payload


def tcp_frame(dst_mac: str, src_mac: str, src: str, dst: str, sport: int, dport: int, flags: int,
              data: bytes = b"", seq: int = 1) -> bytes:
    return eth(dst_mac, src_mac, ipv4(src, dst, 6, tcp(src, dst, sport, dport, flags, seq, 0, data)))


def flow_key(frame: bytes) -> tuple[bytes, bytes, int, int]:
    """(src ip, dst ip, sport, dport) of an untagged IPv4 TCP/UDP frame."""
    ihl = (frame[14] & 0x0F) * 4
    l4 = 14 + ihl
    return frame[26:30], frame[30:34], *struct.unpack("!HH", frame[l4 : l4 + 4])
