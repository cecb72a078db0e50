"""Return targets shared by the learners."""

from __future__ import annotations

import torch

__all__ = ["td_lambda_targets"]


def td_lambda_targets(rewards_BT: torch.Tensor, terminated_BT: torch.Tensor, mask_BT: torch.Tensor,
                      qnext_BT1: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """lambda-returns G_t for t < T from target values qnext at steps 0..T (T+1 columns).

    Backward recursion with G_T = Q_T:
        G_t = r_t + gamma (1 - term_t) [ (1 - lam) Q_{t+1} + lam G_{t+1} ]   for real steps,
        G_t = Q_t                                                            for padded steps,
    so the last real step t = L-1 of an episode of length L bootstraps one step from Q_L (its final
    observation) and a terminated episode's last step gets r_t only.
    """
    B, T = rewards_BT.shape
    G_BT1 = torch.zeros(B, T + 1, dtype=qnext_BT1.dtype)
    G_BT1[:, T] = qnext_BT1[:, T]
    for t in range(T - 1, -1, -1):
        ret = rewards_BT[:, t] + gamma * (1.0 - terminated_BT[:, t]) * (
            (1.0 - lam) * qnext_BT1[:, t + 1] + lam * G_BT1[:, t + 1])
        G_BT1[:, t] = torch.where(mask_BT[:, t] > 0, ret, qnext_BT1[:, t])
    return G_BT1[:, :T]
