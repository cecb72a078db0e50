"""The recurrent network used by every learning agent (paper §5: 2 FC -> GRU -> 2 FC, ReLU).

Shape legend: B batch, T time, I input size, Hd hidden size, H heads, A actions per head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RecurrentHeadNet", "prev_action_onehot"]


class RecurrentHeadNet(nn.Module):
    """x_BTI -> out_BTHA: Linear-ReLU-Linear-ReLU -> GRU -> Linear-ReLU -> Linear(H*A).

    `forward` takes and returns the GRU hidden state h_1BHd (zeros when None), so the same module
    unrolls whole training sequences and steps one decision at a time (T=1) at inference.
    """

    def __init__(self, in_dim: int, n_heads: int, n_actions: int, hidden: int) -> None:
        super().__init__()
        self.n_heads, self.n_actions, self.hidden = n_heads, n_actions, hidden
        self.fc_in = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.fc_out = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, n_heads * n_actions))

    def forward(self, x_BTI: torch.Tensor, h_1BHd: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x_BTI.shape
        z_BTHd, h_1BHd = self.gru(self.fc_in(x_BTI), h_1BHd)
        out_BTHA = self.fc_out(z_BTHd).view(B, T, self.n_heads, self.n_actions)
        return out_BTHA, h_1BHd

    def step(self, x_BI: torch.Tensor, h_BHd: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decision for B independent streams: x_BI, h_BHd -> out_BHA, new h_BHd.

        Same function as `forward` with T=1 (equal up to float rounding) but calls the functional ops
        directly (no nn.GRU dispatch).  Deployed policies use the numpy twin
        `agents.common.fast_forward.FastRecurrentHeadNet` instead (~2x faster again, bench/inference)."""
        l1, _, l2, _ = self.fc_in
        o1, _, o2 = self.fc_out
        g = self.gru
        z_BHd = F.relu(F.linear(F.relu(F.linear(x_BI, l1.weight, l1.bias)), l2.weight, l2.bias))
        h_BHd = torch.gru_cell(z_BHd, h_BHd, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        out_BHA = F.linear(F.relu(F.linear(h_BHd, o1.weight, o1.bias)), o2.weight, o2.bias)
        return out_BHA.view(-1, self.n_heads, self.n_actions), h_BHd


def prev_action_onehot(actions_BTH: torch.Tensor, n_actions: int) -> torch.Tensor:
    """One-hot of the previous action for steps 0..T: zeros at t=0, onehot(a_{t-1}) after.

    actions_BTH (int64, T steps) -> prev_B(T+1)(H*A) float32."""
    B, T, H = actions_BTH.shape
    onehot_BTHA = torch.nn.functional.one_hot(actions_BTH, n_actions).float()
    zeros_B1HA = torch.zeros(B, 1, H, n_actions)
    return torch.cat([zeros_B1HA, onehot_BTHA], dim=1).view(B, T + 1, H * n_actions)
