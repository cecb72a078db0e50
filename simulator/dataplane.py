"""Python binding of the C data-plane core (``vpp_plugin/core``): the simulator's LB node.

One ``DataPlaneCore`` wraps one ``lb_rl_ctx_t``: the same flow table, TCP state machine,
reservoirs and new-flow policies the VPP plugin runs, so a recorded packet sequence gets
bit-identical server choices here and there. The extension ``simulator._lbcore`` is built by
``pip install -e .`` (cffi, see ``simulator/_build_core.py``); ``ffi`` and ``lib`` are exported
raw for the shared-memory layer.

Units: times are float seconds (the simulator's virtual time), lengths bytes. Server indices
are ``0 .. max_servers-1``. Keys are numpy records of ``KEY_DTYPE`` (mirror of
``lb_rl_5tuple_t``: v4-mapped IPv6 addresses in network byte order, ports in host order);
build them with ``make_keys``.

Lifecycle: create, ``add_server`` each backend, optionally ``set_weights``/``set_policy``,
then feed client->server packets in time order with ``process`` or (fast) ``process_batch``;
or, as the simulator does, give the core a table of flow keys once (``set_key_table``) and feed
packets by key index with ``process_idx`` / ``process_batch_idx`` (no key bytes per packet);
call ``expire`` now and then to sweep idle flows; read ``counters``/``server_counters``/
``reservoir``. A core is single-threaded: one instance per simulated LB.
"""

from __future__ import annotations

import enum
from typing import Any, Sequence

import numpy as np

try:
    from simulator._lbcore import ffi, lib
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(
        "simulator._lbcore (the C data-plane core) is not built; run `pip install -e .` "
        "in the repository root (needs a C compiler and cffi)"
    ) from exc

__all__ = [
    "ffi",
    "lib",
    "Policy",
    "WeightVerdict",
    "FlowState",
    "TcpFlags",
    "DataPlaneError",
    "KEY_DTYPE",
    "SAMPLE_DTYPE",
    "make_keys",
    "DataPlaneCore",
    "ShmPublisher",
]


class Policy(enum.IntEnum):
    """New-flow policies (``lb_rl_policy_t``)."""

    ECMP = lib.LB_RL_POLICY_ECMP
    WCMP = lib.LB_RL_POLICY_WCMP
    LSQ = lib.LB_RL_POLICY_LSQ
    SED = lib.LB_RL_POLICY_SED
    LSQ2 = lib.LB_RL_POLICY_LSQ2
    SED2 = lib.LB_RL_POLICY_SED2

    @classmethod
    def parse(cls, policy: "str | int | Policy") -> "Policy":
        """Policy from a name (``"ecmp"``, ``"sed2"``, case-insensitive), an int or a Policy."""
        if isinstance(policy, str):
            try:
                return cls[policy.upper()]
            except KeyError:
                names = ", ".join(p.name.lower() for p in cls)
                raise ValueError(f"unknown policy {policy!r}; expected one of {names}") from None
        return cls(int(policy))


class WeightVerdict(enum.IntEnum):
    """Verdicts of ``lb_rl_weights_validate`` / ``set_weights`` (OK = 0 = accepted)."""

    OK = lib.LB_RL_W_OK
    NONFINITE = lib.LB_RL_W_NONFINITE
    NEGATIVE = lib.LB_RL_W_NEGATIVE
    ALL_ZERO = lib.LB_RL_W_ALL_ZERO
    ABSENT_SERVER = lib.LB_RL_W_ABSENT_SERVER
    BAD_COUNT = lib.LB_RL_W_BAD_COUNT


class FlowState(enum.IntEnum):
    """Flow-table entry states reported by ``DataPlaneCore.flow``."""

    NONE = lib.LB_RL_FLOW_NONE
    SYN = lib.LB_RL_FLOW_SYN
    EST = lib.LB_RL_FLOW_EST
    CLOSED = lib.LB_RL_FLOW_CLOSED


