"""The TRex driver (hil/trex): a traffic program compiled by both TRex clients, each in its own
venv and process, then rebuilt here packet by packet from the streams' JSON alone (scapy sets
the fields and checksums) and compared with ``hil.traffic.program.packet_at``; the pipe
protocol's errors; ``connect`` failing within 5 s with nothing to talk to.

Without a TRex server, nothing here sends a packet. ``test_trial_on_server`` (marker ``trex``)
runs a 1-s trial when ``TREX_SERVER=HOST[:PORT]`` is set (``TREX_CLIENT``, ``TREX_TX_PORT``,
``TREX_RX_PORT`` choose the client and ports; defaults official, 0, 1).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from hil.trex import venv
from tests.hil.stl_rebuild import rebuild
from hil.trex.client import DRIVER, TrexDriver, compile_streams, connect, parse_server
from hil.traffic.program import FixL4, Program, Stream, Var, packet_at
from simulator.config import UserError

CLIENTS = ("stl", "official")
TREX_MODULES = {"trex", "trex_stl_lib", "lbr_trex_client"}  # top-level names of the clients
MULT = 2.0
N_PKTS = 300

IP_BASE = int.from_bytes(bytes([198, 18, 0, 10]), "big")


def _program() -> Program:
    tcp = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                / IP(src="198.18.0.10", dst="198.19.0.1", id=7)
                / TCP(sport=40000, dport=80, flags="S", seq=1000) / (b"x" * 10))
    udp = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
                / IP(src="198.18.0.20", dst="198.19.0.1") / UDP(sport=5000, dport=53) / (b"q" * 18))
    probe = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:03")
                  / IP(src="198.18.0.30", dst="198.19.0.2") / UDP(sport=7000, dport=7001) / (b"\0" * 20))
    return Program(name="trex-driver-test", duration_s=1.0, streams=(
        # IP src over 7 values and TCP sport over 5 (coprime: 35 combinations), steps 3 and 2,
        # neither starting at its minimum.
        Stream("tcp", tcp, rate_pps=1500.0,
               vars=(Var("ip_src", 26, 4, IP_BASE, IP_BASE + 6, step=3, init=IP_BASE + 2),
                     Var("sport", 34, 2, 40000, 40004, step=2, init=40003)),
               fix_ipv4=14, fix_l4=FixL4(14, 34, 6)),
        Stream("udp", udp, rate_pps=250.0, start_s=0.25, count=1000,
               vars=(Var("ip_dst", 30, 4, 0xC6130001, 0xC6130003, step=1, init=0xC6130002),),
               fix_ipv4=14, fix_l4=FixL4(14, 34, 17)),
        Stream("probe", probe, rate_pps=10.0, latency=True),
    ))


PROGRAM = _program()


def _python(client: str):
    try:
        return venv.client_python(client)
    except UserError as e:
        pytest.skip(f"no venv for the {client!r} TRex client: {e}")


@pytest.fixture(scope="module", params=CLIENTS)
def driver(request):
    _python(request.param)
    with TrexDriver(request.param) as drv:
        yield drv


@pytest.fixture(scope="module")
def compiled() -> dict[str, list[dict]]:
    """Both clients' streams for PROGRAM at MULT (a client without a venv is left out)."""
    out = {}
    for c in CLIENTS:
        try:
            venv.client_python(c)
        except UserError:
            continue
        out[c] = compile_streams(PROGRAM, c, mult=MULT)
    return out


def _streams_of(compiled: dict, client: str) -> list[dict]:
    if client not in compiled:
        pytest.skip(f"no venv for the {client!r} TRex client")
    return compiled[client]


# ---- (a) each client's streams are the program's packets, rates and timing -----------------

