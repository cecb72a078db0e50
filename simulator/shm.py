"""Python mirror of the MARLLB shared-memory protocol (``vpp_plugin/core/lb_rl_shm.h``).

Agents and controllers use this module to read the data plane's msg_out frames (per-server
counters and reservoir snapshots) and to write msg_in frames (one weight per server). It is pure
numpy + mmap: it does not need the compiled core. The C header is the single source of truth;
``tests/shm/test_layout_pin.py`` compares every offset, size and constant below with what the C
compiler reports, and ``vpp_plugin/core/SHM.md`` documents the layout.

Region = header (256 B) | msg_out ring | msg_in ring; little-endian; times are f64 seconds.
Layout version 3: up to 4096 servers per region; a msg_out frame carries the present-server set as
a bitmap of ceil(S/64) u64 words, and a msg_in frame is sized by S (64-byte header + S weights).

Commit protocol (seqlock, one writer per direction, the writer never blocks):
  writer: frame.seq = 0; write payload and checksum; frame.seq = seq; header.<ring>_seq_latest = seq.
  reader: latest = header.<ring>_seq_latest; s1 = frame.seq; copy; s2 = frame.seq; retry unless
          s1 == s2 == latest, then verify the checksum (retry on mismatch, bounded). Taking only
          the frame ``latest`` names keeps the seqs a reader returns non-decreasing.

Memory-ordering assumption: a read or write of one aligned u64 through a numpy view is a single
8-byte load/store (true for numpy's item access on x86-64 and aarch64), and on x86-64 (TSO) loads
are not reordered with loads nor stores with stores, which is all the seqlock needs. On weakly
ordered CPUs (aarch64) Python has no fences; there the per-frame checksum is what guarantees that
a torn copy is never returned (a tear changes the checksum unless it collides, probability about
2**-64), and a torn copy is simply retried.
"""

from __future__ import annotations

import logging
import mmap
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from simulator.config import UserError

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER_SIZE",
    "HEADER_DTYPE",
    "STATUS_DTYPE",
    "OUT_FRAME_DTYPE",
    "SERVER_DTYPE",
    "IN_FRAME_DTYPE",
    "SAMPLE_DTYPE",
    "MAX_SERVERS",
    "DEFAULT_MAX_SERVERS",
    "ShmError",
    "ShmRegion",
    "OutFrame",
    "InFrame",
    "ShmStatus",
    "out_stride",
    "in_stride",
    "servers_offset",
    "samples_offset",
    "region_size",
    "checksum",
]

log = logging.getLogger(__name__)

# ---- constants mirrored from lb_rl_shm.h / lb_rl_core.h (pinned by tests/shm) ----
MAGIC = 0x4853424C4C52414D  # b"MARLLBSH" read as a little-endian u64
VERSION = 3
HEADER_SIZE = 256
ALIGN = 64
MAX_SERVERS = 4096  # LB_RL_MAX_SERVERS: the largest S a region may have
DEFAULT_MAX_SERVERS = 64  # LB_RL_DEFAULT_MAX_SERVERS
MAX_RES_SLOTS = 128
MIN_RING = 2
MAX_RING = 64
DEFAULT_RING = 4
DEFAULT_FALLBACK_MS = 1000
READ_RETRIES = 64
OUT_FRAME_HDR_SIZE = 128
OUT_ACTIVE_OFFSET = 128  # the present-server bitmap: ceil(S/64) u64 words after the fixed part
SERVER_SIZE = 96
IN_FRAME_HDR_SIZE = 64  # then S f64 weights; the frame is rounded up to a multiple of 64
PAYLOAD_OFFSET = 16
N_RES = 2  # LB_RL_N_RES
RES_FLOW_DURATION = 0
RES_FCT = 1
GOLDEN = 0x9E3779B97F4A7C15
SEQ_LIMIT = 1 << 63  # writers refuse to continue a sequence at or beyond this
_MASK64 = (1 << 64) - 1

# error codes (LB_RL_SHM_E_*), used as ShmError.code
E_ARG = -20
E_TOO_SMALL = -21
E_MAGIC = -22
E_VERSION = -23
E_HEADER = -24
E_TRUNCATED = -25
E_IO = -26
E_NO_FRAME = -27
E_BUSY = -28
E_CHECKSUM = -29
E_MISMATCH = -30

