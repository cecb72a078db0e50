"""Run-contract files written by `marllb sim run` / `sweep` / `plot` (real simulator, short runs).

These check the CLI plumbing (file names, keys, config round trip, plots); the simulator's
numbers are checked in test_golden_runs.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from experiments.cli import main
from experiments.runs import OUTPUT_FILES, _json_safe, load_run
from simulator.config import load_config
from simulator.results import PER_SERVER_KEYS, SUMMARY_KEYS

pytestmark = pytest.mark.usefixtures("real_sim")


def test_sim_run_writes_contract_files(tmp_path: Path, quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["sim", "run", str(quickstart), "--out", str(out), "--no-progress",
                 "--set", "duration_s=4", "--set", "warmup_s=1", "--set", "policy.name=lsq"])
    stdout = capsys.readouterr().out
    assert code == 0
    for name in OUTPUT_FILES:
        assert (out / name).is_file(), name
    assert not (out / "jct_cdf.png").exists()  # no --plot
    summary = json.loads((out / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert all(set(PER_SERVER_KEYS) <= set(p) for p in summary["per_server"])
    assert (out / "summary.json").read_text().startswith("{\n  ")  # pretty
    # the resolved config re-loads to the very config that ran, overrides included
    cfg = load_config(out / "config.yaml")
    assert cfg == load_config(quickstart, ["duration_s=4", "warmup_s=1", "policy.name=lsq"])
    assert cfg.policy.name == "lsq" and summary["policy"] == "lsq"
    req = pd.read_parquet(out / "requests.parquet")
    assert len(req) == summary["arrived"]
    assert {"t_s", "server", "n_flow_on"} <= set(pd.read_parquet(out / "steps.parquet").columns)
    assert "MARLLB simulation summary" in stdout and "JCT mean ms" in stdout and str(out) in stdout


def test_sim_run_plot(tmp_path: Path, quickstart: Path) -> None:
    out = tmp_path / "run"
    assert main(["sim", "run", str(quickstart), "--out", str(out), "--plot", "--no-progress",
                 "--set", "duration_s=4"]) == 0
    for name in ("jct_cdf.png", "jct_percentiles.png", "server_load.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200


def test_default_out_follows_run_naming(tmp_path: Path, quickstart: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sim", "run", str(quickstart), "--no-progress", "--set", "duration_s=3"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    name, policy, seed, unix_time = run_dir.name.split("__")
    assert (name, policy, seed) == ("quickstart", "sed", "1") and unix_time.isdigit()


def test_rerun_replaces_old_plots(tmp_path: Path, quickstart: Path) -> None:
    out = tmp_path / "run"
    assert main(["sim", "run", str(quickstart), "--out", str(out), "--plot", "--no-progress", "--set", "duration_s=3"]) == 0
    assert main(["sim", "run", str(quickstart), "--out", str(out), "--no-progress", "--set", "duration_s=3"]) == 0
    assert not (out / "jct_cdf.png").exists()


def test_plot_several_runs(tmp_path: Path, quickstart: Path) -> None:
    dirs = []
    for policy in ("sed", "ecmp"):
        d = tmp_path / policy
        assert main(["sim", "run", str(quickstart), "--out", str(d), "--no-progress",
                     "--set", "duration_s=3", "--set", f"policy.name={policy}"]) == 0
        dirs.append(str(d))
    pngs = tmp_path / "pngs"
    assert main(["plot", *dirs, "--out", str(pngs)]) == 0
    assert sorted(p.name for p in pngs.iterdir()) == ["jct_cdf.png", "jct_percentiles.png", "server_load.png"]
    runs = [load_run(d) for d in dirs]
    assert [r.label for r in runs] == ["sed", "ecmp"]


def test_sweep_runs_each_policy_and_seed(tmp_path: Path, quickstart: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sweep"
    code = main(["sim", "sweep", str(quickstart), "--policies", "sed,ecmp", "--seeds", "3,4",
                 "--out", str(out), "--no-progress", "--set", "duration_s=3"])
    assert code == 0
    names = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert names == ["ecmp__seed3", "ecmp__seed4", "sed__seed3", "sed__seed4"]
    for n in names:
        s = json.loads((out / n / "summary.json").read_text())
        assert (s["policy"], s["seed"]) == (n.split("__")[0], int(n[-1]))
    assert (out / "jct_percentiles.png").is_file() and (out / "jct_cdf.png").is_file()
    assert capsys.readouterr().out.count("seed") >= 1


def test_json_safe_turns_nan_into_null() -> None:
    import numpy as np

    assert _json_safe({"a": float("nan"), "b": [np.float64(1.5), np.int64(2)], "c": math.inf}) == {
        "a": None, "b": [1.5, 2], "c": None}
    json.dumps(_json_safe({"x": np.float32(2.0)}), allow_nan=False)


def test_summary_missing_contract_key_is_a_bug_not_a_user_error(tmp_path: Path, quickstart: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import experiments.runs
    from simulator.run import run_experiment

    def broken(cfg, **kw):  # type: ignore[no-untyped-def]
        res = run_experiment(cfg, **kw)
        del res.summary["jain_fairness"]
        return res

    monkeypatch.setattr(experiments.runs, "default_runner", lambda: broken)
    with pytest.raises(RuntimeError, match="jain_fairness"):
        main(["sim", "run", str(quickstart), "--out", str(tmp_path / "o"), "--no-progress", "--set", "duration_s=3"])