@pytest.mark.parametrize("client", CLIENTS)
def test_compiled_streams_are_the_program(compiled, client):
    streams = _streams_of(compiled, client)
    assert len(streams) == len(PROGRAM.streams)
    for k, (s, js) in enumerate(zip(PROGRAM.streams, streams)):
        assert base64.b64decode(js["packet"]["binary"]) == s.packet
        rebuilt = rebuild(js, N_PKTS)
        for n, got in enumerate(rebuilt):
            assert got == packet_at(s, n), f"{client} stream {s.name!r} packet {n}"
        if s.vars:  # the checksums really changed with the fields
            assert len({p[24:26] for p in rebuilt}) > 1
        mode = js["mode"]
        # loads scale every stream but the latency probes
        want = s.rate_pps if s.latency else s.rate_pps * MULT
        assert mode["rate"] == {"type": "pps", "value": pytest.approx(want)}
        if s.count:
            assert mode["type"] == "single_burst" and mode["total_pkts"] == s.count
        else:
            assert mode["type"] == "continuous"
        assert js["isg"] == pytest.approx(s.start_s * 1e6)
        assert js["flags"] == 3  # the template's source and destination MACs go on the wire
        assert js["enabled"] and js["self_start"]
        fs = js["flow_stats"]
        if s.latency:
            assert fs["enabled"] and fs["rule_type"] == "latency" and fs["stream_id"] == k + 1
        else:
            assert not fs["enabled"]


def test_tcp_stream_cycles_through_all_combinations(compiled):
    """The two coprime vars give 7 * 5 = 35 distinct (IP src, sport) pairs per cycle."""
    for client, streams in compiled.items():
        pkts = rebuild(streams[0], 70)
        pairs = [(p[26:30], p[34:36]) for p in pkts]
        assert len(set(pairs[:35])) == 35 and pairs[35:] == pairs[:35], client
        assert int.from_bytes(pkts[0][26:30], "big") == IP_BASE + 2
        assert int.from_bytes(pkts[0][34:36], "big") == 40003
    if not compiled:
        pytest.skip("no TRex client venv")


# ---- (b) both clients describe the same streams --------------------------------------------

def _normalised(js: dict) -> dict:
    ins = [{k: v for k, v in i.items() if k not in ("split_to_cores", "next_var")}
           for i in js["vm"]["instructions"]]
    fs = {k: js["flow_stats"].get(k) for k in ("enabled", "stream_id", "rule_type")}
    return {"packet": js["packet"]["binary"], "mode": js["mode"], "isg": js["isg"],
            "flags": js["flags"], "ins": ins, "flow_stats": fs}


def test_both_clients_agree(compiled):
    if len(compiled) < 2:
        pytest.skip(f"needs both TRex client venvs (have: {sorted(compiled)})")
    stl, off = compiled["stl"], compiled["official"]
    assert [_normalised(s) for s in stl] == [_normalised(s) for s in off]
    for a, b in zip(stl, off):
        assert rebuild(a, N_PKTS) == rebuild(b, N_PKTS)
    # Fields only one client writes: the official client's vars say how they split over cores.
    assert all(i["split_to_cores"] is True for s in off for i in s["vm"]["instructions"]
               if i["type"] == "flow_var")
    assert not any("split_to_cores" in i for s in stl for i in s["vm"]["instructions"])


def test_no_trex_module_in_our_process(compiled):
    import scapy
    import simpy
    tops = {name.split(".")[0] for name in sys.modules}
    assert not tops & TREX_MODULES
    for mod in (scapy, simpy):  # still ours, not a client's bundled copy
        assert "trex" not in (mod.__file__ or "")


# ---- the driver process and its protocol ---------------------------------------------------

def test_hello(driver):
    h = driver.hello()
    assert h["client"] == driver.client
    assert h["client_version"] == venv.CLIENTS[driver.client].split("==")[1]
    assert h["python"].startswith("3.") and h["scapy"][:1].isdigit()
    if driver.client == "official":
        assert h["scapy"] == "2.4.3" and "lbr_trex_client" in h["scapy_path"]


def test_unknown_command_and_bad_arguments(driver):
    ans = driver.call("frobnicate", 10.0)
    assert ans["ok"] is False and "unknown command 'frobnicate'" in ans["error"]
    with pytest.raises(UserError, match=r"frobnicate: unknown command"):
        driver.request("frobnicate", 10.0)
    assert driver.call("compile", 10.0)["ok"] is False  # no program
    assert "version" in driver.call("compile", 10.0, program={"streams": []})["error"]
    bad = driver.call("compile", 10.0, program={"version": 1, "streams": [{"name": "x"}]})
    assert bad["ok"] is False and "missing 'packet'" in bad["error"]
    prog = json.loads(PROGRAM.to_json())
    assert "mult" in driver.call("compile", 10.0, program=prog, mult=-1)["error"]
    prog["streams"][0]["vars"][0]["size"] = 3
    assert driver.call("compile", 10.0, program=prog)["ok"] is False
    assert "not connected" in driver.call("trial", 10.0, program=prog, duration_s=1,
                                          tx_ports=[0])["error"]
    assert driver.call("connect", 10.0, port=4501)["ok"] is False  # no host
    assert driver.alive and driver.hello()["client"] == driver.client


