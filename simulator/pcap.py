"""Export modelled packets as a pcap file (scapy; readable by scapy, tcpdump and tshark).

Each :class:`~simulator.packet.Packet` becomes Ethernet/IPv4/TCP with a zero-filled payload of
its payload size, stamped with the time it left its source (``t_send_s``, simulated seconds
since the epoch 0). Client->server packets carry the client's sequence numbers, server->client
packets the server's (relative, starting at 1), so Wireshark can follow the streams.
"""

from __future__ import annotations

from typing import Iterable

from simulator.packet import ACK, SYN, Packet, ip_str

__all__ = ["write_pcap"]

_SYN_OPTIONS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (0, 0)), ("NOP", None), ("WScale", 7)]
_MAC_C, _MAC_S = "02:00:00:00:00:01", "02:00:00:00:00:02"


def write_pcap(path: str, packets: Iterable[Packet]) -> int:
    """Write the packets (in the given order) to ``path``; returns how many were written."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw
    from scapy.utils import PcapWriter

    seq: dict[tuple[int, bool], int] = {}
    n = 0
    with PcapWriter(path, linktype=1, sync=False) as w:
        for p in packets:
            d = p.to_server
            mine = seq.get((p.flow, d), 0)
            other = seq.get((p.flow, not d), 0)
            tcp = TCP(sport=p.sport, dport=p.dport, flags=p.flags, seq=mine,
                      ack=other if p.flags & ACK else 0, window=65535)
            if p.flags & SYN:  # SYN and SYN-ACK carry 20 bytes of options (size - 40)
                tcp.options = _SYN_OPTIONS
            frame = Ether(src=_MAC_C, dst=_MAC_S) / IP(src=ip_str(p.src), dst=ip_str(p.dst), ttl=64) / tcp
            if p.payload:
                frame = frame / Raw(b"\x00" * p.payload)
            seq[(p.flow, d)] = mine + p.payload + (1 if p.flags & SYN else 0)
            frame.time = p.t_send_s
            w.write(frame)
            n += 1
    return n
