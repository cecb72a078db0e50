"""Run a trained checkpoint as the controller of a simulated run (``policy: {name: agent}``).

Every step the simulator hands each LB's frame features to the controller; once all LBs of the
step are in, the policy acts on their observations (built with the env's own
:func:`simulator.envs.normalise_features`, so exactly what the agent saw in training) and the
weights are written to every agent LB's core — applying to flows that start from now on, as in
the env. The LBs run SED on those weights (the CIKM'22 data-plane rule).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from simulator.config import ExperimentConfig, UserError
from simulator.envs import LEVELS, normalise_features, parallel_env
from simulator.features import FEATURE_NAMES

__all__ = ["CheckpointController"]


class CheckpointController:
    """Controller protocol over a checkpoint loaded with :func:`agents.deploy.load_policy`."""

    core_policy = "sed"

    def __init__(self, cfg: ExperimentConfig) -> None:
        from agents.common.spaces import EnvSignature
        from agents.deploy import load_policy

        if not cfg.policy.checkpoint:
            raise UserError("policy 'agent' needs 'checkpoint'")
        # the env on the same topology with the core rule the agents drive (SED): it builds the
        # graph only and gives the signature (LBs, servers, observation size)
        as_env = cfg.policy.model_copy(update={"name": self.core_policy, "checkpoint": None})
        env = parallel_env(cfg.model_copy(update={"policy": as_env}))
        try:
            self.policy = load_policy(cfg.policy.checkpoint, EnvSignature.from_env(env))
        except FileNotFoundError:
            raise UserError(f"policy.checkpoint: no such file {cfg.policy.checkpoint}") from None
        self.agents = env.possible_agents
        self.n_lbs = env.n_lbs
        self.name = "agent"
        self._obs: dict[str, np.ndarray] = {}
        self._sim: Any = None

    def static_weights(self, cores: Sequence[float]) -> list[float]:
        """Before the first decision every server has the lowest level (equal weights)."""
        return [float(LEVELS[0])] * len(cores)

    def start(self, sim: Any) -> None:
        self._sim = sim
        self.policy.reset()

    def force(self, now_s: float, lb: int) -> int:
        return -1

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> None:
        matrix = np.stack([features[name] for name in FEATURE_NAMES], axis=1)
        self._obs[self.agents[lb]] = normalise_features(matrix).reshape(-1)
        if lb == self.n_lbs - 1:  # every LB of this step has reported: decide jointly
            actions = self.policy.act(self._obs, deterministic=True)
            for k, agent in enumerate(self.agents):
                self._sim.lbs[k].dp.set_weights(LEVELS[np.asarray(actions[agent], dtype=np.int64)])
        return None
