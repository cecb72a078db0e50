"""The conformance pattern of vpp_plugin/core/tools/lb_rl_shm_pattern.h, written again in Python
(SHM.md "Conformance pattern"): every field of a frame with sequence q is a function of q."""

from __future__ import annotations

import numpy as np

from simulator.shm import InFrame, OutFrame

_U64 = (1 << 64) - 1


def active_word(q: int, j: int, s: int) -> int:
    """Word j of the present-server bitmap of seq q: q * (j + 1) mod 2^64, bits of servers
    >= s cleared."""
    v = (q * (j + 1)) & _U64
    left = s - 64 * j
    return v if left >= 64 else v & ((1 << left) - 1)


def out_frame_ok(f: OutFrame, s: int, k: int) -> bool:
    """True iff msg_out frame f holds exactly the pattern of its own seq."""
    q = f.seq
    if f.time_s != float(q) or f.wall_s != float(q) + 0.5:
        return False
    words = [active_word(q, j, s) for j in range((s + 63) // 64)]
    if f.active_words.tolist() != words:
        return False
    if f.n_active != sum(bin(w).count("1") for w in words):
        return False
    if f.in_seq_applied != (q ^ 0x5555) or f.fallback_active != bool(q & 1):
        return False
    if f.tracked_flows != q & 0xFFFFFFFF:
        return False
    names = ("packets", "new_flows", "untracked_full", "untracked_miss", "flows_lost",
             "timeouts", "no_server", "weight_updates")
    if any(f.counters[n] != (q * (i + 1)) & _U64 for i, n in enumerate(names)):
        return False
    i = np.arange(s, dtype=np.int64)
    sv = f.servers
    qq = np.int64(q)
    if not (np.array_equal(sv["n_flow_on"], qq + i)
            and np.array_equal(sv["n_flow_new"], (2 * qq + i).astype(np.uint64))
            and np.array_equal(sv["n_flow_closed"], (3 * qq + i).astype(np.uint64))
            and np.array_equal(sv["n_flow_timeout"], (4 * qq + i).astype(np.uint64))
            and np.array_equal(sv["packets"], (5 * qq + i).astype(np.uint64))
            and np.array_equal(sv["bytes"], (6 * qq + i).astype(np.uint64))
            and np.array_equal(sv["weight"], q + 0.25 * i)
            and np.array_equal(sv["n_flow_pending"], 8 * qq + i)
            and np.array_equal(sv["n_flow_untracked"], (9 * qq + i).astype(np.uint64))):
        return False
    kind = np.arange(2, dtype=np.int64)
    fill = (q + i[:, None] + kind[None, :]) % (k + 1)  # (S, 2)
    if not (np.array_equal(sv["n_samples"], (7 * qq + i[:, None] + kind[None, :]).astype(np.uint64))
            and np.array_equal(sv["fill"], fill.astype(np.uint32))):
        return False
    slot = np.arange(k)[None, None, :]
    filled = slot < fill[:, :, None]  # (S, 2, K)
    t = np.where(filled, (q + slot).astype(np.float64), 0.0)
    v = np.where(filled, (2 * q + i[:, None, None] + kind[None, :, None]).astype(np.float64), 0.0)
    return bool(np.array_equal(f.samples_SRK2[..., 0], t) and np.array_equal(f.samples_SRK2[..., 1], v))


def in_weights(q: int, s: int) -> np.ndarray:
    """Weights of msg_in seq q for a region of s servers."""
    n = 1 + q % s
    return (q + np.arange(n)).astype(np.float64)


def in_frame_ok(f: InFrame, s: int) -> bool:
    """True iff msg_in frame f holds exactly the pattern of its own seq (and times q, q + 0.5)."""
    q = f.seq
    return (f.time_s == float(q) and f.wall_s == float(q) + 0.5
            and np.array_equal(f.weights, in_weights(q, s)) and len(f.weights) <= s)
