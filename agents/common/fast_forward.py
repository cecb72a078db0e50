"""Deployment-time forward of `RecurrentHeadNet` in float32 numpy: one decision without torch.

Why: a decision runs 2 FC -> GRU cell -> 2 FC on one row.  Through torch each small op pays its
dispatch overhead (~5-10 us; ``torch.gru_cell`` alone ~20 us at hidden 128), so the decision cost is
dominated by overhead, not arithmetic.  Here the same arithmetic is six BLAS matrix-vector products
(~3 us each at hidden 128, single-threaded at these sizes) and a few element-wise numpy calls.

Same function as `RecurrentHeadNet.step`/`forward` with T=1, up to float32 rounding (the summation order
of the BLAS differs): tests/agents/test_fast_inference.py checks outputs within 1e-4 and identical greedy
actions against the torch modules over whole episodes.

Weights are *copied* when the twin is built (a snapshot, pre-transposed to (in, out) C order, which
BLAS multiplies ~20% faster than the transposed view): later changes of the module (training, loading)
are not seen; build a new twin to follow them.  Numpy views of the parameters would follow in-place
updates, but they dangle as soon as torch moves a parameter's storage (``share_memory_()``, which
torch.multiprocessing does when a module is pickled to a spawned worker): measured here as NaN
actions in the parent process, hence the copy.

GRU cell (PyTorch's gate order r, u(=z), n in ``weight_ih_l0``/``weight_hh_l0``):
    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    u = sigmoid(W_iu x + b_iu + W_hu h + b_hu)
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - u) * n + u * h = n + u * (h - n)
sigmoid(v) is computed as 0.5 * tanh(v / 2) + 0.5 (identical mathematically, never overflows).

Shape legend: B rows (agents deciding together), I input size, Hd hidden size, H heads, A actions.
"""

from __future__ import annotations

import numpy as np
import torch

from .nets import RecurrentHeadNet

__all__ = ["FastRecurrentHeadNet"]


class FastRecurrentHeadNet:
    """Numpy twin of a `RecurrentHeadNet` for inference: ``step(x_BI, h_BHd) -> (out_BHA, h_BHd)``.

    net: the trained module (float32); its weights are copied now (see the module docstring).  Inputs
    must be float32 2-D arrays; the returned hidden state is a new array (`h_BHd` is not modified).
    """

    def __init__(self, net: RecurrentHeadNet) -> None:
        def arr(p: torch.Tensor, transpose: bool = False) -> np.ndarray:
            if p.dtype != torch.float32:
                raise TypeError(f"fast forward needs float32 parameters, got {p.dtype}")
            a = p.detach().cpu().numpy()
            return np.array(a.T if transpose else a, order="C", copy=True)

        self.n_heads, self.n_actions, self.hidden = net.n_heads, net.n_actions, net.hidden
        l1, _, l2, _ = net.fc_in
        o1, _, o2 = net.fc_out
        g = net.gru
        # nn.Linear stores W as (out, in) and computes y = x @ W.T + b; we keep W.T = (in, out).
        self.w1_IHd, self.b1_Hd = arr(l1.weight, True), arr(l1.bias)
        self.w2_HdHd, self.b2_Hd = arr(l2.weight, True), arr(l2.bias)
        self.wih_Hd3, self.bih_3 = arr(g.weight_ih_l0, True), arr(g.bias_ih_l0)
        self.whh_Hd3, self.bhh_3 = arr(g.weight_hh_l0, True), arr(g.bias_hh_l0)
        self.wo1_HdHd, self.bo1_Hd = arr(o1.weight, True), arr(o1.bias)
        self.wo2_HdX, self.bo2_X = arr(o2.weight, True), arr(o2.bias)

    def initial_state(self, batch: int) -> np.ndarray:
        """Zero GRU state h_BHd (float32), as at the start of an episode."""
        return np.zeros((batch, self.hidden), np.float32)

    def step(self, x_BI: np.ndarray, h_BHd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One decision for B independent streams -> (out_BHA, new h_BHd), float32."""
        Hd = self.hidden
        z_BHd = x_BI @ self.w1_IHd
        z_BHd += self.b1_Hd
        np.maximum(z_BHd, 0.0, out=z_BHd)
        z_BHd = z_BHd @ self.w2_HdHd
        z_BHd += self.b2_Hd
        np.maximum(z_BHd, 0.0, out=z_BHd)
        # GRU cell
        gi_B3 = z_BHd @ self.wih_Hd3
        gi_B3 += self.bih_3
        gh_B3 = h_BHd @ self.whh_Hd3
        gh_B3 += self.bhh_3
        ru_B2 = gi_B3[:, : 2 * Hd] + gh_B3[:, : 2 * Hd]
        ru_B2 *= 0.5
        np.tanh(ru_B2, out=ru_B2)
        ru_B2 *= 0.5
        ru_B2 += 0.5  # sigmoid
        r_BHd, u_BHd = ru_B2[:, :Hd], ru_B2[:, Hd:]
        n_BHd = gh_B3[:, 2 * Hd:] * r_BHd
        n_BHd += gi_B3[:, 2 * Hd:]
        np.tanh(n_BHd, out=n_BHd)
        h_new_BHd = h_BHd - n_BHd
        h_new_BHd *= u_BHd
        h_new_BHd += n_BHd
        # output layers
        y_BHd = h_new_BHd @ self.wo1_HdHd
        y_BHd += self.bo1_Hd
        np.maximum(y_BHd, 0.0, out=y_BHd)
        out_BX = y_BHd @ self.wo2_HdX
        out_BX += self.bo2_X
        return out_BX.reshape(-1, self.n_heads, self.n_actions), h_new_BHd
