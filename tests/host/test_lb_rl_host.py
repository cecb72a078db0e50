"""lb_rl_host on real packets in a namespace testbed (layer-2 DSR), checked against captures
taken with AF_PACKET in the servers' namespaces and against the shm region read by the Python
mirror (simulator.shm). Run with ``python -m pytest -m netns tests/host`` as root."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.host import frames as F
from tests.host.topo import VIP, Topo, can_run, netns_list, pktio

pytestmark = pytest.mark.netns

PREFIX = "mlb-ht"
N_SERVERS = 3


@pytest.fixture(scope="module")
def binary() -> Path:
    reason = can_run()
    if reason:
        pytest.skip(reason)
    from hil.hostbin import host_binary

    return host_binary()


@pytest.fixture(scope="module")
def topo(binary: Path):
    for ns in netns_list(PREFIX + "-"):  # a crashed earlier run of this module
        subprocess.run(["ip", "netns", "del", ns], check=False)
    t = Topo(PREFIX, N_SERVERS)
    t.up()
    try:
        yield t
    finally:
        t.down()
        left = netns_list(PREFIX + "-")
        alive = [p.pid for p in t.procs if p.poll() is None]
        assert not left, f"namespaces left behind: {left}"
        assert not alive, f"processes left running: {alive}"


def lb_argv(topo: Topo, binary: Path, *extra: str, macs: bool = True) -> list[str]:
    argv = [str(binary), "--interface", "eth0", "--vip", VIP]
    for s in topo.servers:
        argv += ["--server", f"{topo.ip[s]}={topo.mac[s]}" if macs else topo.ip[s]]
    return argv + list(extra)


def start_lb(topo: Topo, binary: Path, *extra: str, macs: bool = True):
    p = topo.start(topo.lb, lb_argv(topo, binary, *extra, macs=macs))
    p.wait_line(lambda ln: ln.startswith("lb_rl_host: ready"), timeout=5)
    return p


@pytest.fixture(autouse=True)
def _no_lb_outlives_its_test(topo: Topo):
    """Kill what a test started and left running (an assertion before its p.stop()): a second
    lb_rl_host on the LB's interface would forward every frame of the next tests again."""
    started = len(topo.procs)
    yield
    for p in topo.procs[started:]:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=5)


def _first_frame(reg, timeout_s: float = 2.0):
    """The region's first msg_out frame: "ready" is printed before the first step publishes."""
    t_end = time.monotonic() + timeout_s
    f = reg.latest_out()
    while f is None and time.monotonic() < t_end:
        time.sleep(0.01)
        f = reg.latest_out()
    return f


def exchange(topo: Topo, frames: list[bytes], tmp: Path, settle: float = 0.3) -> dict[int, list[bytes]]:
    """Send frames from the client; return the frames each server captured (by server index)."""
    tmp.mkdir(parents=True, exist_ok=True)
    stop = tmp / "stop"
    stop.unlink(missing_ok=True)
    caps = []
    for i, s in enumerate(topo.servers):
        ready, out = tmp / f"ready{i}", tmp / f"cap{i}"
        ready.unlink(missing_ok=True)
        out.unlink(missing_ok=True)
        caps.append((ready, out, subprocess.Popen(
            ["ip", "netns", "exec", s, sys.executable, str(pktio()), "capture", "--iface", "eth0",
             "--vip", VIP, "--out", str(out), "--ready", str(ready), "--stop", str(stop),
             "--lb-mac", topo.mac[topo.lb], "--timeout", "20"])))
    try:
        t_end = time.monotonic() + 5
        while not all(r.exists() for r, _, _ in caps) and time.monotonic() < t_end:
            time.sleep(0.02)
        fr = tmp / "frames.hex"
        fr.write_text("\n".join(f.hex() for f in frames) + "\n")
        subprocess.run(["ip", "netns", "exec", topo.client, sys.executable, str(pktio()), "send",
                        "--iface", "eth0", "--frames", str(fr), "--pace", "200"],
                       check=True, capture_output=True)
        time.sleep(settle)
        stop.touch()
        got = {}
        for i, (_, out, p) in enumerate(caps):
            p.wait(timeout=10)
            got[i] = [bytes.fromhex(ln) for ln in out.read_text().split()]
        return got
    finally:
        for _, _, p in caps:
            if p.poll() is None:
                p.kill()
                p.wait()