# weight verdicts (LB_RL_W_* from lb_rl_core.h, LB_RL_SHM_W_CHECKSUM)
W_OK = 0
W_NONFINITE = 1
W_NEGATIVE = 2
W_ALL_ZERO = 3
W_ABSENT_SERVER = 4
W_BAD_COUNT = 5
W_CHECKSUM = 16
VERDICT_NAMES = {
    W_OK: "ok",
    W_NONFINITE: "non-finite weight",
    W_NEGATIVE: "negative weight",
    W_ALL_ZERO: "all weights zero",
    W_ABSENT_SERVER: "weight for an absent server",
    W_BAD_COUNT: "bad weight count",
    W_CHECKSUM: "frame checksum mismatch",
}


def _struct(fields: list[tuple[str, Any, int]], itemsize: int) -> np.dtype:
    """A little-endian structured dtype with explicit offsets (the C natural-alignment layout)."""
    return np.dtype(
        {
            "names": [f[0] for f in fields],
            "formats": [f[1] for f in fields],
            "offsets": [f[2] for f in fields],
            "itemsize": itemsize,
        }
    )


STATUS_DTYPE = _struct(
    [
        ("gen", "<u8", 0),
        ("in_seq_applied", "<u8", 8),
        ("in_seq_seen", "<u8", 16),
        ("weights_accepted", "<u8", 24),
        ("weights_rejected", "<u8", 32),
        ("last_verdict", "<i4", 40),
        ("fallback_active", "<u4", 44),
        ("fallback_count", "<u8", 48),
        ("last_accept_time_s", "<f8", 56),
        ("last_accept_wall_s", "<f8", 64),
        ("fallback_timeout_s", "<f8", 72),
        ("last_in_advance_time_s", "<f8", 80),
        ("reserved", ("<u8", (5,)), 88),
    ],
    128,
)

HEADER_DTYPE = _struct(
    [
        ("magic", "<u8", 0),
        ("version", "<u4", 8),
        ("header_size", "<u4", 12),
        ("total_size", "<u8", 16),
        ("max_servers", "<u4", 24),
        ("reservoir_slots", "<u4", 28),
        ("out_ring_len", "<u4", 32),
        ("in_ring_len", "<u4", 36),
        ("out_ring_offset", "<u8", 40),
        ("out_frame_stride", "<u8", 48),
        ("in_ring_offset", "<u8", 56),
        ("in_frame_stride", "<u8", 64),
        ("out_servers_offset", "<u4", 72),
        ("out_samples_offset", "<u4", 76),
        ("writer_pid", "<i8", 80),
        ("writer_start_wall_s", "<f8", 88),
        ("agent_pid", "<i8", 96),
        ("agent_start_wall_s", "<f8", 104),
        ("out_seq_latest", "<u8", 112),
        ("in_seq_latest", "<u8", 120),
        ("status", STATUS_DTYPE, 128),
    ],
    HEADER_SIZE,
)

OUT_FRAME_DTYPE = _struct(
    [
        ("seq", "<u8", 0),
        ("checksum", "<u8", 8),
        ("time_s", "<f8", 16),
        ("wall_s", "<f8", 24),
        ("n_active", "<u4", 32),
        ("active_words", "<u4", 36),
        ("in_seq_applied", "<u8", 40),
        ("n_servers", "<u4", 48),
        ("reservoir_slots", "<u4", 52),
        ("fallback_active", "<u4", 56),
        ("tracked_flows", "<u4", 60),
        ("packets", "<u8", 64),
        ("new_flows", "<u8", 72),
        ("untracked_full", "<u8", 80),
        ("untracked_miss", "<u8", 88),
        ("flows_lost", "<u8", 96),
        ("timeouts", "<u8", 104),
        ("no_server", "<u8", 112),
        ("weight_updates", "<u8", 120),
    ],
    OUT_FRAME_HDR_SIZE,
)

SERVER_DTYPE = _struct(
    [
        ("n_flow_on", "<i8", 0),
        ("n_flow_new", "<u8", 8),
        ("n_flow_closed", "<u8", 16),
        ("n_flow_timeout", "<u8", 24),
        ("packets", "<u8", 32),
        ("bytes", "<u8", 40),
        ("n_samples", ("<u8", (N_RES,)), 48),
        ("weight", "<f8", 64),
        ("fill", ("<u4", (N_RES,)), 72),
        ("n_flow_pending", "<i8", 80),
        ("n_flow_untracked", "<u8", 88),
    ],
    SERVER_SIZE,
)

IN_FRAME_DTYPE = _struct(
    [
        ("seq", "<u8", 0),
        ("checksum", "<u8", 8),
        ("time_s", "<f8", 16),
        ("wall_s", "<f8", 24),
        ("n", "<u4", 32),
        ("flags", "<u4", 36),
        ("reserved", ("<u8", (3,)), 40),
    ],
    IN_FRAME_HDR_SIZE,
)  # the fixed part; S f64 weights follow at IN_FRAME_HDR_SIZE

