"""Traffic profiles: validation with clear errors, compilation to streams whose packets scapy
reads back as the flows the profile describes, and profiles derived from a simulator config
and from a simulated run's pcap (checked against the simulator's own packets)."""

from __future__ import annotations

import collections
import math
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from hil.traffic.derive import profile_from_config, profile_from_pcap
from hil.traffic.profile import (PROBE_IP_ID, compile_profile, load_profile, parse_profile,
                                 split_tuples)
from hil.traffic.program import Program, packet_at
from simulator.config import ConfigError, UserError, parse_config

LB_MAC, GEN_MAC = "02:6d:70:66:00:02", "02:6d:70:66:00:01"


def _compile(data: dict) -> Program:
    return compile_profile(parse_profile(data), dst_mac=LB_MAC, src_mac=GEN_MAC)


def _checksums_ok(raw: bytes) -> bool:
    p = Ether(raw)
    q = p.copy()
    del q[IP].chksum
    l4 = TCP if TCP in q else UDP
    del q[l4].chksum
    q = Ether(bytes(q))
    return p[IP].chksum == q[IP].chksum and p[l4].chksum == q[l4].chksum


def test_split_tuples_gives_coprime_counts_and_names_neighbours():
    for n in (1, 7, 1000, 10_000, 100_000, 1_000_000, 256 * 64_511):
        a, b = split_tuples(n, 32_768)
        assert a * b == n and math.gcd(a, b) == 1 and a <= 32_768 and b <= 64_512
    with pytest.raises(ValueError, match="e.g."):
        split_tuples(65_536, 32_768)  # 2^16: no coprime split with ports <= 64,512


def test_established_profile_cycles_its_flows_after_a_syn_ramp_up():
    prog = _compile({"vip": "198.19.210.1", "vip_port": 8080, "streams": [
        {"kind": "tcp_established", "flows": 1000, "rate_pps": 50_000, "frame_bytes": 128}]})
    (syn,), (ack,) = prog.ramp_up, prog.streams
    assert syn.count == 1000 and ack.count == 0 and prog.info["flows"] == 1000
    syn_tuples = []
    for n in range(1000):
        p = Ether(packet_at(syn, n))
        assert p.dst == LB_MAC and p.src == GEN_MAC and p[IP].dst == "198.19.210.1" and p[TCP].dport == 8080
        assert p[TCP].flags == "S"
        syn_tuples.append((p[IP].src, p[TCP].sport))
    assert len(set(syn_tuples)) == 1000  # every flow opened once
    for n in (0, 1, 499, 999, 1000, 1733):
        raw = packet_at(ack, n)
        p = Ether(raw)
        assert p[TCP].flags == "A" and len(raw) == 128 and _checksums_ok(raw)
        assert (p[IP].src, p[TCP].sport) == syn_tuples[n % 1000]  # ACKs only on opened flows


def test_tcp_flows_play_each_flow_in_order_over_its_duration():
    s = {"kind": "tcp_flows", "flow_rate": 100, "flow_duration_s": 0.35, "tuples": 1000,
         "request_bytes": 2000, "response_bytes": 5000, "close": "fin"}
    prog = _compile({"streams": [s]})
    # SYN, ACK, 2 request segments (1460 + 540), delayed ACKs of 4 response segments (2), FIN, ACK
    flags = [str(Ether(st.packet)[TCP].flags) for st in prog.streams]
    assert flags == ["S", "A", "A", "PA", "A", "A", "FA", "A"]
    sizes = [len(Ether(st.packet)[TCP].payload.load) if Ether(st.packet)[TCP].payload else 0
             for st in prog.streams]
    assert sizes[2:4] == [1460, 540]
    starts = [st.start_s for st in prog.streams]
    assert starts == sorted(starts) and starts[0] == 0 and starts[-1] == pytest.approx(0.35)
    for n in (0, 5, 999):
        tuples = {(Ether(packet_at(st, n))[IP].src, Ether(packet_at(st, n))[TCP].sport) for st in prog.streams}
        assert len(tuples) == 1  # packet n of every stream belongs to the same flow
        t = [st.start_s + n / st.rate_pps for st in prog.streams]
        assert t == sorted(t) and t[-1] - t[0] == pytest.approx(0.35)
    assert prog.info["flows"] == 35  # Little: 100/s x 0.35 s


def test_udp_imix_and_latency_streams():
    prog = _compile({"streams": [{"kind": "imix", "flows": 10, "rate_pps": 12_000}],
                     "latency": {"rate_pps": 500}})
    imix = [st for st in prog.streams if not st.latency]
    assert [len(st.packet) for st in imix] == [60, 590, 1514]
    assert [st.rate_pps for st in imix] == [7000, 4000, 1000]
    assert prog.rate_pps == 12_000  # probes are not part of the load
    (probe,) = [st for st in prog.streams if st.latency]
    for n in (0, 1, 77):
        p = Ether(packet_at(probe, n))
        assert p[IP].id == PROBE_IP_ID and UDP in p and int.from_bytes(bytes(p[UDP].payload)[:4], "big") == n
        assert _checksums_ok(packet_at(probe, n))
    assert all(Ether(st.packet)[IP].id != PROBE_IP_ID for st in imix)
    # mlb_gen's text: probes keep their rate at any multiplier
    text = prog.to_text(mult=2.0)
    assert "stream latency 500.000000" in text and "stream 0_imix_60 14000.000000" in text
    assert Program.from_json(prog.to_json()) == prog