def syn_flows(topo: Topo, n: int, base: int = 0) -> list[bytes]:
    """n SYNs of distinct flows (source 198.18.201.x, ports from 1024 + base)."""
    c, lb = topo.client, topo.lb
    out = []
    for k in range(base, base + n):
        src = f"198.18.201.{1 + k % 250}"
        out.append(F.tcp_frame(topo.mac[lb], topo.mac[c], src, VIP, 1024 + k, 80, F.TCP_SYN, seq=k))
    return out


def usr1_counters(p, timeout: float = 3.0) -> dict:
    n0 = len(p.out)
    os.kill(p.pid, signal.SIGUSR1)
    ln = p.wait_line(lambda ln: ln.startswith("{") and '"sigusr1"' in ln, timeout=timeout, start=n0)
    return json.loads(ln)


# --------------------------------------------------------------------------------------------


def test_bad_input_exits_2_names_flag_leaves_nothing(topo: Topo, binary: Path, tmp_path: Path) -> None:
    shm = tmp_path / "mlb-ht-bad.shm"
    base = ["--shm", str(shm)]
    s0, s1, s2 = (f"{topo.ip[s]}={topo.mac[s]}" for s in topo.servers)
    cases = [
        (["--interface", "mlb-nosuch0", "--vip", VIP, "--server", s0], "--interface mlb-nosuch0"),
        (["--interface", "eth0", "--vip", VIP, "--server", "198.18.200.10=02:00:zz:00:00:01"],
         "--server 198.18.200.10=02:00:zz:00:00:01"),
        (["--interface", "eth0", "--vip", VIP, "--server", s0, "--server", s1, "--weights", "1,2,3"],
         "--weights"),
        (["--interface", "eth0", "--vip", "198.19.200", "--server", s0], "--vip 198.19.200"),
        (["--interface", "eth0", "--vip", VIP, "--server", s0, "--policy", "fastest"], "--policy fastest"),
        # one more than the core's 4096 servers (LB_RL_MAX_SERVERS)
        (["--interface", "eth0", "--vip", VIP,
          *sum((["--server", f"198.{18 + i // 65536}.{(i >> 8) & 255}.{i & 255}=02:00:00:00:{i >> 8:02x}:{i & 255:02x}"]
                for i in range(4097)), [])], "more than 4096 servers"),
        # no ARP answer: names the address
        (["--interface", "eth0", "--vip", VIP, "--server", s0, "--server", "198.18.200.99"],
         "--server 198.18.200.99"),
    ]
    for args, needle in cases:
        p = subprocess.run(["ip", "netns", "exec", topo.lb, str(binary), *args, *base],
                           capture_output=True, text=True, timeout=10)
        assert p.returncode == 2, (args, p.returncode, p.stderr)
        assert needle in p.stderr, (needle, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not shm.exists(), f"{shm} created by a failing run {args}"
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("rx_ring", ["block", "frame"])
def test_dsr_forwarding_and_signals(topo: Topo, binary: Path, tmp_path: Path, rx_ring: str) -> None:
    stats = tmp_path / "stats.json"
    # no MACs given: the servers are resolved by ARP
    p = start_lb(topo, binary, "--policy", "sed", "--seed", "1", "--stats-json", str(stats),
                 "--rx-ring", rx_ring, macs=False)
    ready = p.out[0]
    assert f"mac={topo.mac[topo.lb]}" in ready
    for i, s in enumerate(topo.servers):
        assert f"{i}:{topo.ip[s]}={topo.mac[s]}" in ready, ready

    c, lb = topo.client, topo.lb
    n_flows = 300
    seq = [F.TCP_SYN, F.TCP_ACK, F.TCP_PSH | F.TCP_ACK, F.TCP_FIN | F.TCP_ACK]
    sent: list[bytes] = []
    for step, flags in enumerate(seq):  # SYNs of every flow first, then the ACKs, ...
        for k in range(n_flows):
            src = f"198.18.201.{1 + k % 250}"
            data = b"x" * (k % 50) if flags & F.TCP_PSH else b""
            sent.append(F.tcp_frame(topo.mac[lb], topo.mac[c], src, VIP, 20000 + k, 80, flags,
                                    data=data, seq=1000 + step))
    udp = [F.eth(topo.mac[lb], topo.mac[c], F.ipv4(topo.ip[c], VIP, 17, F.udp(topo.ip[c], VIP, 5000 + k, 53, b"q")))
           for k in range(20)]
    other = [F.tcp_frame(topo.mac[lb], topo.mac[c], topo.ip[c], "198.18.200.99", 4000 + k, 80, F.TCP_SYN)
             for k in range(10)]
    got = exchange(topo, sent + udp + other, tmp_path / "x")

    index = {f[12:]: j for j, f in enumerate(sent + udp)}
    seen = Counter()
    server_of_flow: dict[tuple, set[int]] = defaultdict(set)
    for i, frames in got.items():
        srv = topo.servers[i]
        for f in frames:
            assert f[:6] == F.mac_bytes(topo.mac[srv]), "destination MAC is not the server's"
            assert f[6:12] == F.mac_bytes(topo.mac[lb]), "source MAC is not the LB's"
            assert f[30:34] == bytes([198, 19, 200, 1]), "a non-VIP frame was forwarded"
            j = index.get(f[12:])
            assert j is not None, "IP/TCP bytes changed on the way"
            seen[j] += 1
            server_of_flow[F.flow_key(f)].add(i)
    assert sum(seen.values()) == len(sent) + len(udp) and max(seen.values()) == 1
    assert all(len(v) == 1 for v in server_of_flow.values()), "a flow was split over servers"
    per_server = Counter(next(iter(v)) for k, v in server_of_flow.items() if k[3] == 80)
    assert len(per_server) == N_SERVERS and min(per_server.values()) >= n_flows // 6, per_server

    cnt = usr1_counters(p)
    n_vip = len(sent) + len(udp)
    assert cnt["vip_frames"] == n_vip and cnt["forwarded"] == n_vip
    assert cnt["dropped_no_server"] == 0 and cnt["malformed"] == 0
    assert cnt["core"]["packets"] == n_vip
    assert cnt["core"]["new_flows"] == n_flows
    assert sum(s["n_flow_new"] for s in cnt["servers"]) == n_flows
    assert all(s["n_flow_on"] == 0 for s in cnt["servers"])  # every flow saw its FIN
    for i, s in enumerate(cnt["servers"]):
        assert s["forwarded"] == len(got[i]) == s["packets"]
    assert p.stop(signal.SIGTERM) == 0
    final = json.loads(stats.read_text())
    assert final["event"] == "exit" and final["vip_frames"] == n_vip
    assert any(ln.startswith("{") and '"exit"' in ln for ln in p.out)


def test_wcmp_weights_chi_square(topo: Topo, binary: Path, tmp_path: Path) -> None:
    from scipy.stats import chisquare

    p = start_lb(topo, binary, "--policy", "wcmp", "--weights", "1,2,3", "--seed", "7")
    n = 3000
    got = exchange(topo, syn_flows(topo, n), tmp_path / "x")
    counts = [len(got[i]) for i in range(N_SERVERS)]
    assert sum(counts) == n, counts
    expected = [n * w / 6 for w in (1, 2, 3)]
    stat, pval = chisquare(counts, expected)
    # significance level 0.001: reject "split is 1:2:3" only if p < 0.001
    assert pval > 0.001, (counts, expected, stat, pval)
    assert p.stop() == 0


def test_shm_region_weights_and_fallback(topo: Topo, binary: Path, tmp_path: Path) -> None:
    from simulator.shm import ShmRegion

    path = tmp_path / "mlb-ht-lb.shm"
    step, fallback = 0.05, 0.5
    p = start_lb(topo, binary, "--policy", "wcmp", "--seed", "3", "--shm", str(path),
                 "--step", str(step), "--fallback", str(fallback))
    reg = ShmRegion.open(path)
    try:
        assert reg.max_servers == 64  # as VPP's lb_rl VIPs (LB_RL_DEFAULT_MAX_SERVERS)
        f1 = _first_frame(reg)
        time.sleep(4 * step)
        f2 = reg.latest_out()
        assert f1 is not None and f2 is not None and f2.seq >= f1.seq + 2, "frames do not advance"
        assert f2.active == 0b111

        # phase A: static weights 1:1:1, counters match what was sent and captured
        got = exchange(topo, syn_flows(topo, 200, base=0), tmp_path / "a")
        time.sleep(3 * step)
        fa = reg.latest_out()
        assert fa.counters["packets"] == 200 and fa.counters["new_flows"] == 200
        assert [int(x) for x in fa.servers["n_flow_new"][:N_SERVERS]] == [len(got[i]) for i in range(N_SERVERS)]
        assert [int(x) for x in fa.servers["packets"][:N_SERVERS]] == [len(got[i]) for i in range(N_SERVERS)]

        # phase B: the agent sends [0, 0, 1] every 0.1 s: new flows all go to server 2
        stop_writer = threading.Event()
        last_write = [0.0]
        seqs: list[int] = []

        def writer() -> None:
            while not stop_writer.is_set():
                seqs.append(reg.write_weights([0.0, 0.0, 1.0], now_s=time.monotonic()))
                last_write[0] = time.monotonic()
                stop_writer.wait(0.1)

        th = threading.Thread(target=writer, daemon=True)
        th.start()
        try:
            t_end = time.monotonic() + 2
            while time.monotonic() < t_end and not (seqs and reg.status().in_seq_applied >= seqs[0]):
                time.sleep(0.02)
            st = reg.status()
            assert st.in_seq_applied >= seqs[0] and not st.fallback_active
            got = exchange(topo, syn_flows(topo, 200, base=1000), tmp_path / "b")
            assert [len(got[i]) for i in range(N_SERVERS)] == [0, 0, 200]
            applied_before = reg.status().in_seq_applied
            time.sleep(0.3)
            assert reg.status().in_seq_applied > applied_before, "in_seq_applied does not advance"
            fb = reg.latest_out()
            assert list(fb.servers["weight"][:N_SERVERS]) == [0.0, 0.0, 1.0]
        finally:
            stop_writer.set()
            th.join()

        # phase C: the agent went silent -> static weights after the fallback timeout
        t_end = time.monotonic() + 3
        while time.monotonic() < t_end and not reg.status().fallback_active:
            time.sleep(0.01)
        t_fb = time.monotonic()
        st = reg.status()
        assert st.fallback_active and st.fallback_count >= 1
        silent = t_fb - last_write[0]
        assert fallback - 0.05 <= silent <= fallback + 4 * step + 0.2, silent
        got = exchange(topo, syn_flows(topo, 300, base=2000), tmp_path / "c")
        counts = [len(got[i]) for i in range(N_SERVERS)]
        assert sum(counts) == 300 and min(counts) >= 50, counts
    finally:
        reg.close()
        rc = p.stop()  # also when an assertion failed: a second LB would forward every frame again
    assert rc == 0


def test_shm_region_of_1024_servers(topo: Topo, binary: Path, tmp_path: Path) -> None:
    """--max-servers 1024: a layout-3 region with a 16-word present bitmap and 8 KiB msg_in
    frames; the agent's 1024 weights are applied, one for an absent server is rejected."""
    from simulator.shm import W_ABSENT_SERVER, ShmRegion

    path = tmp_path / "mlb-ht-lb1024.shm"
    step = 0.05
    p = start_lb(topo, binary, "--policy", "wcmp", "--seed", "3", "--shm", str(path),
                 "--step", str(step), "--fallback", "0", "--max-servers", "1024",
                 "--reservoir-size", "4")
    reg = ShmRegion.open(path)
    try:
        assert (reg.max_servers, reg.reservoir_slots, reg.in_frame_stride) == (1024, 4, 8256)
        t_end = time.monotonic() + 2
        while reg.latest_out() is None and time.monotonic() < t_end:
            time.sleep(0.02)
        f = reg.latest_out()
        assert f is not None and f.present == [0, 1, 2] and f.n_active == 3
        assert f.active_words.shape == (16,)

        def applied(seq: int) -> object:
            t_end = time.monotonic() + 2
            while time.monotonic() < t_end and reg.status().in_seq_seen < seq:
                time.sleep(0.02)
            return reg.status()

        w = np.zeros(1024)
        w[700] = 1.0  # server 700 is not present: the whole vector is rejected
        w[2] = 1.0
        st = applied(reg.write_weights(w, now_s=time.monotonic()))
        assert st.last_verdict == W_ABSENT_SERVER and st.weights_rejected == 1
        w[700] = 0.0
        seq = reg.write_weights(w, now_s=time.monotonic())
        st = applied(seq)
        assert st.in_seq_applied == seq
        got = exchange(topo, syn_flows(topo, 100, base=5000), tmp_path / "w")
        assert [len(got[i]) for i in range(N_SERVERS)] == [0, 0, 100]
    finally:
        reg.close()
        rc = p.stop()
    assert rc == 0


def ip_in_receives(ns: str) -> int:
    """InReceives of the namespace's IP stack (/proc/net/snmp)."""
    lines = [ln.split() for ln in subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
                                                  capture_output=True, text=True, check=True)
             .stdout.splitlines() if ln.startswith("Ip:")]
    return int(dict(zip(lines[0][1:], lines[1][1:]))["InReceives"])