SAMPLE_DTYPE = _struct([("t", "<f8", 0), ("v", "<f8", 8)], 16)

# u64 word indices of the header fields the protocol touches at run time
_W_OUT_LATEST = 112 // 8
_W_IN_LATEST = 120 // 8
_W_STATUS = 128 // 8
_CONTEXT_COUNTERS = (
    "packets",
    "new_flows",
    "untracked_full",
    "untracked_miss",
    "flows_lost",
    "timeouts",
    "no_server",
    "weight_updates",
)


class ShmError(UserError):
    """A shm region that cannot be used (names the file and the problem), or a read that failed.

    ``code`` is the matching ``LB_RL_SHM_E_*`` value of the C side."""

    def __init__(self, message: str, code: int = E_ARG) -> None:
        super().__init__(message)
        self.code = code


def _round_up(x: int) -> int:
    return (x + ALIGN - 1) // ALIGN * ALIGN


def active_words(max_servers: int) -> int:
    """u64 words of the present-server bitmap in a msg_out frame: ceil(S / 64)."""
    return (max_servers + 63) // 64


def servers_offset(max_servers: int) -> int:
    """Byte offset of the server records inside a msg_out frame: round64(128 + 8 ceil(S/64))."""
    return _round_up(OUT_ACTIVE_OFFSET + 8 * active_words(max_servers))


def samples_offset(max_servers: int) -> int:
    """Byte offset of the reservoir samples inside a msg_out frame."""
    return _round_up(servers_offset(max_servers) + max_servers * SERVER_SIZE)


def in_stride(max_servers: int) -> int:
    """Bytes between msg_in frames: round64(64 + 8 S)."""
    _check_params(max_servers, 1, MIN_RING, MIN_RING)
    return _round_up(IN_FRAME_HDR_SIZE + 8 * max_servers)


def out_stride(max_servers: int, reservoir_slots: int) -> int:
    """Bytes between msg_out frames: round64(samples_offset(S) + S * 2 * K * 16)."""
    _check_params(max_servers, reservoir_slots, MIN_RING, MIN_RING)
    return _round_up(samples_offset(max_servers) + max_servers * N_RES * reservoir_slots * 16)


def region_size(
    max_servers: int,
    reservoir_slots: int,
    out_ring_len: int = DEFAULT_RING,
    in_ring_len: int = DEFAULT_RING,
) -> int:
    """Total bytes of a region: header + out_ring_len * out_stride + in_ring_len * in_stride."""
    _check_params(max_servers, reservoir_slots, out_ring_len, in_ring_len)
    return (
        HEADER_SIZE
        + out_ring_len * out_stride(max_servers, reservoir_slots)
        + in_ring_len * in_stride(max_servers)
    )


def _check_params(s: int, k: int, n_out: int, n_in: int) -> None:
    if not (1 <= s <= MAX_SERVERS):
        raise ShmError(f"max_servers must be 1..{MAX_SERVERS}, got {s}", E_ARG)
    if not (1 <= k <= MAX_RES_SLOTS):
        raise ShmError(f"reservoir_slots must be 1..{MAX_RES_SLOTS}, got {k}", E_ARG)
    for name, n in (("out_ring_len", n_out), ("in_ring_len", n_in)):
        if not (MIN_RING <= n <= MAX_RING):
            raise ShmError(f"{name} must be {MIN_RING}..{MAX_RING}, got {n}", E_ARG)


_cs_weights: dict[int, np.ndarray] = {}


