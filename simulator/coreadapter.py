"""The C data-plane core (vpp_plugin/core, cffi module ``simulator._lbcore``) as a DataPlane.

Talks to the core through the C API of lb_rl_core.h (the contract), so the simulator's LB runs
exactly the code VPP runs. Flow keys are packed once per flow into the 40-byte
``lb_rl_5tuple_t`` layout (IPv4 addresses v4-mapped ::ffff:a.b.c.d in network byte order, ports
in host byte order, proto 6) and cached; a batch of packets becomes one
``lb_rl_process_batch`` call.
"""

from __future__ import annotations

import struct
from array import array
from typing import Sequence

import numpy as np

from simulator.config import LbConfig
from simulator.protocols import FlowKey

__all__ = ["CoreDataPlane"]

try:
    from simulator._lbcore import ffi, lib
except ImportError:  # the extension is not built
    ffi = lib = None

_KEY = struct.Struct("<10x2s4s10x2s4sHHB3x")
_FFFF = b"\xff\xff"
_CACHE_MAX = 1 << 17


def pack_key(key: FlowKey) -> bytes:
    """The lb_rl_5tuple_t bytes of (src_ip, dst_ip, src_port, dst_port), TCP."""
    src, dst, sp, dp = key
    return _KEY.pack(_FFFF, src.to_bytes(4, "big"), _FFFF, dst.to_bytes(4, "big"), sp, dp, 6)


class _KeyCache(dict):
    """FlowKey -> packed lb_rl_5tuple_t bytes, filled on first use."""

    def __missing__(self, key: FlowKey) -> bytes:
        if len(self) >= _CACHE_MAX:
            self.clear()
        b = self[key] = pack_key(key)
        return b


class CoreDataPlane:
    """One LB's C core. Server indices 0..n-1; times in seconds; lengths in bytes."""

    @staticmethod
    def available() -> bool:
        return lib is not None

    def __init__(self, n_servers: int, policy: str, lb: LbConfig, seed: int) -> None:
        if lib is None:
            raise RuntimeError("the C core extension simulator._lbcore is not built")
        cfg = ffi.new("lb_rl_config_t *")
        lib.lb_rl_config_default(cfg)
        cfg.max_servers = n_servers
        cfg.table_size = lb.table_size
        cfg.reservoir_size = lb.reservoir_size
        cfg.sample_prob = lb.sample_prob
        cfg.flow_timeout_s = lb.flow_timeout_s
        cfg.policy = getattr(lib, f"LB_RL_POLICY_{policy.upper()}")
        cfg.seed = seed & ((1 << 64) - 1)
        ctx = lib.lb_rl_create(cfg)
        if ctx == ffi.NULL:
            raise ValueError(f"lb_rl_create failed: {ffi.string(lib.lb_rl_last_error()).decode()}")
        self._ctx = ffi.gc(ctx, lib.lb_rl_destroy)
        self.n = n_servers
        self.K = lb.reservoir_size
        self._keys = _KeyCache()
        self._cnt = ffi.new("lb_rl_server_counters_t *")
        self._res = ffi.new("lb_rl_sample_t[]", self.K)
        self._res_np = np.frombuffer(ffi.buffer(self._res), dtype=np.float64).reshape(self.K, 2)
        self._w = ffi.new("double[]", n_servers)

    # -- servers and weights -----------------------------------------------------------------
    def server_add(self, idx: int, weight: float) -> None:
        rc = lib.lb_rl_server_add(self._ctx, idx, weight)
        if rc != 0:
            raise ValueError(f"lb_rl_server_add({idx}) -> {rc}")

    def server_remove(self, idx: int) -> None:
        lib.lb_rl_server_remove(self._ctx, idx)

    def server_drain(self, idx: int, on: bool) -> None:
        lib.lb_rl_server_drain(self._ctx, idx, int(on))

    def set_weights(self, weights: Sequence[float]) -> int:
        w = ffi.new("double[]", [float(x) for x in weights])
        return int(lib.lb_rl_set_weights(self._ctx, w, len(weights)))

    def use_static_weights(self) -> None:
        lib.lb_rl_use_static_weights(self._ctx)

    def get_weights(self) -> np.ndarray:
        lib.lb_rl_get_weights(self._ctx, self._w)
        return np.frombuffer(ffi.buffer(self._w), dtype=np.float64).copy()

    # -- state -------------------------------------------------------------------------------
    def n_flow_on(self, idx: int) -> int:
        lib.lb_rl_server_counters(self._ctx, idx, self._cnt)
        return int(self._cnt.n_flow_on)

    def reservoir(self, idx: int, kind: int) -> np.ndarray:
        n = lib.lb_rl_reservoir_read(self._ctx, idx, kind, self._res, self.K)
        return self._res_np[:n].copy()

    def counters(self) -> dict[str, int]:
        c = ffi.new("lb_rl_counters_t *")
        lib.lb_rl_counters(self._ctx, c)
        return {f: int(getattr(c, f)) for f in ("packets", "new_flows", "untracked_full",
                                                 "untracked_miss", "flows_lost", "timeouts",
                                                 "no_server", "weight_updates", "weight_rejects",
                                                 "tracked_flows")}

    # -- fast path ---------------------------------------------------------------------------
    def process(self, now_s: float, key: FlowKey, flags: int, length: int, forced: int = -1) -> int:
        kp = ffi.from_buffer("lb_rl_5tuple_t *", self._keys[key])
        return int(lib.lb_rl_process_ex(self._ctx, now_s, kp, flags, length, forced))

    def process_batch(self, now_s: Sequence[float], keys: Sequence[FlowKey], flags: Sequence[int],
                      lengths: Sequence[int]) -> list[int]:
        n = len(now_s)
        kb = b"".join(map(self._keys.__getitem__, keys))
        t = array("d", now_s)
        fl = bytes(flags)
        ln = array("I", lengths)
        out = array("i", bytes(4 * n))
        lib.lb_rl_process_batch(self._ctx, n, ffi.from_buffer("double[]", t),
                                ffi.from_buffer("lb_rl_5tuple_t[]", kb),
                                ffi.from_buffer("uint8_t[]", fl), ffi.from_buffer("uint32_t[]", ln),
                                ffi.NULL, ffi.from_buffer("int32_t[]", out, require_writable=True))
        return out.tolist()

    def expire(self, now_s: float) -> int:
        return int(lib.lb_rl_expire(self._ctx, now_s, 1 << 20))
