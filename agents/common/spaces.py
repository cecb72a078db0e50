"""Environment signatures and the mapping between agent actions (weight levels) and env actions.

Every agent in this package acts with *weight levels*: per server an integer index into
`WEIGHT_LEVELS` = {1.0, 1.2, ..., 2.0} (paper, Table 2 / §4).  The env may expose either
``MultiDiscrete([6] * n_servers)`` (the index itself is the env action) or a continuous
``Box(low, high, (n_servers,))`` of weights; in the Box case the agent's level is decoded to the weight
``WEIGHT_LEVELS[level]`` clipped into the box.  Agents therefore stay discrete in both cases; a Box env
simply receives the decoded weights.  With the env's ``action_scale="relative"`` the six levels
stand for factors on the LB's static weights (:mod:`simulator.actions`); a Box then holds factors.

An `EnvSignature` is what a checkpoint must match to be usable on an env: agent names (one per LB),
server count, observation and state sizes, and the action kind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from simulator.actions import ACTION_SCALES, LEVELS, level_table
from simulator.config import UserError

__all__ = [
    "WEIGHT_LEVELS",
    "N_LEVELS",
    "EnvSignature",
    "SignatureMismatchError",
    "levels_to_weights",
    "weights_to_levels",
]

WEIGHT_LEVELS: tuple[float, ...] = tuple(float(w) for w in LEVELS)
"""Weight of each discrete level; level k means weight 1 + 0.2 k (the env's absolute scale)."""
N_LEVELS = len(WEIGHT_LEVELS)


class SignatureMismatchError(UserError):
    """A checkpoint (or policy) was built for another environment shape (LBs, servers, obs size)."""


def levels_to_weights(levels_H: np.ndarray, scale: str = "absolute") -> np.ndarray:
    """Map integer levels (any shape, values in [0, 6)) to float32 weights in [1.0, 2.0]
    (``scale="relative"``: to the factors on the static weights)."""
    return level_table(scale).astype(np.float32)[np.asarray(levels_H, dtype=np.int64)]


def weights_to_levels(weights_H: np.ndarray, scale: str = "absolute") -> np.ndarray:
    """Map weights (or relative factors) to the nearest level index (int64); values outside the
    range saturate."""
    w = np.asarray(weights_H, dtype=np.float64)
    return np.abs(w[..., None] - level_table(scale).astype(np.float32)).argmin(axis=-1).astype(np.int64)


@dataclass(frozen=True)
class EnvSignature:
    """Shape of a multi-LB environment as seen by an agent.

    agents: agent names in the env's `possible_agents` order (one per LB).
    n_servers: servers per LB = action heads per agent.
    obs_dim: length of each agent's flat float32 observation.
    state_dim: length of the global state (``env.state()``); equals ``len(agents) * obs_dim`` when the
        env has no `state_space` and the state is built by concatenating observations.
    action_kind: ``"discrete"`` (MultiDiscrete levels) or ``"continuous"`` (Box of weights).
    action_low / action_high: Box bounds (continuous only; weights are clipped into them).
    action_scale: what a level means, ``"absolute"`` weights or ``"relative"`` factors on the
        static weights (:mod:`simulator.actions`); checkpoints from before it existed are absolute.
    features: the observed feature set (``"paper"`` or ``"robust"``,
        :data:`simulator.features.FEATURE_SETS`); checkpoints from before it existed are paper.
    """

    agents: tuple[str, ...]
    n_servers: int
    obs_dim: int
    state_dim: int
    action_kind: Literal["discrete", "continuous"] = "discrete"
    action_low: float = 1.0
    action_high: float = 2.0
    action_scale: str = "absolute"
    features: str = "paper"

    @property
    def n_agents(self) -> int:
        return len(self.agents)

    @property
    def n_features(self) -> int:
        """Features per server in the observation (of the feature set ``features``)."""
        from simulator.features import feature_names

        return len(feature_names(self.features))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["agents"] = list(self.agents)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EnvSignature":
        d = dict(d)
        d["agents"] = tuple(d["agents"])
        return cls(**d)

    @classmethod
    def from_env(cls, env: Any) -> "EnvSignature":
        """Read the signature of a PettingZoo ParallelEnv (or an adapter with the same methods).

        Raises `UserError` if agents differ in observation/action shape or an action space is not
        ``MultiDiscrete([6]*n)`` or a 1-D Box."""
        import gymnasium.spaces as gs

        agents = tuple(env.possible_agents)
        obs_dims, heads, kinds, lows, highs = set(), set(), set(), set(), set()
        for a in agents:
            osp = env.observation_space(a)
            if not isinstance(osp, gs.Box) or len(osp.shape) != 1:
                raise UserError(f"agent {a}: observation space must be a flat Box, got {osp}")
            obs_dims.add(int(osp.shape[0]))
            asp = env.action_space(a)
            if isinstance(asp, gs.MultiDiscrete):
                if asp.nvec.ndim != 1 or not np.all(asp.nvec == N_LEVELS):
                    raise UserError(f"agent {a}: MultiDiscrete must be [{N_LEVELS}]*n_servers, got {asp.nvec}")
                heads.add(int(asp.nvec.shape[0]))
                kinds.add("discrete")
            elif isinstance(asp, gs.Box) and len(asp.shape) == 1:
                heads.add(int(asp.shape[0]))
                kinds.add("continuous")
                lows.add(float(np.min(asp.low)))
                highs.add(float(np.max(asp.high)))
            else:
                raise UserError(f"agent {a}: unsupported action space {asp}")
        if len(obs_dims) != 1 or len(heads) != 1 or len(kinds) != 1:
            raise UserError("all agents must share observation size, server count and action kind")
        obs_dim, n_servers, kind = obs_dims.pop(), heads.pop(), kinds.pop()
        scale = getattr(env, "action_scale", "absolute")
        if scale not in ACTION_SCALES:
            raise UserError(f"env action_scale {scale!r}: expected one of {', '.join(ACTION_SCALES)}")
        state_space = getattr(env, "state_space", None)
        state_dim = int(np.prod(state_space.shape)) if state_space is not None else len(agents) * obs_dim
        return cls(
            agents=agents,
            n_servers=n_servers,
            obs_dim=obs_dim,
            state_dim=state_dim,
            action_kind=kind,  # type: ignore[arg-type]
            action_low=min(lows) if lows else 1.0,
            action_high=max(highs) if highs else 2.0,
            action_scale=scale,
            features=getattr(env, "features", "paper"),
        )

    def check_compatible(self, other: "EnvSignature", what: str = "checkpoint") -> None:
        """Raise `SignatureMismatchError` naming every differing field if `other` (the env) differs."""
        diffs = []
        for field in ("agents", "n_servers", "obs_dim", "state_dim", "action_kind", "action_scale", "features"):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                diffs.append(f"{field}: {what} has {mine!r}, env has {theirs!r}")
        if diffs:
            raise SignatureMismatchError(
                f"{what} was built for another environment ({self.n_agents} LBs x {self.n_servers} servers, "
                f"obs {self.obs_dim}); env has {other.n_agents} LBs x {other.n_servers} servers, obs "
                f"{other.obs_dim}: " + "; ".join(diffs)
            )

    def encode_action(self, levels_H: np.ndarray) -> np.ndarray:
        """Agent levels -> env action (levels for MultiDiscrete, clipped float32 weights for Box)."""
        levels_H = np.asarray(levels_H, dtype=np.int64)
        if self.action_kind == "discrete":
            return levels_H
        return np.clip(levels_to_weights(levels_H, self.action_scale), self.action_low,
                       self.action_high).astype(np.float32)

    def decode_action(self, action_H: np.ndarray) -> np.ndarray:
        """Env action -> agent levels (identity for MultiDiscrete, nearest level for Box weights)."""
        if self.action_kind == "discrete":
            return np.asarray(action_H, dtype=np.int64)
        return weights_to_levels(action_H, self.action_scale)