class TcpFlags(enum.IntFlag):
    """TCP flag bits as on the wire."""

    FIN = lib.LB_RL_TCP_FIN
    SYN = lib.LB_RL_TCP_SYN
    RST = lib.LB_RL_TCP_RST
    PSH = lib.LB_RL_TCP_PSH
    ACK = lib.LB_RL_TCP_ACK


class DataPlaneError(ValueError):
    """A call into the core was rejected (bad config, bad server index, ...)."""


KEY_DTYPE = np.dtype(
    [
        ("src", np.uint8, (16,)),
        ("dst", np.uint8, (16,)),
        ("src_port", np.uint16),
        ("dst_port", np.uint16),
        ("proto", np.uint8),
        ("pad", np.uint8, (3,)),
    ]
)
"""numpy mirror of ``lb_rl_5tuple_t`` (40 bytes); checked against the C layout at import."""

SAMPLE_DTYPE = np.dtype([("t", np.float64), ("v", np.float64)])
"""numpy mirror of ``lb_rl_sample_t``: sample time (s) and value (s)."""


def _check_layout() -> None:
    if KEY_DTYPE.itemsize != ffi.sizeof("lb_rl_5tuple_t"):
        raise ImportError("KEY_DTYPE size differs from lb_rl_5tuple_t")
    for name in KEY_DTYPE.names:
        if KEY_DTYPE.fields[name][1] != ffi.offsetof("lb_rl_5tuple_t", name):
            raise ImportError(f"KEY_DTYPE.{name} offset differs from lb_rl_5tuple_t")
    if SAMPLE_DTYPE.itemsize != ffi.sizeof("lb_rl_sample_t"):
        raise ImportError("SAMPLE_DTYPE size differs from lb_rl_sample_t")


_check_layout()

_RES_KINDS = {"flow_duration": lib.LB_RL_RES_FLOW_DURATION, "fct": lib.LB_RL_RES_FCT}


def make_keys(
    src_ip_u32: Any, dst_ip_u32: Any, sport: Any, dport: Any, proto: Any = 6
) -> np.ndarray:
    """Build an array of KEY_DTYPE from IPv4 addresses (host-order u32 ints, e.g.
    ``0x0A000001`` for 10.0.0.1), ports and protocol; arguments broadcast together.

    Addresses are stored v4-mapped (``::ffff:a.b.c.d``) in network byte order."""
    src, dst, sp, dp, pr = np.broadcast_arrays(
        np.asarray(src_ip_u32, dtype=np.uint64),
        np.asarray(dst_ip_u32, dtype=np.uint64),
        np.asarray(sport),
        np.asarray(dport),
        np.asarray(proto),
    )
    n = src.size
    keys = np.zeros(n, dtype=KEY_DTYPE)
    keys["src"][:, 10:12] = 0xFF
    keys["dst"][:, 10:12] = 0xFF
    keys["src"][:, 12:16] = src.reshape(-1).astype(">u4").view(np.uint8).reshape(n, 4)
    keys["dst"][:, 12:16] = dst.reshape(-1).astype(">u4").view(np.uint8).reshape(n, 4)
    keys["src_port"] = sp.reshape(-1)
    keys["dst_port"] = dp.reshape(-1)
    keys["proto"] = pr.reshape(-1)
    return keys