def test_request_timeout_kills_the_driver():
    _python("official")
    with socket.socket() as silent, TrexDriver("official") as drv:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # accepts TCP, never answers: the driver's connect waits its 5 s
        drv.hello()
        t0 = time.monotonic()
        with pytest.raises(UserError, match=r"no answer to 'connect' within 0.5 s; driver killed"):
            drv.call("connect", 0.5, host="127.0.0.1", port=silent.getsockname()[1], timeout_s=5)
        assert time.monotonic() - t0 < 2.0
        assert not drv.alive
        with pytest.raises(UserError, match="closed"):
            drv.hello()


# ---- (c) connect fails clearly within 5 s ---------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("client", CLIENTS)
def test_connect_without_server_fails_within_5s(client):
    _python(client)
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(UserError) as ei:
        connect(f"127.0.0.1:{port}", client=client)
    elapsed = time.monotonic() - t0
    assert f"no TRex server answering at 127.0.0.1:{port}" in str(ei.value)
    assert "refused" in str(ei.value).lower()
    assert elapsed < 5.0, f"took {elapsed:.2f} s"


def test_connect_to_a_silent_port_gives_up_in_time():
    """Something accepts TCP but never answers the RPC: the driver's own deadline ends it."""
    _python("official")
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        port = srv.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(UserError, match=f"no TRex server answering at 127.0.0.1:{port}"):
            connect(f"127.0.0.1:{port}", timeout_s=3.0)
        assert time.monotonic() - t0 < 3.0 + 1.0


# ---- (d) server addresses ------------------------------------------------------------------

@pytest.mark.parametrize("text,expected", [
    ("10.0.0.5", ("10.0.0.5", 4501)), ("10.0.0.5:4600", ("10.0.0.5", 4600)),
    ("trex-host", ("trex-host", 4501)), (" trex-host:1 ", ("trex-host", 1)),
    ("[::1]:4501", ("::1", 4501)), ("[fe80::1]", ("fe80::1", 4501)),
])
def test_parse_server(text, expected):
    assert parse_server(text) == expected


@pytest.mark.parametrize("text,match", [
    ("", "empty"), (":4501", "bad host"), ("host:", "missing port"), ("host:0", "1..65535"),
    ("host:65536", "1..65535"), ("host:45x", "1..65535"), ("::1", "brackets"),
    ("[::1", "expected"), ("[::1]x", "expected"), ("a b:1", "bad host"), ("user@h:1", "bad host"),
])
def test_parse_server_errors(text, match):
    with pytest.raises(UserError, match=match):
        parse_server(text)


# ---- the venvs -----------------------------------------------------------------------------

def test_venv_is_reused():
    py = _python("official")
    t0 = time.monotonic()
    assert venv.client_python("official") == py
    assert time.monotonic() - t0 < 1.0
    assert (py.parent.parent / ".marllb-ready").read_text().strip() == venv.CLIENTS["official"]


def test_venv_errors(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="unknown TRex client 'nope'"):
        venv.client_python("nope")
    monkeypatch.setattr(venv, "VENV_ROOT", tmp_path)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with pytest.raises(UserError, match=r"'stl' TRex client venv failed: /bin/false -m venv"):
        venv.client_python("stl")
    t0 = time.monotonic()
    with pytest.raises(UserError, match="earlier attempt"):  # not retried at once
        venv.client_python("stl")
    assert time.monotonic() - t0 < 1.0


# ---- with a TRex server --------------------------------------------------------------------