@pytest.mark.parametrize("tx_mode", ["copy", "ring"])
def test_vip_dropped_by_lb_stack_still_forwarded(topo: Topo, binary: Path, tmp_path: Path,
                                                 tx_mode: str) -> None:
    """With an nftables netdev ingress drop of the VIP in the LB namespace (the deployment recipe
    of vpp_plugin/host/README.md) the LB's own IP stack sees no VIP frame while lb_rl_host (an
    ETH_P_ALL tap, before that hook) still forwards every one; both tx paths."""
    import shutil

    if not shutil.which("nft"):
        pytest.skip("nft not installed (apt-get install nftables)")
    rule = (f'table netdev mlb_ht_lb {{\n chain vip_in {{\n  type filter hook ingress device "eth0" '
            f'priority -500; policy accept;\n  ip daddr {VIP} drop\n }}\n}}\n')
    subprocess.run(["ip", "netns", "exec", topo.lb, "nft", "-f", "-"], input=rule, text=True,
                   check=True, capture_output=True)
    p = None
    try:
        p = start_lb(topo, binary, "--policy", "ecmp", "--tx-mode", tx_mode)
        n = 200
        sent = syn_flows(topo, n)
        # a VLAN-tagged VIP frame (id 5): not an untagged IPv4 frame, never forwarded
        c, lb = topo.client, topo.lb
        tagged = (F.mac_bytes(topo.mac[lb]) + F.mac_bytes(topo.mac[c]) + b"\x81\x00\x00\x05"
                  + sent[0][12:])
        in0 = ip_in_receives(topo.lb)
        got = exchange(topo, sent + [tagged], tmp_path / "x")
        in1 = ip_in_receives(topo.lb)
        assert sum(len(v) for v in got.values()) == n
        assert sorted(f[12:] for v in got.values() for f in v) == sorted(f[12:] for f in sent)
        assert in1 - in0 < 10, f"the LB's IP stack received {in1 - in0} packets"
        cnt = usr1_counters(p)
        assert cnt["forwarded"] == n and cnt["vip_frames"] == n and cnt["tx_errors"] == 0
        assert p.stop() == 0
    finally:
        if p is not None and p.popen.poll() is None:
            p.stop()
        subprocess.run(["ip", "netns", "exec", topo.lb, "nft", "delete", "table", "netdev",
                        "mlb_ht_lb"], check=False, capture_output=True)
