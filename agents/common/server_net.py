"""A per-server network shared by every server head: the same small MLP scores each server from
that server's own observation, next to a recurrent summary of the whole LB.

Why: the flat `RecurrentHeadNet` maps the LB's whole observation to H x A utilities, so each head
learns its server's level on its own, from a team reward that one head barely moves. At 24 servers
and 6 LBs (CIKM'22 large) 20 minutes of training do not teach it SED's 1:2 split. Here every
(server, LB, step) is a sample of the same function, the parameter count does not grow with the
number of servers, and the output for a server does not depend on its position: permuting the
servers permutes the utilities (tested).

Input layout (the flat row the agents already build): ``x = [obs (O), prev one-hot (H*A),
extra (E)]``; ``extra`` are per-LB values such as QMIX's agent id. The observation is G groups
(one per LB whose observation the row holds: 1, or every LB for S-SAC), each the H/G servers'
features server-major (``obs[j*F + f]``, F = 11, :mod:`simulator.envs`) followed by K blocks
of one value per server (K = 1 with the previous weights in the observation, else 0).

    u_j  = [obs_j, prev_j, extra]                       per server, F + A + E values
    e_j  = ReLU(L2(ReLU(L1(u_j))))                      shared encoder, `server_hidden` units
    h    = GRU(mean_j e_j, h)                           LB context, `hidden` units
    q_j  = L4(ReLU(L3 [e_j, h]))                        shared head, A utilities
    c_j  = L5(ReLU(L3 [e_j, h]))                        optional capacity head (``capacity_head``)

With ``server_memory`` each server also has its own recurrent state: m_j = GRU_s(e_j, m_j) (one
GRU shared by the servers) replaces e_j in the head, so that a server's score can depend on its
history (a capacity change shows in how a server's frame *moves*, not in one frame). The
recurrent state is then [h, m_1..m_H] in one row (``state_size``).

The capacity head predicts server j's true capacity over its nominal cores from the same hidden
layer as the utilities: trained on the simulator's privileged values by an auxiliary loss
(QMIX's ``capacity_loss``), it makes that layer carry what the frames reveal of each server's
changing capacity. Acting uses it only with ``capacity_action`` (:func:`capacity_factors`): a
server's weight is then its static weight x its estimate over the LB's mean estimate x its
level's factor.

Shape legend as in :mod:`agents.common.nets`; F features per server, E extra inputs, Hs server
hidden units, X = B*T rows.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from simulator.actions import RELATIVE_FACTORS

if TYPE_CHECKING:
    from agents.common.spaces import EnvSignature

__all__ = ["ServerSharedNet", "TorchStepper", "AGENT_NETS", "make_agent_net", "fast_stepper", "CAPACITY_CLIP",
           "capacity_factors", "check_capacity_action"]

AGENT_NETS = ("flat", "servers")


class ServerSharedNet(nn.Module):
    """x_BTI -> out_BTHA with one encoder and one head shared by the H servers (see the module
    docstring); same ``forward``/``step`` contract as `RecurrentHeadNet`."""

    def __init__(self, obs_dim: int, n_heads: int, n_actions: int, hidden: int, extra_dim: int,
                 groups: int = 1, server_hidden: int = 32, capacity_head: bool = False,
                 server_memory: bool = False, n_features: int | None = None) -> None:
        super().__init__()
        from simulator.envs import N_FEATURES

        n_features = N_FEATURES if n_features is None else n_features
        if obs_dim % n_heads or n_heads % groups or obs_dim // n_heads < n_features:
            raise ValueError(f"an observation of {obs_dim} values is not {groups} group(s) of "
                             f"{n_heads // max(groups, 1)} servers x {n_features} features (+ per-server blocks)")
        self.n_heads, self.n_actions, self.hidden = n_heads, n_actions, hidden
        self.obs_dim, self.extra_dim, self.per_server = obs_dim, extra_dim, obs_dim // n_heads
        self.groups, self.n_features = groups, n_features
        u = self.per_server + n_actions + extra_dim
        self.encoder = nn.Sequential(nn.Linear(u, server_hidden), nn.ReLU(),
                                     nn.Linear(server_hidden, server_hidden), nn.ReLU())
        self.context = nn.Linear(server_hidden, hidden)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        # the head's first layer on [e_j, h], split so that h's part is computed once per LB row
        self.head_server = nn.Linear(server_hidden, server_hidden)
        self.head_context = nn.Linear(hidden, server_hidden, bias=False)
        self.head_out = nn.Linear(server_hidden, n_actions)
        # absent unless asked for, so that checkpoints without them keep loading
        self.capacity_out = nn.Linear(server_hidden, 1) if capacity_head else None
        self.server_gru = nn.GRU(server_hidden, server_hidden, batch_first=True) if server_memory else None
        self.server_hidden = server_hidden
        self.state_size = hidden + (n_heads * server_hidden if server_memory else 0)

    def _encode(self, x_XI: torch.Tensor) -> torch.Tensor:
        """Flat rows -> per-server encodings e_XHHs."""
        X, H, A = x_XI.shape[0], self.n_heads, self.n_actions
        G, F_, K = self.groups, self.n_features, self.per_server - self.n_features
        obs_XGO = x_XI[:, : self.obs_dim].reshape(X, G, -1)
        feat_XGHF = obs_XGO[:, :, : (H // G) * F_].reshape(X, G, H // G, F_)
        blocks_XGHK = obs_XGO[:, :, (H // G) * F_:].reshape(X, G, K, H // G).transpose(2, 3)
        obs_XHF = torch.cat([feat_XGHF, blocks_XGHK], dim=-1).reshape(X, H, self.per_server)
        prev_XHA = x_XI[:, self.obs_dim: self.obs_dim + H * A].reshape(X, H, A)
        extra_XHE = x_XI[:, self.obs_dim + H * A:].unsqueeze(1).expand(X, H, self.extra_dim)
        return self.encoder(torch.cat([obs_XHF, prev_XHA, extra_XHE], dim=-1))

    def _summary(self, e_XHHs: torch.Tensor) -> torch.Tensor:
        """The GRU's input: the mean server encoding through the context layer -> c_XHd."""
        return F.relu(self.context(e_XHHs.mean(dim=-2)))

    def _head_hidden(self, e_XHHs: torch.Tensor, h_XHd: torch.Tensor) -> torch.Tensor:
        return F.relu(self.head_server(e_XHHs) + self.head_context(h_XHd).unsqueeze(1))

    def forward(self, x_BTI: torch.Tensor, h_1BHd: torch.Tensor | None = None,
                capacity: bool = False) -> tuple[torch.Tensor, ...]:
        """-> (out_BTHA, h_1BHd), with ``capacity`` also the capacity head's cap_BTH."""
        B, T, I = x_BTI.shape
        H, Hs = self.n_heads, self.server_hidden
        e_BTHHs = self._encode(x_BTI.reshape(B * T, I)).view(B, T, H, -1)
        c_BTHd = self._summary(e_BTHHs)
        m_1YHs = None  # Y = B*H per-server sequences
        if h_1BHd is not None and self.server_gru is not None:
            h_1BHd, m_1YHs = h_1BHd[..., : self.hidden].contiguous(), h_1BHd[..., self.hidden:].reshape(1, B * H, Hs)
        h_BTHd, h_1BHd = self.gru(c_BTHd, h_1BHd)
        if self.server_gru is not None:
            m_YTHs, m_1YHs = self.server_gru(e_BTHHs.transpose(1, 2).reshape(B * H, T, Hs), m_1YHs)
            e_BTHHs = m_YTHs.reshape(B, H, T, Hs).transpose(1, 2)
            h_1BHd = torch.cat([h_1BHd, m_1YHs.reshape(1, B, H * Hs)], dim=-1)
        z_XHHs = self._head_hidden(e_BTHHs.reshape(B * T, H, -1), h_BTHd.reshape(B * T, self.hidden))
        out_BTHA = self.head_out(z_XHHs).view(B, T, self.n_heads, self.n_actions)
        if not capacity:
            return out_BTHA, h_1BHd
        if self.capacity_out is None:
            raise ValueError("this network was built without a capacity head (capacity_head=False)")
        return out_BTHA, h_1BHd, self.capacity_out(z_XHHs).view(B, T, self.n_heads)

    def step(self, x_BI: torch.Tensor, h_BHd: torch.Tensor, capacity: bool = False) -> tuple[torch.Tensor, ...]:
        """One decision for B independent streams: x_BI, h_BHd -> out_BHA, new h_BHd (with
        ``capacity`` also the capacity head's cap_BH)."""
        e_BHHs = self._encode(x_BI)
        B, H, Hs = e_BHHs.shape
        m_YHs = None
        if self.server_gru is not None:
            h_BHd, m_YHs = h_BHd[:, : self.hidden], h_BHd[:, self.hidden:].reshape(B * H, Hs)
        g = self.gru
        h_BHd = torch.gru_cell(self._summary(e_BHHs), h_BHd, g.weight_ih_l0, g.weight_hh_l0, g.bias_ih_l0, g.bias_hh_l0)
        state_BHd = h_BHd
        if m_YHs is not None:
            sg = self.server_gru
            m_YHs = torch.gru_cell(e_BHHs.reshape(B * H, Hs), m_YHs, sg.weight_ih_l0, sg.weight_hh_l0,
                                   sg.bias_ih_l0, sg.bias_hh_l0)
            e_BHHs = m_YHs.view(B, H, Hs)
            state_BHd = torch.cat([h_BHd, m_YHs.reshape(B, H * Hs)], dim=1)
        z_BHHs = self._head_hidden(e_BHHs, h_BHd)
        if not capacity:
            return self.head_out(z_BHHs), state_BHd
        if self.capacity_out is None:
            raise ValueError("this network was built without a capacity head (capacity_head=False)")
        return self.head_out(z_BHHs), state_BHd, self.capacity_out(z_BHHs).squeeze(-1)


