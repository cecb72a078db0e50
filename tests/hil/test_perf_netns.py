"""The throughput and latency benchmarks against the real lb_rl_host on the bench bed (network
namespaces, real frames from mlb_gen, loss counted at the servers' interfaces). Needs root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.perf.bed import PerfBed, leftovers

pytestmark = pytest.mark.netns
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bed():
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    from hil.hostbin import host_binary

    host_binary(), host_binary(name="mlb_gen")
    b = PerfBed(3)
    try:
        yield b.up()
    finally:
        b.down()
    assert leftovers() == []


def _program(bed: PerfBed, data: dict):
    from hil.traffic.profile import compile_profile, parse_profile

    return compile_profile(parse_profile(data), dst_mac=bed.mac[bed.lb], src_mac=bed.mac[bed.gen])


def test_a_trial_counts_what_reached_each_server(bed, tmp_path):
    """UDP flows at a low rate through WCMP 1:2:3: the servers' interfaces received every frame
    the generator's interface sent, server by server exactly what lb_rl_host says it forwarded
    to each, split about 1:2:3 over the flows; every latency probe came back with a time."""
    from hil.hostbin import host_binary
    from hil.perf.local import LocalMeasurer

    prog = _program(bed, {"vip": bed.vip, "streams": [{"kind": "udp", "flows": 600, "rate_pps": 6000}],
                          "latency": {"rate_pps": 200}})
    m = LocalMeasurer(bed, prog, host_binary(), policy="wcmp", weights=[1, 2, 3], work_dir=tmp_path)
    t = m.measure(6000, 1.0)
    gen = t.extra["generator"]
    # what the generator's interface counted is what mlb_gen says it sent (6,000 + 200 probes)
    assert t.sent == gen["sent"] > 0, t.extra
    assert t.received == t.sent, t.extra
    lb = json.loads((tmp_path / "lb-1.json").read_text())
    assert t.extra["per_server"] == [s["forwarded"] for s in lb["servers"]]
    # 600 flows of 10 packets each: flows per server ~ Binomial(600, w/6); 1:2:3 within 5 sigma
    flows = [x / (t.sent / 600) for x in t.extra["per_server"]]
    for f, w in zip(flows, (1, 2, 3)):
        p = w / 6
        assert abs(f - 600 * p) <= 5 * (600 * p * (1 - p)) ** 0.5
    lat = t.extra["latency"]
    assert lat["sent"] == lat["received"] >= 190
    pc = lat["percentiles_us"]
    assert 0 < pc["min"] <= pc["p50"] <= pc["p90"] <= pc["p99"] <= pc["p99.9"] <= pc["max"] * 1.001


def test_search_on_the_real_lb_is_reproducible(bed, tmp_path):
    """lb_rl_host under a 0.1-CPU quota (so the data plane, not the generator, is the limit):
    two NDR/PDR searches on established flows bracket the same rate, within one resolution step.

    Zero loss under a CFS quota hinges on whether a burst meets the 9 ms the LB is throttled, so
    single trials scatter: six searches on this machine gave NDR lower bounds of 22.6-29.2 kpps and
    a CI run once 26.0 and 39.4 kpps. Comparing the two lower bounds (each anywhere in a 30 %-wide
    bracket) failed on such noise; the brackets themselves must overlap, widened by one step."""
    from hil.hostbin import host_binary
    from hil.perf.local import LocalMeasurer
    from hil.perf.search import search

    prog = _program(bed, {"vip": bed.vip, "streams": [
        {"kind": "tcp_established", "flows": 2000, "rate_pps": 10_000, "ramp_rate_pps": 20_000}]})
    res = []
    for run in range(2):
        m = LocalMeasurer(bed, prog, host_binary(), lb_cpus=0.1, work_dir=tmp_path)
        r = search(m, min_load=2_000, max_load=200_000, resolution=0.3, trial_s=1.0, initial_trial_s=0.5)
        res.append(r)
        ndr = r.by_name("NDR")
        assert ndr.lower_pps is not None and ndr.upper_pps is not None, "the quota'd LB lost nothing up to 200 kpps"
        assert not ndr.generator_limited
        assert ndr.lower_trial.lost == 0 and ndr.lower_trial.duration_s == 1.0
    for name in ("NDR", "PDR"):
        brackets = [(r.by_name(name).lower_pps, r.by_name(name).upper_pps) for r in res]
        assert all(up is not None for _, up in brackets), (name, brackets)
        highest_pass, lowest_fail = max(lo for lo, _ in brackets), min(up for _, up in brackets)
        assert highest_pass <= 1.3 * lowest_fail, (name, brackets)


def test_bench_commands_end_to_end(bed, tmp_path):
    """`marllb bench throughput --rl` and `latency` on the bench bed: JSON and plots written;
    in the RL case the controller's weights reached the data plane during the measured trials,
    in the static case none did. (The fixture's bed is down while the CLI builds its own.)"""
    bed.down()
    try:
        out = tmp_path / "tp.json"
        cp = subprocess.run([sys.executable, "bench/throughput/run.py", "--profile", "established",
                             "--trial", "0.5", "--initial-trial", "0.25", "--resolution", "0.3",
                             "--max-load", "100000", "--lb-cpus", "0.1", "--rl", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stderr[-3000:]
        d = json.loads(out.read_text())
        static, rl = d["cases"]
        assert (static["control"], rl["control"]) == ("static", "rl")
        for case in (static, rl):
            assert set(case["targets"]) == {"NDR", "PDR"} and case["targets"]["NDR"]["mpps"] > 0
        lb = [c["targets"]["NDR"]["trial"]["extra"]["lb"] for c in (static, rl)]
        assert lb[0]["shm_applied"] == 0 and lb[1]["shm_applied"] > 0 and lb[1]["core"]["weight_updates"] > 0
        assert d["environment"]["kernel"] and d["environment"]["git_commit"]
        assert (tmp_path / "tp_loss.png").stat().st_size > 10_000
        out2 = tmp_path / "lat.json"
        cp = subprocess.run([sys.executable, "bench/latency/run.py", "--profile", "established",
                             "--from", str(out), "--trial", "1", "--loads", "0.5", "--lb-cpus", "0.1",
                             "--out", str(out2)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert cp.returncode == 0, cp.stderr[-3000:]
        lat = json.loads(out2.read_text())
        pts = lat["cases"][0]["points"]
        assert [p["level"] for p in pts] == ["min", "50% PDR"]
        assert all(p["latency"]["received"] > 0 for p in pts)
        # the first trial (the minimal load, far below the PDR) starts only once its LB is ready
        assert pts[0]["latency"]["received"] == pts[0]["latency"]["sent"], pts[0]["latency"]
        assert (tmp_path / "lat_latency.png").stat().st_size > 10_000
    finally:
        bed.up()
