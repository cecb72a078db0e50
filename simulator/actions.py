"""What an agent's action means: the per-server weights it sets (numpy only, shared by the env,
the simulated controller of a checkpoint and the real-time controller).

Two action scales, one per trained policy (recorded in the checkpoint's signature):

* ``absolute`` (CIKM'22): level a -> weight 1.0 + 0.2 a, the same for every server; the ratio
  between two servers is at most 2:1 and ignores their sizes.
* ``relative``: level a -> static weight x 2^((a - 3) / 2), i.e. factors 0.35, 0.5, 0.71, 1, 1.41,
  2 of the LB's static weights (the servers' ``cores``, SED's). Level 3 is SED as configured, and
  two servers' ratio can move 5.7x either way from their nominal one: a 4-CPU server's weight can
  be anything from 1/2.8 to 11 times a 2-CPU server's, which is what hidden capacity effects ask
  for (SMT, I/O, contention make the true ratio differ from the nominal one by more than 2x;
  absolute levels allow only 1:2 to 2:1 whatever the sizes).

Continuous (Box) actions are the weights (absolute) or the factors (relative) themselves, clipped
to the same ranges.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["ACTION_SCALES", "LEVELS", "RELATIVE_FACTORS", "level_table", "action_bounds",
           "action_weights", "weights_feature"]

ACTION_SCALES = ("absolute", "relative")
LEVELS = np.round(1.0 + 0.2 * np.arange(6), 1)  #: absolute weight of level a
RELATIVE_FACTORS = 2.0 ** ((np.arange(6) - 3) / 2.0)  #: factor on the static weight of level a


def level_table(scale: str) -> np.ndarray:
    """What each level means on ``scale``: weights (absolute) or factors (relative); UserError
    for an unknown scale."""
    if scale not in ACTION_SCALES:
        from simulator.config import UserError

        raise UserError(f"unknown action scale {scale!r}; choose one of {', '.join(ACTION_SCALES)}")
    return LEVELS if scale == "absolute" else RELATIVE_FACTORS


def action_bounds(scale: str) -> tuple[float, float]:
    """Range of a continuous action: weights (absolute) or factors (relative)."""
    table = level_table(scale)
    return float(table[0]), float(table[-1])


def action_weights(action: Any, *, scale: str = "absolute", continuous: bool = False,
                   static: Sequence[float] | None = None) -> np.ndarray:
    """Per-server weights of one agent's action (levels, or Box values when ``continuous``);
    ``static``: the LB's static weights, needed by the relative scale."""
    table = level_table(scale)
    a = np.asarray(action)
    if continuous:
        value = np.clip(a.astype(np.float64), table[0], table[-1])
    else:
        value = table[np.clip(a.astype(np.int64), 0, len(table) - 1)]
    if scale == "absolute":
        return value
    if static is None or len(static) != len(value):
        raise ValueError(f"relative actions need the {len(value)} static weights")
    return np.asarray(static, dtype=np.float64) * value


def weights_feature(weights: np.ndarray, *, scale: str = "absolute",
                    static: Sequence[float] | None = None) -> np.ndarray:
    """The weights in force as observation values in [0, 1]: weight - 1 (absolute, CIKM'22's
    [1, 2]) or the factor's position on the log2 range of the relative scale."""
    w = np.asarray(weights, dtype=np.float64)
    if scale == "absolute":
        return (w - 1.0).astype(np.float32)
    lo, hi = np.log2(action_bounds(scale))
    factor = w / np.maximum(np.asarray(static, dtype=np.float64), 1e-12)
    return ((np.log2(np.maximum(factor, 1e-12)) - lo) / (hi - lo)).clip(0.0, 1.0).astype(np.float32)
