"""mlb_gen, the local traffic generator (vpp_plugin/host/mlb_gen.c, hil/traffic/localgen.py).

Default (no root): its pcap mode writes exactly ``hil.traffic.program.packet_at`` packet by
packet, merged by due time (ties in stream order) with the due times as timestamps, and scapy's
own checksums agree; every kind of bad program is refused with ``FILE:LINE: ...`` and exit 2
before anything is sent. Marked ``netns`` (root): on a veth pair between ``mlb-tg-a`` and
``mlb-tg-b`` the peer receives exactly what mlb_gen counts as sent, a duration-limited stream
sends rate x duration packets (within one batch), and a capture socket on the sender's
interface sees the latency probes (with kernel timestamps) but not the bulk streams, which
bypass the qdisc layer.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from hil.traffic.program import FixL4, Program, Stream, Var, packet_at
from simulator.config import UserError

MAC_A, MAC_B = "02:00:c6:12:01:01", "02:00:c6:12:01:02"


def tcp_syn(sport: int = 1024, pad: int = 0) -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="198.18.1.1", dst="198.19.1.1")
                 / TCP(sport=sport, dport=80, flags="S", seq=1)) + b"\0" * pad


def udp(dport: int = 53, payload: int = 18) -> bytes:
    return bytes(Ether(src=MAC_A, dst=MAC_B) / IP(src="198.18.1.1", dst="198.19.1.1")
                 / UDP(sport=1024, dport=dport) / Raw(b"x" * payload))


def two_streams() -> Program:
    """TCP: source port (7 values) and the last byte of the source address (5 values, step 2,
    init 3): coprime ranges, 35 combinations; UDP (no IPv4 field changes, so no fixip): source
    port (step 7) and a 4-byte counter in the payload that wraps, a burst of 50 starting at
    2.5 ms."""
    tcp = Stream("tcp", tcp_syn(), 1000.0,
                 vars=(Var("sport", 34, 2, 1024, 1030), Var("src", 29, 1, 1, 5, step=2, init=3)),
                 fix_ipv4=14, fix_l4=FixL4(14, 34, 6))
    u = Stream("udp", udp(), 300.0, start_s=0.0025, count=50,
               vars=(Var("sport", 34, 2, 1000, 1999, step=7),
                     Var("id", 42, 4, 0, 0xFFFFFFFF, init=0xFFFFFFFE)), fix_l4=FixL4(14, 34, 17))
    return Program("two", (tcp, u), duration_s=1.0)


def schedule(program: Program, count: int, mult: float = 1.0) -> list[tuple[int, int, int]]:
    """(due_ns, stream index, packet number) of the first ``count`` packets, merged by due time,
    ties in stream order; rates and starts as mlb_gen reads them from the text form."""
    items = []
    for k, s in enumerate(program.streams):
        rate = float(f"{s.rate_pps:.6f}") * mult
        start_ns = round(float(f"{s.start_s:.9f}") * 1e9)
        for n in range(min(s.count, count) if s.count else count):
            items.append((start_ns + math.floor(n * 1e9 / rate), k, n))
    return sorted(items)[:count]


def read_pcap_ns(path: Path) -> list[tuple[int, bytes]]:
    """(timestamp ns, frame) of a nanosecond pcap (magic a1b23c4d)."""
    data = path.read_bytes()
    magic, = struct.unpack_from("<I", data)
    assert magic == 0xA1B23C4D
    assert struct.unpack_from("<I", data, 20)[0] == 1  # Ethernet
    out, off = [], 24
    while off < len(data):
        sec, nsec, incl, orig = struct.unpack_from("<IIII", data, off)
        assert incl == orig
        out.append((sec * 1_000_000_000 + nsec, data[off + 16:off + 16 + incl]))
        off += 16 + incl
    return out


@pytest.fixture(scope="module")
def gen_exe() -> Path:
    from hil.traffic.localgen import generator_binary

    try:
        return generator_binary()
    except UserError as e:
        pytest.skip(f"mlb_gen cannot be built here: {e}")


# ---------------------------------------------------------------- pcap mode (no root)


def test_pcap_is_packet_at_in_due_order(gen_exe: Path, tmp_path: Path) -> None:
    from hil.traffic.localgen import pcap_of

    prog = two_streams()
    got = read_pcap_ns(pcap_of(prog, 300, tmp_path / "g.pcap"))
    want = schedule(prog, 300)
    assert len(got) == 300
    assert [t for t, _ in got] == [due for due, _, _ in want]
    assert [fr for _, fr in got] == [packet_at(prog.streams[k], n) for _, k, n in want]
    assert got[3] == (2_500_000, packet_at(prog.streams[1], 0))  # after TCP 0, 1, 2 ms


def test_pcap_vars_and_scapy_checksums(gen_exe: Path, tmp_path: Path) -> None:
    from scapy.utils import rdpcap

    from hil.traffic.localgen import pcap_of

    prog = two_streams()
    pkts = rdpcap(str(pcap_of(prog, 300, tmp_path / "g.pcap")))
    tcp = [p for p in pkts if TCP in p]
    udps = [p for p in pkts if UDP in p]
    assert len(tcp) == 250 and len(udps) == 50
    # 7 x 5 coprime ranges: 35 distinct (sport, src) pairs per cycle, then it repeats
    pairs = [(p[TCP].sport, p[IP].src) for p in tcp]
    assert len(set(pairs[:35])) == 35 and pairs[35:70] == pairs[:35]
    assert pairs[0] == (1024, "198.18.1.3") and pairs[1] == (1025, "198.18.1.5")
    assert pairs[2] == (1026, "198.18.1.2")  # 3 + 2*2 = 7 -> wraps into 1..5
    assert [p[UDP].sport for p in udps[:3]] == [1000, 1007, 1014]
    assert [bytes(p[Raw])[:4].hex() for p in udps[:3]] == ["fffffffe", "ffffffff", "00000000"]
    for p in pkts:
        q = p.copy()
        del q[IP].chksum
        if TCP in q:
            del q[TCP].chksum
        else:
            del q[UDP].chksum
        assert bytes(Ether(bytes(q))) == bytes(p), p.summary()


def test_pcap_mult_scales_due_times(gen_exe: Path, tmp_path: Path) -> None:
    from hil.traffic.localgen import pcap_of

    prog = two_streams()
    got = read_pcap_ns(pcap_of(prog, 200, tmp_path / "g.pcap", mult=2.5))
    want = schedule(prog, 200, mult=2.5)
    assert [t for t, _ in got] == [due for due, _, _ in want]
    assert [fr for _, fr in got] == [packet_at(prog.streams[k], n) for _, k, n in want]


def test_pcap_of_finite_program_stops_at_its_end(gen_exe: Path, tmp_path: Path) -> None:
    from hil.traffic.localgen import pcap_of

    s = Stream("b", udp(), 100.0, count=7)
    got = read_pcap_ns(pcap_of(Program("b", (s,), 1.0), 1000, tmp_path / "b.pcap"))
    assert [t for t, _ in got] == [n * 10_000_000 for n in range(7)]


GOOD = udp().hex()  # 60 bytes: Ethernet 0..13, IPv4 14..33, UDP 34..41
STREAM = f"stream s 1000 0 0 0 {GOOD}"
BAD_PROGRAMS = [  # (text, line, what stderr says)
    (f"strem s 1000 0 0 0 {GOOD}\n", 1, "unknown keyword 'strem'"),
    (f"{STREAM}\nvar 30 2 1 x 1 1\n", 2, "bad number 'x' for MAX"),
    (f"stream s abc 0 0 0 {GOOD}\n", 1, "bad number 'abc' for RATE_PPS"),
    (f"stream s -5 0 0 0 {GOOD}\n", 1, "bad number '-5' for RATE_PPS"),
    (f"stream s 1000 0 -1 0 {GOOD}\n", 1, "bad number '-1' for COUNT"),
    (f"stream s 1000 0 0 2 {GOOD}\n", 1, "bad LATENCY '2'"),
    (f"{STREAM}\nvar 59 2 0 1 1 0\n", 2, "outside the 60-byte packet"),
    (f"{STREAM}\n\n# comment\nvar 60 1 0 1 1 0\n", 4, "outside the 60-byte packet"),
    (f"stream s 1000 0 0 0 {GOOD}0\n", 1, "odd number of hex digits"),
    (f"stream s 1000 0 0 0 {GOOD[:-2]}zz\n", 1, "bad hex digit"),
    (f"{STREAM}\nvar 30 3 0 1 1 0\n", 2, "SIZE '3' is not 1, 2 or 4"),
    (f"{STREAM}\nvar 30 1 0 300 1 0\n", 2, "value 300 does not fit in 1 byte"),
    (f"{STREAM}\nvar 30 2 0 10 1 65536\n", 2, "value 65536 does not fit in 2 bytes"),
    (f"{STREAM}\nvar 30 2 9 3 1 9\n", 2, "MIN 9 > MAX 3"),
    (f"{STREAM}\nvar 30 2 0 1 1\n", 2, "expected 6 fields"),
    (f"{STREAM}\nfixl4 14 34 1\n", 2, "PROTO '1' is not 6 (TCP) or 17 (UDP)"),
    (f"{STREAM}\nfixl4 14 56 17\n", 2, "no UDP header at 56"),
    (f"{STREAM}\nfixip 0\n", 2, "no IPv4 header at 0"),
    (f"{STREAM}\nfixip 14\nfixip 14\n", 3, "a second fixip"),
    (f"{STREAM}\nfixip 14\nvar 16 2 0 9 1 0\n", 3, "overlaps the IPv4 version/length"),
    ("var 30 2 0 1 1 0\n" + STREAM + "\n", 1, "var before the first stream"),
    ("", 1, "no stream in the program"),
    ("# nothing\n\n", 2, "no stream in the program"),
    (f"stream s 1000 0 0 0 {'00' * 10}\n", 1, "packet of 10 bytes"),
    ("stream s 1000 0 0\n", 1, "expected 6 fields"),
]


@pytest.mark.parametrize("text,line,what", BAD_PROGRAMS, ids=[b[2] for b in BAD_PROGRAMS])
@pytest.mark.parametrize("mode", ["send", "pcap"])
def test_bad_program_is_refused_with_its_line(gen_exe: Path, tmp_path: Path, text: str, line: int,
                                              what: str, mode: str) -> None:
    prog = tmp_path / "bad.txt"
    prog.write_text(text)
    out = tmp_path / "never.pcap"
    # send mode on an interface that does not exist: the program is checked first
    tail = ["--iface", "mlb-nosuch0"] if mode == "send" else ["--pcap-out", str(out), "--count", "5"]
    p = subprocess.run([str(gen_exe), "--program", str(prog), *tail], capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"{prog}:{line}: "), lines[0]
    assert what in lines[0]
    assert not out.exists()


def test_missing_interface_named(gen_exe: Path, tmp_path: Path) -> None:
    prog = tmp_path / "ok.txt"
    prog.write_text(STREAM + "\n")
    p = subprocess.run([str(gen_exe), "--program", str(prog), "--iface", "mlb-nosuch0"],
                       capture_output=True, text=True)
    assert p.returncode == 2 and p.stdout == ""
    assert "mlb-nosuch0" in p.stderr and "no such interface" in p.stderr


@pytest.mark.parametrize("argv,what", [
    ([], "--program FILE is required"),
    (["--program", "x"], "exactly one of --iface"),
    (["--program", "x", "--pcap-out", "y"], "--pcap-out needs --count"),
    (["--program", "x", "--iface", "mlb-nosuch0", "--mult", "0"], "--mult 0"),
    (["--program", "x", "--iface", "mlb-nosuch0", "--duration", "abc"], "--duration abc"),
    (["--program", "x", "--iface", "mlb-nosuch0", "--bogus"], "unknown option"),
])
def test_bad_flags(gen_exe: Path, argv: list[str], what: str) -> None:
    p = subprocess.run([str(gen_exe), *argv], capture_output=True, text=True)
    assert p.returncode == 2
    assert what in p.stderr


def test_localgen_raises_user_error_with_stderr(gen_exe: Path) -> None:
    from hil.traffic.localgen import run_generator

    prog = Program("p", (Stream("s", udp(), 10.0, count=1),), 1.0)
    with pytest.raises(UserError, match="mlb-nosuch0: no such interface"):
        run_generator(prog, None, "mlb-nosuch0", duration_s=1.0)


# ---------------------------------------------------------------- on a veth pair (root)

NS_A, NS_B = "mlb-tg-a", "mlb-tg-b"


def sh(*a: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(a), check=check, capture_output=True, text=True)


def rx_packets(ns: str) -> int:
    return int(sh("ip", "netns", "exec", ns, "cat", "/sys/class/net/eth0/statistics/rx_packets").stdout)


@pytest.fixture(scope="module")
def veth_pair(gen_exe: Path):
    from tests.host.topo import can_run, netns_list

    reason = can_run()
    if reason:
        pytest.skip(reason)
    for ns in netns_list("mlb-tg-"):  # a crashed earlier run
        sh("ip", "netns", "del", ns, check=False)
    try:
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "add", ns)
            # no IPv6 (router solicitations would add to the peer's rx_packets), no addresses
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "-n", NS_A, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
           "netns", NS_B)
        for ns, mac in ((NS_A, MAC_A), (NS_B, MAC_B)):
            sh("ip", "-n", ns, "link", "set", "eth0", "address", mac)
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
        yield NS_A, NS_B
    finally:
        for ns in (NS_A, NS_B):
            sh("ip", "netns", "del", ns, check=False)
        left = netns_list("mlb-tg")
        assert not left, f"namespaces left behind: {left}"


@pytest.mark.netns
def test_burst_peer_receives_exactly_what_was_sent(veth_pair: tuple[str, str]) -> None:
    from hil.traffic.localgen import run_generator

    a, b = veth_pair
    prog = Program("burst", (
        Stream("syn", tcp_syn(pad=10), 100_000.0, count=5000,
               vars=(Var("sport", 34, 2, 1024, 4095),), fix_ipv4=14, fix_l4=FixL4(14, 34, 6)),
        Stream("udp", udp(), 20_000.0, start_s=0.01, count=1234, fix_l4=FixL4(14, 34, 17)),
    ), duration_s=0.0)
    rx0 = rx_packets(b)
    res = run_generator(prog, a, "eth0", duration_s=None, timeout=60)
    assert res.stopped_by == "done"
    assert res.sent + res.failed == res.due == 6234
    assert [(s.name, s.sent + s.failed) for s in res.streams] == [("syn", 5000), ("udp", 1234)]
    assert rx_packets(b) - rx0 == res.sent


@pytest.mark.netns
def test_duration_sends_rate_times_duration(veth_pair: tuple[str, str]) -> None:
    from hil.traffic.localgen import run_generator

    a, b = veth_pair
    prog = Program("steady", (Stream("u", udp(), 10_000.0, vars=(Var("sp", 34, 2, 1, 60000),),
                                     fix_l4=FixL4(14, 34, 17)),), duration_s=1.0)
    rx0 = rx_packets(b)
    res = run_generator(prog, a, "eth0", duration_s=1.0, mult=2.0)  # 20 kpps
    assert res.stopped_by == "duration"
    assert res.due == 20_000  # packets due at t < 1 s: n = 0 .. 19999
    assert abs(res.sent - 20_000) <= 256  # one batch
    assert rx_packets(b) - rx0 == res.sent
    assert res.t_end_unix_ns > res.t_start_unix_ns


CAPTURE = r"""
import json, select, socket, struct, sys
ETH_P_ALL, SO_TIMESTAMPNS, PACKET_OUTGOING = 3, 35, 4
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.bind(("eth0", 0))
print("ready", flush=True)
frames = []
while True:
    r, _, _ = select.select([s, sys.stdin], [], [])
    if s in r:
        data, anc, _, addr = s.recvmsg(65535, 64)
        ts = 0
        for level, typ, val in anc:
            if level == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", val[:16])
                ts = sec * 1_000_000_000 + nsec
        frames.append({"pkttype": addr[2], "ts": ts, "hex": data.hex()})
    elif sys.stdin in r:
        break
