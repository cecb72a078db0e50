"""Load-balancing agents: SAC-GRU (I-SAC / S-SAC), QMIX, an independent fairness-potential agent, and
env-agnostic training/deployment helpers.  Agents see only env APIs (PettingZoo ParallelEnv / Gymnasium).

Submodules are imported on demand so that ``import agents`` does not import torch:
``agents.sac_gru``, ``agents.qmix``, ``agents.fairness_potential``, ``agents.training``
(`collect_episode`, `train`), ``agents.deploy`` (`load_policy`), ``agents.common``.
"""

__all__ = ["common", "sac_gru", "qmix", "fairness_potential", "training", "deploy"]
