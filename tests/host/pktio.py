"""Raw AF_PACKET send/capture helper for the lb_rl_host tests, run inside a namespace with
``ip netns exec NS python3 pktio.py ...`` (it imports nothing from the project).

    send    --iface IF --frames FILE          one hex frame per line, sent in order
    capture --iface IF --vip A.B.C.D --out FILE --ready FILE --stop FILE
            writes every received IPv4 frame whose destination is the VIP or whose source MAC is
            --lb-mac (hex, one per line)
            until FILE --stop exists (then drains for 0.2 s) or --timeout passes.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

ETH_P_ALL = 0x0003


def send(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.bind((args.iface, 0))
    n = 0
    with open(args.frames) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            while True:
                try:
                    s.send(bytes.fromhex(line))
                    break
                except BlockingIOError:
                    time.sleep(0.001)
            n += 1
            if args.pace and n % args.pace == 0:
                time.sleep(0.002)
    print(n)
    return 0


def capture(args: argparse.Namespace) -> int:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind((args.iface, 0))
    s.settimeout(0.05)
    vip = socket.inet_aton(args.vip)
    lb_mac = bytes.fromhex(args.lb_mac.replace(":", "")) if args.lb_mac else b"-"
    out = []
    t_end = time.monotonic() + args.timeout
    open(args.ready, "w").close()
    stop_at = None
    while time.monotonic() < t_end:
        if stop_at is None and os.path.exists(args.stop):
            stop_at = time.monotonic() + 0.2
        if stop_at is not None and time.monotonic() >= stop_at:
            break
        try:
            data, addr = s.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        if len(data) >= 34 and data[12:14] == b"\x08\x00" and (data[30:34] == vip or data[6:12] == lb_mac):
            out.append(data.hex())
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(out) + ("\n" if out else ""))
    os.replace(tmp, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("send")
    a.add_argument("--iface", required=True)
    a.add_argument("--frames", required=True)
    a.add_argument("--pace", type=int, default=0, help="sleep 2 ms every PACE frames")
    b = sub.add_parser("capture")
    b.add_argument("--iface", required=True)
    b.add_argument("--vip", required=True)
    b.add_argument("--out", required=True)
    b.add_argument("--ready", required=True)
    b.add_argument("--stop", required=True)
    b.add_argument("--timeout", type=float, default=30.0)
    b.add_argument("--lb-mac", default="", help="also keep IPv4 frames from this source MAC")
    args = ap.parse_args(argv)
    return send(args) if args.cmd == "send" else capture(args)


if __name__ == "__main__":
    sys.exit(main())
