"""Load any checkpoint as a deployable `Policy` (used by the controller and `marllb sim run`)."""

from __future__ import annotations

from pathlib import Path

from agents.common.checkpoint import load_checkpoint, save_checkpoint
from agents.common.policy import Policy
from agents.common.spaces import EnvSignature
from simulator.config import UserError

__all__ = ["load_policy", "write_capacity_reader"]


def load_policy(path: str | Path, expected: EnvSignature | None = None) -> Policy:
    """Greedy policy of the SAC-GRU, QMIX or fairness-potential checkpoint at `path`.

    expected: the env's signature (`EnvSignature.from_env(env)`); a checkpoint trained for another
    number of LBs, servers or observation size raises `SignatureMismatchError` (a `UserError`).
    Call `policy.reset()` at the start of each episode and `policy.act(obs_by_agent)` every step.
    """
    algo = load_checkpoint(path, expected)["algo"]
    if algo == "qmix":
        from agents.qmix import QmixAgent

        return QmixAgent.load_policy(path, expected)
    if algo == "sac_gru":
        from agents.sac_gru import SacGruAgent

        return SacGruAgent.load_policy(path, expected)
    if algo == "fairness_potential":
        from agents.fairness_potential import FairnessPotentialPolicy

        return FairnessPotentialPolicy.load_policy(path, expected)
    raise ValueError(f"checkpoint {path}: unknown algorithm {algo!r}")


def write_capacity_reader(src: str | Path, dst: str | Path) -> Path:
    """Write to `dst` the capacity reader of a capacity-driven checkpoint (``capacity_action``):
    the same networks with every level's factor 1, so each server's weight is its static weight
    times the capacity head's estimate over the LB's mean estimate -- SED driven by what the head
    reads from the LB's frames, without the learned levels on top. A deployable checkpoint like
    any other; `src` is left as it is. UserError for a checkpoint without capacity-driven actions."""
    ck = load_checkpoint(src)
    if not ck["config"].get("capacity_action"):
        raise UserError(f"checkpoint {src}: its actions do not follow a capacity head "
                        "(trained without --hp capacity_action=true); it has no capacity reader")
    config = {**ck["config"], "capacity_level_scale": 0.0}  # 2^(level x 0) = 1 for every level
    save_checkpoint(dst, algo=ck["algo"], config=config, signature=ck["signature"], state=ck["state"])
    return Path(dst)
