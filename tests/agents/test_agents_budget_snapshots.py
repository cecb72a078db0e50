"""train(time_budget_s=..., snapshot_every=...): the budget stops cleanly (resumable to the same
parameters as an uninterrupted run) and each snapshot is the agent as it was at that episode."""

from __future__ import annotations

import functools

import torch
from toy_lb_env import make_toy

from agents.qmix import QmixAgent, QmixConfig
from agents.training import load_agent, train

CFG = dict(hidden=16, batch_episodes=3, updates_per_episode=2, learning_starts_episodes=1,
           epsilon_anneal_episodes=4, target_update_interval=3)
ENV = functools.partial(make_toy, n_lbs=2, horizon=10)


def _params(agent: QmixAgent) -> list[torch.Tensor]:
    return [p.detach().clone() for m in (agent.net, agent.mixer) for p in m.state_dict().values()]


def test_spent_budget_stops_before_collecting_and_resumes_identically(tmp_path):
    stopped = train(ENV, QmixConfig(**CFG), 6, seed=4, run_dir=tmp_path, time_budget_s=1e-9, progress=False)
    assert stopped.agent.episodes_seen == 0 and (tmp_path / "last.pt").exists()
    resumed = train(ENV, QmixConfig(**CFG), 6, seed=4, run_dir=tmp_path, resume=True, progress=False).agent
    full = train(ENV, QmixConfig(**CFG), 6, seed=4, progress=False).agent
    assert resumed.episodes_seen == 6
    assert all(torch.equal(a, b) for a, b in zip(_params(full), _params(resumed)))


def test_snapshots_are_the_agent_at_that_episode(tmp_path):
    train(ENV, QmixConfig(**CFG), 6, seed=9, run_dir=tmp_path, snapshot_every=2, progress=False)
    names = sorted(p.name for p in (tmp_path / "snapshots").glob("*.pt"))
    assert names == ["ep00002.pt", "ep00004.pt", "ep00006.pt"]
    at4 = train(ENV, QmixConfig(**CFG), 4, seed=9, progress=False).agent
    snap = load_agent(tmp_path / "snapshots" / "ep00004.pt")
    assert snap.episodes_seen == 4
    assert all(torch.equal(a, b) for a, b in zip(_params(at4), _params(snap)))
    assert "charts/wall_s" in (tmp_path / "scalars.csv").read_text()
