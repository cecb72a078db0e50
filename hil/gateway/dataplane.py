"""The simulator's ``DataPlane`` for an LB node whose data plane is real (``hil.lb: host|vpp``).

Every client->server packet the model hands the LB node is sent as a real frame into the real
LB; a reader thread captures what the LB forwards (ns-3's pattern: a reader thread and a
bounded queue, drops counted) and the server is read from the frame (the destination MAC; under
VPP the GRE tunnel's neighbour). For a SYN the call waits and returns the server the real LB
chose; every later packet of the flow is checked when its frame is captured (``misrouted`` if
the LB sent it elsewhere), so established traffic never stalls the run for a round trip. A
packet not forwarded within the timeout is lost (a SYN then has no server: the model drops the
request); one that shows up later still is counted as late. Accounting: sent = delivered + lost
(+ in flight during the run).

Weights go to the real data plane as msg_in frames in its shm region (``set_weights``, for an
in-process agent); the features come from its own msg_out frames, so the model records what
the real data plane saw and decided.
"""

from __future__ import annotations

import queue
import select
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from hil.gateway.frames import TCP_RST, TCP_SYN, FrameBuilder, read_forwarded
from simulator.config import UserError

__all__ = ["FramePorts", "GatewayCounters", "GatewayDataPlane", "RealShm"]

PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent


@dataclass
class GatewayCounters:
    sent: int = 0
    delivered: int = 0  #: forwarded by the real LB and captured within the timeout
    lost: int = 0  #: not captured within the timeout (includes the three kinds below)
    late: int = 0  #: lost packets whose frame showed up after the timeout
    queue_drops: int = 0  #: captured frames the full queue dropped (their packets are lost)
    mismatched: int = 0  #: captured frames whose tag matched but flow did not
    unknown_server: int = 0  #: forwarded to a MAC/address that is no server
    misrouted: int = 0  #: delivered packets of an established flow to another server than its SYN's
    in_flight: int = 0  #: sent, neither delivered nor given up on yet
    roundtrip_s: list[float] = field(default_factory=list)  #: of the packets waited for (SYNs)

    def as_dict(self) -> dict[str, Any]:
        rt = np.asarray(self.roundtrip_s)
        out = {k: v for k, v in self.__dict__.items() if k != "roundtrip_s"}
        out["accounted"] = self.sent == self.delivered + self.lost + self.in_flight
        if len(rt):
            out["roundtrip_mean_s"] = float(rt.mean())
            out["roundtrip_p99_s"] = float(np.quantile(rt, 0.99))
            out["roundtrip_max_s"] = float(rt.max())
        return out


