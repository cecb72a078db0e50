"""`marllb sweep`: planning and errors, the tables against the points they come from, resuming after a
kill, a crashing point, the same workload for every policy at a seed, determinism, and Ray = local pool."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from experiments.cli import main
from experiments.sweep import load_sweep, plan_points, run_sweep
from simulator.config import ConfigError

REPO = Path(__file__).resolve().parents[2]
HAVE_RAY = importlib.util.find_spec("ray") is not None

TINY = {"name": "tiny_sweep", "seed": 0, "duration_s": 2.0, "warmup_s": 0.5,
        "topology": {"lbs": 2, "servers": [{"cores": 1}, {"cores": 1}, {"cores": 2}]},
        "traffic": {"kind": "poisson", "load": 0.7, "job": {"dist": "exp", "mean_s": 0.02}},
        "policy": {"name": "sed"}}


def _write(tmp_path: Path, sweep: dict, base: dict = TINY) -> Path:
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **sweep}, sort_keys=False))
    return path


SWEEP = {"name": "t", "policies": ["ecmp", "sed"], "axes": {"traffic.load": [0.5, 0.8]},
         "seeds": "1-3", "baseline": "sed"}


# ---------------------------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------------------------
def test_plan_is_the_product_with_stable_keys(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, SWEEP))
    points = plan_points(spec)
    assert len(points) == 2 * 2 * 3
    assert {(p.label, p.axes[0][1], p.seed) for p in points} == {
        (pol, load, s) for pol in ("ecmp", "sed") for load in (0.5, 0.8) for s in (1, 2, 3)}
    for p in points:
        assert p.cfg.policy.name == p.label and p.cfg.seed == p.seed
        assert p.cfg.traffic.load == p.axes[0][1] and p.cfg.traffic.rate is None
    # the key is the resolved run: the same in another sweep that also contains it
    (tmp_path / "other").mkdir()
    other = load_sweep(_write(tmp_path / "other", {**SWEEP, "policies": ["sed"], "seeds": [2]}))
    assert {p.key for p in plan_points(other)} <= {p.key for p in points}


def test_a_rate_axis_replaces_the_base_load(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, {**SWEEP, "axes": {"traffic.rate": [50.0, 60.0]}}))
    cfgs = [p.cfg for p in plan_points(spec)]
    assert {c.traffic.rate for c in cfgs} == {50.0, 60.0} and all(c.traffic.load is None for c in cfgs)


@pytest.mark.parametrize("sweep, expect", [
    ({**SWEEP, "policies": ["ecmp", "sde"]}, ":5: policies.1: unknown policy 'sde'"),
    ({**SWEEP, "seeds": "3-1"}, "seeds: expected a list of integers or a range"),
    ({**SWEEP, "baseline": "lsq"}, "baseline: 'lsq' is not one of the sweep's policies"),
    ({**SWEEP, "colour": 1}, "colour: unknown key"),
    ({**SWEEP, "axes": {"traffic.load": []}}, "axes.traffic.load: expected a non-empty list"),
    ({**SWEEP, "checkpoints": {"q": "nope.pt"}}, "checkpoints.q: no such checkpoint"),
])
def test_bad_sweep_files_name_file_line_and_key(tmp_path: Path, sweep: dict, expect: str) -> None:
    path = _write(tmp_path, sweep)
    with pytest.raises(ConfigError) as err:
        load_sweep(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_an_invalid_point_names_the_point(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, {**SWEEP, "axes": {"traffic.load": [0.5, -1]}}))
    with pytest.raises(ConfigError, match=r"point ecmp \{'traffic.load': -1\} seed 1.*\n.*traffic.load"):
        plan_points(spec)


def test_quick_without_a_quick_section_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--quick needs a 'quick' mapping"):
        load_sweep(_write(tmp_path, SWEEP), quick=True)


@pytest.mark.parametrize("name", ["paper_moderate", "paper_large", "paper_dynamic"])
def test_paper_sweep_files_plan(name: str) -> None:
    for quick in (False, True):
        points = plan_points(load_sweep(REPO / "experiments/sweeps" / f"{name}.yaml", quick=quick))
        assert points and len({p.key for p in points}) == len(points)


# ---------------------------------------------------------------------------------------------
# running: tables, crash, resume, workload identity, determinism
# ---------------------------------------------------------------------------------------------
def test_tables_agree_with_the_points(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, SWEEP))
    out = tmp_path / "out"
    outcome = run_sweep(spec, out, workers=2, progress=False)
    assert (outcome.planned, outcome.ran, outcome.failed) == (12, 12, [])
    points = pd.read_parquet(out / "points.parquet")
    agg = pd.read_parquet(out / "aggregate.parquet")
    assert len(points) == 12 == len(list((out / "points").iterdir()))
    for row in points.itertuples():  # every row is its point's summary
        summary = json.loads((out / "points" / row.key / "summary.json").read_text())
        assert row.jct_mean_s == pytest.approx(summary["jct_mean_s"])
        assert json.loads((out / "points" / row.key / "point.json").read_text())["seed"] == row.seed
    assert len(agg) == 4 and set(agg["n"]) == {3}
    for r in agg.itertuples():
        x = points[(points.label == r.label) & (points["traffic.load"] == r._2)]["jct_mean_s"].to_numpy()
        assert len(x) == 3 and r.jct_mean_s == pytest.approx(x.mean())
        half = stats.t.ppf(0.975, 2) * x.std(ddof=1) / np.sqrt(3)  # 3 seeds: t with 2 dof
        assert r.jct_mean_s_ci95 == pytest.approx(half, rel=1e-3)
        base = points[(points.label == "sed") & (points["traffic.load"] == r._2)].set_index("seed")
        mine = points[(points.label == r.label) & (points["traffic.load"] == r._2)].set_index("seed")
        d = (mine["jct_mean_s"] / base["jct_mean_s"] - 1).to_numpy()
        assert r.jct_mean_s_vs_sed == pytest.approx(d.mean())
    table = (out / "table.md").read_text()
    assert table.count("\n| ecmp |") == 2 and table.count("\n| sed |") == 2


def test_every_policy_at_a_seed_sees_the_same_requests(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, {**SWEEP, "policies": ["ecmp", "lsq", "sed"], "seeds": [4],
                                        "axes": {"traffic.load": [0.8]}}))
    out = tmp_path / "out"
    run_sweep(spec, out, progress=False)
    frames = [pd.read_parquet(out / "points" / p.key / "requests.parquet").sort_values("id")
              for p in plan_points(spec)]
    cols = ["id", "client", "t_arrive_s", "work_s"]
    for other in frames[1:]:
        pd.testing.assert_frame_equal(frames[0][cols].reset_index(drop=True), other[cols].reset_index(drop=True))
    assert not frames[0]["server"].equals(frames[1]["server"])  # while the choices differ


def test_same_sweep_twice_gives_identical_tables(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, {**SWEEP, "seeds": [1, 2]}))
    run_sweep(spec, tmp_path / "a", workers=2, progress=False)
    run_sweep(spec, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a/aggregate.parquet"),
                                  pd.read_parquet(tmp_path / "b/aggregate.parquet"))


def test_a_crashing_point_is_recorded_and_the_rest_finish(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a torch checkpoint")
    path = _write(tmp_path, {**SWEEP, "seeds": [1, 2], "checkpoints": {"qmix": "broken.pt"}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out), "--workers", "2", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("failed: qmix") == 4
    errors = sorted((out / "errors").glob("*.json"))
    assert len(errors) == 4
    record = json.loads(errors[0].read_text())
    assert record["label"] == "qmix" and "broken.pt" in record["error"] and "Traceback" in record["traceback"]
    points = pd.read_parquet(out / "points.parquet")
    assert len(points) == 8 and set(points["label"]) == {"ecmp", "sed"}
    # the next invocation retries only the failed points
    before = {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()}
    assert main(["sweep", str(path), "--out", str(out), "--no-progress"]) == 1
    assert {p.name: p.stat().st_mtime_ns for p in (out / "points").iterdir()} == before
    assert "0 finished before" not in capsys.readouterr().out


def test_a_killed_sweep_resumes_without_rerunning_finished_points(tmp_path: Path) -> None:
    base = {**TINY, "duration_s": 6.0}
    path = _write(tmp_path, {**SWEEP, "seeds": "1-4"}, base)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "experiments.cli", "sweep", str(path), "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            done = [p for p in (out / "points").glob("*") if not p.name.startswith(".")] \
                if (out / "points").is_dir() else []
            if len(done) >= 3:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
    finished = {p.name: (p / "summary.json").stat().st_mtime_ns
                for p in (out / "points").iterdir() if not p.name.startswith(".")}
    assert 3 <= len(finished) < 16, "the sweep was killed in the middle"
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} finished before, {16 - len(finished)} run now" in result.stdout
    for key, mtime in finished.items():  # nothing that finished ran again
        assert (out / "points" / key / "summary.json").stat().st_mtime_ns == mtime
    assert not list((out / "points").glob(".tmp-*"))
    assert len(pd.read_parquet(out / "points.parquet")) == 16


@pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'marllb[ray]')")
def test_ray_backend_gives_the_local_pool_tables(tmp_path: Path) -> None:
    spec = load_sweep(_write(tmp_path, {**SWEEP, "seeds": [1, 2]}))
    run_sweep(spec, tmp_path / "local", workers=2, progress=False)
    run_sweep(spec, tmp_path / "ray", workers=2, backend="ray", progress=False)
    for name in ("points.parquet", "aggregate.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local" / name),
                                      pd.read_parquet(tmp_path / "ray" / name))


# ---------------------------------------------------------------------------------------------
# the paper sweep's quick variant end to end: sweep, figures, results page
# ---------------------------------------------------------------------------------------------
def test_quick_paper_sweep_plot_and_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "quick"
    sweep = REPO / "experiments/sweeps/paper_moderate.yaml"
    assert main(["sweep", str(sweep), "--quick", "--out", str(out), "--workers", "2", "--no-progress"]) == 0
    planned = plan_points(load_sweep(sweep, quick=True))
    points = pd.read_parquet(out / "points.parquet")
    agg = pd.read_parquet(out / "aggregate.parquet")
    assert sorted(points["key"]) == sorted(p.key for p in planned)
    assert len(agg) == len({(p.label, p.axes) for p in planned}) and set(agg["n"]) == {3}
    assert (agg[agg["label"] == "sed"]["jct_mean_s_vs_sed"] == 0).all()
    assert main(["plot", str(out)]) == 0
    for name in ("jct_cdf", "jct_percentiles", "work_share", "fairness_over_time"):
        for ext in ("pdf", "png"):
            assert (out / "figures" / f"{name}.{ext}").stat().st_size > 1000
    first = {p.name: p.read_bytes() for p in (out / "figures").iterdir()}
    assert main(["plot", str(out)]) == 0  # redrawn from the folder alone: the same bytes
    assert {p.name: p.read_bytes() for p in (out / "figures").iterdir()} == first
    assert main(["report", str(out)]) == 0
    page = (out / "report.md").read_text()
    assert "points: 18 of 18 finished" in page
    assert "| sed | 67.2 ± 5.1" not in page  # paper numbers sit in their own columns
    sed = agg[(agg["label"] == "sed") & (agg["traffic.rate"] == 518.8)]["jct_mean_s"].iloc[0]
    assert f"| sed | {1e3 * sed:.1f} ± " in page and "67.2 ± 5.1" in page  # ours, then the paper's
    for name in ("jct_cdf", "work_share"):
        assert f"(figures/{name}.png)" in page


def test_group_work_and_fairness_by_hand() -> None:
    from experiments.sweep_plots import fairness_series, group_work

    req = pd.DataFrame({"server": [0, 1, 2, 2, -1], "work_s": [1.0, 3.0, 4.0, 4.0, 9.0],
                        "t_arrive_s": [1.0, 1.0, 1.0, 0.1, 1.0],
                        "t_server_arrive_s": [1.2, 1.5, 2.5, 0.2, np.nan]})
    # groups by cores: {1: servers 0 and 1, 2: server 2}; server 2's 0.1 s request is before warm-up
    assert group_work(req, [1, 1, 2], warmup_s=0.5) == {1.0: 2.0, 2.0: 4.0}
    jain = fairness_series(req, [1, 1, 2])
    # bin 0: only server 2 got work (4/2 = 2): 1/3; bin 1: x = (1, 3, 0): 16 / (3 * 10);
    # bin 2: x = (0, 0, 2): 1/3
    assert jain.to_dict() == pytest.approx({0.0: 1 / 3, 1.0: 16 / 30, 2.0: 1 / 3})


def test_checkpoints_added_on_the_command_line(tmp_path: Path, capsys) -> None:
    path = _write(tmp_path, SWEEP)
    cp = tmp_path / "agent.pt"
    cp.write_bytes(b"x")
    spec = load_sweep(path, extra_checkpoints={"qmix": str(cp)})
    assert spec.checkpoints == {"qmix": cp.resolve()}
    assert {p.label for p in plan_points(spec)} == {"ecmp", "sed", "qmix"}
    with pytest.raises(ConfigError, match="label 'sed' is already in"):
        load_sweep(path, extra_checkpoints={"sed": str(cp)})
    with pytest.raises(ConfigError, match="no such checkpoint"):
        load_sweep(path, extra_checkpoints={"q": str(tmp_path / "none.pt")})
    assert main(["sweep", str(path), "--checkpoint", "qmix"]) == 2
    assert "expected LABEL=PATH" in capsys.readouterr().err


def test_a_worker_killed_mid_point_does_not_stop_the_sweep(tmp_path: Path, caplog) -> None:
    """SIGKILL one pool worker while it runs a point (as the OOM killer would): the pool breaks,
    the points that were running are retried alone, every point finishes once."""
    import threading

    spec = load_sweep(_write(tmp_path, {**SWEEP, "seeds": "1-3"}, {**TINY, "duration_s": 8.0}))
    out = tmp_path / "out"
    outcome: list = []
    runner = threading.Thread(target=lambda: outcome.append(run_sweep(spec, out, workers=2, progress=False)))
    runner.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and time.monotonic() < deadline and runner.is_alive():
        for tmp in (out / "points").glob(".tmp-*") if (out / "points").is_dir() else []:
            pid = int(tmp.name.rsplit("-", 1)[1])
            if pid != os.getpid():
                os.kill(pid, signal.SIGKILL)
                killed = tmp.name.split("-")[1]
                break
        time.sleep(0.02)
    runner.join(600)
    assert killed is not None, "no point was seen running"
    (result,) = outcome
    assert result.failed == [] and result.planned == 12
    assert len(pd.read_parquet(out / "points.parquet")) == 12
    assert (out / "points" / killed / "summary.json").is_file()
    assert not list((out / "points").glob(".tmp-*")) and not list((out / "errors").iterdir())
    assert "a worker process died" in caplog.text  # the pool really broke and was replaced
