"""A fully independent LB agent doing gradient ascent on a variance-based fairness potential.

Idea from arXiv 2206.01451 (distributed load balancing as a potential game: each LB improving a shared
fairness potential by local steps converges without communication).  No replay, no learning, no torch:
each LB keeps continuous weights and moves them along an estimated gradient every step, using only the
per-server flow-duration estimates in its own observation.

Rule implemented (per LB, per step)
-----------------------------------
Let d_j be the observed flow-duration estimate of server j (feature `duration_index` of server j's block
in the observation) and d_bar their mean.  The potential is the negative scale-free variance
    Phi = -sum_j (d_j - d_bar)^2 / (2 d_bar^2).
Because sum_j (d_j - d_bar) = 0, dPhi/dd_j = -(d_j - d_bar) / d_bar^2 exactly (d_bar treated as constant
for the step's normalisation).  We model a server's duration as proportional to its share of new flows,
and its share as locally proportional to its weight, so dd_j/dw_j ~= d_j / w_j (elasticity 1; effects on
other servers ignored).  The step is therefore
    w_j <- clip(w_j - eta * (d_j - d_bar) * d_j / (d_bar^2 * w_j), w_min, w_max),
i.e. servers slower than average lose weight, faster ones gain.  If d_bar <= `min_duration` (no samples
yet) the weights are kept.  A MultiDiscrete env receives the nearest level of each weight; the continuous
weights are kept internally so small steps accumulate.

Observation layout assumed: server-major blocks of `features_per_server` floats (server 0's features,
then server 1's, ...).  Set `features_per_server` and `duration_index` to the env's layout.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from agents.common.spaces import EnvSignature, weights_to_levels

__all__ = ["FairnessPotentialConfig", "FairnessPotentialPolicy", "potential_step", "ALGO"]

ALGO = "fairness_potential"  #: the checkpoint's algorithm name (no parameters, only the config)


@dataclass
class FairnessPotentialConfig:
    """Parameters of the independent fairness-potential agent."""

    features_per_server: int = 11
    """Floats per server block in the observation (issue 4 layout: n_flow_on + 5 flow_duration + 5 fct)."""
    duration_index: int = 4
    """Index inside a server block of the flow-duration estimate (default: decayed mean flow duration)."""
    step_size: float = 0.5
    """eta: gradient step on the weights per decision."""
    initial_weight: float = 1.5
    """Weight of every server after reset()."""
    w_min: float = 1.0
    """Lower weight bound (the smallest level)."""
    w_max: float = 2.0
    """Upper weight bound (the largest level)."""
    min_duration: float = 1e-9
    """Below this mean duration the observation carries no information and weights are kept."""
    obs_log1p_scale_s: float = 0.0
    """If > 0 the observation holds log1p(d / scale) (simulator.envs.normalise_features with
    scale TIME_SCALE_S = 0.1 s) and is inverted to d before the step; 0: raw durations."""


def potential_step(w_H: np.ndarray, d_H: np.ndarray, cfg: FairnessPotentialConfig) -> np.ndarray:
    """One ascent step of the fairness potential (see module docstring); returns new weights."""
    d_bar = float(d_H.mean())
    if d_bar <= cfg.min_duration:
        return w_H.copy()
    grad_H = -(d_H - d_bar) * d_H / (d_bar**2 * w_H)
    return np.clip(w_H + cfg.step_size * grad_H, cfg.w_min, cfg.w_max)


class FairnessPotentialPolicy:
    """Implements `agents.common.policy.Policy`; each LB steps its own weights independently.

    The rule is deterministic, so `deterministic` and `reset(seed)` only reset the weights."""

    def __init__(self, signature: EnvSignature, config: FairnessPotentialConfig | None = None) -> None:
        self.signature = signature
        self.config = config or FairnessPotentialConfig()
        need = self.config.features_per_server * signature.n_servers
        if signature.obs_dim < need or self.config.duration_index >= self.config.features_per_server:
            raise ValueError(f"observation of size {signature.obs_dim} cannot hold {signature.n_servers} server "
                             f"blocks of {self.config.features_per_server} features (duration index "
                             f"{self.config.duration_index})")
        self.reset()

    def reset(self, seed: int | None = None) -> None:
        self.weights = {a: np.full(self.signature.n_servers, self.config.initial_weight) for a in self.signature.agents}

    def act(self, obs_by_agent: Mapping[str, np.ndarray], deterministic: bool = True) -> dict[str, np.ndarray]:
        cfg, sig = self.config, self.signature
        out: dict[str, np.ndarray] = {}
        for a, obs in obs_by_agent.items():
            blocks_HF = np.asarray(obs, np.float64)[: sig.n_servers * cfg.features_per_server].reshape(
                sig.n_servers, cfg.features_per_server)
            d_H = blocks_HF[:, cfg.duration_index]
            if cfg.obs_log1p_scale_s > 0:
                d_H = cfg.obs_log1p_scale_s * np.expm1(d_H)
            self.weights[a] = potential_step(self.weights[a], d_H, cfg)
            if sig.action_kind == "discrete":
                out[a] = weights_to_levels(self.weights[a])
            else:
                out[a] = np.clip(self.weights[a], sig.action_low, sig.action_high).astype(np.float32)
        return out

    def save(self, path: str | Path) -> None:
        """A checkpoint (agents.common.checkpoint format) holding the config and env signature,
        so that `agents.deploy.load_policy` and ``policy: agent`` run this rule like any agent."""
        from agents.common.checkpoint import save_checkpoint

        save_checkpoint(path, algo=ALGO, config=asdict(self.config), signature=self.signature, state={})

    @classmethod
    def load_policy(cls, path: str | Path, expected: EnvSignature | None = None) -> "FairnessPotentialPolicy":
        """The policy saved at `path` (signature checked against `expected`)."""
        from agents.common.checkpoint import load_checkpoint

        payload = load_checkpoint(path, expected, algo=ALGO)
        return cls(payload["signature"], FairnessPotentialConfig(**payload["config"]))