@pytest.mark.parametrize("data, where, msg", [
    ({"streams": [{"kind": "tcp_new", "rate_pps": -1}]}, "streams.0.rate_pps (line 5)", "greater than 0"),
    ({"streams": [{"kind": "carrier_pigeon"}]}, "streams.0 (line 4)", "does not match any of the expected tags"),
    ({"vip": "10.0.0.300", "streams": [{"kind": "tcp_new", "rate_pps": 1}]}, "(top level)", "not an IPv4 address"),
    ({"streams": [{"kind": "tcp_flows", "flow_rate": 1000, "flow_duration_s": 2, "tuples": 1500}]},
     "streams.0 (line 4)", "must exceed the concurrent flows"),
    ({"streams": [{"kind": "udp", "flows": 10, "rate_pps": 1, "frame_bytez": 60}]},
     "streams.0.frame_bytez (line 7)", "Extra inputs"),
])
def test_invalid_profiles_name_file_field_and_line(tmp_path: Path, data, where, msg):
    import yaml

    f = tmp_path / "bad.yaml"
    f.write_text("name: bad\nduration_s: 1\n" + yaml.safe_dump(data, sort_keys=False))
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as e:
        load_profile(f)
    assert time.monotonic() - t0 < 5
    text = str(e.value)
    assert str(f) in text and where in text and msg in text, text


def test_profile_that_cannot_split_its_tuples_is_refused_by_field():
    with pytest.raises(ConfigError, match=r"streams\.0: 65536 tuples cannot be split"):
        _compile({"streams": [{"kind": "tcp_new", "rate_pps": 1, "tuples": 65_536}]})


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory: pytest.TempPathFactory):
    """A 15-s simulated run (Poisson 50 flows/s, 300-byte requests, 10-kB responses, RST close)
    and its pcap."""
    from simulator.run import run_experiment

    path = tmp_path_factory.mktemp("traffic") / "run.pcap"
    cfg = parse_config({"name": "derive", "seed": 11, "duration_s": 15.0, "topology": {"preset": "unittest"},
                        "traffic": {"rate": 50.0}, "policy": {"name": "sed"}})
    run_experiment(cfg, progress=False, pcap_path=str(path))
    return cfg, path


def _client_packets_per_flow(pcap: Path) -> collections.Counter:
    from hil.parity import read_pcap
    from simulator.packet import VIP, VIP_PORT

    pk = read_pcap(pcap, VIP, VIP_PORT)
    return collections.Counter(zip(pk.src.tolist(), pk.sport.tolist()))


def test_profile_from_config_has_the_simulators_packets_per_flow(sim_run):
    cfg, pcap = sim_run
    prof = profile_from_config(cfg)
    (s,) = prof.streams
    assert s.flow_rate == 50.0 and s.request_bytes == 300 and s.response_bytes == 10_000 and s.close == "rst"
    prog = compile_profile(prof)
    # the simulator's own pcap: packets each client flow sent toward the VIP (mode of the
    # per-flow counts: flows cut by the end of the run have fewer)
    per_flow = _client_packets_per_flow(pcap)
    mode = collections.Counter(per_flow.values()).most_common(1)[0][0]
    assert len(prog.streams) == mode


def test_profile_from_pcap_recovers_the_simulated_traffic(sim_run):
    cfg, pcap = sim_run
    prof = profile_from_pcap(pcap)
    (s,) = prof.streams
    n = sum(1 for _ in _client_packets_per_flow(pcap))
    # Poisson arrivals: the rate estimate's standard error is rate / sqrt(n); 4 sigma (99.99 %)
    assert abs(s.flow_rate - 50.0) <= 4 * 50.0 / math.sqrt(n)
    assert s.request_bytes == 300 and s.close == "rst"
    assert prof.vip == "10.0.1.1" and prof.vip_port == 80
    assert len(compile_profile(prof).streams) == len(compile_profile(profile_from_config(cfg)).streams)


def test_profile_from_a_file_that_is_not_a_pcap(tmp_path: Path):
    f = tmp_path / "x.pcap"
    f.write_text("hello")
    with pytest.raises(Exception, match="x.pcap"):
        profile_from_pcap(f)


def test_bench_profile_specs(sim_run):
    """`marllb bench --profile` takes a built-in name, config:EXPERIMENT.yaml and pcap:FILE."""
    from hil.perf.bench import profile_of

    _, pcap = sim_run
    assert profile_of("established").streams[0].kind == "tcp_established"
    from_config = profile_of("config:experiments/configs/quickstart.yaml")
    assert from_config.streams[0].kind == "tcp_flows" and from_config.name == "quickstart-traffic"
    assert profile_of(f"pcap:{pcap}") == profile_of(str(pcap)) == profile_from_pcap(pcap)
    with pytest.raises(UserError, match="nosuch.pcap: neither a built-in profile"):
        profile_of("pcap:nosuch.pcap")
