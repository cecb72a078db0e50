"""bench/learning/report.py: paired comparison against the best local heuristic and target
judgement, on synthetic runs whose answers are known by construction."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench" / "learning"))
from report import paired, targets  # noqa: E402


def _runs(ratios_by_load: dict[float, list[float]]) -> pd.DataFrame:
    """sed and lsq (lsq 10 % slower) plus an agent at `ratio` x sed, per seed."""
    rows = []
    for load, ratios in ratios_by_load.items():
        for seed, ratio in enumerate(ratios):
            base = 0.03 + 0.001 * seed
            for label, jct in (("sed", base), ("lsq", 1.1 * base), ("qmix", ratio * base)):
                rows.append({"label": label, "load": load, "seed": seed, "jct_mean_s": jct,
                             "jct_p90_s": 2 * jct})
    return pd.DataFrame(rows)


def test_paired_difference_and_its_interval():
    ratios = [0.70, 0.72, 0.74]
    pair = paired(_runs({0.9: ratios}), ["qmix"], ["sed", "lsq"])
    row = pair.iloc[0]
    assert row.best_local == "sed" and row.n == 3
    assert row.rel_mean_jct == pytest.approx(-0.28)
    # t(0.975, 2) = 4.303, sd of (-.30, -.28, -.26) = 0.02
    assert row.rel_mean_jct_ci95 == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)


def test_targets_judged_and_not_judged():
    good = targets(paired(_runs({0.75: [1.02] * 3, 0.9: [0.75] * 3}), ["qmix"], ["sed", "lsq"]))
    assert good["qmix"] == {"high_load_20pct_lower": True, "never_5pct_worse": True}
    bad = targets(paired(_runs({0.75: [1.06] * 3, 0.9: [0.85] * 3}), ["qmix"], ["sed", "lsq"]))
    assert bad["qmix"] == {"high_load_20pct_lower": False, "never_5pct_worse": False}
    low_only = targets(paired(_runs({0.6: [0.5] * 3}), ["qmix"], ["sed", "lsq"]))
    assert low_only["qmix"]["high_load_20pct_lower"] is None  # no load >= 0.85: not judged


def test_oracle_gap_closed_by_hand():
    """gsed (oracle) at 0.8 x sed, the agent at 0.88 x sed: the gap is 20 % of sed, the agent
    closes 12/20 = 60 % of it; h_s = (0.88 - 1 - (0.8 - 1) / 2) = -0.02 on every seed."""
    runs = _runs({0.9: [0.88] * 4})
    orc = runs[runs["label"] == "sed"].assign(label="gsed")
    orc[["jct_mean_s", "jct_p90_s"]] *= 0.8
    row = paired(pd.concat([runs, orc]), ["qmix"], ["sed", "lsq"], ["gsed"]).iloc[0]
    assert row.best_oracle == "gsed"
    assert row.gap_closed_mean == pytest.approx(0.6) and row.gap_closed_p90 == pytest.approx(0.6)
    assert row.half_gap_mean == pytest.approx(-0.02) and row.half_gap_mean_ci95 == pytest.approx(0.0, abs=1e-12)
    # no oracle ran: no gap columns
    assert "gap_closed_mean" not in paired(runs, ["qmix"], ["sed", "lsq"], ["gsed"])


def test_best_snapshot_is_chosen_on_validation_runs_only():
    from run import best_snapshots

    curve = pd.DataFrame({"label": ["sed", "sed", "qmix@ep00010", "qmix@ep00010", "qmix@ep00020",
                                    "qmix@ep00020", "isac@ep00010"],
                          "jct_mean_s": [0.01, 0.01, 0.05, 0.03, 0.035, 0.036, 0.09]})
    chosen = best_snapshots(curve, {"qmix": {"run_dir": "r/q"}, "isac": {"run_dir": "r/i"}, "x": {"run_dir": "r/x"}})
    # qmix: ep10 averages 40 ms, ep20 35.5 ms; sed is no snapshot; x has none
    assert chosen == {"qmix_best": str(Path("r/q/snapshots/ep00020.pt")), "isac_best": str(Path("r/i/snapshots/ep00010.pt"))}


def test_capacity_readers_only_for_capacity_driven_checkpoints(tmp_path):
    from agents.common.spaces import EnvSignature
    from agents.deploy import load_policy
    from agents.qmix import QmixAgent, QmixConfig
    from run import capacity_readers

    sig = EnvSignature(("lb0", "lb1"), n_servers=3, obs_dim=3 * 11, state_dim=2 * 3 * 11, action_kind="continuous",
                       action_low=2 ** -1.5, action_high=2.0, action_scale="relative")
    for name, driven in (("q", True), ("p", False)):
        cfg = QmixConfig(agent_net="servers", hidden=8, capacity_loss=1.0, capacity_action=driven)
        QmixAgent(cfg, sig, seed=0).save(tmp_path / name / "last.pt")
    readers = capacity_readers({"qmix": tmp_path / "q" / "last.pt", "plain": tmp_path / "p" / "last.pt"})
    assert readers == {"qmix_reader": str(tmp_path / "q" / "capacity_reader.pt")}
    assert load_policy(readers["qmix_reader"], sig).level_scale == 0.0
    assert not (tmp_path / "p" / "capacity_reader.pt").exists()


def test_a_reevaluation_keeps_the_first_wall_time():
    from run import wall_times

    first = wall_times(3600.0)
    assert first == {"bench_wall_s": 3600.0}
    again = wall_times(700.0, first)
    assert again == {"bench_wall_s": 3600.0, "reeval_wall_s": 700.0}
    assert wall_times(650.0, again) == {"bench_wall_s": 3600.0, "reeval_wall_s": 650.0}
