"""The local testbed end to end, as root: namespaces, Apache under CPU quotas, lb_rl_host and
the controller, real HTTP requests from the real client. Marked ``netns`` (run with
``pytest -m netns``); skipped with the reason where root, ip netns or Apache are missing.

Truth comes from outside the code under test: the servers' own access logs, the PHP page's own
timing, chi-square tests on counts, the shm status block the data plane writes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from scipy import stats

from hil.testbed import sh
from hil.testbed.apache import parse_access_log
from hil.testbed.plan import make_plan, state_dir
from simulator.config import UserError
from simulator.shm import ShmRegion
from tests.hil.testbed_util import HOLD_OPEN, config, needs_testbed, send, uniform_schedule

pytestmark = needs_testbed

ALPHA = 0.001  # chi-square tests: a correct split fails one run in a thousand


@pytest.fixture(scope="module")
def tb_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private state dir and calibration cache; afterwards nothing of the testbed is left."""
    from hil.testbed.testbed import down, leftovers

    d = tmp_path_factory.mktemp("testbed")
    old = {k: os.environ.get(k) for k in ("MARLLB_TESTBED_DIR", "XDG_CACHE_HOME")}
    os.environ["MARLLB_TESTBED_DIR"] = str(d / "state")
    os.environ["XDG_CACHE_HOME"] = str(d / "cache")
    try:
        yield d
    finally:
        down()
        left = leftovers()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        assert not any(left.values()), left


@pytest.fixture(scope="module")
def tb123(tb_env: Path) -> Iterator[tuple]:
    """Testbed with servers of 1, 2, 3 cores (quotas 0.1, 0.2, 0.3 CPU), no LB running yet."""
    from hil.testbed.testbed import up

    cfg = config([1, 2, 3])
    plan = make_plan(cfg)
    run = up(cfg, plan, start_lbs=False)
    yield cfg, plan, run


def _status(shm: Path) -> object:
    with ShmRegion.open(shm, role="reader") as r:
        return r.status()


def _frame_weights(shm: Path, n: int) -> np.ndarray:
    with ShmRegion.open(shm, role="reader") as r:
        f = r.latest_out()
        assert f is not None
        return f.servers["weight"][:n].astype(float)


