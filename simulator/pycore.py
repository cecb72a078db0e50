"""A pure-Python implementation of the data-plane core semantics (vpp_plugin/core/lb_rl_core.h).

It is the reference the simulator falls back to when the C core's cffi binding
(:mod:`simulator.dataplane`) is not built, and a second implementation to test against.
Semantics follow the header:

* flow table keyed by the 5-tuple; a SYN without ACK and no live entry starts a flow chosen by the
  policy (or forced); state SYN -> EST on the first ACK (then counted in ``n_flow_on``) -> CLOSED
  on FIN/RST (lingers ``closed_linger_s``); idle entries expire after ``flow_timeout_s``;
* packets of unknown flows that are not SYNs are hash-forwarded (ECMP) and not tracked;
* reservoirs: K slots of (t, value); a sample is offered with probability ``sample_prob``; empty
  slots fill first, then a uniformly random slot is replaced (not Algorithm R);
  flow_duration = now - first_seen on ACKs of established flows, fct = close - first_seen;
* policies: ecmp (hash of the 5-tuple over eligible servers), wcmp (weighted random), lsq
  (argmin n_flow_on), sed (argmin (n_flow_on + 1) / w), lsq2/sed2 (the same between two distinct
  random eligible candidates); ties broken uniformly at random. Eligible = present, not drained,
  weight > 0.

It is not bit-identical to the C core (different RNG and hash), only semantically equal.
"""

from __future__ import annotations

import bisect
import math
import random
from typing import Sequence

import numpy as np

from simulator.packet import ACK, FIN, RST, SYN
from simulator.protocols import FlowKey

__all__ = ["PyCore", "POLICIES", "key_hash"]

POLICIES = ("ecmp", "wcmp", "lsq", "sed", "lsq2", "sed2")
_S_SYN, _S_EST, _S_CLOSED = 1, 2, 3
_M64 = (1 << 64) - 1


def key_hash(key: FlowKey) -> int:
    """Deterministic 64-bit mix of the flow key (splitmix64 finaliser)."""
    src, dst, sp, dp = key
    x = (src * 0x9E3779B97F4A7C15 + dst * 0xBF58476D1CE4E5B9 + (sp << 16 | dp)) & _M64
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


