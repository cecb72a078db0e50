"""`marllb sim run` streams the tables into the run directory; load_run reads them back in id
order, equal to the tables of the same run kept in memory."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from experiments.runs import load_run, run_one, write_run
from simulator.config import load_config
from simulator.results import SUMMARY_KEYS, SimResult

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.usefixtures("real_sim")


def test_run_dir_tables_equal_the_in_memory_run(tmp_path: Path) -> None:
    from simulator.run import run_experiment

    cfg = load_config(REPO / "experiments/configs/quickstart.yaml", ["duration_s=6", "warmup_s=1", "seed=4"])
    res = run_one(cfg, tmp_path / "run", progress=False)
    assert res.requests is None and res.steps is None  # streamed, not held
    raw = pd.read_parquet(tmp_path / "run" / "requests.parquet")
    assert not raw["id"].is_monotonic_increasing  # written as requests finished ...
    run = load_run(tmp_path / "run")
    ref = run_experiment(cfg, progress=False)
    pd.testing.assert_frame_equal(run.requests, ref.requests)  # ... read back by id
    pd.testing.assert_frame_equal(run.steps, ref.steps)
    assert {**run.summary, "wall_s": 0} == {**ref.summary, "wall_s": 0}


def test_a_runner_that_returns_no_table_must_have_written_it(tmp_path: Path) -> None:
    cfg = load_config(REPO / "experiments/configs/quickstart.yaml")
    summary = {**{k: 0 for k in SUMMARY_KEYS}, "per_server": []}
    with pytest.raises(RuntimeError, match="no requests table"):
        write_run(tmp_path, cfg, SimResult(summary=summary, requests=None, steps=None))
