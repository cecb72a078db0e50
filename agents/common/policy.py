"""The deployment interface every agent exposes (simulator controller, `marllb sim run`, HIL).

A `Policy` maps the current observation of each LB to that LB's env action and keeps whatever
recurrent state it needs between calls; `reset()` starts a new episode (zero GRU state, no previous
action).  Actions are in the env's own action format (`EnvSignature.encode_action`): level indices for a
MultiDiscrete env, weights for a Box env.
"""

from __future__ import annotations

from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from .spaces import EnvSignature

__all__ = ["Policy"]


@runtime_checkable
class Policy(Protocol):
    signature: EnvSignature

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode; `seed` seeds exploration noise (ignored by deterministic policies)."""

    def act(self, obs_by_agent: Mapping[str, np.ndarray], deterministic: bool = True) -> dict[str, np.ndarray]:
        """One decision for every agent present in `obs_by_agent` (flat float32 observations)."""
        ...