class FramePorts:
    """The gateway's AF_PACKET sockets, one per LB, and the reader thread that captures the
    frames the LBs forward into one bounded queue of ``(tag, src_port, server, t_capture)``."""

    def __init__(self, socks: Sequence[socket.socket], server_of: dict[Any, int], *,
                 by: str = "mac", queue_size: int = 65536) -> None:
        self.socks = list(socks)
        self.server_of = server_of
        self.by = by  # "mac": dst MAC names the server; "ip": the outer (tunnel) destination does
        self.q: queue.Queue[tuple[int, int, int, float]] = queue.Queue(maxsize=queue_size)
        self.counters = GatewayCounters()
        self.pending: dict[int, tuple[int, int, float]] = {}  # tag -> (src port, expected server, t_sent)
        self._stop = threading.Event()
        for s in self.socks:
            s.setblocking(False)
        self._thread = threading.Thread(target=self._read, name="gateway-reader", daemon=True)
        self._thread.start()

    def send(self, k: int, frame: bytes, tag: int, sport: int, expected: int) -> None:
        """Send one tagged frame towards LB k and track it until its forwarded copy is captured
        (``expected``: the server it must reach, -1 if not known yet)."""
        self.pending[tag] = (sport, expected, time.perf_counter())
        self.counters.sent += 1
        s = self.socks[k]
        while True:
            try:
                s.send(frame)
                return
            except BlockingIOError:  # the veth's queue is full for a moment
                select.select([], [s], [], 0.01)

    def collect(self, wait_for: Sequence[int], timeout_s: float) -> dict[int, int]:
        """Account for every captured frame so far; block until the frames of ``wait_for``
        are captured (or timeout_s after they were sent). Returns their servers by tag."""
        c, pending, q = self.counters, self.pending, self.q
        want = {t for t in wait_for if t in pending}
        got: dict[int, int] = {}
        deadline = max((pending[t][2] for t in want), default=0.0) + timeout_s
        while True:
            block = deadline - time.perf_counter() if want else 0.0
            try:
                tag, sport, srv, t_cap = q.get(timeout=block) if block > 0 else q.get_nowait()
            except queue.Empty:
                break
            rec = pending.pop(tag, None)
            if rec is None:  # given up on earlier
                c.late += 1
                continue
            if sport != rec[0]:
                c.mismatched += 1
                c.lost += 1
            elif srv < 0:
                c.unknown_server += 1
                c.lost += 1
            else:
                c.delivered += 1
                if rec[1] >= 0 and srv != rec[1]:
                    c.misrouted += 1
            if tag in want:
                want.discard(tag)
                got[tag] = srv if sport == rec[0] else -1
                c.roundtrip_s.append(t_cap - rec[2])
        now = time.perf_counter()
        for tag in [t for t, rec in pending.items() if now - rec[2] > timeout_s]:
            del pending[tag]
            c.lost += 1
        c.in_flight = len(pending)
        return got

    def finish(self, timeout_s: float) -> None:
        """Wait up to timeout_s for the frames still in flight; the rest are lost."""
        deadline = time.perf_counter() + timeout_s
        while self.pending and time.perf_counter() < deadline:
            self.collect([], timeout_s)
            time.sleep(0.001)
        self.collect([], 0.0)
        self.counters.lost += len(self.pending)
        self.pending.clear()
        self.counters.in_flight = 0

    def _read(self) -> None:
        """The reader thread: capture until closed."""
        while not self._stop.is_set():
            if not self._pump(0.05):
                return

    def _pump(self, timeout_s: float) -> bool:
        """Wait up to timeout_s for captured frames and queue every one that is ready (False:
        the sockets are closed)."""
        ready, _, _ = select.select(self.socks, [], [], max(0.0, timeout_s))
        put, c = self.q.put_nowait, self.counters
        by_mac = self.by == "mac"
        for s in ready:
            while True:
                try:
                    frame, addr = s.recvfrom(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    return False
                if addr[2] == PACKET_OUTGOING:
                    continue
                got = read_forwarded(frame)
                if got is None:
                    continue
                mac, outer_dst, tag, sport = got
                srv = self.server_of.get(mac if by_mac else outer_dst, -1)
                try:
                    put((tag, sport, srv, time.perf_counter()))
                except queue.Full:
                    c.queue_drops += 1
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)
        for s in self.socks:
            s.close()


class RealShm:
    """A real data plane's shm region as the model uses it (ShmEndpoint): it publishes and
    polls on its own clock, so ``publish`` only returns its newest frame's seq."""

    buffer = None

    def __init__(self, path: str) -> None:
        from simulator.shm import ShmRegion

        self.path = path
        self.region = ShmRegion.open(path, role="agent")
        self.frame: Any = None  # the newest frame at the last publish (one copy per LB step)

    def publish(self, now_s: float, wall_s: float = 0.0) -> int:
        self.frame = self.region.latest_out()
        return 0 if self.frame is None else self.frame.seq

    def poll(self, now_s: float, wall_s: float = 0.0) -> int:
        return 0

    def close(self) -> None:
        self.region.close()


