"""A tiny, honest multi-LB queueing toy used to test the agents without the simulator.

K load balancers share N servers with service capacities `capacities` (jobs per step).  Each step:
LB i receives Poisson(load * sum(capacities) / K) new jobs and splits them among servers with
probabilities proportional to its current weights (multinomial); each server then serves
Poisson(capacity_j) jobs from its queue.  Cost per step = sum_j q_j / arrival_rate (Little's law:
mean time in system, in steps); every agent gets reward = -cost / 10.

Observation per LB (flat float32): per server [q_j / 10, (q_j + 1) / (c_j * 10)] — the queue length and
an estimate of the flow duration a new job would see — server-major, so feature 1 of each server is a
flow-duration estimate (what the fairness-potential agent reads).  state(): all q_j / 10 and the time
fraction.  Episodes are truncated after `horizon` steps.
"""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from pettingzoo import ParallelEnv

WEIGHT_LEVELS = np.asarray([1.0, 1.2, 1.4, 1.6, 1.8, 2.0])


class ToyLBParallelEnv(ParallelEnv):
    metadata = {"name": "toy_lb_v0", "render_modes": []}

    def __init__(self, n_lbs: int = 1, capacities: tuple[float, ...] = (1.0, 3.0), load: float = 0.8,
                 horizon: int = 40, action: str = "discrete") -> None:
        self.capacities = np.asarray(capacities, dtype=np.float64)
        self.n_servers = len(capacities)
        self.rate = load * float(self.capacities.sum())
        self.horizon = horizon
        self.action_kind = action
        self.possible_agents = [f"lb{i}" for i in range(n_lbs)]
        self.agents: list[str] = []
        self.state_space = spaces.Box(0.0, np.inf, (self.n_servers + 1,), np.float32)
        self._rng = np.random.default_rng()
        self._q = np.zeros(self.n_servers)
        self._t = 0

    @functools.lru_cache(maxsize=None)
    def observation_space(self, agent: str) -> spaces.Box:
        return spaces.Box(0.0, np.inf, (2 * self.n_servers,), np.float32)

    @functools.lru_cache(maxsize=None)
    def action_space(self, agent: str) -> spaces.Space:
        if self.action_kind == "discrete":
            return spaces.MultiDiscrete([6] * self.n_servers)
        return spaces.Box(1.0, 2.0, (self.n_servers,), np.float32)

    def _obs(self) -> np.ndarray:
        feats = np.stack([self._q / 10.0, (self._q + 1.0) / (self.capacities * 10.0)], axis=1)
        return feats.reshape(-1).astype(np.float32)

    def state(self) -> np.ndarray:
        return np.concatenate([self._q / 10.0, [self._t / self.horizon]]).astype(np.float32)

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self.agents = list(self.possible_agents)
        self._q = np.zeros(self.n_servers)
        self._t = 0
        obs = self._obs()
        return {a: obs.copy() for a in self.agents}, {a: {} for a in self.agents}

    def _weights(self, action: np.ndarray) -> np.ndarray:
        if self.action_kind == "discrete":
            return WEIGHT_LEVELS[np.asarray(action, dtype=np.int64)]
        return np.clip(np.asarray(action, dtype=np.float64), 1.0, 2.0)

    def step(self, actions: dict):
        per_lb_rate = self.rate / len(self.possible_agents)
        for a in self.agents:
            w = self._weights(actions[a])
            n = self._rng.poisson(per_lb_rate)
            self._q += self._rng.multinomial(n, w / w.sum())
        self._q = np.maximum(0.0, self._q - self._rng.poisson(self.capacities))
        self._t += 1
        cost = float(self._q.sum() / self.rate)
        obs = self._obs()
        done = self._t >= self.horizon
        agents = self.agents
        observations = {a: obs.copy() for a in agents}
        rewards = {a: -cost / 10.0 for a in agents}
        terminations = {a: False for a in agents}
        truncations = {a: done for a in agents}
        infos = {a: {"cost": cost} for a in agents}
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos


def make_toy(n_lbs: int = 1, action: str = "discrete", horizon: int = 40) -> ToyLBParallelEnv:
    """Picklable factory (for spawn workers)."""
    return ToyLBParallelEnv(n_lbs=n_lbs, action=action, horizon=horizon)



class ToyLBGymEnv(gym.Env):
    """Single-LB Gymnasium view of the toy (same dynamics, the one LB's reward)."""

    metadata = {"render_modes": []}

    def __init__(self, action: str = "discrete", horizon: int = 40) -> None:
        self._p = ToyLBParallelEnv(n_lbs=1, action=action, horizon=horizon)
        self.observation_space = self._p.observation_space("lb0")
        self.action_space = self._p.action_space("lb0")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        obs, infos = self._p.reset(seed=seed, options=options)
        return obs["lb0"], infos["lb0"]

    def step(self, action):
        o, r, te, tr, i = self._p.step({"lb0": action})
        return o["lb0"], r["lb0"], te["lb0"], tr["lb0"], i["lb0"]


def evaluate(policy, n_episodes: int = 20, seed0: int = 10_000, **env_kw) -> tuple[float, np.ndarray]:
    """Mean per-step cost of `policy` (greedy) on held-out seeds and the mean weight level per server."""
    from agents.training import collect_episode

    costs, levels = [], []
    for s in range(n_episodes):
        ep = collect_episode(ToyLBParallelEnv(**env_kw), policy, seed0 + s, deterministic=True)
        costs.append(ep.info["mean_cost"])
        levels.append(ep.actions_TNH.reshape(-1, ep.actions_TNH.shape[-1]).mean(axis=0))
    return float(np.mean(costs)), np.mean(levels, axis=0)


class ConstantLevels:
    """Fixed weight levels for every LB (level 0 everywhere = equal weights = ECMP-like)."""

    def __init__(self, signature, levels) -> None:
        self.signature, self.levels = signature, np.asarray(levels)

    def reset(self, seed=None) -> None:
        pass

    def act(self, obs_by_agent, deterministic=True):
        return {a: self.signature.encode_action(self.levels) for a in obs_by_agent}