class DataPlaneCore:
    """One data-plane core context (``lb_rl_ctx_t``): flow table, counters, reservoirs, policy.

    Arguments mirror ``lb_rl_config_t``: ``table_size`` and ``ecmp_buckets`` must be powers of
    two; ``reservoir_size`` is K slots per (server, kind); ``sample_prob`` thins reservoir
    samples; ``flow_timeout_s`` is the idle timeout of tracked flows; ``syn_timeout_s`` that of
    pending ones (SYN seen, not established); ``closed_linger_s`` how long a FIN/RST-closed flow
    keeps forwarding; ``seed`` seeds the core's only RNG.
    Raises DataPlaneError on a bad configuration."""

    def __init__(
        self,
        max_servers: int = 64,
        *,
        table_size: int = 1 << 16,
        ecmp_buckets: int = 1024,
        reservoir_size: int = 128,
        sample_prob: float = 1.0,
        flow_timeout_s: float = 40.0,
        closed_linger_s: float = 2.0,
        syn_timeout_s: float = 3.0,
        policy: "str | int | Policy" = "sed",
        seed: int = 1,
    ) -> None:
        cfg = ffi.new("lb_rl_config_t *")
        lib.lb_rl_config_default(cfg)
        cfg.max_servers = max_servers
        cfg.table_size = table_size
        cfg.ecmp_buckets = ecmp_buckets
        cfg.reservoir_size = reservoir_size
        cfg.sample_prob = sample_prob
        cfg.flow_timeout_s = flow_timeout_s
        cfg.closed_linger_s = closed_linger_s
        cfg.syn_timeout_s = syn_timeout_s
        cfg.policy = int(Policy.parse(policy))
        cfg.seed = seed & 0xFFFFFFFFFFFFFFFF
        ctx = lib.lb_rl_create(cfg)
        if ctx == ffi.NULL:
            raise DataPlaneError(ffi.string(lib.lb_rl_last_error()).decode())
        self.ctx = ffi.gc(ctx, lib.lb_rl_destroy)
        """Raw ``lb_rl_ctx_t *`` (for the shm layer); freed with this object."""
        self.max_servers = max_servers
        self.reservoir_size = reservoir_size
        self._key1 = ffi.new("lb_rl_5tuple_t *")
        self._wbuf = ffi.new("double[]", max_servers)
        self._sc = ffi.new("lb_rl_server_counters_t *")
        self._ktab_arr: np.ndarray | None = None
        self._ktab: Any = None
        self._ktab_n = 0
        self._cap = 0  # capacity of the C buffers of process_packets

    # --- servers -------------------------------------------------------------------------

    def _check(self, rc: int, what: str) -> None:
        if rc == lib.LB_RL_OK:
            return
        reason = {
            lib.LB_RL_E_INVALID: "invalid argument",
            lib.LB_RL_E_EXISTS: "server already present",
            lib.LB_RL_E_ABSENT: "server not present",
            lib.LB_RL_E_NOMEM: "out of memory",
        }.get(rc, f"error {rc}")
        raise DataPlaneError(f"{what}: {reason}")

    def add_server(self, i: int, static_weight: float = 1.0) -> None:
        """Add server ``i`` with its static weight (finite, >= 0). Its counters and reservoirs
        start empty; it gets new flows from now on. Raises DataPlaneError if present/invalid."""
        self._check(lib.lb_rl_server_add(self.ctx, i, static_weight), f"add_server({i})")

    def add_servers(self, static_weights: Sequence[float]) -> None:
        """Add servers 0 .. n-1 with these static weights at once (the tables are rebuilt once,
        not n times). All or nothing; raises DataPlaneError if any is present or invalid."""
        w = ffi.new("double[]", [float(x) for x in static_weights])
        self._check(lib.lb_rl_servers_add(self.ctx, w, len(static_weights)),
                    f"add_servers({len(static_weights)})")

    def remove_server(self, i: int) -> None:
        """Remove server ``i``: no new flows, its n_flow_on drops to 0, its tracked flows are
        forgotten (counted in ``flows_lost`` when met) and later packets are hash-forwarded."""
        self._check(lib.lb_rl_server_remove(self.ctx, i), f"remove_server({i})")

    def drain(self, i: int, on: bool = True) -> None:
        """Drain (``on=True``): no new flows for ``i``; established flows continue."""
        self._check(lib.lb_rl_server_drain(self.ctx, i, 1 if on else 0), f"drain({i})")

    @property
    def present(self) -> list[int]:
        """Indices of present servers, ascending."""
        words = ffi.new("uint64_t[]", lib.LB_RL_MAX_BITMAP_WORDS)
        nw = lib.lb_rl_servers_present(self.ctx, words, lib.LB_RL_MAX_BITMAP_WORDS)
        bits = np.unpackbits(np.frombuffer(ffi.buffer(words, 8 * nw), dtype=np.uint8),
                             bitorder="little")
        return np.flatnonzero(bits[: self.max_servers]).tolist()

    # --- weights and policy --------------------------------------------------------------

    def set_weights(self, w: Any) -> WeightVerdict:
        """Validate and apply a weight vector (one per server index, length 1..max_servers). Applies to
        new flows only. Never raises for bad values: returns the verdict; on anything but
        ``WeightVerdict.OK`` the previous weights stay in force."""
        arr = np.ascontiguousarray(np.asarray(w, dtype=np.float64).reshape(-1))
        if arr.size == 0:
            return WeightVerdict(lib.lb_rl_set_weights(self.ctx, ffi.NULL, 0))
        buf = ffi.from_buffer("double[]", arr)
        return WeightVerdict(lib.lb_rl_set_weights(self.ctx, buf, arr.size))

    def use_static_weights(self) -> None:
        """Reinstate the static weights given at ``add_server``."""
        lib.lb_rl_use_static_weights(self.ctx)

    @property
    def weights(self) -> np.ndarray:
        """Weights in force, float64 array of length max_servers (0 for absent servers)."""
        lib.lb_rl_get_weights(self.ctx, self._wbuf)
        return np.frombuffer(ffi.buffer(self._wbuf), dtype=np.float64).copy()

    def set_policy(self, policy: "str | int | Policy") -> None:
        """Switch the new-flow policy (``ecmp wcmp lsq sed lsq2 sed2``); flows never move."""
        self._check(lib.lb_rl_set_policy(self.ctx, int(Policy.parse(policy))), "set_policy")

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return Policy(lib.lb_rl_get_config(self.ctx).policy)

    # --- fast path -----------------------------------------------------------------------

    def _key_ptr(self, key: Any) -> Any:
        if isinstance(key, tuple):
            key = make_keys(*key)[0]
        arr = np.ascontiguousarray(np.asarray(key, dtype=KEY_DTYPE).reshape(1))
        ffi.memmove(self._key1, ffi.from_buffer(arr), KEY_DTYPE.itemsize)
        return self._key1

    def process(self, now: float, key: Any, flags: int, length: int, forced: int = -1) -> int:
        """Process one client->server packet at time ``now`` (s); returns the server index or
        ``lib.LB_RL_E_NO_SERVER`` (-2). ``key`` is a KEY_DTYPE record or a tuple
        ``(src_ip_u32, dst_ip_u32, sport, dport, proto)``. ``forced >= 0`` sends a flow this
        packet starts to that server (oracle policies) instead of the policy's choice."""
        return lib.lb_rl_process_ex(self.ctx, now, self._key_ptr(key), flags, length, forced)

    def process_batch(
        self,
        now_s: np.ndarray,
        keys: np.ndarray,
        flags: np.ndarray,
        lengths: np.ndarray,
        forced: np.ndarray | None = None,
    ) -> np.ndarray:
        """Process n packets in order with one C call; identical to n ``process`` calls.

        ``now_s`` float64[n] (non-decreasing), ``keys`` KEY_DTYPE[n], ``flags`` uint8[n],
        ``lengths`` uint32[n], ``forced`` int32[n] or None (-1 = policy). Inputs of the right
        dtype and contiguity are passed without copying. Returns int32[n] server indices
        (-2 = no server)."""
        now_a = np.ascontiguousarray(now_s, dtype=np.float64)
        n = now_a.size
        keys_a = np.ascontiguousarray(keys, dtype=KEY_DTYPE)
        flags_a = np.ascontiguousarray(flags, dtype=np.uint8)
        len_a = np.ascontiguousarray(lengths, dtype=np.uint32)
        if not (keys_a.size == flags_a.size == len_a.size == n):
            raise ValueError("process_batch: now_s, keys, flags and lengths differ in length")
        out = np.empty(n, dtype=np.int32)
        if n == 0:
            return out
        if forced is None:
            forced_p = ffi.NULL
        else:
            forced_a = np.ascontiguousarray(forced, dtype=np.int32)
            if forced_a.size != n:
                raise ValueError("process_batch: forced differs in length")
            forced_p = ffi.from_buffer("int32_t[]", forced_a)
        lib.lb_rl_process_batch(
            self.ctx,
            n,
            ffi.from_buffer("double[]", now_a),
            ffi.from_buffer("lb_rl_5tuple_t[]", keys_a),
            ffi.from_buffer("uint8_t[]", flags_a),
            ffi.from_buffer("uint32_t[]", len_a),
            forced_p,
            ffi.from_buffer("int32_t[]", out, require_writable=True),
        )
        return out

    def set_key_table(self, keys: np.ndarray) -> None:
        """Use ``keys`` (KEY_DTYPE[m], e.g. from ``make_keys``) as the flow-key table of
        ``process_idx`` / ``process_batch_idx``. The array is referenced, not copied: keep its
        contents fixed while packets refer to them. Several cores may share one table."""
        arr = np.asarray(keys)
        if arr.dtype != KEY_DTYPE or arr.ndim != 1 or not arr.flags.c_contiguous or arr.size == 0:
            raise ValueError("set_key_table: need a non-empty C-contiguous 1-D KEY_DTYPE array")
        self._ktab_arr = arr
        self._ktab = ffi.cast("lb_rl_5tuple_t *", ffi.from_buffer(arr))
        self._ktab_n = arr.size

    def process_idx(self, now: float, i: int, flags: int, length: int, forced: int = -1) -> int:
        """``process`` for the key ``table[i]`` of ``set_key_table``; returns the server index
        or -2 (no server). Raises IndexError when i is outside the table."""
        if not 0 <= i < self._ktab_n:
            raise IndexError(f"key index {i} outside the key table of {self._ktab_n}")
        return lib.lb_rl_process_ex(self.ctx, now, self._ktab + i, flags, length, forced)

    def process_batch_idx(
        self,
        now_s: Any,
        key_idx: Any,
        flags: Any,
        lengths: Any,
        forced: Any = None,
        out: Any = None,
    ) -> Any:
        """Process n packets in order with one C call (``lb_rl_process_batch_idx``); packet j
        has key ``table[key_idx[j]]``. Identical to n ``process_idx`` calls.

        Buffers are passed to C without copying when they have the C type: ``now_s`` float64
        (``array('d')`` or numpy), ``key_idx`` uint32 (``array('I')`` or numpy uint32),
        ``flags`` uint8 (bytes, ``array('B')``, numpy), ``lengths`` uint32, ``forced`` int32
        or None (-1 = policy). Writes the servers chosen (-2 = no server) into ``out`` (int32,
        length >= n; allocated as numpy int32 when None) and returns it. Raises ValueError on
        length/width mismatches and IndexError on an index outside the key table."""
        n = len(now_s)
        if len(key_idx) != n or len(flags) != n or len(lengths) != n:
            raise ValueError("process_batch_idx: now_s, key_idx, flags and lengths differ in length")
        if self._ktab is None:
            raise DataPlaneError("process_batch_idx: no key table (call set_key_table first)")
        if out is None:
            out = np.empty(n, dtype=np.int32)
        if n == 0:
            return out
        if isinstance(key_idx, np.ndarray) and key_idx.dtype != np.uint32:
            if key_idx.size and key_idx.min() < 0:
                raise IndexError("process_batch_idx: negative key index")
            key_idx = np.ascontiguousarray(key_idx, dtype=np.uint32)
        if isinstance(now_s, np.ndarray):
            now_s = np.ascontiguousarray(now_s, dtype=np.float64)
        if isinstance(lengths, np.ndarray):
            lengths = np.ascontiguousarray(lengths, dtype=np.uint32)
        if isinstance(flags, np.ndarray):
            flags = np.ascontiguousarray(flags, dtype=np.uint8)
        if (getattr(now_s, "itemsize", 0) != 8 or getattr(key_idx, "itemsize", 0) != 4
                or getattr(lengths, "itemsize", 0) != 4 or getattr(flags, "itemsize", 1) != 1
                or getattr(out, "itemsize", 0) != 4 or len(out) < n):
            raise ValueError("process_batch_idx: buffers must be float64, uint32, uint8, uint32, "
                             "int32 (out, length >= n)")
        kmax = key_idx.max() if isinstance(key_idx, np.ndarray) else max(key_idx)
        if kmax >= self._ktab_n:
            raise IndexError(f"process_batch_idx: key index outside the key table of {self._ktab_n}")
        if forced is None:
            forced_p = ffi.NULL
        else:
            if isinstance(forced, np.ndarray):
                forced = np.ascontiguousarray(forced, dtype=np.int32)
            if len(forced) != n or getattr(forced, "itemsize", 0) != 4:
                raise ValueError("process_batch_idx: forced must be int32 of length n")
            forced_p = ffi.from_buffer("int32_t[]", forced)
        lib.lb_rl_process_batch_idx(
            self.ctx,
            n,
            ffi.from_buffer("double[]", now_s),
            self._ktab,
            ffi.from_buffer("uint32_t[]", key_idx),
            ffi.from_buffer("uint8_t[]", flags),
            ffi.from_buffer("uint32_t[]", lengths),
            forced_p,
            ffi.from_buffer("int32_t[]", out, require_writable=True),
        )
        return out

    def process_packets(self, now_s: Any, key_idx: Any, flags: Any, lengths: Any) -> list[int]:
        """``process_batch_idx`` (policy choice for any new flow) for Python sequences (lists,
        tuples of floats/ints): copied into C buffers owned by this core (grown as needed) and
        handed to C in one call; returns the servers chosen as a list. The simulator's LB uses
        this for every flush of its packet buffer. Raises IndexError on a key index outside the
        table and OverflowError/TypeError on values that do not fit the C types."""
        n = len(now_s)
        if n == 0:
            return []
        if n > self._cap:
            cap = max(n, 2 * self._cap, 256)
            self._b_t = ffi.new("double[]", cap)
            self._b_k = ffi.new("uint32_t[]", cap)
            self._b_f = ffi.new("uint8_t[]", cap)
            self._b_l = ffi.new("uint32_t[]", cap)
            self._b_o = ffi.new("int32_t[]", cap)
            self._cap = cap
        if self._ktab is None:
            raise DataPlaneError("process_packets: no key table (call set_key_table first)")
        if max(key_idx) >= self._ktab_n:
            raise IndexError(f"process_packets: key index outside the key table of {self._ktab_n}")
        self._b_t[0:n] = now_s
        self._b_k[0:n] = key_idx
        self._b_f[0:n] = flags
        self._b_l[0:n] = lengths
        lib.lb_rl_process_batch_idx(self.ctx, n, self._b_t, self._ktab, self._b_k, self._b_f,
                                    self._b_l, ffi.NULL, self._b_o)
        return ffi.unpack(self._b_o, n)

    def expire(self, now: float, budget: int = 1 << 30) -> int:
        """Free up to ``budget`` entries idle past the timeout (ending their flows: n_flow_on
        -1 and an FCT sample if established), closed past the linger, or of removed servers;
        visits at most one round of the table. Returns how many were freed."""
        return lib.lb_rl_expire(self.ctx, now, budget)

    def open_shm(self, path: str | None = None, ring_len: int = 4) -> "ShmPublisher":
        """This core's shm region (in memory, or the file ``path``) with rings of ``ring_len``
        frames: see :class:`ShmPublisher`."""
        return ShmPublisher(self, path, ring_len)

    # --- reading state -------------------------------------------------------------------

    def server_counters(self, i: int) -> dict[str, int]:
        """Counters of server ``i`` (``lb_rl_server_counters_t``) as a dict; ``n_flow_on`` and
        ``n_flow_pending`` are gauges, the rest are monotonic."""
        c = ffi.new("lb_rl_server_counters_t *")
        self._check(lib.lb_rl_server_counters(self.ctx, i, c), f"server_counters({i})")
        return {
            "n_flow_on": c.n_flow_on,
            "n_flow_pending": c.n_flow_pending,
            "n_flow_new": c.n_flow_new,
            "n_flow_closed": c.n_flow_closed,
            "n_flow_timeout": c.n_flow_timeout,
            "n_flow_untracked": c.n_flow_untracked,
            "packets": c.packets,
            "bytes": c.bytes,
            "n_samples_flow_duration": c.n_samples[lib.LB_RL_RES_FLOW_DURATION],
            "n_samples_fct": c.n_samples[lib.LB_RL_RES_FCT],
        }

    def n_flow_on(self) -> np.ndarray:
        """``n_flow_on`` of every server index, int64[max_servers] (0 for absent servers)."""
        c = self._sc
        out = np.zeros(self.max_servers, dtype=np.int64)
        for i in range(self.max_servers):
            if lib.lb_rl_server_counters(self.ctx, i, c) == lib.LB_RL_OK:
                out[i] = c.n_flow_on
        return out

    def counters(self) -> dict[str, int]:
        """Context-wide counters (``lb_rl_counters_t``) as a dict."""
        c = ffi.new("lb_rl_counters_t *")
        lib.lb_rl_counters(self.ctx, c)
        names = (
            "packets new_flows untracked_full untracked_miss flows_lost timeouts no_server "
            "weight_updates weight_rejects tracked_flows"
        ).split()
        return {name: getattr(c, name) for name in names}

    def reservoir(self, i: int, kind: "str | int") -> tuple[np.ndarray, np.ndarray]:
        """Filled slots of server ``i``'s reservoir ``kind`` (``"flow_duration"`` or ``"fct"``)
        in slot order: ``(t, v)`` float64 arrays of sample times and values (s)."""
        k = _RES_KINDS[kind] if isinstance(kind, str) else int(kind)
        buf = np.empty(self.reservoir_size, dtype=SAMPLE_DTYPE)
        n = lib.lb_rl_reservoir_read(
            self.ctx, i, k, ffi.from_buffer("lb_rl_sample_t[]", buf), self.reservoir_size
        )
        return buf["t"][:n].copy(), buf["v"][:n].copy()

    def flow(self, key: Any) -> tuple[FlowState, int, float, float]:
        """Read-only lookup: ``(state, server, first_seen_s, last_seen_s)`` of ``key``'s entry
        (server -1 and NaN times when there is none). No expiry side effects."""
        srv = ffi.new("int32_t *", -1)
        fs = ffi.new("double *", float("nan"))
        ls = ffi.new("double *", float("nan"))
        st = lib.lb_rl_flow_get(self.ctx, self._key_ptr(key), srv, fs, ls)
        if st == lib.LB_RL_FLOW_NONE:
            return FlowState.NONE, -1, float("nan"), float("nan")
        return FlowState(st), srv[0], fs[0], ls[0]

    def key_hash(self, key: Any) -> int:
        """The core's 64-bit hash of ``key`` (ECMP bucket = hash & (ecmp_buckets - 1))."""
        return lib.lb_rl_key_hash(self._key_ptr(key))

    def ecmp_bucket(self, b: int) -> int:
        """Server in ECMP bucket ``b`` of the active table (-1 if none eligible)."""
        return lib.lb_rl_ecmp_bucket(self.ctx, b)

    def untracked_bucket(self, b: int) -> int:
        """Server in bucket ``b`` of the table that forwards untracked flows (weighted by the
        weights in force; the ECMP table under ECMP), -1 if none eligible."""
        return lib.lb_rl_untracked_bucket(self.ctx, b)