class GatewayDataPlane:
    """LB ``k``'s data plane is a real LB of ``gw`` (a :class:`hil.gateway.session.Gateway`,
    which starts the real LBs when the first region is opened); see the module docstring.
    ``core_policy`` and ``seed`` are the settings the real LB is started with."""

    def __init__(self, gw: Any, k: int, n_servers: int, core_policy: str, seed: int) -> None:
        self.gw = gw
        self.k = k
        self.n_servers = n_servers
        self.core_policy = core_policy
        self.seed = seed
        self.static: dict[int, float] = {}
        self.shm: RealShm | None = None
        self.builder: FrameBuilder | None = None
        self._keys: tuple[np.ndarray, ...] | None = None  # src ip, dst ip, src port, dst port
        self._flow_server: dict[int, int] = {}  # key row -> server of the flow's SYN
        self._tag = k << 28  # tags of LB k start apart (they wrap at 2^32)
        self.wait_all = False  # wait for every packet's frame, not only SYNs' (parity replays)

    # -- configuration (the real LB was started with the same servers and static weights) --
    def add_server(self, i: int, static_weight: float = 1.0) -> None:
        if not 0 <= i < self.n_servers:
            raise UserError(f"gateway LB {self.k}: server {i} outside the real LB's 0..{self.n_servers - 1}")
        self.static[i] = float(static_weight)

    def remove_server(self, i: int) -> None:
        raise UserError("a real data plane's servers are fixed at its start in a gateway run")

    def drain(self, i: int, on: bool = True) -> None:
        raise UserError("a real data plane's servers are fixed at its start in a gateway run")

    def set_key_table(self, keys: np.ndarray) -> None:
        def ip4(col: np.ndarray) -> np.ndarray:  # the v4-mapped address's last 4 bytes
            return np.ascontiguousarray(col[:, 12:16]).view(">u4").reshape(-1).astype(np.int64)

        self._keys = (ip4(keys["src"]), ip4(keys["dst"]), keys["src_port"].astype(np.int64),
                      keys["dst_port"].astype(np.int64))

    # -- packets ---------------------------------------------------------------------------
    def process_idx(self, now: float, i: int, flags: int, length: int, forced: int = -1) -> int:
        if forced >= 0:
            raise UserError("a real data plane chooses servers itself: oracle policies cannot force them")
        return self.process_packets((now,), (i,), (flags,), (length,))[0]

    def process_batch_idx(self, now_s: Any, key_idx: Any, flags: Any, lengths: Any,
                          forced: Any = None, out: Any = None) -> Any:
        res = np.asarray(self.process_packets(list(now_s), list(key_idx), list(flags), list(lengths)),
                         dtype=np.int32)
        if out is not None:
            out[:] = res
            return out
        return res

    def process_packets(self, now_s: Any, key_idx: Any, flags: Any, lengths: Any) -> list[int]:
        """Send each packet as a frame, in order, and return the server of each: for a SYN
        the server the real LB forwarded it to (waited for; -1: lost), for any other packet the
        server its flow's SYN went to -- the real LB's choice for it is checked when its frame
        is captured (``misrouted``, ``lost``), without stalling the run for a round trip."""
        if self._keys is None or self.builder is None:
            raise UserError("gateway: no key table or region yet (set_key_table, open_shm first)")
        src, dst, sport, dport = self._keys
        ports, flow_server = self.gw.ports, self._flow_server
        tcp = self.builder.tcp
        n = len(key_idx)
        out = [-1] * n
        syns: dict[int, int] = {}
        for j in range(n):
            i = key_idx[j]
            f = flags[j]
            self._tag = tag = (self._tag + 1) & 0xFFFFFFFF
            sp = int(sport[i])
            expected = -1 if f & TCP_SYN else flow_server.get(i, -1)
            ports.send(self.k, tcp(int(src[i]), int(dst[i]), sp, int(dport[i]), f, lengths[j], tag),
                       tag, sp, expected)
            if f & TCP_SYN or self.wait_all:
                syns[tag] = j
            else:
                out[j] = expected
                if f & TCP_RST:  # the flow ends here (close: rst)
                    flow_server.pop(i, None)
        got = ports.collect(list(syns), self.gw.timeout_s)
        for tag, j in syns.items():
            srv = out[j] = got.get(tag, -1)
            if srv >= 0:
                flow_server[key_idx[j]] = srv
        return out

    def expire(self, now: float, budget: int = 1 << 30) -> int:
        return 0  # the real data plane sweeps its flow table on its own clock

    # -- weights and state (from the real data plane's shm region) -------------------------
    def open_shm(self, path: str | None = None, ring_len: int = 4) -> RealShm:
        """The real data plane's own region (``path`` and ``ring_len``, where and how the model
        would lay out a simulated LB's region, are not used: the real LB formatted its own).
        The gateway's real LBs start on the first call."""
        self.gw.up()
        self.builder = FrameBuilder(self.gw.lbs.gw_macs[self.k], self.gw.lbs.lb_macs[self.k])
        self.shm = RealShm(str(self.gw.lbs.shm_paths[self.k]))
        return self.shm

    def _frame(self) -> Any:
        if self.shm is None:
            raise UserError(f"gateway LB {self.k}: region not open yet")
        f = self.shm.frame or self.shm.region.latest_out()
        if f is None:
            raise UserError(f"gateway LB {self.k}: its data plane has published no msg_out frame yet")
        return f

    def set_weights(self, w: Any) -> int:
        """Write the weights as the next msg_in frame; the real data plane validates and
        applies them at its next poll. Returns 0 (its verdict shows in its frames)."""
        if self.shm is None:
            raise UserError(f"gateway LB {self.k}: region not open yet")
        self.shm.region.write_weights(np.asarray(w, dtype=np.float64)[:self.n_servers], now_s=time.monotonic())
        return 0

    def use_static_weights(self) -> None:
        self.set_weights([self.static.get(i, 0.0) for i in range(self.n_servers)])

    @property
    def weights(self) -> np.ndarray:
        return self._frame().servers["weight"].astype(np.float64)

    def n_flow_on(self) -> np.ndarray:
        return self._frame().servers["n_flow_on"].astype(np.int64)

    def reservoir(self, i: int, kind: "str | int") -> tuple[np.ndarray, np.ndarray]:
        k = {"flow_duration": 0, "fct": 1}.get(kind, kind) if isinstance(kind, str) else int(kind)
        r = self._frame().reservoir(i, int(k))
        return r[:, 0].copy(), r[:, 1].copy()
