"""bench/learning/recovery.py: the LBs' counts around a failure read back from their frames, and
the return boost's weights step by step."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "learning"))
from recovery import ReturnBoost, parse_boosts, trace, with_rate  # noqa: E402

from simulator.config import UserError, load_config  # noqa: E402

CONFIG = ROOT / "experiments" / "configs" / "hidden_dynamic.yaml"  # server 1 fails at 30 s, returns at 45 s


def test_trace_shows_what_lsq_counts_on_a_failed_server():
    """While server 1 is down nothing can be established on it and nothing closes there (its
    resets go straight to the clients, DSR), so its n_flow_on stays where it was; the SYNs LSQ
    still sends it are refused and stay pending until the core's 3 s SYN timeout, so its pending
    count is what keeps LSQ off it, and 3 s after its return none of them is left."""
    cfg = with_rate(load_config(CONFIG), 480.0, 1000, "lsq")
    assert cfg.lb.syn_timeout_s == 3.0
    tr = trace(cfg, 29.0, 49.0, 0.5)
    s1 = tr[tr["server"] == 1].set_index("t_s")
    down = s1.loc[30.5:45.0]
    assert down["n_flow_on"].nunique() == 1, down["n_flow_on"].tolist()
    assert (down.loc[31.0:, "n_flow_pending"] > 0).all()
    others = tr[(tr["server"] != 1) & (tr["t_s"] >= 31.0) & (tr["t_s"] <= 45.0)]
    assert (others["n_flow_pending"] <= 1).mean() > 0.95  # live servers answer at once
    assert s1.loc[48.5, "n_flow_pending"] <= 1  # only a SYN in flight at that instant, if any


def test_return_boost_multiplies_the_returned_servers_weight_for_its_duration():
    servers = [SimpleNamespace(failed=False, capacity=2.0), SimpleNamespace(failed=False, capacity=4.0)]
    pol = ReturnBoost(known=[1], boost=3.0, boost_s=1.0)
    pol.sim, pol.static = SimpleNamespace(servers=servers), [2.0, 4.0]
    weights = {}
    for t in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5):
        servers[1].failed = 1.0 <= t < 2.0
        weights[t] = pol.on_step(t, 0, {})
    assert weights[0.5] == [2.0, 4.0]
    assert weights[1.0] == weights[1.5] == [2.0, 0.0]  # failed: weight 0
    assert weights[2.0] == weights[2.5] == [2.0, 12.0]  # back at 2.0: boosted for 1 s
    assert weights[3.0] == weights[3.5] == [2.0, 4.0]


def test_bad_boosts_name_the_entry():
    assert parse_boosts("3:3, 1.5:15") == [(3.0, 3.0), (1.5, 15.0)]
    for bad in ("3", "x:1", "0:3", "2:-1"):
        with pytest.raises(UserError, match="--boosts entry"):
            parse_boosts(bad)
    with pytest.raises(UserError, match="no entry"):
        parse_boosts(" , ")


def test_bad_options_are_one_clear_error(monkeypatch, capsys):
    import recovery

    for argv, message in ((["--boosts", "2:3", "--known", "0,9"], "--known 0,9: .* has servers 0..6"),
                          (["--boosts", "2:3", "--rates", "4x"], "--rates '4x': expected comma-separated numbers"),
                          ([], "give --trace, --boosts or both")):
        monkeypatch.setattr(sys, "argv", ["recovery.py", str(CONFIG), *argv])
        assert recovery.main() == 2
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and re.search(message, err), err
