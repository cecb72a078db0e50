"""bench/learning/phases.py: phases cut at the scenario's events, and per-phase means and
contributions against hand-computed values on hand-made request tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "learning"))
from phases import phase_edges, phase_table, render  # noqa: E402

from simulator.config import UserError, load_config  # noqa: E402


def _requests(path: Path, rows: list[tuple[float, float, str]]) -> None:
    path.mkdir(parents=True)
    pd.DataFrame(rows, columns=["t_arrive_s", "jct_s", "status"]).to_parquet(path / "requests.parquet")


def test_edges_are_warmup_events_and_end():
    cfg = load_config(ROOT / "experiments" / "configs" / "hidden_dynamic.yaml")
    assert phase_edges(cfg) == [5.0, 20.0, 30.0, 45.0, 60.0]


def test_means_and_contributions_by_phase(tmp_path):
    """Edges 5 | 20 | 60. lsq: seed 0 has 10 ms at 10 s and 30 ms at 30 s, seed 1 20 ms at 12 s;
    a warm-up request (2 s) and a dropped one are left out. gsed: 10 ms at 10 s, 10 ms at 40 s
    and 10 ms at 15 s. Means: lsq 15 / 30 ms, gsed 10 / 10 ms. Against lsq's 3 requests gsed is
    (20 - 30) / 3 = -3.33 ms per request before 20 s and (10 - 30) / 3 = -6.67 after."""
    test = tmp_path / "test"
    _requests(test / "lsq__load0.4__seed0", [(10.0, 0.010, "completed"), (30.0, 0.030, "completed"),
                                             (2.0, 9.0, "completed"), (11.0, 5.0, "dropped")])
    _requests(test / "lsq__load0.4__seed1", [(12.0, 0.020, "completed")])
    _requests(test / "gsed__load0.4__seed0", [(10.0, 0.010, "completed"), (40.0, 0.010, "completed")])
    _requests(test / "gsed__load0.4__seed1", [(15.0, 0.010, "completed")])
    _requests(test / "gsed__load0.5__seed0", [(15.0, 1.0, "completed")])  # another load: ignored
    tables = phase_table(test, "0.4", [5.0, 20.0, 60.0])
    assert tables["lsq"]["count"].tolist() == [2, 1] and tables["gsed"]["count"].tolist() == [2, 1]
    text = render(tables, [5.0, 20.0, 60.0], "lsq")
    assert "| lsq | 15.0 | 30.0 |  |" in text
    assert "| gsed | 10.0 | 10.0 | -3.33 / -6.67 (-10.00) |" in text
    with pytest.raises(UserError, match="--reference 'sed'"):
        render(tables, [5.0, 20.0, 60.0], "sed")
    with pytest.raises(UserError, match="no evaluation runs at load 0.9"):
        phase_table(test, "0.9", [5.0, 20.0, 60.0])