class TorchStepper:
    """Frozen inference of any agent net with the interface of `FastRecurrentHeadNet`
    (``initial_state``, ``step`` on float32 numpy arrays): a copy of the net taken now, run
    under ``torch.no_grad``."""

    def __init__(self, net: nn.Module) -> None:
        self.net = copy.deepcopy(net).eval().requires_grad_(False)
        self.n_heads, self.n_actions, self.hidden = net.n_heads, net.n_actions, net.hidden
        self.state_size = getattr(net, "state_size", net.hidden)

    def initial_state(self, batch: int) -> np.ndarray:
        return np.zeros((batch, self.state_size), np.float32)

    def step(self, x_BI: np.ndarray, h_BHd: np.ndarray, capacity: bool = False) -> tuple[np.ndarray, ...]:
        """-> (out_BHA, new h_BHd), with ``capacity`` also the capacity head's cap_BH."""
        x = torch.from_numpy(np.ascontiguousarray(x_BI, np.float32))
        h = torch.from_numpy(np.ascontiguousarray(h_BHd, np.float32))
        with torch.no_grad():
            out = self.net.step(x, h, capacity=True) if capacity else self.net.step(x, h)
        return tuple(t.numpy() for t in out)


def make_agent_net(kind: str, obs_dim: int, n_heads: int, n_actions: int, hidden: int,
                   extra_dim: int, groups: int = 1, capacity_head: bool = False,
                   server_memory: bool = False, n_features: int | None = None) -> nn.Module:
    """The agent network of ``kind``: ``flat`` (`RecurrentHeadNet` on the whole input row, the
    paper's) or ``servers`` (`ServerSharedNet`, with ``capacity_head`` its capacity head, reading
    ``n_features`` per server, default the paper's 11); ValueError names the field for anything
    else."""
    from agents.common.nets import RecurrentHeadNet

    if kind == "flat":
        if capacity_head or server_memory:
            raise ValueError("capacity_loss, server_memory: need agent_net=servers")
        return RecurrentHeadNet(obs_dim + n_heads * n_actions + extra_dim, n_heads, n_actions, hidden)
    if kind == "servers":
        return ServerSharedNet(obs_dim, n_heads, n_actions, hidden, extra_dim, groups, capacity_head=capacity_head,
                               server_memory=server_memory, n_features=n_features)
    raise ValueError(f"agent_net: {kind!r} is not one of {', '.join(AGENT_NETS)}")


