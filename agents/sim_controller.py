"""Run a trained checkpoint as the controller of a simulated run (``policy: {name: agent}``).

Every step the simulator hands each LB's frame features to the controller; once all LBs of the
step are in, the policy acts on their observations (built with the env's own
:func:`simulator.envs.normalise_features`, so exactly what the agent saw in training) and the
weights are written to every agent LB's core — applying to flows that start from now on, as in
the env. Checkpoints trained with ``prev_action=True``, ``continuous=True`` or
``action_scale="relative"`` are recognised from their signature and get the same observation /
action mapping as in training. The LBs run SED on those weights (the CIKM'22 data-plane rule).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from simulator.config import ExperimentConfig, UserError
from simulator.actions import action_weights, weights_feature
from simulator.envs import normalise_features, parallel_env
from simulator.features import feature_names

__all__ = ["CheckpointController"]


class CheckpointController:
    """Controller protocol over a checkpoint loaded with :func:`agents.deploy.load_policy`."""

    core_policy = "sed"

    def __init__(self, cfg: ExperimentConfig) -> None:
        from agents.common.checkpoint import load_checkpoint
        from agents.common.spaces import EnvSignature
        from agents.deploy import load_policy

        if not cfg.policy.checkpoint:
            raise UserError("policy 'agent' needs 'checkpoint'")
        saved = load_checkpoint(cfg.policy.checkpoint)["signature"]  # UserError if missing/unreadable
        # the env options the checkpoint was trained with, read off its signature: previous
        # weights in the observation (S more floats) and Box actions
        self.prev_action = saved.obs_dim == saved.n_servers * (saved.n_features + 1)
        self.feature_set = saved.features  # what the simulation computes for it each step
        self._names = feature_names(saved.features)
        self.continuous = saved.action_kind == "continuous"
        self.action_scale = saved.action_scale
        # the env on the same topology with the core rule the agents drive (SED): it builds the
        # graph only and gives the signature (LBs, servers, observation size)
        as_env = cfg.policy.model_copy(update={"name": self.core_policy, "checkpoint": None})
        env = parallel_env(cfg.model_copy(update={"policy": as_env}), prev_action=self.prev_action,
                           continuous=self.continuous, action_scale=self.action_scale, features=saved.features)
        self._env = env
        self.policy = load_policy(cfg.policy.checkpoint, EnvSignature.from_env(env))
        self.agents = env.possible_agents
        self.n_lbs = env.n_lbs
        self.n_servers = env.n_servers
        self.name = "agent"
        self._obs: dict[str, np.ndarray] = {}
        self._weights = {a: env.initial_weights() for a in self.agents}
        self._sim: Any = None

    def static_weights(self, cores: Sequence[float]) -> list[float]:
        """Before the first decision (the first 0.25 s) the weights are SED's static w_i = cores_i,
        exactly as in the env, whose config policy (sed) sets them until the first action."""
        return [float(c) for c in cores]

    def start(self, sim: Any) -> None:
        self._sim = sim
        self.policy.reset()
        self._weights = {a: self._env.initial_weights() for a in self.agents}

    def force(self, now_s: float, lb: int) -> int:
        return -1

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> None:
        matrix = np.stack([features[name] for name in self._names], axis=1)
        agent = self.agents[lb]
        obs = normalise_features(matrix).reshape(-1)
        if self.prev_action:  # as the env: the weights in force
            obs = np.concatenate([obs, weights_feature(self._weights[agent], scale=self.action_scale,
                                                       static=self._env.static_weights)])
        self._obs[agent] = obs
        if lb == self.n_lbs - 1:  # every LB of this step has reported: decide jointly
            actions = self.policy.act(self._obs, deterministic=True)
            for k, a in enumerate(self.agents):
                act = np.asarray(actions[a])
                w = action_weights(act, scale=self.action_scale, continuous=self.continuous,
                                   static=self._env.static_weights)
                self._sim.lbs[k].dp.set_weights(w)
                self._weights[a] = w
        return None
