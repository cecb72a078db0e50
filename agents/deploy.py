"""Load any checkpoint as a deployable `Policy` (used by the controller and `marllb sim run`)."""

from __future__ import annotations

from pathlib import Path

from agents.common.checkpoint import load_checkpoint
from agents.common.policy import Policy
from agents.common.spaces import EnvSignature

__all__ = ["load_policy"]


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