def fast_stepper(net: nn.Module):  # type: ignore[no-untyped-def]
    """The inference twin of an agent net: numpy `FastRecurrentHeadNet` for the flat net,
    `TorchStepper` otherwise."""
    from agents.common.fast_forward import FastRecurrentHeadNet
    from agents.common.nets import RecurrentHeadNet

    return FastRecurrentHeadNet(net) if isinstance(net, RecurrentHeadNet) else TorchStepper(net)


CAPACITY_CLIP = (0.05, 2.0)  #: the capacity head's estimate is clipped to this before use


def capacity_factors(cap_KH: np.ndarray, levels_KH: np.ndarray, sig: EnvSignature,
                     level_scale: float = 1.0) -> np.ndarray:
    """Env actions (factors on the static weights) of capacity-driven levels: each server's
    clipped capacity estimate over its LB's mean estimate, times its level's relative factor
    raised to ``level_scale`` (below 1 the levels only fine-tune the estimate), clipped to the
    env's action range."""
    est_KH = np.clip(cap_KH, *CAPACITY_CLIP)
    ratio_KH = est_KH / est_KH.mean(axis=1, keepdims=True)
    factor_KH = ratio_KH * RELATIVE_FACTORS[levels_KH] ** level_scale
    return np.clip(factor_KH, sig.action_low, sig.action_high).astype(np.float32)


def check_capacity_action(signature: EnvSignature, net: nn.Module) -> None:
    """ValueError unless capacity-driven actions can run: a capacity head and a continuous env
    with relative actions."""
    if getattr(net, "capacity_out", None) is None:
        raise ValueError("capacity_action needs the per-server net's capacity head (capacity_loss > 0)")
    if signature.action_kind != "continuous" or signature.action_scale != "relative":
        raise ValueError("capacity_action needs a continuous env with relative actions "
                         f"(this one is {signature.action_kind}, {signature.action_scale})")