def _wait(pred, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _split(df, n: int) -> np.ndarray:
    done = df[df["outcome"] == "completed"]
    return np.bincount(done["server"].to_numpy(), minlength=n)[:n]


def test_up_is_real_and_idempotent(tb123: tuple) -> None:
    from hil.testbed import cgroups
    from hil.testbed.calibrate import iters_per_cpu_s
    from hil.testbed.testbed import load_state, server_instance, status, up

    cfg, plan, run = tb123
    iters_per_cpu_s(plan.cpu_per_core)  # calibrated once per machine and cpu_per_core
    assert set(plan.namespaces) <= set(sh.namespaces())
    cg = cgroups.detect()
    for s in plan.servers:
        lim = cg.limits(s.ns)
        assert lim is not None and lim["quota_us"] / lim["period_us"] == pytest.approx(s.quota_cpus, rel=0.01)
        inst = server_instance(s)
        assert inst.running()
        # the Apache parent and its workers are all inside the server's cgroup, each worker
        # alone in a child group limited to one simulated core
        assert inst.pid() in cg.procs(f"{s.ns}/main") and len(cg.procs_all(s.ns)) == s.workers + 1
        assert all(os.sched_getaffinity(p) == set(s.cpus) for p in cg.procs_all(s.ns))  # pinned
        for k in range(s.workers):
            w = f"{s.ns}/w{k}"
            assert len(cg.procs(w)) == 1
            lim = cg.limits(w)
            assert lim["quota_us"] / lim["period_us"] == pytest.approx(plan.cpu_per_core, rel=0.01)
    # the root namespace holds none of our links
    assert "mlb-" not in subprocess.run(["ip", "link"], capture_output=True, text=True).stdout
    st = status()  # what `marllb hil status` prints
    assert st["up"] and set(plan.namespaces) <= set(st["namespaces"])
    assert all(p["alive"] for p in st["procs"]["apache"]) and st["calibration"] is not None
    assert st["cgroups"]["mlb-s3"]["quota_us"] / st["cgroups"]["mlb-s3"]["period_us"] == pytest.approx(0.3, rel=0.01)
    pids = {p["pid"] for p in load_state().procs["apache"]}
    up(cfg, plan, start_lbs=False)  # same shape: kept as is
    assert {p["pid"] for p in load_state().procs["apache"]} == pids


def test_wcmp_split_through_lb_rl_host(tb123: tuple, tmp_path: Path) -> None:
    """3,000 real HTTP flows through lb_rl_host with WCMP weights 1:2:3 reach every server in
    proportion (chi-square), and each server's access log lists exactly the flows that the
    client saw answered by it."""
    from hil.testbed.testbed import start_dataplane

    cfg, plan, run = tb123
    offsets = {s.ns: _log_size(s.ns) for s in plan.servers}
    start_dataplane(cfg, plan, run, tmp_path, controllers=False)  # static weights = cores 1:2:3
    lb_stack_before = _ip_in_receives(plan.lbs[0].ns)
    df = send(plan, uniform_schedule(3000, 500.0), tmp_path)
    if shutil.which("nft"):  # the LB's own stack never sees the VIP frames (dropped at ingress)
        assert _ip_in_receives(plan.lbs[0].ns) - lb_stack_before < 100
    assert (df["outcome"] == "completed").all(), df["outcome"].value_counts()
    counts = _split(df, 3)
    assert counts.min() > 0
    p = stats.chisquare(counts, np.array([1, 2, 3]) / 6 * counts.sum()).pvalue
    assert p > ALPHA, (counts, p)
    for s in plan.servers:  # the servers' own logs agree with the client
        logged = [r for r in _log_rows(s.ns, offsets[s.ns]) if r["url"].startswith("/work.php")]
        assert len(logged) == counts[s.index - 1]


def test_flows_stay_on_their_server_across_a_weight_change(tb123: tuple, tmp_path: Path) -> None:
    """Connections opened while all weight is on server 0 send their requests after the weight
    moved to server 2: all are answered by server 0 (its access log has their ports, server
    2's has none), while new flows go to server 2."""
    from hil.testbed.testbed import start_dataplane

    _, plan, run = tb123
    cfg = config([1, 2, 3], hil={"cpu_per_core": 0.1, "fallback_s": 60.0})  # no agent silence fallback
    (shm,) = start_dataplane(cfg, plan, run, tmp_path, controllers=False)
    offsets = {s.ns: _log_size(s.ns) for s in plan.servers}
    with ShmRegion.open(shm, role="agent") as agent:
        agent.write_weights([1.0, 0.0, 0.0], time.monotonic())
        _wait(lambda: _status(shm).in_seq_applied >= 1, 3, "weights [1,0,0] applied")
        hold = subprocess.Popen(sh.in_ns(plan.clients[0].ns, [sys.executable, "-c", HOLD_OPEN, plan.vip, "40"]),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            ports = [int(p) for p in hold.stdout.readline().split()]
            assert len(ports) == 40
            seq = agent.write_weights([0.0, 0.0, 1.0], time.monotonic())
            _wait(lambda: _status(shm).in_seq_applied >= seq, 3, "weights [0,0,1] applied")
            hold.stdin.write("go\n")
            hold.stdin.flush()
            answers = hold.stdout.readline().split()
        finally:
            hold.kill()
            hold.wait()
        # the held flows' log rows, read before the new flows: a new flow may reuse the client
        # port of a closed held one (seen once in CI, on server 2)
        def logged_ports() -> dict[int, set[int]]:
            return {s.index - 1: {r["client_port"] for r in _log_rows(s.ns, offsets[s.ns])} for s in plan.servers}

        _wait(lambda: set(ports) <= set().union(*logged_ports().values()), 3, "the 40 held requests in the access logs")
        ports_at = logged_ports()
        new = send(plan, uniform_schedule(30, 200.0), tmp_path)
    assert [a.split(":")[1:] for a in answers] == [["200", "0"]] * 40
    assert set(ports) <= ports_at[0] and not set(ports) & (ports_at[1] | ports_at[2])
    assert (new["outcome"] == "completed").all() and (new["server"] == 2).all()


def test_controller_weights_fallback_and_health(tb123: tuple, tmp_path: Path) -> None:
    """The controller's weights are applied (in_seq_applied advances) and change the split;
    killing it brings the static weights back after the fallback timeout; an Apache killed
    mid-run gets weight 0 and no new flows, and gets flows again once restarted."""
    from hil.testbed.testbed import server_instance, start_dataplane

    cfg, plan, run = tb123  # policy wcmp: the controller writes the cores 1:2:3
    (shm,) = start_dataplane(cfg, plan, run, tmp_path, static_weights=[1.0, 1.0, 1.0])
    _wait(lambda: _status(shm).in_seq_applied >= 3, 10, "controller weights applied")
    assert _frame_weights(shm, 3) == pytest.approx([1, 2, 3])
    counts = _split(send(plan, uniform_schedule(900, 300.0), tmp_path), 3)
    assert stats.chisquare(counts, np.array([1, 2, 3]) / 6 * counts.sum()).pvalue > ALPHA, counts
    assert stats.chisquare(counts).pvalue < ALPHA, counts  # not the static 1:1:1

    s2 = plan.servers[1]
    server_instance(s2).stop()
    _wait(lambda: _frame_weights(shm, 3)[1] == 0.0, 5, "server 1 marked down (weight 0)")
    down_df = send(plan, uniform_schedule(200, 200.0), tmp_path)
    assert (down_df["outcome"] == "completed").all() and not (down_df["server"] == 1).any()
    server_instance(s2).start()
    _wait(lambda: _frame_weights(shm, 3)[1] == 2.0, 10, "server 1 back up (weight 2)")
    assert (_split(send(plan, uniform_schedule(200, 200.0), tmp_path), 3)[1]) > 0

    ctl = run.procs["controller"][0]["pid"]
    os.kill(ctl, signal.SIGKILL)
    t_kill = time.monotonic()
    _wait(lambda: _status(shm).fallback_active == 1, 5, "fallback to static weights")
    assert time.monotonic() - t_kill >= cfg.hil.fallback_s - cfg.lb.step_s
    # the step publishes before it polls: the next frame carries the static weights
    _wait(lambda: list(_frame_weights(shm, 3)) == [1.0, 1.0, 1.0], 2 * cfg.lb.step_s + 1, "static weights published")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint for train_tiny's 2 servers (the fairness-potential agent: nothing to learn)."""
    out = tmp_path_factory.mktemp("ckpt")
    subprocess.run([sys.executable, "-m", "experiments.cli", "train", "experiments/configs/train_tiny.yaml",
                    "--algo", "fairness", "--episodes", "1", "--out", str(out)], check=True,
                   capture_output=True, cwd=Path(__file__).resolve().parents[2], timeout=300)
    return out / "last.pt"


def test_hil_run_with_a_checkpoint(tb_env: Path, tmp_path: Path, tiny_ckpt: Path) -> None:
    """policy: agent -- the controller runs the checkpoint on the LB's frames (the env's own
    observation builder) and its weights are the ones in force on the testbed."""
    pytest.importorskip("torch", reason="policy agent needs the rl extra (torch)")
    from experiments.runs import load_run
    from hil.run import run_hil

    cfg = config([1, 3], policy={"name": "agent", "checkpoint": str(tiny_ckpt)}, duration_s=5.0, cpu_per_core=0.2,
                 traffic={"kind": "poisson", "load": 0.6, "job": {"dist": "exp", "mean_s": 0.05}})
    run_hil(cfg, tmp_path / "agent", progress=False)
    rd = load_run(tmp_path / "agent")
    s = rd.summary
    assert s["policy"] == "agent" and s["completed"] > 0.8 * s["arrived"]
    applied = rd.steps[rd.steps["in_seq_applied"] > 0]
    assert len(applied) > 0
    # the agent's weights are levels {1.0, 1.2, ..., 2.0}, not the static 1:3
    assert set(np.round(applied["weight"], 6)) <= {1.0, 1.2, 1.4, 1.6, 1.8, 2.0}


def _cfg24():
    return config([2, 4], policy="ecmp", cpu_per_core=0.1, duration_s=10.0,
                  topology={"lbs": 1, "servers": [{"cores": 2, "workers": 32}, {"cores": 4, "workers": 32}]},
                  traffic={"kind": "poisson", "rate": 8.0, "job": {"dist": "exp", "mean_s": 0.1}})


def test_hil_run_writes_the_run_contract(tb_env: Path, tmp_path: Path) -> None:
    """`marllb hil run` on a small config with two LBs and two clients: the whole run contract
    plus hil.json, with arrived = completed + dropped + in_flight exactly, the simulator's own
    arrivals, steps from both LBs' msg_out frames with the controllers' weights applied, and
    `marllb plot` working on it."""
    import json

    from experiments.plots import plot_runs
    from experiments.runs import load_run
    from hil.run import run_hil
    from simulator.run import run_experiment

    cfg = _cfg24()
    cfg = cfg.model_copy(update={"topology": cfg.topology.model_copy(update={"lbs": 2, "clients": 2})})
    out = tmp_path / "run"
    run_hil(cfg, out, progress=False, keep_up=True)
    for f in ("config.yaml", "summary.json", "requests.parquet", "steps.parquet", "hil.json"):
        assert (out / f).is_file(), f
    rd = load_run(out)
    s = rd.summary
    assert s["arrived"] == s["completed"] + s["dropped"] + s["in_flight"] == len(rd.requests)
    assert s["completed"] > 0.8 * s["arrived"]
    sim = run_experiment(cfg, progress=False).requests
    assert np.array_equal(rd.requests["t_arrive_s"].to_numpy(), sim["t_arrive_s"].to_numpy())
    assert set(rd.steps["server"]) == {0, 1} and rd.steps["in_seq_applied"].max() > 0
    info = json.loads((out / "hil.json").read_text())
    assert [x["quota_cpus"] for x in info["servers"]] == pytest.approx([0.2, 0.4])
    # two LBs: the client sends each request through the LB the schedule names (socket mark ->
    # policy route); each LB's own counters saw exactly its share of the flows
    for k, lb in enumerate(info["lbs"]):
        mine = rd.requests[(rd.requests["lb"] == k) & (rd.requests["outcome"] != "not_sent")]
        assert len(mine) > 0 and lb["stats"]["core"]["new_flows"] == len(mine)
    assert set(rd.steps["lb"]) == {0, 1}
    assert set(rd.requests["client"]) == {0, 1}  # two client namespaces, one client process each
    assert plot_runs([rd], tmp_path / "plots")


def test_cpu_quotas_are_real(tb_env: Path, tmp_path: Path) -> None:
    """ECMP, a burst of equal jobs sent at once, so both servers are saturated: a server then
    completes one job per work / cores, so its service time per job -- the time from the first
    request's connection to its last response byte over the jobs it served -- is twice as long
    on the 2-core server as on the 4-core one (within 20 %), as the quotas say."""
    from hil.testbed.calibrate import iters_per_cpu_s
    from hil.testbed.testbed import start_dataplane, up

    cfg = _cfg24()
    plan = make_plan(cfg)
    run = up(cfg, plan, start_lbs=False)
    start_dataplane(cfg, plan, run, tmp_path, controllers=False)
    # 96 jobs: with 48 the ramp at both ends moved the ratio by up to 20 % between runs
    sched = uniform_schedule(96, 1e5, n_iter=int(0.1 * plan.cpu_per_core * iters_per_cpu_s(plan.cpu_per_core)))
    df = send(plan, sched, tmp_path, timeout_s=20)
    assert (df["outcome"] == "completed").all(), df["outcome"].value_counts()
    by = df.groupby("server")
    n = by.size()
    assert n.min() >= 8, n  # both servers well above their core count
    per_job = (by["t_last_byte_s"].max() - by["t_connect_s"].min()) / n
    assert per_job[0] / per_job[1] == pytest.approx(2.0, rel=0.2), (n.to_dict(), per_job.to_dict())


def test_failed_run_leaves_nothing(tb_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that fails midway (after the LBs and controllers started) takes down the testbed it
    brought up; `down` also cleans up after a crash that lost the state file, and twice is fine."""
    import hil.run
    from hil.testbed.testbed import down, leftovers, load_state, up

    down()

    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("client failed to start (deliberate)")

    monkeypatch.setattr(hil.run, "_start_clients", boom)
    cfg = config([1, 1])
    with pytest.raises(RuntimeError, match="deliberate"):
        hil.run.run_hil(cfg, tmp_path / "failed", progress=False)
    assert not any(leftovers().values()), leftovers()
    # a crash that lost the state file: found by the mlb prefix
    run = up(cfg, make_plan(cfg))
    pids = [p["pid"] for ps in run.procs.values() for p in ps]
    (state_dir() / "state.json").unlink()
    assert load_state() is None
    down()
    down()
    assert not any(leftovers().values()), leftovers()
    assert not [p for p in pids if sh.pid_alive(p)]


def test_bad_input_is_one_clear_error_and_leaves_nothing(tb_env: Path, tmp_path: Path, tiny_ckpt: Path) -> None:
    from hil.hostbin import host_binary
    from hil.run import run_hil
    from hil.testbed.testbed import leftovers

    with pytest.raises(UserError, match=r"hil.cpu_per_core"):
        make_plan(config([8, 8, 8], cpu_per_core=1.0))
    with pytest.raises(UserError, match=r"64"):
        make_plan(config([1] * 65))
    with pytest.raises(UserError, match=r"oracle"):
        run_hil(config([1, 2], policy="gsq"), tmp_path / "oracle", progress=False)
    # a checkpoint trained for 2 servers, on a 3-server testbed
    agent = config([1, 2, 3], policy={"name": "agent", "checkpoint": str(tiny_ckpt)})
    with pytest.raises(UserError, match=r"2 servers"):
        run_hil(agent, tmp_path / "ckpt", progress=False)
    cp = subprocess.run([str(host_binary()), "--interface", "mlb-nosuch0", "--vip", "198.19.0.1",
                         "--server", "198.18.3.1=02:00:00:00:00:01", "--shm", str(tmp_path / "x.shm")],
                        capture_output=True, text=True, timeout=10)
    assert cp.returncode == 2 and "mlb-nosuch0" in cp.stderr and "--interface" in cp.stderr
    assert not (tmp_path / "x.shm").exists()
    assert not any(leftovers().values()), leftovers()


def _ip_in_receives(ns: str) -> int:
    lines = [line.split() for line in sh.run(["cat", "/proc/net/snmp"], ns=ns).stdout.splitlines()
             if line.startswith("Ip:")]
    return int(lines[1][lines[0].index("InReceives")])


def _log_size(ns: str) -> int:
    f = state_dir() / ns / "access.log"
    return f.stat().st_size if f.is_file() else 0


def _log_rows(ns: str, offset: int) -> list[dict]:
    f = state_dir() / ns / "access.log"
    tail = tmp = f.with_suffix(".tail")
    with open(f, "rb") as fh:
        fh.seek(offset)
        tmp.write_bytes(fh.read())
    try:
        return parse_access_log(tail)
    finally:
        tmp.unlink()


def test_hil_compare_writes_its_report(tb_env: Path, tmp_path: Path) -> None:
    """`marllb hil compare` on a small scenario (one policy, one seed, calibrated): report.md,
    compare.json and both plots; the real numbers in compare.json are those of the real run dir,
    and the calibrated simulation replays the real run's arrivals."""
    import json

    import pandas as pd

    cfg = _cfg24()
    cfg = cfg.model_copy(update={"policy": cfg.policy.model_copy(update={"name": "sed"}), "duration_s": 8.0})
    out = tmp_path / "cmp"
    subprocess.run([sys.executable, "-m", "experiments.cli", "hil", "compare", _write_cfg(cfg, tmp_path),
                    "--out", str(out), "--calibrate", "--no-progress"], check=True, timeout=300,
                   cwd=Path(__file__).resolve().parents[2], env=dict(os.environ))
    for f in ("report.md", "compare.json", "jct_cdf.png", "server_share.png"):
        assert (out / f).is_file(), f
    res = json.loads((out / "compare.json").read_text())
    (run,) = res["runs"]
    real = pd.read_parquet(Path(run["real_dir"]) / "requests.parquet")
    done = real[(real["status"] == "completed") & (real["t_arrive_s"] >= cfg.warmup_s)]
    assert run["real"]["jct_mean_s"] == pytest.approx(done["jct_s"].mean())
    assert run["sim_cal"] is not None and run["discrepancy_cal"]["mean"] is not None
    cal = pd.read_parquet(Path(run["sim_cal_dir"]) / "requests.parquet")
    assert np.allclose(np.sort(cal["t_arrive_s"]), np.sort(real.loc[real["outcome"] != "not_sent", "t_arrive_s"]))


def _write_cfg(cfg, tmp_path: Path) -> str:
    from experiments.runs import config_to_yaml

    p = tmp_path / "cfg.yaml"
    p.write_text(config_to_yaml(cfg))
    return str(p)


def test_down_spares_a_live_swap_in_run_and_clears_a_dead_ones(tb_env: Path) -> None:
    """A sim-only swap-in run needs no testbed: `down` must leave its shm directory
    (/dev/shm/mlb-rt-<its pid>) and its controller alone while it runs, and clear both once the
    run's process is gone."""
    from hil.testbed.testbed import down, leftovers

    procs: list[subprocess.Popen] = []
    dirs: list[Path] = []

    def fake_controller(run_dir: Path) -> subprocess.Popen:
        # argv as `marllb hil controller` on the run's region has it: "controller" and the path
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "controller",
                              str(run_dir / "lb0")])
        procs.append(p)
        return p

    try:
        live_owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        procs.append(live_owner)
        dead_owner = subprocess.Popen(["true"])
        dead_owner.wait()
        live_dir, dead_dir = (Path(f"/dev/shm/mlb-rt-{p.pid}") for p in (live_owner, dead_owner))
        for d in (live_dir, dead_dir):
            d.mkdir()
            dirs.append(d)
            (d / "lb0").write_bytes(b"\0" * 64)
        live_ctl, dead_ctl = fake_controller(live_dir), fake_controller(dead_dir)
        time.sleep(0.3)  # both controllers' argv readable in /proc

        removed = down()
        assert removed["kept"] == [str(live_dir)]
        assert str(dead_dir) in removed["shm"] and not dead_dir.exists()
        assert dead_ctl.pid in removed["processes"] and dead_ctl.wait(timeout=5) is not None
        assert live_dir.is_dir() and live_ctl.poll() is None and live_owner.poll() is None
        assert live_ctl.pid not in removed["processes"]

        live_owner.kill()  # the run ends without cleaning up: now its leftovers go
        live_owner.wait()
        removed = down()
        assert removed["kept"] == [] and not live_dir.exists()
        assert live_ctl.wait(timeout=5) is not None
    finally:
        for p in procs:
            p.kill()
            p.wait()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    assert not any(leftovers().values()), leftovers()