class ShmPublisher:
    """One LB's shm region (``lb_rl_shm.h``) with the DATAPLANE role: ``publish`` writes the
    state of a :class:`DataPlaneCore` (per-server counters, weights, reservoir snapshots) as
    one msg_out frame with the C writer ``lb_rl_shm_publish`` -- the code VPP runs.

    The region lives in process memory (``path=None``; ``buffer`` exposes its bytes, e.g. for
    ``simulator.shm.ShmRegion.from_buffer``) or in the file ``path`` (created and formatted if
    absent, attached if present with the same layout), which an agent in another process can
    open. Layout: ``core.max_servers`` servers, ``core.reservoir_size`` slots (at most 128),
    rings of ``ring_len`` frames. Raises DataPlaneError naming the problem."""

    def __init__(self, core: DataPlaneCore, path: str | None = None, ring_len: int = 4) -> None:
        self.core = core
        self.path = path
        p = ffi.new("lb_rl_shm_params_t *")
        lib.lb_rl_shm_params_default(p)
        p.max_servers = core.max_servers
        p.reservoir_slots = core.reservoir_size
        p.out_ring_len = ring_len
        p.in_ring_len = ring_len
        size = lib.lb_rl_shm_size(p)
        if size == 0:
            raise DataPlaneError(
                f"shm layout out of range: {core.max_servers} servers, {core.reservoir_size} "
                f"reservoir slots (at most {lib.LB_RL_SHM_MAX_RES_SLOTS}), ring {ring_len}")
        self.size = int(size)
        out = ffi.new("lb_rl_shm_t **")
        if path is None:
            self._mem = ffi.new("uint64_t[]", (self.size + 7) // 8)  # 8-byte aligned, zeroed
            self._check(lib.lb_rl_shm_format(self._mem, self.size, p), "format")
            self._check(lib.lb_rl_shm_attach(self._mem, self.size, lib.LB_RL_SHM_ROLE_DATAPLANE,
                                             out), "attach")
        else:
            self._mem = None
            self._check(lib.lb_rl_shm_open(str(path).encode(), p, lib.LB_RL_SHM_ROLE_DATAPLANE,
                                           out), f"open {path}")
        self._shm = out[0]
        self._seq = ffi.new("uint64_t *")

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc != 0:
            msg = ffi.string(lib.lb_rl_shm_last_error()).decode(errors="replace")
            raise DataPlaneError(f"shm {what}: {ffi.string(lib.lb_rl_shm_strerror(rc)).decode()}"
                                 f"{': ' + msg if msg else ''}")

    @property
    def buffer(self) -> Any:
        """The in-memory region's bytes (a cffi buffer; None for a file region)."""
        return None if self._mem is None else ffi.buffer(self._mem, self.size)

    def publish(self, now_s: float, wall_s: float = 0.0) -> int:
        """Publish the core's state at time ``now_s`` (s, the data plane's clock) as the next
        msg_out frame; ``wall_s`` is stored as the frame's wall clock. Returns the frame's seq
        (1, 2, ...)."""
        if self._shm is None:
            raise DataPlaneError("shm publish: region is closed")
        self._check(lib.lb_rl_shm_publish(self._shm, self.core.ctx, now_s, wall_s, self._seq),
                    "publish")
        return int(self._seq[0])

    def set_fallback_timeout(self, timeout_s: float) -> None:
        """How long an agent may stay silent before :meth:`poll` reinstates the static
        weights (<= 0: never)."""
        if self._shm is None:
            raise DataPlaneError("shm set_fallback_timeout: region is closed")
        lib.lb_rl_shm_set_fallback_timeout(self._shm, timeout_s)

    def poll(self, now_s: float, wall_s: float = 0.0) -> int:
        """Apply the agent's newest msg_in weights to the core with the C poll VPP runs
        (``lb_rl_shm_poll_in``: validation, last good weights, silence fallback) at the data
        plane's time ``now_s``. Returns LB_RL_SHM_POLL_* (0 nothing new, 1 applied,
        2 rejected, 3 fallback, 4 busy); raises DataPlaneError on a region error."""
        if self._shm is None:
            raise DataPlaneError("shm poll: region is closed")
        rc = lib.lb_rl_shm_poll_in(self._shm, self.core.ctx, now_s, wall_s)
        if rc < 0:
            self._check(rc, "poll")
        return int(rc)

    def close(self) -> None:
        """Detach (and unmap a file region). Idempotent. An in-memory region's bytes stay
        readable while this object lives."""
        if self._shm is not None:
            lib.lb_rl_shm_close(self._shm)
            self._shm = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