@pytest.mark.trex
def test_trial_on_server():
    server = os.environ.get("TREX_SERVER")
    if not server:
        pytest.skip("set TREX_SERVER=HOST[:PORT] to run a trial on a TRex server")
    client = os.environ.get("TREX_CLIENT", "official")
    tx, rx = int(os.environ.get("TREX_TX_PORT", "0")), int(os.environ.get("TREX_RX_PORT", "1"))
    _python(client)
    pkt = bytes(Ether() / IP(src="198.18.0.1", dst="198.19.0.1") / UDP(sport=1025, dport=12)
                / (b"x" * 18))
    program = Program("trial-smoke", duration_s=1.0, streams=(
        Stream("udp", pkt, rate_pps=1000.0,
               vars=(Var("sport", 34, 2, 1025, 1088),), fix_ipv4=14, fix_l4=FixL4(14, 34, 17)),
        Stream("lat", pkt, rate_pps=100.0, latency=True),
    ))
    with connect(server, client=client) as drv:
        res = drv.trial(program, duration_s=1.0, tx_ports=[tx], rx_ports=[rx])
    sent, got = res["ports"][str(tx)], res["ports"][str(rx)]
    assert sent["opackets"] > 0
    assert sent["opackets"] == pytest.approx(1100, rel=0.2)  # 1 s at 1000 + 100 pps
    assert 0 <= got["ipackets"] <= sent["opackets"] * 1.01 + 10  # nothing received from nowhere
    lat = res["latency"]["2"]
    assert lat["stream"] == "lat" and lat["tx_port"] == tx


# ---- trial orchestration, against a stand-in for STLClient ---------------------------------

_FAKE_TRIAL = r'''
import json, runpy, sys
drv_mod = runpy.run_path(sys.argv[1])
calls = []

class FakeClient:
    def __getattr__(self, name):
        def f(*a, **k):
            calls.append([name, sorted(k)] if name != "add_streams" else
                         [name, k["ports"], [s.to_json()["flow_stats"].get("stream_id") for s in a[0]]])
            if name == "get_port_count":
                return 2
            if name == "get_stats":
                return {0: {"opackets": 3000, "obytes": 192000, "ipackets": 0, "ibytes": 0},
                        1: {"opackets": 0, "obytes": 0, "ipackets": 2990, "ibytes": 191360},
                        "latency": {"global": {"old_flow": 0, "bad_hdr": 0},
                                    3: {"err_cntrs": {"dropped": 0}, "latency": {
                                        "total_min": 5.0, "average": 7.5, "total_max": 20,
                                        "jitter": 1, "histogram": {10: 19, 20: 1}}}},
                        "flow_stats": {3: {"tx_pkts": {0: 20, "total": 20},
                                           "rx_pkts": {1: 20, "total": 20}}}}
        return f

d = drv_mod["Driver"](sys.argv[2])
d.client, d.server = FakeClient(), "fake:4501"
ans, _ = d.handle(sys.stdin.read())
print(json.dumps({"answer": ans, "calls": calls}))
'''


@pytest.mark.parametrize("client", CLIENTS)
def test_trial_sequence_with_a_stand_in_client(client):
    """The driver's trial (reset, ramp-up to completion, streams per tx port with their own
    pg_ids, clear, timed start, wait, stats) and its answer, with a recording stand-in for the
    connected STLClient (run in the client's venv)."""
    py = _python(client)
    ramp = Stream("warm", PROGRAM.streams[1].packet, rate_pps=100.0, count=10)
    prog = Program("p", PROGRAM.streams, 1.0, ramp_up=(ramp,))
    req = json.dumps({"cmd": "trial", "args": {"program": json.loads(prog.to_json()), "mult": 2,
                                               "duration_s": 1.5, "tx_ports": [0],
                                               "rx_ports": [1], "ramp_up": True}})
    p = subprocess.run([str(py), "-I", "-c", _FAKE_TRIAL, str(DRIVER), client], input=req,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    ans, calls = out["answer"], out["calls"]
    assert ans["ok"], ans
    assert [c[0] for c in calls] == [
        "get_port_count", "reset", "add_streams", "start", "wait_on_traffic",
        "remove_all_streams", "add_streams", "clear_stats", "start", "wait_on_traffic",
        "get_stats"]
    assert calls[2] == ["add_streams", [0], [None]]  # ramp-up: no flow stats
    assert calls[6] == ["add_streams", [0], [None, None, 3]]  # the latency probe: pg_id 3
    assert "duration" in calls[8][1]
    assert ans["ports"]["0"]["opackets"] == 3000 and ans["ports"]["0"]["tx_pps"] == 2000
    assert ans["ports"]["1"]["ipackets"] == 2990
    assert ans["latency"]["3"] == {
        "stream": "probe", "tx_port": 0, "min_us": 5.0, "avg_us": 7.5, "max_us": 20,
        "jitter_us": 1, "histogram": {"10": 19, "20": 1}, "hdrh": None,
        "err_cntrs": {"dropped": 0}, "tx_pkts": {"0": 20, "total": 20},
        "rx_pkts": {"1": 20, "total": 20}}
