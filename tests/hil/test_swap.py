"""Swap-in runs without root: the swap matrix's verdicts, the real-time pacer (against a virtual
clock whose lateness we set, and against the unpaced simulator: pacing must not change the
model), real-time runs of the simulation through `marllb hil run`, strict-mode failure, and
frames the gateway builds read back with scapy."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("simulator.dataplane", reason="cffi binding not built (pip install -e .)")

from hil.realtime import LagError, Pacer  # noqa: E402
from hil.swap import check_combination  # noqa: E402
from hil.testbed.dataplane import SHM_DIR  # noqa: E402
from tests.hil.swap_util import our_shm_files  # noqa: E402
from simulator.config import UserError, parse_config  # noqa: E402
from simulator.run import build_simulation, collect, run_experiment  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def cfg_with(hil: dict, **extra: object):
    data = {"name": "swap", "seed": 2, "duration_s": 3.0, "topology": {"preset": "unittest"},
            "traffic": {"load": 0.5}, "policy": {"name": "sed"}, "lb": {"step_s": 0.25}, "hil": hil}
    data.update(extra)
    return parse_config(data)


SIM = {"traffic": "sim", "servers": "sim"}


@pytest.mark.parametrize("hil, mode", [
    ({**SIM, "lb": "sim", "agent": "inproc"}, "realtime"),
    ({**SIM, "lb": "sim", "agent": "process"}, "realtime"),
    ({**SIM, "lb": "host", "agent": "inproc"}, "realtime"),
    ({**SIM, "lb": "host", "agent": "process"}, "realtime"),
    ({**SIM, "lb": "vpp", "agent": "inproc"}, "realtime"),
    ({**SIM, "lb": "vpp", "agent": "process"}, "realtime"),
    ({"traffic": "client", "lb": "host", "servers": "apache", "agent": "process"}, "testbed"),
])
def test_accepted_combinations(hil: dict, mode: str) -> None:
    assert check_combination(cfg_with(hil)) == mode


@pytest.mark.parametrize("hil, policy, why", [
    ({"traffic": "client", "lb": "host", "servers": "sim", "agent": "process"}, "sed",
     "simulated servers cannot answer a real client's TCP"),
    ({"traffic": "sim", "lb": "host", "servers": "apache", "agent": "process"}, "sed",
     "simulated clients have no TCP stack"),
    ({"traffic": "trex", "lb": "host", "servers": "apache", "agent": "process"}, "sed", "TRex's stateless"),
    ({"traffic": "client", "lb": "sim", "servers": "apache", "agent": "process"}, "sed",
     "a simulated LB cannot take real packets"),
    ({"traffic": "client", "lb": "vpp", "servers": "apache", "agent": "process"}, "sed",
     "VPP on the testbed bridge is not supported"),
    ({"traffic": "client", "lb": "host", "servers": "apache", "agent": "inproc"}, "sed",
     "(agent: process)"),
    ({**SIM, "lb": "host", "agent": "inproc"}, "gsq", "a real data plane only has what it sees"),
    ({**SIM, "lb": "host", "agent": "inproc"}, "sed_true", "a real data plane only has what it sees"),
    ({**SIM, "lb": "sim", "agent": "process"}, "srt", "cannot run as a `marllb hil controller`"),
])
def test_refused_combinations_say_why(hil: dict, policy: str, why: str) -> None:
    with pytest.raises(UserError) as e:
        check_combination(cfg_with(hil, policy={"name": policy}))
    assert why in str(e.value)
    assert f"traffic: {hil['traffic']}, lb: {hil['lb']}" in str(e.value)


def test_testbed_refuses_simulated_server_effects() -> None:
    testbed = {"traffic": "client", "lb": "host", "servers": "apache", "agent": "process"}
    for extra in ({"effects": [{"speed": 0.5}]}, {"traffic": {"load": 0.5, "job": {"io_s": 0.01}}}):
        with pytest.raises(UserError, match="exist only in simulated servers"):
            check_combination(cfg_with(testbed, **extra))


def test_refused_combination_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from experiments.cli import main

    cfg_path = tmp_path / "bad.yaml"
    cfg_path.write_text(json.dumps({"name": "bad", "hil": {"traffic": "client", "lb": "host", "servers": "sim",
                                                            "agent": "process"}}))
    shm_before = our_shm_files()
    assert main(["hil", "run", str(cfg_path), "--out", str(tmp_path / "run")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "simulated servers cannot answer a real client's TCP connections" in err[0], err
    assert not (tmp_path / "run").exists() and our_shm_files() == shm_before


class VirtualClock:
    """A clock that moves only when slept on: every sleep overshoots by ``late_s``."""

    def __init__(self, late_s: float) -> None:
        self.t = 100.0
        self.late_s = late_s
        self.sleeps = 0

    def __call__(self) -> float:
        return self.t

    def sleep(self, d: float) -> None:
        self.sleeps += 1
        self.t += d + self.late_s


def test_pacer_measures_the_lateness_it_is_given() -> None:
    """Every wake-up overshoots by exactly 0.4 ms: the events that waited are 0.4 ms late, the
    ones that followed at the same instant 0 (virtual time does not run while the model runs)."""
    cfg = cfg_with({**SIM, "lb": "sim", "agent": "inproc"})
    clock = VirtualClock(0.0004)
    sim = build_simulation(cfg)
    st = Pacer(sim, clock=clock, sleep=clock.sleep, spin_s=0.0).run()
    assert st.events == sim.events
    assert st.max_s == pytest.approx(0.0004, abs=1e-9)
    assert st.p99_s == pytest.approx(0.0004, abs=1e-9)
    assert st.late_share == 0.0  # nothing beyond 1 ms
    assert 0 < st.mean_s <= 0.0004
    assert cfg.duration_s - 0.3 <= st.wall_s <= cfg.duration_s + 0.0004 + 1e-9  # virtual wall s


class TickingClock(VirtualClock):
    """Time also runs while we look at the clock: 10 us per reading (a busy-wait's progress)."""

    def __call__(self) -> float:
        self.t += 1e-5
        return self.t


def test_busy_wait_hides_late_wake_ups() -> None:
    """Sleeps overshoot by 2 ms; sleeping only up to 3 ms before each event and busy-waiting the
    rest makes no event later than one clock reading (plus the model's own readings)."""
    cfg = cfg_with({**SIM, "lb": "sim", "agent": "inproc"})
    clock = TickingClock(0.002)
    st = Pacer(build_simulation(cfg), clock=clock, sleep=clock.sleep, spin_s=0.003).run()
    assert st.max_s <= 3e-5 and st.late_share == 0.0
    clock = TickingClock(0.002)
    st = Pacer(build_simulation(cfg), clock=clock, sleep=clock.sleep, spin_s=0.0).run()
    assert st.max_s >= 0.002  # without it, every wake-up is 2 ms late


def test_pacer_strict_mode_stops_with_one_clear_error() -> None:
    cfg = cfg_with({**SIM, "lb": "sim", "agent": "inproc"})
    clock = VirtualClock(0.003)
    p = Pacer(build_simulation(cfg), clock=clock, sleep=clock.sleep, spin_s=0.0, max_lag_s=0.002)
    with pytest.raises(LagError, match=r"ran 3\.000 ms late \(hil.realtime.max_lag_s = 2 ms\)"):
        p.run()
    st = p.stats()
    assert (st.events, st.max_s) == (1, 0.0)  # the t=0 events ran on time; the first late one stops the run


def test_paced_run_equals_the_unpaced_simulation() -> None:
    """Pacing is outside the model: same seed, same requests and steps, to the bit."""
    cfg = cfg_with({**SIM, "lb": "sim", "agent": "inproc"})
    ref = run_experiment(cfg, progress=False)
    clock = VirtualClock(0.0)
    sim = build_simulation(cfg)
    Pacer(sim, clock=clock, sleep=clock.sleep, spin_s=0.0).run()
    got = collect(sim, 0.0)
    pd.testing.assert_frame_equal(got.requests, ref.requests)
    pd.testing.assert_frame_equal(got.steps, ref.steps)


def test_pacer_runs_in_wall_time(tmp_path: Path) -> None:
    """`marllb hil run` of an all-simulated config: 2 simulated s take about 2 wall s, the lag
    figures land in hil.json, the run contract is complete."""
    from experiments.cli import main

    cfg_path = tmp_path / "rt.yaml"
    cfg_path.write_text(json.dumps({"name": "rt", "seed": 1, "duration_s": 2.0,
                                    "topology": {"preset": "unittest"}, "traffic": {"load": 0.4},
                                    "policy": {"name": "sed"},
                                    "hil": {**SIM, "lb": "sim", "agent": "inproc"}}))
    out = tmp_path / "run"
    assert main(["hil", "run", str(cfg_path), "--out", str(out), "--no-progress"]) == 0
    for f in ("config.yaml", "summary.json", "requests.parquet", "steps.parquet", "hil.json"):
        assert (out / f).is_file(), f
    rt = json.loads((out / "hil.json").read_text())["realtime"]
    assert 1.95 <= rt["wall_s"] <= 2.5
    assert rt["events"] > 100 and 0 <= rt["mean_s"] <= rt["p99_s"] <= rt["max_s"]
    assert 0.0 <= rt["late_share"] <= 1.0
    ref = run_experiment(parse_config(json.loads(cfg_path.read_text())), progress=False)
    got = pd.read_parquet(out / "requests.parquet")
    assert got["server"].tolist() == ref.requests["server"].tolist()  # the same model, in real time


def test_strict_run_that_cannot_keep_up_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 2000x-real-time run with a 1 us lag limit cannot keep up: one clear error, and the
    controller processes and shm files of the agent in the loop are gone."""
    from experiments.cli import main

    cfg_path = tmp_path / "fast.yaml"
    cfg_path.write_text(json.dumps({"name": "fast", "seed": 1, "duration_s": 30.0,
                                    "topology": {"preset": "unittest"}, "traffic": {"load": 0.9},
                                    "policy": {"name": "sed"},
                                    "hil": {**SIM, "lb": "sim", "agent": "process",
                                            "realtime": {"factor": 1000, "max_lag_s": 1e-6}}}))
    shm_before = our_shm_files()
    assert main(["hil", "run", str(cfg_path), "--out", str(tmp_path / "run"), "--no-progress"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("marllb: error: real-time run fell behind"), err
    # this run's region directory (named after this process) is gone; entries other processes
    # (a parallel test run) create meanwhile are not this run's
    ours = [n for n in our_shm_files() - shm_before if str(os.getpid()) in n]
    assert ours == [] and not (SHM_DIR / f"mlb-rt-{os.getpid()}").exists()
    ctl = json.loads((tmp_path / "run" / "hil_logs" / "controllers.json").read_text())
    for row in ctl:
        assert not Path(f"/proc/{row['pid']}").exists() or \
            Path(f"/proc/{row['pid']}/stat").read_text().split(") ")[1][0] == "Z"
    assert (tmp_path / "run" / "hil_logs" / "lag_at_failure.json").is_file()


def test_gateway_frames_read_back_with_scapy() -> None:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether

    from hil.gateway.frames import FrameBuilder, read_forwarded

    fb = FrameBuilder("02:6d:6c:67:00:00", "02:6d:6c:67:01:00")
    for flags, ip_len in ((0x02, 60), (0x10, 40), (0x18, 40 + 700), (0x14, 40)):
        raw = fb.tcp(0x0A000001, 0x0A000101, 40000, 80, flags, ip_len, tag=0x12345678)
        pkt = Ether(raw)
        assert pkt[Ether].dst == "02:6d:6c:67:01:00"
        ip, tcp = pkt[IP], pkt[TCP]
        assert (ip.src, ip.dst, ip.len, ip.id) == ("10.0.0.1", "10.0.1.1", ip_len, 0x5678)
        assert (tcp.sport, tcp.dport, int(tcp.flags), tcp.seq) == (40000, 80, flags, 0x12345678)
        # checksums: scapy recomputes them when the fields are deleted
        want_ip, want_tcp = ip.chksum, tcp.chksum
        del ip.chksum, tcp.chksum
        again = Ether(bytes(pkt))
        assert (again[IP].chksum, again[TCP].chksum) == (want_ip, want_tcp)
        if flags & 0x02:
            assert dict((k, v) for k, v in tcp.options)["MSS"] == 1460
        assert read_forwarded(raw) == (raw[:6], 0x0A000101, 0x12345678, 40000)
