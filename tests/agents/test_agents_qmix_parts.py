"""QMIX building blocks against independent truth: mixer monotonicity (autograd), TD(lambda) targets
(hand-computed and a brute-force n-step definition)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.common.returns import td_lambda_targets
from agents.qmix import QMixer


@pytest.mark.parametrize("seed", range(5))
def test_mixer_is_monotonic_in_every_agent_utility(seed):
    torch.manual_seed(seed)
    N, S, B, T = 3, 7, 16, 5
    mixer = QMixer(N, S, embed=8, hyper_hidden=16)
    q_BTN = (torch.randn(B, T, N) * 5).requires_grad_(True)
    state_BTS = torch.randn(B, T, S) * 3
    qtot_BT = mixer(q_BTN, state_BTS)
    (grad_BTN,) = torch.autograd.grad(qtot_BT.sum(), q_BTN)
    # each Q_tot[b, t] depends only on q[b, t, :], so the summed gradient is the per-sample Jacobian
    assert grad_BTN.shape == (B, T, N)
    assert (grad_BTN >= 0).all()
    assert (grad_BTN > 0).any()


def test_mixer_finite_difference_monotone():
    torch.manual_seed(0)
    mixer = QMixer(2, 4, embed=8, hyper_hidden=16)
    q = torch.randn(64, 1, 2)
    s = torch.randn(64, 1, 4)
    bumped = q.clone()
    bumped[..., 1] += 0.5
    assert (mixer(bumped, s) >= mixer(q, s) - 1e-6).all()


def test_td_lambda_hand_computed_with_padding():
    # episode of length 2 padded to 3; q at steps 0..3; gamma = lambda = 0.5
    r = torch.tensor([[1.0, 2.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    term = torch.zeros(1, 3)
    q = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    G = td_lambda_targets(r, term, mask, q, gamma=0.5, lam=0.5)
    # G1 = 2 + 0.5*30 = 17 (last real step bootstraps from q2); G0 = 0.5*(1+0.5*20) + 0.5*(1+0.5*2+0.25*30)
    assert G[0, 0].item() == pytest.approx(10.25)
    assert G[0, 1].item() == pytest.approx(17.0)


def test_td_lambda_terminated_does_not_bootstrap():
    r = torch.tensor([[1.0, 2.0]])
    mask = torch.ones(1, 2)
    term = torch.tensor([[0.0, 1.0]])
    q = torch.tensor([[10.0, 20.0, 999.0]])
    G = td_lambda_targets(r, term, mask, q, gamma=0.5, lam=0.5)
    assert G[0, 1].item() == pytest.approx(2.0)
    assert G[0, 0].item() == pytest.approx(0.5 * (1 + 0.5 * 20) + 0.5 * (1 + 0.5 * 2))


def _lambda_return_bruteforce(r, q, gamma, lam):
    """Forward view: G^lambda_t = (1-lam) sum_{n<L-t} lam^{n-1} G^(n)_t + lam^{L-t-1} G^(L-t)_t."""
    L = len(r)
    out = []
    for t in range(L):
        def nstep(n):
            return sum(gamma**k * r[t + k] for k in range(n)) + gamma**n * q[t + n]
        m = L - t
        g = sum((1 - lam) * lam ** (n - 1) * nstep(n) for n in range(1, m)) + lam ** (m - 1) * nstep(m)
        out.append(g)
    return np.asarray(out)


def test_td_lambda_matches_forward_view_on_random_input():
    rng = np.random.default_rng(0)
    L, gamma, lam = 7, 0.9, 0.6
    r = rng.normal(size=L)
    q = rng.normal(size=L + 1) * 3
    G = td_lambda_targets(torch.tensor(r)[None], torch.zeros(1, L, dtype=torch.float64),
                          torch.ones(1, L, dtype=torch.float64), torch.tensor(q)[None], gamma, lam)
    np.testing.assert_allclose(G[0].numpy(), _lambda_return_bruteforce(r, q, gamma, lam), rtol=1e-10)
