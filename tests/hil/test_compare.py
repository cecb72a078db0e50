"""hil.compare: simulated vs real report and calibration, against an independent truth.

The "real" testbed is the simulator itself run with KNOWN perturbed parameters (other server
cores, every job k times slower plus a fixed overhead), on the arrivals the nominal simulation
draws from the same seed; the real-only columns are written consistently with those parameters
(cpu_s = a + n_iter / I_true with getrusage-like noise, service_s = the server sojourn). The
calibration must recover the parameters, and the numbers in compare.json must equal the ones
computed here straight from the parquet files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("simulator.dataplane", reason="cffi binding not built (pip install -e .)")

from experiments.runs import config_to_yaml, read_table, run_one  # noqa: E402
from hil.calibration import _capacity, calibrated_config, fit_calibration  # noqa: E402
from hil.compare import REPORT_FILES, compare, compare_runs  # noqa: E402
from simulator.config import ConfigError, ExperimentConfig, UserError, parse_config  # noqa: E402
from simulator.traffic import make_source  # noqa: E402

NOMINAL = [2.0, 2.0, 4.0]
TRUE_CORES = [1.7, 2.5, 3.4]  # what the "real" servers deliver, in simulated cores
K_TRUE = 1.25  # real PHP needs 1.25 x the calibrated CPU per iteration
O_TRUE = 0.010  # fixed CPU per request, simulated seconds
F = 0.5  # real CPUs per simulated core
I_CAL = 2.0e7  # iterations per real CPU-second assumed by the sender
CPU_NOISE_S = 0.0005  # sd of the measured cpu_s (real seconds)


def nominal_cfg(**over) -> ExperimentConfig:
    data = {"name": "cmp", "seed": 3, "duration_s": 12.0, "warmup_s": 1.0,
            "topology": {"lbs": 1, "servers": [{"cores": c, "workers": 64, "backlog": 128} for c in NOMINAL]},
            "traffic": {"kind": "poisson", "rate": 70.0, "job": {"dist": "exp", "mean_s": 0.05}},
            "policy": {"name": "sed"}}
    data.update(over)
    return parse_config(data)


def arrivals(cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """The arrivals the simulator draws for cfg (same seed streams as simulator.run)."""
    s_arr, s_size = np.random.SeedSequence(cfg.seed).spawn(7)[:2]
    src = make_source(cfg.traffic, sum(NOMINAL), np.random.default_rng(s_arr), np.random.default_rng(s_size))
    t, w = [], []
    while True:
        ti, wi = src.next_request()
        if ti > cfg.duration_s:
            break
        t.append(ti)
        w.append(wi)
    return np.array(t), np.array(w)


def fake_testbed(cfg: ExperimentConfig, out: Path, true_cores: list[float] = TRUE_CORES) -> Path:
    """A "real" run directory: the nominal arrivals served with the TRUE parameters."""
    t, w = arrivals(cfg)
    out.mkdir(parents=True, exist_ok=True)
    trace = out / "true_trace.csv"
    rows = (f"{a!r},{K_TRUE * b + O_TRUE!r}\n" for a, b in zip(t.tolist(), w.tolist()))
    trace.write_text("time,size\n" + "".join(rows))
    data = cfg.model_dump(mode="json")
    # the LBs weigh the servers by their nominal cores; the servers deliver the true capacity
    data["events"] = [{"at_s": 0.0, "server": j, "kind": "capacity", "cores": c}
                      for j, c in enumerate(true_cores)]
    data["traffic"].update({"kind": "trace", "path": str(trace), "rate": None, "load": None})
    run_one(parse_config(data), out, progress=False)
    (out / "config.yaml").write_text(config_to_yaml(cfg))  # the testbed ran the nominal config
    df = read_table(out / "requests.parquet")  # in id (arrival) order
    assert np.allclose(df["t_arrive_s"], t)
    df["work_s"] = w  # jobs were sent with their nominal size
    df["outcome"] = df["status"].astype(str).map({"completed": "completed", "dropped": "refused",
                                                  "in_flight": "timeout"})
    df["n_iter"] = np.round(w * F * I_CAL).astype(np.int64)
    rng = np.random.default_rng(cfg.seed + 99)
    cpu = O_TRUE * F + df["n_iter"] * K_TRUE / I_CAL + rng.normal(0, CPU_NOISE_S, len(df))
    df["cpu_s"] = np.where(df["outcome"] == "completed", cpu, np.nan)
    df["service_s"] = df["sojourn_s"]
    df["t_last_byte_s"] = df["t_done_s"]
    df.to_parquet(out / "requests.parquet", index=False)
    hil = {"cpu_per_core": F, "iters_per_cpu_s": I_CAL,
           "servers": [{"id": j, "cores": c, "quota_cpus": c * F} for j, c in enumerate(NOMINAL)]}
    (out / "hil.json").write_text(json.dumps(hil))
    return out


def measured(run_dir: Path) -> tuple[np.ndarray, pd.DataFrame, float]:
    df = read_table(run_dir / "requests.parquet")
    warm = yaml.safe_load((run_dir / "config.yaml").read_text())["warmup_s"]
    j = df.loc[(df["status"] == "completed") & (df["t_arrive_s"] >= warm), "jct_s"].to_numpy()
    return j, df, warm


# ---------------------------------------------------------------------------------------------

def test_capacity_hand_cases():
    # two requests in service together over [0, 2], 1 CPU-s each: at rate min(1, C/2) each,
    # 4 min(1, C/2) = 2  =>  C = 1
    c, busy, max_n = _capacity(np.array([0.0, 0.0]), np.array([2.0, 2.0]), np.array([True, True]), 2.0)
    assert c == pytest.approx(1.0, rel=1e-9) and busy == 2.0 and max_n == 2
    # one counted request [0, 3] overlapping an uncounted one [1, 2] and one still in service from
    # 2.5: n = 1, 2, 1, 2 on [0,1), [1,2), [2,2.5), [2.5,3). With C = 1.5:
    # 1 + 0.75 + 0.5 + 0.5 * 0.75 = 2.625
    c, _, _ = _capacity(np.array([0.0, 1.0, 2.5]), np.array([3.0, 2.0, np.inf]),
                        np.array([True, False, False]), 2.625)
    assert c == pytest.approx(1.5, rel=1e-9)
    # a lone request that did 2 CPU-s of work in 1 s: no simulator cores can do it
    assert _capacity(np.array([0.0]), np.array([1.0]), np.array([True]), 2.0)[0] is None


def test_fit_calibration_recovers_known_parameters(tmp_path):
    real = fake_testbed(nominal_cfg(), tmp_path / "real")
    cal = fit_calibration(real)
    assert cal.speed_factor == pytest.approx(K_TRUE, rel=0.01)
    assert cal.iters_per_cpu_s_fit == pytest.approx(I_CAL / K_TRUE, rel=0.01)
    assert cal.overhead_s == pytest.approx(O_TRUE, abs=0.001)  # within 1 ms of 10 ms
    assert [s.method for s in cal.servers] == ["ps_fit"] * 3
    for fit, true in zip(cal.servers, TRUE_CORES):
        assert fit.cores == pytest.approx(true, rel=0.03)
    assert [s.nominal_cores for s in cal.servers] == NOMINAL

    # the calibrated config replays the real arrivals with size k work + o, on the nominal cores
    # unless asked for the fitted ones
    assert calibrated_config(nominal_cfg(), real, cal, tmp_path / "nom").events == []
    cfg2 = calibrated_config(nominal_cfg(), real, cal, tmp_path / "cal", fitted_cores=True)
    assert cfg2.traffic.kind == "trace" and cfg2.topology == nominal_cfg().topology
    assert [(e.at_s, e.server, e.kind) for e in cfg2.events] == [(0.0, j, "capacity") for j in range(3)]
    assert [e.cores for e in cfg2.events] == pytest.approx(cal.cores)
    trace = pd.read_csv(cfg2.traffic.path)
    df = pd.read_parquet(real / "requests.parquet")
    assert np.array_equal(trace["time"].to_numpy(), df["t_arrive_s"].to_numpy())
    assert np.allclose(trace["size"], cal.speed_factor * df["work_s"] + cal.overhead_s)


def test_compare_end_to_end(tmp_path):
    out = tmp_path / "cmp"
    res = compare(nominal_cfg(), out, policies=["sed", "wcmp"], seeds=[3, 4], calibrate=True,
                  fitted_cores=True, run_real=fake_testbed, progress=False)
    for f in REPORT_FILES:
        assert (out / f).stat().st_size > 0, f
    on_disk = json.loads((out / "compare.json").read_text())
    assert [r["label"] for r in on_disk["runs"]] == ["sed/3", "sed/4", "wcmp/3", "wcmp/4"]
    for r in on_disk["runs"]:
        name = r["label"].replace("/", "__")
        for kind in ("sim", "real", "sim_cal"):
            j, df, warm = measured(out / kind / name)
            st = r[kind]
            assert st["jct_mean_s"] == pytest.approx(j.mean(), rel=1e-12)
            assert st["jct_p90_s"] == pytest.approx(np.percentile(j, 90), rel=1e-12)
            assert st["jct_p99_s"] == pytest.approx(np.percentile(j, 99), rel=1e-12)
            assert st["completed"] == int((df["status"] == "completed").sum())
            assert st["dropped"] == int((df["status"] == "dropped").sum())
            after = df[(df["t_arrive_s"] >= warm) & (df["server"] >= 0)]
            share = after["server"].value_counts(normalize=True).reindex(range(3), fill_value=0)
            assert st["server_share"] == pytest.approx(share.tolist(), abs=1e-12)
        summary = json.loads((out / "sim" / name / "summary.json").read_text())
        assert r["sim"]["jct_mean_s"] == pytest.approx(summary["jct_mean_s"], rel=1e-12)
        assert r["discrepancy"]["mean"] == pytest.approx(
            (r["real"]["jct_mean_s"] - r["sim"]["jct_mean_s"]) / r["sim"]["jct_mean_s"])
        assert r["real"]["outcomes"]["completed"] == r["real"]["completed"]
        # calibration closes most of the gap
        gap_before = abs(r["real"]["jct_mean_s"] - r["sim"]["jct_mean_s"])
        gap_after = abs(r["real"]["jct_mean_s"] - r["sim_cal"]["jct_mean_s"])
        assert gap_after < 0.3 * gap_before, r["label"]
        assert r["calibration"]["speed_factor"] == pytest.approx(K_TRUE, rel=0.02)

    # policies pool their seeds
    for p in on_disk["policies"]:
        js = [measured(out / "real" / f"{p['policy']}__{s}")[0] for s in (3, 4)]
        pooled = np.concatenate(js)
        assert p["seeds"] == [3, 4]
        assert p["real"]["jct_mean_s"] == pytest.approx(pooled.mean(), rel=1e-12)
        assert p["real"]["jct_p99_s"] == pytest.approx(np.percentile(pooled, 99), rel=1e-12)
        assert p["gap_closed"]["mean"] > 0.7
    report = (out / "report.md").read_text()
    assert "| sed/3 |" in report and "gap closed" in report.lower()
    assert res["policies"][0]["policy"] == "sed"


def test_compare_is_deterministic(tmp_path):
    outs = [tmp_path / "a", tmp_path / "b"]
    for o in outs:
        compare(nominal_cfg(duration_s=6.0), o, policies=["sed"], seeds=[5], calibrate=True,
                run_real=fake_testbed, progress=False)

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if not k.endswith("_dir")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x

    a, b = (strip(json.loads((o / "compare.json").read_text())) for o in outs)
    assert a == b
    assert (outs[0] / "report.md").read_text() == (outs[1] / "report.md").read_text()


def test_bad_inputs(tmp_path):
    cfg = nominal_cfg(duration_s=4.0)
    sim = tmp_path / "sim"
    run_one(cfg, sim, progress=False)
    real = fake_testbed(cfg, tmp_path / "real")

    with pytest.raises(UserError, match="nowhere: no such run directory"):
        compare_runs([("x", sim, tmp_path / "nowhere")], tmp_path / "out")
    with pytest.raises(UserError, match="nowhere: no such run directory"):
        fit_calibration(tmp_path / "nowhere")

    df = pd.read_parquet(real / "requests.parquet")
    df.drop(columns=["cpu_s"]).to_parquet(real / "requests.parquet", index=False)
    with pytest.raises(UserError, match=r"requests\.parquet: missing column 'cpu_s'"):
        fit_calibration(real)
    df.drop(columns=["jct_s"]).to_parquet(real / "requests.parquet", index=False)
    with pytest.raises(UserError, match=r"real/requests\.parquet: missing column.*'jct_s'"):
        compare_runs([("x", sim, real)], tmp_path / "out")
    df.to_parquet(real / "requests.parquet", index=False)

    (real / "hil.json").unlink()
    with pytest.raises(UserError, match=r"hil\.json: missing"):
        fit_calibration(real)
    (real / "summary.json").unlink()
    with pytest.raises(UserError, match=r"summary\.json: missing"):
        compare_runs([("x", sim, real)], tmp_path / "out")

    # an unknown policy is rejected before anything runs
    ran = []
    with pytest.raises(ConfigError, match="policy.name"):
        compare(cfg, tmp_path / "cmp", policies=["sed", "nope"], run_real=lambda c, p: ran.append(p) or p,
                progress=False)
    assert not ran and not (tmp_path / "cmp" / "sim").exists()


def test_fit_calibration_fallbacks(tmp_path):
    real = fake_testbed(nominal_cfg(duration_s=4.0), tmp_path / "real")
    df = pd.read_parquet(real / "requests.parquet")
    s0, s2 = df["server"] == 0, df["server"] == 2
    # server 1 (s1) served every job in a fifth of the time: faster than one simulated core each
    df.loc[s0, "service_s"] = df.loc[s0, "service_s"] / 5
    df.loc[s0, "t_server_done_s"] = df.loc[s0, "t_server_arrive_s"] + df.loc[s0, "service_s"]
    # server 3 (s3) reported no service intervals at all
    df.loc[s2, ["t_server_arrive_s", "service_s", "t_server_done_s"]] = np.nan
    # as on the testbed, requests unanswered at the end carry no server record
    late = df["status"] == "in_flight"
    assert late.any()
    df.loc[late, ["t_server_arrive_s", "service_s", "t_server_done_s"]] = np.nan
    df.loc[late, "server"] = -1
    df.to_parquet(real / "requests.parquet", index=False)
    cal = fit_calibration(real)
    t_cut = df.loc[late, "t_arrive_s"].min()
    assert any(f"finished by t = {t_cut:.3f} s" in n for n in cal.notes)
    assert cal.servers[1].cores == pytest.approx(TRUE_CORES[1], rel=0.05)
    assert [s.method for s in cal.servers] == ["busy_time", "ps_fit", "nominal"]
    fit0 = cal.servers[0]
    assert fit0.cores == pytest.approx(fit0.demand_s / fit0.busy_s)
    assert cal.servers[2].cores == NOMINAL[2]
    assert any(n.startswith("s1:") for n in cal.notes) and any(n.startswith("s3:") for n in cal.notes)


def test_default_calibration_closes_a_speed_and_overhead_gap(tmp_path):
    """Servers that deliver their nominal cores (as the testbed's quotas make them) but a PHP
    speed and a per-request overhead that differ: the default calibration (nominal cores) closes
    most of the mean-JCT gap."""
    out = tmp_path / "cmp"
    res = compare(nominal_cfg(), out, policies=["sed"], seeds=[3], calibrate=True,
                  run_real=lambda c, p: fake_testbed(c, p, true_cores=NOMINAL), progress=False)
    (r,) = res["runs"]
    assert r["calibration"]["speed_factor"] == pytest.approx(K_TRUE, rel=0.02)
    gap_before = abs(r["real"]["jct_mean_s"] - r["sim"]["jct_mean_s"])
    gap_after = abs(r["real"]["jct_mean_s"] - r["sim_cal"]["jct_mean_s"])
    assert gap_after < 0.2 * gap_before
