"""Recorders: the streamed tables and the streaming summary equal the in-memory ones.

The reference is the in-memory path (MemoryRecorder: every Request kept, the tables built at
the end); the streamed run writes tiny row groups so that batch and row-group boundaries fall
everywhere. The scenario has every kind of row: completed, dropped (refused by a full backlog
and reset by a failing server), in flight at the end, and completed at the server but with its
last byte arriving after the end (in flight for good).
"""

from __future__ import annotations

import json
from fractions import Fraction
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from simulator.config import ExperimentConfig
from simulator.model import COMPLETED
from simulator.records import ParquetRecorder, Recorder
from simulator.run import build_simulation, collect, run_experiment


def _cfg(seed: int = 3) -> ExperimentConfig:
    return ExperimentConfig.model_validate({
        "seed": seed, "duration_s": 6, "warmup_s": 1,
        "topology": {"lbs": 2, "servers": [{"cores": 2, "workers": 4, "backlog": 3}] * 2
                     + [{"cores": 4, "workers": 8, "backlog": 6}] * 2,
                     "link": {"delay_s": 0.005}},  # responses in transit at the end
        "traffic": {"load": 1.05, "job": {"mean_s": 0.05}},
        "events": [{"at_s": 2, "server": 1, "kind": "fail"}, {"at_s": 3, "server": 1, "kind": "recover"}],
        "policy": {"name": "sed"},
    })


def _streamed(cfg: ExperimentConfig, out: Path):
    out.mkdir()
    sim = build_simulation(cfg, recorder=partial(ParquetRecorder, out_dir=out, group_rows=50, batch=16))
    sim.run()
    return sim, collect(sim, 0.0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory):
    cfg = _cfg()
    ref = run_experiment(cfg, progress=False)
    out = tmp_path_factory.mktemp("streamed") / "a"
    sim, streamed = _streamed(cfg, out)
    return cfg, ref, out, sim, streamed


def test_the_scenario_has_every_kind_of_row(runs) -> None:
    cfg, ref, *_ = runs
    q = ref.requests
    counts = q["status"].value_counts()
    assert (counts[["completed", "dropped", "in_flight"]] > 0).all()
    late = (q["status"] == "in_flight") & q["t_server_done_s"].notna()
    assert late.any()  # the server finished, the response's last byte lands after the end


def test_streamed_tables_hold_the_in_memory_rows(runs) -> None:
    _, ref, out, _, streamed = runs
    assert streamed.requests is None and streamed.steps is None
    got = pd.read_parquet(out / "requests.parquet")
    assert pq.ParquetFile(out / "requests.parquet").metadata.num_row_groups > 5
    assert sorted(got["id"]) == list(range(len(ref.requests)))  # ids are the arrival index
    pd.testing.assert_frame_equal(got.sort_values("id", ignore_index=True), ref.requests)
    pd.testing.assert_frame_equal(pd.read_parquet(out / "steps.parquet"), ref.steps)


def test_rows_come_in_finishing_order_then_in_flight_by_id(runs) -> None:
    _, ref, out, _, _ = runs
    got = pd.read_parquet(out / "requests.parquet")
    unfinished = ref.requests.loc[ref.requests["t_done_s"].isna() & ref.requests["t_server_done_s"].isna(), "id"]
    tail = got["id"].to_numpy()[len(got) - len(unfinished):]
    assert list(tail) == sorted(unfinished)


def test_streamed_summary_is_the_in_memory_one_and_matches_the_table(runs) -> None:
    cfg, ref, _, _, streamed = runs
    drop_wall = lambda s: {k: v for k, v in s.items() if k != "wall_s"}  # noqa: E731
    assert drop_wall(streamed.summary) == drop_wall(ref.summary)
    # independent truth: the whole table, as the in-memory path built the summary before streaming
    q, s = ref.requests, ref.summary
    counts = q["status"].value_counts()
    assert (s["arrived"], s["completed"], s["dropped"], s["in_flight"]) == (
        len(q), counts["completed"], counts["dropped"], counts["in_flight"])
    meas = q[(q["status"] == "completed") & (q["t_arrive_s"] >= cfg.warmup_s)]
    jct = meas["jct_s"].to_numpy()
    assert s["jct_mean_s"] == float(sum(map(Fraction, jct)) / len(jct))  # correctly rounded
    for p in (50, 90, 99):
        assert s[f"jct_p{p}_s"] == float(np.quantile(jct, p / 100))
    assert [p["completed"] for p in s["per_server"]] == [int((meas["server"] == i).sum()) for i in range(4)]
    assert s["measured"] == len(meas)


def test_same_seed_same_bytes(runs, tmp_path: Path) -> None:
    cfg, _, out, _, streamed = runs
    _, again = _streamed(cfg, tmp_path / "b")
    for name in ("requests.parquet", "steps.parquet"):
        assert (tmp_path / "b" / name).read_bytes() == (out / name).read_bytes()
    a, b = dict(streamed.summary), dict(again.summary)
    a.pop("wall_s"), b.pop("wall_s")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_a_streaming_simulation_does_not_keep_its_requests(runs) -> None:
    _, ref, _, sim, _ = runs
    assert sim.recorder._live == {}  # closed: everything written
    assert sim.recorder.stats.nbytes == 0  # the JCT statistics were read back from the file
    with pytest.raises(AttributeError, match="does not keep the requests"):
        sim.requests  # noqa: B018
    assert sim.n_arrived == ref.summary["arrived"]


def test_statistics_only_recorder_gives_the_same_summary(runs) -> None:
    cfg, ref, *_ = runs
    sim = build_simulation(cfg, recorder=Recorder)
    sim.run()
    res = collect(sim, 0.0)
    assert res.requests is None
    assert {**res.summary, "wall_s": 0} == {**ref.summary, "wall_s": 0}


def test_env_jct_feed_gives_what_scanning_the_requests_gave() -> None:
    """The envs' per-step JCT queue vs the scan of every request it replaced (reference)."""
    from simulator.envs import JctFeed

    sim = build_simulation(_cfg(), recorder=JctFeed)
    sim.start()
    seen, open_reqs, n_steps = 0, [], 0
    t = 0.0
    while t < sim.end_s:
        t += 0.25
        sim.advance(t)
        open_reqs += sim.requests[seen:]
        seen = len(sim.requests)
        done = [r for r in open_reqs if r.t_done >= 0]
        open_reqs = [r for r in open_reqs if r.t_done < 0]
        want = np.array([r.t_done - r.t0 for r in done if r.status == COMPLETED])
        got = sim.recorder.drain()
        assert got.tobytes() == want.tobytes()
        n_steps += len(got) > 0
    assert n_steps > 10