print(json.dumps(frames), flush=True)
"""


@pytest.mark.netns
def test_taps_see_latency_probes_not_bulk(veth_pair: tuple[str, str]) -> None:
    from hil.traffic.localgen import run_generator

    a, b = veth_pair
    probe = Stream("probe", udp(dport=7777), 500.0, count=20, latency=True,
                   vars=(Var("id", 42, 4, 0, 0xFFFFFFFF),), fix_l4=FixL4(14, 34, 17))
    bulk = Stream("bulk", udp(dport=9999), 50_000.0, count=2000, fix_l4=FixL4(14, 34, 17))
    prog = Program("lat", (bulk, probe), duration_s=0.0)
    cap = subprocess.Popen(["ip", "netns", "exec", a, sys.executable, "-c", CAPTURE],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    try:
        assert cap.stdout.readline().strip() == "ready", cap.stderr.read()
        rx0 = rx_packets(b)
        res = run_generator(prog, a, "eth0", duration_s=None, timeout=60)
        out, err = cap.communicate(input="stop\n", timeout=30)
    finally:
        if cap.poll() is None:
            cap.kill()
            cap.wait()
    frames = json.loads(out.strip().splitlines()[-1])
    outgoing = [f for f in frames if f["pkttype"] == 4]
    probes = [f for f in outgoing if bytes.fromhex(f["hex"])[36:38] == (7777).to_bytes(2, "big")]
    bulks = [f for f in outgoing if bytes.fromhex(f["hex"])[36:38] == (9999).to_bytes(2, "big")]
    assert res.stream("probe").sent == 20
    assert [bytes.fromhex(f["hex"]) for f in probes] == [packet_at(probe, n) for n in range(20)]
    assert all(res.t_start_unix_ns <= f["ts"] <= res.t_end_unix_ns for f in probes)
    assert bulks == []  # the bulk socket bypasses the qdisc layer, where taps are fed
    assert rx_packets(b) - rx0 == res.sent


@pytest.mark.netns
def test_start_generator_stops_on_sigterm_with_its_counts(veth_pair: tuple[str, str]) -> None:
    import time

    from hil.traffic.localgen import start_generator

    a, b = veth_pair
    prog = Program("open", (Stream("u", udp(), 5_000.0, fix_l4=FixL4(14, 34, 17)),), duration_s=0.0)
    rx0 = rx_packets(b)
    with start_generator(prog, a, "eth0") as h:  # no duration, no count: runs until stopped
        time.sleep(0.3)
        assert h.running()
        res = h.stop()
    assert res.stopped_by == "signal"
    assert res.sent > 0 and abs(res.sent + res.failed - res.due) <= 256
    assert rx_packets(b) - rx0 == res.sent
    assert h.proc.returncode == 0


@pytest.mark.netns
def test_run_generator_timeout_ends_the_run(veth_pair: tuple[str, str]) -> None:
    from hil.traffic.localgen import start_generator

    a, _ = veth_pair
    prog = Program("open", (Stream("u", udp(), 1_000.0),), duration_s=0.0)
    h = start_generator(prog, a, "eth0")  # never ends on its own
    with pytest.raises(UserError, match="still running after 0.3 s"):
        h.wait(timeout=0.3)
    assert h.proc.poll() is not None
    assert not h._prog.exists()
