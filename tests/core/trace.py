"""Synthetic client->server packet traces for the core binding tests."""

from __future__ import annotations

import numpy as np

from simulator.dataplane import KEY_DTYPE, TcpFlags, make_keys

SYN, ACK, FIN, RST, PSH = (int(f) for f in (TcpFlags.SYN, TcpFlags.ACK, TcpFlags.FIN,
                                            TcpFlags.RST, TcpFlags.PSH))


def random_trace(
    rng: np.random.Generator, n_flows: int, *, rate: float = 200.0, key_space: int | None = None
) -> dict[str, np.ndarray]:
    """Poisson flow arrivals (``rate`` flows/s); each flow sends SYN, ACK, 0-8 data ACKs
    (exponential gaps, mean 50 ms) and ends with FIN|ACK (50%), RST (30%) or nothing (20%).
    ``key_space`` < n_flows makes keys repeat (port reuse). Returns time-sorted arrays:
    ``now`` f64, ``keys`` KEY_DTYPE, ``flags`` u8, ``lengths`` u32, ``flow`` (flow id)."""
    starts = np.cumsum(rng.exponential(1.0 / rate, n_flows))
    ids = np.arange(n_flows) if key_space is None else rng.integers(0, key_space, n_flows)
    t_l, f_l, fl_l, len_l = [], [], [], []
    for i in range(n_flows):
        t = starts[i]
        pk_t = [t, t + rng.exponential(0.001)]
        pk_f = [SYN, ACK]
        for _ in range(int(rng.integers(0, 9))):
            pk_t.append(pk_t[-1] + rng.exponential(0.05))
            pk_f.append(ACK | (PSH if rng.random() < 0.5 else 0))
        end = rng.random()
        if end < 0.5:
            pk_t.append(pk_t[-1] + rng.exponential(0.05))
            pk_f.append(FIN | ACK)
            pk_t.append(pk_t[-1] + 0.001)
            pk_f.append(ACK)
        elif end < 0.8:
            pk_t.append(pk_t[-1] + rng.exponential(0.05))
            pk_f.append(RST)
        t_l += pk_t
        f_l += pk_f
        fl_l += [i] * len(pk_t)
        len_l += list(rng.integers(40, 1500, len(pk_t)))
    order = np.argsort(np.asarray(t_l), kind="stable")
    flow = np.asarray(fl_l)[order]
    fid = ids[flow]
    keys = make_keys(0x0A000000 + (fid >> 14), 0x0A640001, 1024 + (fid & 0x3FFF), 80, 6)
    assert keys.dtype == KEY_DTYPE
    return {
        "now": np.asarray(t_l, dtype=np.float64)[order],
        "keys": keys,
        "flags": np.asarray(f_l, dtype=np.uint8)[order],
        "lengths": np.asarray(len_l, dtype=np.uint32)[order],
        "flow": flow,
    }