def checksum(words: np.ndarray, seq: int) -> int:
    """Frame checksum: seq * GOLDEN + sum_j w_j * (2j + 1) mod 2**64.

    ``words`` are the frame's u64 words from byte 16 on (after seq and checksum)."""
    n = words.shape[0]
    w = _cs_weights.get(n)
    if w is None:
        w = np.arange(n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        _cs_weights[n] = w
    # a dot product wraps mod 2**64 like the sum of products, without their temporary array
    # (4 MB per frame at 4,096 servers)
    s = int(np.dot(words, w))
    return (seq * GOLDEN + s) & _MASK64


@dataclass(frozen=True)
class ShmStatus:
    """The data plane's status block (consistent snapshot). Times: host clock / wall clock, s."""

    in_seq_applied: int
    in_seq_seen: int
    weights_accepted: int
    weights_rejected: int
    last_verdict: int
    fallback_active: bool
    fallback_count: int
    last_accept_time_s: float
    last_accept_wall_s: float
    fallback_timeout_s: float
    last_in_advance_time_s: float

    @property
    def last_verdict_name(self) -> str:
        return VERDICT_NAMES.get(self.last_verdict, f"verdict {self.last_verdict}")


@dataclass(frozen=True)
class OutFrame:
    """One msg_out frame (data plane -> agent), copied out of the region.

    ``active`` is the present-server bitmap as one Python int (bit i = server i, any S);
    ``active_words`` the same as the frame's u64 words, shape (ceil(S/64),).
    ``servers`` is a structured array (S,) of SERVER_DTYPE (n_flow_on, n_flow_new, n_flow_closed,
    n_flow_timeout, packets, bytes, n_samples[2], weight, fill[2]); ``samples_SRK2`` holds the
    reservoir snapshots, shape (S, 2, K, 2): [server, kind (0 flow_duration, 1 fct), slot,
    (t_s, v_s)], slots >= fill are zero."""

    seq: int
    time_s: float
    wall_s: float
    active: int
    active_words: np.ndarray
    n_active: int
    in_seq_applied: int
    fallback_active: bool
    tracked_flows: int
    counters: dict[str, int]
    servers: np.ndarray
    samples_SRK2: np.ndarray

    @property
    def present_mask(self) -> np.ndarray:
        """Bool array (S,): server i present."""
        bits = np.unpackbits(self.active_words.view(np.uint8), bitorder="little")
        return bits[: self.servers.shape[0]].astype(bool)

    @property
    def present(self) -> list[int]:
        """Indices of present servers (bit i of ``active``)."""
        return np.flatnonzero(self.present_mask).tolist()

    def reservoir(self, server: int, kind: int) -> np.ndarray:
        """Filled samples of one reservoir, shape (fill, 2): columns t_s, v_s."""
        fill = int(self.servers["fill"][server, kind])
        return self.samples_SRK2[server, kind, :fill]


@dataclass(frozen=True)
class InFrame:
    """One msg_in frame (agent -> data plane)."""

    seq: int
    time_s: float
    wall_s: float
    weights: np.ndarray  # (n,)


Role = Literal["reader", "agent"]


class ShmRegion:
    """A handle on a MARLLB shm region (a file mapped with mmap, or any writable buffer).

    Lifecycle: ``open`` (attach to an existing file; never truncates or re-creates it),
    ``create`` (new file, formatted), ``from_buffer`` / ``format_buffer`` (in-memory regions);
    then ``latest_out`` / ``write_weights`` / ``status``; ``close`` (or use as a context manager).
    The layout parameters are validated once at attach and cached, so later writes to the shared
    header by a faulty peer cannot make this handle index out of bounds.

    Role ``"reader"`` writes nothing; ``"agent"`` writes msg_in frames and stamps its pid. The
    agent's sequence continues above every seq found in the region, so it is strictly increasing
    across agent restarts.
    """

    def __init__(
        self,
        buffer: Any,
        *,
        role: Role = "agent",
        name: str = "<buffer>",
        _owned: tuple[mmap.mmap, int] | None = None,
    ) -> None:
        if role not in ("reader", "agent"):
            raise ShmError(f"{name}: unknown role {role!r} (reader or agent)", E_ARG)
        self.name = name
        self.role: Role = role
        self._owned = _owned
        # validate a copy of the header first: no view of the buffer exists if this raises
        # (so the caller can unmap it)
        with memoryview(buffer) as mv:
            size = mv.nbytes
            head = bytes(mv.cast("B")[:HEADER_SIZE])
        _validate_header(name, head, size)
        u8 = np.frombuffer(buffer, dtype=np.uint8)
        if u8.ctypes.data % 8:
            del u8
            raise ShmError(f"{name}: region is not 8-byte aligned", E_ARG)
        if role == "agent" and not u8.flags.writeable:
            del u8
            raise ShmError(f"{name}: buffer is read-only; attach with role='reader'", E_ARG)
        self._u8 = u8
        hdr = self._u8[:HEADER_SIZE].view(HEADER_DTYPE)[0]
        self.max_servers = int(hdr["max_servers"])
        self.reservoir_slots = int(hdr["reservoir_slots"])
        self.out_ring_len = int(hdr["out_ring_len"])
        self.in_ring_len = int(hdr["in_ring_len"])
        self.out_ring_offset = int(hdr["out_ring_offset"])
        self.out_frame_stride = int(hdr["out_frame_stride"])
        self.in_ring_offset = int(hdr["in_ring_offset"])
        self.in_frame_stride = int(hdr["in_frame_stride"])
        self.out_servers_offset = int(hdr["out_servers_offset"])
        self.out_samples_offset = int(hdr["out_samples_offset"])
        self.total_size = int(hdr["total_size"])
        self._u64 = self._u8[: self.total_size].view("<u8")
        self._f64 = self._u8[: self.total_size].view("<f8")
        self._header = self._u8[:HEADER_SIZE].view(HEADER_DTYPE)
        self.retries = 0  # copies retried because the frame changed under the reader
        self.checksum_failures = 0  # copies with a stable seq but a bad checksum (retried)
        self._in_next = 0
        if role == "agent":
            m = self._max_in_seq()
            if m >= SEQ_LIMIT:
                self.close()
                raise ShmError(
                    f"{name}: msg_in sequence {m} is beyond 2^63: corrupt region", E_HEADER
                )
            self._in_next = m + 1
            self._header["agent_pid"] = os.getpid()
            self._header["agent_start_wall_s"] = time.time()

    # ---- construction ----
    @classmethod
    def open(cls, path: str | os.PathLike[str], role: Role = "agent") -> ShmRegion:
        """Attach to the existing region file at ``path`` (read-only mapping for role "reader").

        Never creates, truncates or (on failure) modifies the file. Raises ShmError naming the
        file for: missing file, too small, wrong magic, wrong version, inconsistent header,
        truncated."""
        p = os.fspath(path)
        writable = role != "reader"
        try:
            fd = os.open(p, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as e:
            raise ShmError(f"{p}: cannot open shm region: {e.strerror}", E_IO) from e
        try:
            size = os.fstat(fd).st_size
            if size < HEADER_SIZE:
                raise ShmError(
                    f"{p}: file is {size} bytes, smaller than the {HEADER_SIZE}-byte shm header",
                    E_TOO_SMALL,
                )
            access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
            mm = mmap.mmap(fd, size, access=access)
        except BaseException:
            os.close(fd)
            raise
        try:
            return cls(mm, role=role, name=p, _owned=(mm, fd))
        except BaseException:
            mm.close()
            os.close(fd)
            raise

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        max_servers: int,
        reservoir_slots: int,
        out_ring_len: int = DEFAULT_RING,
        in_ring_len: int = DEFAULT_RING,
        *,
        role: Role = "agent",
        exist_ok: bool = False,
    ) -> ShmRegion:
        """Create and format a new region file (made under a temporary name and linked into
        place, so no reader ever sees it half-formatted).

        If ``path`` exists: with ``exist_ok`` attach to it (its parameters must match), else
        raise ShmError."""
        p = os.fspath(path)
        size = region_size(max_servers, reservoir_slots, out_ring_len, in_ring_len)
        want = (max_servers, reservoir_slots, out_ring_len, in_ring_len)
        if not os.path.exists(p):
            tmp = f"{p}.tmp.{os.getpid()}.{time.monotonic_ns()}"
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                os.ftruncate(fd, size)
                with mmap.mmap(fd, size, access=mmap.ACCESS_WRITE) as mm:
                    _format(mm, *want)
                    mm.flush()
                try:
                    os.link(tmp, p)
                except FileExistsError:
                    pass  # someone else created it meanwhile: attach below
            finally:
                os.close(fd)
                os.unlink(tmp)
        elif not exist_ok:
            raise ShmError(f"{p}: already exists (pass exist_ok=True to attach)", E_ARG)
        region = cls.open(p, role=role)
        got = (region.max_servers, region.reservoir_slots, region.out_ring_len, region.in_ring_len)
        if got != want:
            region.close()
            raise ShmError(
                f"{p}: existing region has max_servers, reservoir_slots, rings = {got}; "
                f"asked for {want}",
                E_MISMATCH,
            )
        return region

    @classmethod
    def from_buffer(cls, buffer: Any, role: Role = "agent") -> ShmRegion:
        """Attach to a formatted region in memory (bytearray, cffi buffer, mmap, ...)."""
        return cls(buffer, role=role)

    @classmethod
    def format_buffer(
        cls,
        buffer: Any,
        max_servers: int,
        reservoir_slots: int,
        out_ring_len: int = DEFAULT_RING,
        in_ring_len: int = DEFAULT_RING,
        role: Role = "agent",
    ) -> ShmRegion:
        """Format a writable buffer (at least ``region_size(...)`` bytes, 8-byte aligned) as a
        fresh region and attach to it."""
        _format(buffer, max_servers, reservoir_slots, out_ring_len, in_ring_len)
        return cls(buffer, role=role)

    def close(self) -> None:
        """Drop the views and unmap what ``open``/``create`` mapped. Idempotent."""
        self._u8 = self._u64 = self._f64 = self._header = None  # type: ignore[assignment]
        if self._owned is not None:
            mm, fd = self._owned
            self._owned = None
            mm.close()
            os.close(fd)

    def __enter__(self) -> ShmRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _max_in_seq(self) -> int:
        m = int(self._u64[_W_IN_LATEST])
        for i in range(self.in_ring_len):
            m = max(m, int(self._u64[(self.in_ring_offset + i * self.in_frame_stride) // 8]))
        return max(m, int(self._u64[_W_STATUS + 2]))  # status.in_seq_seen

    # ---- header ----
    def header(self) -> dict[str, Any]:
        """A copy of the header fields (the status block under ``status``; not a consistent
        snapshot of it: use ``status()`` for that)."""
        h = self._header[0].copy()
        out = {name: h[name].item() for name in HEADER_DTYPE.names if name != "status"}
        out["status"] = {name: h["status"][name].tolist() for name in STATUS_DTYPE.names}
        return out

    @property
    def out_seq_latest(self) -> int:
        return int(self._u64[_W_OUT_LATEST])

    @property
    def in_seq_latest(self) -> int:
        return int(self._u64[_W_IN_LATEST])

    @property
    def next_in_seq(self) -> int:
        """Seq the next ``write_weights`` will carry (0 for a reader)."""
        return self._in_next

    # ---- reading ----
    def _read_frame(self, latest_word: int, ring_off: int, n_ring: int, stride: int,
                    in_place: bool = False) -> np.ndarray | None:
        """Seqlock copy of the latest frame of a ring as u64 words, or None if none yet;
        ``in_place``: a read-only view of the frame in the region instead, checked the same way
        (its seq before and after the checksum) -- valid only while the writer stays away from
        its slot, i.e. for a reader in the writer's own thread."""
        u64 = self._u64
        bad_seq = 0
        for attempt in range(READ_RETRIES):
            latest = int(u64[latest_word])
            if latest == 0:
                return None
            w0 = (ring_off + (latest % n_ring) * stride) // 8
            s1 = int(u64[w0])
            if s1 != latest:  # being rewritten (0), lapped or corrupt: only what latest names
                self.retries += 1
                continue
            words = u64[w0 : w0 + stride // 8]
            if in_place:
                words = words.view()
                words.flags.writeable = False
            else:
                words = words.copy()
                if int(u64[w0]) != s1:  # rewritten during the copy
                    self.retries += 1
                    continue
                words[0] = s1
            good = checksum(words[2:], s1) == int(words[1])
            if in_place and int(u64[w0]) != s1:  # rewritten during the check
                self.retries += 1
                continue
            if not good:
                self.checksum_failures += 1
                if bad_seq == s1 and attempt >= 3:
                    raise ShmError(f"{self.name}: frame seq {s1} fails its checksum", E_CHECKSUM)
                bad_seq = s1
                continue
            return words
        if bad_seq:
            raise ShmError(f"{self.name}: frame seq {bad_seq} fails its checksum", E_CHECKSUM)
        raise ShmError(
            f"{self.name}: frame kept changing during {READ_RETRIES} read attempts", E_BUSY
        )

    def latest_out_words(self, in_place: bool = False) -> np.ndarray | None:
        """The latest msg_out frame as raw u64 words (a verified copy, or with ``in_place`` a
        verified read-only view: see :meth:`latest_out`), or None if none yet."""
        return self._read_frame(
            _W_OUT_LATEST, self.out_ring_offset, self.out_ring_len, self.out_frame_stride, in_place
        )

    def latest_out(self, in_place: bool = False) -> OutFrame | None:
        """The latest committed msg_out frame (never torn), or None if none was published yet.

        ``in_place``: the frame's arrays are read-only views of the region rather than a copy,
        verified as a copy is; they stay valid until the writer returns to the frame's slot
        (``out_ring_len`` publishes later), so only a reader in the writer's own thread may ask
        for it -- the simulation does: at 64 LBs x 4,096 servers a copy per LB is 275 MB per step.

        Raises ShmError (E_BUSY) if the frame kept changing for READ_RETRIES attempts, or
        (E_CHECKSUM) if the committed frame is corrupt."""
        words = self.latest_out_words(in_place)
        if words is None:
            return None
        return self._parse_out(words)

    def _parse_out(self, words: np.ndarray) -> OutFrame:
        raw = words.view(np.uint8)
        s, k = self.max_servers, self.reservoir_slots
        hdr = raw[:OUT_FRAME_HDR_SIZE].view(OUT_FRAME_DTYPE)[0]
        nw = active_words(s)
        act = words[OUT_ACTIVE_OFFSET // 8 : OUT_ACTIVE_OFFSET // 8 + nw]
        sv = self.out_servers_offset
        servers = raw[sv : sv + s * SERVER_SIZE].view(SERVER_DTYPE)
        so = self.out_samples_offset
        samples = raw[so : so + s * N_RES * k * 16].view("<f8").reshape(s, N_RES, k, 2)
        return OutFrame(
            seq=int(hdr["seq"]),
            time_s=float(hdr["time_s"]),
            wall_s=float(hdr["wall_s"]),
            active=int.from_bytes(act.tobytes(), "little"),
            active_words=act,
            n_active=int(hdr["n_active"]),
            in_seq_applied=int(hdr["in_seq_applied"]),
            fallback_active=bool(hdr["fallback_active"]),
            tracked_flows=int(hdr["tracked_flows"]),
            counters={c: int(hdr[c]) for c in _CONTEXT_COUNTERS},
            servers=servers,
            samples_SRK2=samples,
        )

    def latest_in(self) -> InFrame | None:
        """The latest committed msg_in frame (for tools and tests), or None."""
        words = self._read_frame(
            _W_IN_LATEST, self.in_ring_offset, self.in_ring_len, self.in_frame_stride
        )
        if words is None:
            return None
        f = words[: IN_FRAME_HDR_SIZE // 8].view(IN_FRAME_DTYPE)[0]
        n = min(int(f["n"]), self.max_servers)
        w0 = IN_FRAME_HDR_SIZE // 8
        return InFrame(
            seq=int(f["seq"]),
            time_s=float(f["time_s"]),
            wall_s=float(f["wall_s"]),
            weights=words[w0 : w0 + n].view("<f8").copy(),
        )

    def status(self) -> ShmStatus:
        """A consistent snapshot of the data plane's status block (seqlock on ``gen``)."""
        u64 = self._u64
        for _ in range(READ_RETRIES):
            g1 = int(u64[_W_STATUS])
            if g1 & 1:
                continue
            block = self._u8[128:256].copy()
            if int(u64[_W_STATUS]) != g1:
                continue
            st = block.view(STATUS_DTYPE)[0]
            return ShmStatus(
                in_seq_applied=int(st["in_seq_applied"]),
                in_seq_seen=int(st["in_seq_seen"]),
                weights_accepted=int(st["weights_accepted"]),
                weights_rejected=int(st["weights_rejected"]),
                last_verdict=int(st["last_verdict"]),
                fallback_active=bool(st["fallback_active"]),
                fallback_count=int(st["fallback_count"]),
                last_accept_time_s=float(st["last_accept_time_s"]),
                last_accept_wall_s=float(st["last_accept_wall_s"]),
                fallback_timeout_s=float(st["fallback_timeout_s"]),
                last_in_advance_time_s=float(st["last_in_advance_time_s"]),
            )
        raise ShmError(f"{self.name}: status kept changing during {READ_RETRIES} reads", E_BUSY)

    # ---- writing ----
    def write_weights(self, weights: Any, now_s: float, wall_s: float | None = None) -> int:
        """Write one weight per server (index = server) as the next msg_in frame; returns its seq.

        ``now_s`` is the agent's clock (s), ``wall_s`` defaults to time.time(). The data plane
        validates the weights (finite, >= 0, not all zero, no weight > 0 for an absent server,
        1 <= n <= max_servers) and keeps its last good set otherwise; weights apply to new flows
        only. A frame holds max_servers weights: more raise ShmError. Never blocks."""
        if self.role != "agent":
            raise ShmError(f"{self.name}: write_weights needs role 'agent'", E_ARG)
        w = np.ascontiguousarray(weights, dtype="<f8").reshape(-1)
        n = w.shape[0]
        if n > self.max_servers:
            raise ShmError(
                f"{self.name}: {n} weights > max_servers {self.max_servers} per frame", E_ARG
            )
        stride = self.in_frame_stride
        frame = np.zeros(stride // 8, dtype="<u8")
        ff = frame.view("<f8")
        ff[2] = now_s
        ff[3] = time.time() if wall_s is None else wall_s
        frame[4] = n  # u32 n, u32 flags = 0
        frame[8 : 8 + n] = w.view("<u8")
        seq = self._in_next
        self._in_next += 1
        frame[1] = checksum(frame[2:], seq)
        w0 = (self.in_ring_offset + (seq % self.in_ring_len) * stride) // 8
        u64 = self._u64
        u64[w0] = 0  # in progress
        u64[w0 + 1 : w0 + stride // 8] = frame[1:]
        u64[w0] = seq  # commit: seq last
        u64[_W_IN_LATEST] = seq
        return seq


def _validate_header(n: str, head: bytes, size: int) -> None:
    """Raise ShmError (naming ``n``) unless ``head`` (the first bytes of a region of ``size``
    bytes) is a valid header of a region that fits in ``size`` bytes."""
    if size < HEADER_SIZE:
        raise ShmError(
            f"{n}: region is {size} bytes, smaller than the {HEADER_SIZE}-byte shm header",
            E_TOO_SMALL,
        )
    h = np.frombuffer(head, dtype=HEADER_DTYPE, count=1)[0]
    if int(h["magic"]) != MAGIC:
        raise ShmError(
            f"{n}: bad magic 0x{int(h['magic']):016x} (expected 0x{MAGIC:016x}): "
            "not a MARLLB shm region",
            E_MAGIC,
        )
    if int(h["version"]) != VERSION:
        raise ShmError(
            f"{n}: shm layout version {int(h['version'])} (this reader supports {VERSION})",
            E_VERSION,
        )
    if int(h["header_size"]) != HEADER_SIZE:
        raise ShmError(
            f"{n}: header_size {int(h['header_size'])} (expected {HEADER_SIZE})", E_HEADER
        )
    s, k = int(h["max_servers"]), int(h["reservoir_slots"])
    n_out, n_in = int(h["out_ring_len"]), int(h["in_ring_len"])
    try:
        need = region_size(s, k, n_out, n_in)
    except ShmError as e:
        raise ShmError(f"{n}: inconsistent shm header: {e}", E_HEADER) from None
    stride = out_stride(s, k)
    expect = {
        "out_ring_offset": HEADER_SIZE,
        "out_frame_stride": stride,
        "in_ring_offset": HEADER_SIZE + n_out * stride,
        "in_frame_stride": in_stride(s),
        "out_servers_offset": servers_offset(s),
        "out_samples_offset": samples_offset(s),
        "total_size": need,
    }
    for field, value in expect.items():
        if int(h[field]) != value:
            raise ShmError(
                f"{n}: inconsistent shm header: {field} = {int(h[field])}, the layout for "
                f"max_servers {s}, reservoir_slots {k}, rings {n_out}/{n_in} needs {value}",
                E_HEADER,
            )
    if size < need:
        raise ShmError(
            f"{n}: region truncated: {size} bytes, header.total_size says {need}",
            E_TRUNCATED,
        )


def _format(buffer: Any, s: int, k: int, n_out: int, n_in: int) -> None:
    """Write a fresh header and zeroed rings into ``buffer`` (as lb_rl_shm_format)."""
    size = region_size(s, k, n_out, n_in)
    u8 = np.frombuffer(buffer, dtype=np.uint8)
    if u8.shape[0] < size:
        raise ShmError(f"buffer of {u8.shape[0]} bytes < {size} needed", E_TOO_SMALL)
    if u8.ctypes.data % 8:
        raise ShmError("buffer is not 8-byte aligned", E_ARG)
    u8[:size] = 0
    h = u8[:HEADER_SIZE].view(HEADER_DTYPE)
    stride = out_stride(s, k)
    for field, value in {
        "version": VERSION,
        "header_size": HEADER_SIZE,
        "total_size": size,
        "max_servers": s,
        "reservoir_slots": k,
        "out_ring_len": n_out,
        "in_ring_len": n_in,
        "out_ring_offset": HEADER_SIZE,
        "out_frame_stride": stride,
        "in_ring_offset": HEADER_SIZE + n_out * stride,
        "in_frame_stride": in_stride(s),
        "out_servers_offset": servers_offset(s),
        "out_samples_offset": samples_offset(s),
        "writer_pid": os.getpid(),
        "writer_start_wall_s": time.time(),
    }.items():
        h[field] = value
    h["status"]["fallback_timeout_s"] = DEFAULT_FALLBACK_MS / 1000.0
    h["magic"] = MAGIC  # last: the region is recognisable only once complete


def default_path(name: str = "marllb_lb1") -> Path:
    """Conventional location of a region: /dev/shm/<name> when /dev/shm exists, else the temp dir."""
    base = Path("/dev/shm")
    if not base.is_dir():
        import tempfile

        base = Path(tempfile.gettempdir())
    return base / name
