"""An independent interpreter of TRex STL stream JSON (``STLStream.to_json()``): the packets a
stream describes, built with scapy from the base packet and the field-engine instructions.
Shared by the TRex driver tests and the profile cross-check."""

from __future__ import annotations

import base64

from scapy.layers.inet import IP, TCP, UDP

__all__ = ["rebuild"]


def _inc_mod(lo: int, hi: int, cur: int, step: int) -> int:
    """TRex's inc_mod (trex_stl_stream_vm.h): the value after cur, wrapping inside [lo, hi]."""
    left = hi - cur
    return cur + step if step <= left else lo + (step - left - 1)


def rebuild(stream_json: dict, n: int) -> list[bytes]:
    """The first n packets the stream's JSON describes: the base packet, then per packet the VM
    instructions in order (a flow var's first value is its init_value), checksums by scapy."""
    base = base64.b64decode(stream_json["packet"]["binary"])
    ins = stream_json["vm"]["instructions"]
    cur: dict[str, int] = {}
    size: dict[str, int] = {}
    out = []
    for _ in range(n):
        pkt = bytearray(base)
        for i in ins:
            t = i["type"]
            if t == "flow_var":
                assert i["op"] == "inc"
                name = i["name"]
                cur[name] = (i["init_value"] if name not in cur else
                             _inc_mod(i["min_value"], i["max_value"], cur[name], i["step"]))
                size[name] = i["size"]
            elif t == "write_flow_var":
                sz, off = size[i["name"]], i["pkt_offset"]
                v = (cur[i["name"]] + i["add_value"]) % (1 << (8 * sz))
                pkt[off:off + sz] = v.to_bytes(sz, "big" if i["is_big_endian"] else "little")
            elif t == "fix_checksum_ipv4":
                off = i["pkt_offset"]
                ip = IP(bytes(pkt[off:]))
                hl = ip.ihl * 4
                del ip.chksum
                pkt[off:off + hl] = bytes(ip)[:hl]
            elif t == "fix_checksum_hw":  # IPv4 header and TCP/UDP checksums (NIC offload)
                l3, l4 = i["l2_len"], i["l2_len"] + i["l3_len"]
                ip = IP(bytes(pkt[l3:]))
                assert ip.ihl * 4 == i["l3_len"], "fix_checksum_hw: l3_len is not the IP header"
                layer = {13: TCP, 11: UDP}[i["l4_type"]]
                assert isinstance(ip.payload, layer)
                del ip.chksum
                del ip[layer].chksum
                rebuilt = bytes(ip)
                pkt[l3:l3 + len(rebuilt)] = rebuilt
                assert len(pkt) == len(base) and l4 < len(pkt)
            else:
                raise AssertionError(f"unexpected VM instruction {t!r}")
        out.append(bytes(pkt))
    return out


