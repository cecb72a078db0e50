"""bench/learning/head_tracking.py: its scores against a known lag and noise, and the capacities
it pairs with the head's estimates against the scenario's hand-computed values."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "learning"))
from head_tracking import scores, track  # noqa: E402

from simulator.config import UserError, load_config  # noqa: E402


def test_scores_find_the_lag_and_the_fit_of_a_delayed_estimate():
    """Server 1's estimate is its capacity 3 steps late, exactly: R^2 1 at lag 3. Server 2's is
    the capacity plus independent noise of the signal's variance: R^2 at lag 0 is 1/2 in
    expectation (the squared correlation). Server 0 never changes: not scored."""
    rng = np.random.default_rng(0)
    T, lag = 4000, 3
    cap = np.ones((T, 3))
    cap[:, 1] = np.where(rng.random(T) < 0.5, 0.5, 1.0)
    cap[:, 2] = 0.75 + 0.1 * rng.standard_normal(T)
    est = np.ones((T, 2, 3))  # two LBs
    est[lag:, :, 1] = cap[:-lag, 1, None]
    est[:, :, 2] = cap[:, 2, None] + 0.1 * rng.standard_normal((T, 2))
    times = np.arange(T) * 0.25
    rows = {r["server"]: r for r in scores([(times, est, cap)], warmup_s=0.0)}
    assert set(rows) == {1, 2}
    assert rows[1]["best_lag_steps"] == lag and rows[1]["r2_best_lag"] == pytest.approx(1.0)
    assert rows[1]["r2_lag0"] < 0.01  # independent draws a few steps apart
    assert rows[2]["best_lag_steps"] == 0 and abs(rows[2]["r2_lag0"] - 0.5) < 0.04  # s.e. ~0.01
    assert rows[2]["mae"] == pytest.approx(0.1 * np.sqrt(2 / np.pi), rel=0.05)  # E|N(0, 0.1^2)|


def test_track_pairs_each_estimate_with_the_capacity_of_the_step_it_read(tmp_path):
    """An (untrained) capacity-driven QMIX on hidden_dynamic cut to 32 s: the true capacities it
    is scored against are the scenario's, step by step (server 0 has 1 of its 2 cores from 20 s,
    server 1 is down from 30 s), and there is one estimate per LB and server for each step."""
    torch = pytest.importorskip("torch", reason="checkpoints need torch (rl extra)")
    from agents.common.spaces import EnvSignature
    from agents.qmix import QmixAgent, QmixConfig
    from simulator.envs import parallel_env

    cfg = load_config(ROOT / "experiments" / "configs" / "hidden_dynamic.yaml").model_copy(update={"duration_s": 32.0})
    env = parallel_env(cfg, continuous=True, action_scale="relative", features="robust")
    sig = EnvSignature.from_env(env)
    agent = QmixAgent(QmixConfig(agent_net="servers", hidden=8, capacity_loss=1.0, capacity_action=True), sig, seed=0)
    with torch.no_grad():
        agent.net.capacity_out.bias.fill_(1.0)
    agent.save(tmp_path / "q.pt")
    times, est, cap = track(tmp_path / "q.pt", cfg, load=0.1, seed=7)
    assert est.shape == (len(times), 2, 7) and cap.shape == (len(times), 7)
    # reset publishes the first frame at 0.25 s; step k's frame is taken at 0.25 (k + 1) s
    np.testing.assert_allclose(times, 0.25 * np.arange(2, len(times) + 2))
    assert times[-1] == pytest.approx(32.0 - 0.25)  # the last step's estimate would act after the run
    assert np.all(cap[times < 20.0, 0] == 1.0) and np.all(cap[times >= 20.0, 0] == 0.5)  # events at t act by t
    assert np.all(cap[times < 30.0, 1] == 1.0) and np.all(cap[times >= 30.0, 1] == 0.0)
    assert np.all(cap[:, 2:4] == 1.0)  # servers 2 and 3: no effect changes their capacity
    # servers 4-6: 2 SMT cores x 1.25 = 2.5 of 4 nominal, halved while the co-located tenant runs
    assert set(np.unique(cap[:, 4:7])) == {2.5 / 4 / 2, 2.5 / 4}


def test_track_refuses_a_checkpoint_without_capacity_actions(tmp_path):
    pytest.importorskip("torch", reason="checkpoints need torch (rl extra)")
    from agents.common.spaces import EnvSignature
    from agents.qmix import QmixAgent, QmixConfig
    from simulator.envs import parallel_env

    cfg = load_config(ROOT / "experiments" / "configs" / "hidden_dynamic.yaml")
    sig = EnvSignature.from_env(parallel_env(cfg))
    QmixAgent(QmixConfig(hidden=8), sig, seed=0).save(tmp_path / "q.pt")
    with pytest.raises(UserError, match="not trained with capacity_action"):
        track(tmp_path / "q.pt", cfg, load=0.1, seed=7)