class PyCore:
    """One LB's data-plane core in Python. Times in seconds; lengths in bytes."""

    def __init__(self, n_servers: int, policy: str = "sed", *, reservoir_size: int = 128,
                 sample_prob: float = 1.0, flow_timeout_s: float = 40.0,
                 closed_linger_s: float = 2.0, seed: int = 0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown core policy {policy!r}")
        self.n = n_servers
        self.policy = policy
        self.K = reservoir_size
        self.sample_prob = sample_prob
        self.timeout_s = flow_timeout_s
        self.linger_s = closed_linger_s
        self._rng = random.Random(seed)
        self.flows: dict[FlowKey, list] = {}
        self.present = [False] * n_servers
        self.drained = [False] * n_servers
        self.static_w = [0.0] * n_servers
        self.w = [0.0] * n_servers
        self.n_on = [0] * n_servers
        self.n_new = [0] * n_servers
        self.packets = [0] * n_servers
        self.bytes = [0] * n_servers
        self.lost = 0
        self.untracked = 0
        self.weight_rejects = 0
        self._res = [[np.zeros((reservoir_size, 2)) for _ in range(2)] for _ in range(n_servers)]
        self._fill = [[0, 0] for _ in range(n_servers)]
        self._eligible: list[int] = []
        self._cum: list[float] = []

    # -- servers and weights -----------------------------------------------------------------
    def server_add(self, idx: int, weight: float) -> None:
        self.present[idx] = True
        self.static_w[idx] = weight
        self.w[idx] = weight
        self._rebuild()

    def server_remove(self, idx: int) -> None:
        self.present[idx] = False
        self._rebuild()

    def server_drain(self, idx: int, on: bool) -> None:
        self.drained[idx] = bool(on)
        self._rebuild()

    def _rebuild(self) -> None:
        self._eligible = [i for i in range(self.n)
                          if self.present[i] and not self.drained[i] and self.w[i] > 0]
        acc = 0.0
        self._cum = []
        for i in self._eligible:
            acc += self.w[i]
            self._cum.append(acc)

    def set_weights(self, weights: Sequence[float]) -> int:
        """Validate (finite, >= 0, some present server > 0, none > 0 on an absent server) and
        apply; returns 0 or the LB_RL_W_* verdict (previous weights kept)."""
        w = [float(x) for x in weights]
        verdict = 0
        if len(w) == 0 or len(w) > self.n:
            verdict = 5
        elif any(not math.isfinite(x) for x in w):
            verdict = 1
        elif any(x < 0 for x in w):
            verdict = 2
        elif any(x > 0 and not self.present[i] for i, x in enumerate(w)):
            verdict = 4
        elif not any(x > 0 and self.present[i] for i, x in enumerate(w)):
            verdict = 3
        if verdict:
            self.weight_rejects += 1
            return verdict
        self.w = w + [0.0] * (self.n - len(w))
        self._rebuild()
        return 0

    def use_static_weights(self) -> None:
        self.w = list(self.static_w)
        self._rebuild()

    def get_weights(self) -> np.ndarray:
        return np.array(self.w)

    # -- reading state -----------------------------------------------------------------------
    def n_flow_on(self, idx: int) -> int:
        return self.n_on[idx]

    def reservoir(self, idx: int, kind: int) -> np.ndarray:
        return self._res[idx][kind][: self._fill[idx][kind]].copy()

    # -- the fast path -----------------------------------------------------------------------
    def _choose(self, key: FlowKey) -> int:
        el = self._eligible
        if not el:
            return -2
        pol = self.policy
        if pol == "ecmp":
            return el[key_hash(key) % len(el)]
        rng = self._rng
        if pol == "wcmp":
            return el[bisect.bisect_right(self._cum, rng.random() * self._cum[-1])]
        if pol in ("lsq2", "sed2") and len(el) > 2:
            el = rng.sample(el, 2)
        n_on = self.n_on
        if pol in ("lsq", "lsq2"):
            best = min(n_on[i] for i in el)
            cands = [i for i in el if n_on[i] == best]
        else:
            w = self.w
            scores = [(n_on[i] + 1) / w[i] for i in el]
            best = min(scores)
            cands = [i for i, s in zip(el, scores) if s == best]
        return cands[0] if len(cands) == 1 else cands[rng.randrange(len(cands))]

    def _sample(self, idx: int, kind: int, t: float, v: float) -> None:
        rng = self._rng
        if self.sample_prob < 1.0 and rng.random() >= self.sample_prob:
            return
        fill = self._fill[idx]
        res = self._res[idx][kind]
        k = fill[kind]
        if k < self.K:
            fill[kind] = k + 1
        else:
            k = rng.randrange(self.K)
        res[k, 0] = t
        res[k, 1] = v

    def _free(self, key: FlowKey, e: list) -> None:
        if e[1] == _S_EST:
            self.n_on[e[0]] -= 1
        del self.flows[key]

    def process(self, now_s: float, key: FlowKey, flags: int, length: int, forced: int = -1) -> int:
        flows = self.flows
        e = flows.get(key)
        if e is not None:
            idle = now_s - e[3]
            if (e[1] == _S_CLOSED and idle > self.linger_s) or idle > self.timeout_s:
                self._free(key, e)
                e = None
            elif not self.present[e[0]]:
                self.lost += 1
                self._free(key, e)
                e = None
        if e is None:
            if flags & SYN and not flags & ACK:
                s = forced if forced >= 0 else self._choose(key)
                if s < 0:
                    return s
                flows[key] = [s, _S_SYN, now_s, now_s]
                self.n_new[s] += 1
            else:
                self.untracked += 1
                el = [i for i in range(self.n) if self.present[i]]
                if not el:
                    return -2
                s = el[key_hash(key) % len(el)]
        else:
            s = e[0]
            e[3] = now_s
            st = e[1]
            if flags & (FIN | RST):
                if st != _S_CLOSED:
                    if st == _S_EST:
                        self.n_on[s] -= 1
                        self._sample(s, 1, now_s, now_s - e[2])
                    e[1] = _S_CLOSED
            elif flags & ACK:
                if st == _S_SYN:
                    e[1] = _S_EST
                    self.n_on[s] += 1
                elif st == _S_EST:
                    self._sample(s, 0, now_s, now_s - e[2])
        self.packets[s] += 1
        self.bytes[s] += length
        return s

    def process_batch(self, now_s: Sequence[float], keys: Sequence[FlowKey], flags: Sequence[int],
                      lengths: Sequence[int]) -> list[int]:
        proc = self.process
        return [proc(t, k, f, n) for t, k, f, n in zip(now_s, keys, flags, lengths)]

    def expire(self, now_s: float) -> int:
        """Free every entry idle longer than its timeout; returns how many."""
        dead = [k for k, e in self.flows.items()
                if now_s - e[3] > (self.linger_s if e[1] == _S_CLOSED else self.timeout_s)]
        for k in dead:
            self._free(k, self.flows[k])
        return len(dead)
