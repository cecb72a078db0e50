"""The packet-level model of one run: clients, edge router, LB nodes, links, servers.

Life of a request (a TCP-like flow, MSS 1460; every packet is modelled, see below):

1. **event** the client sends a SYN at ``t_arrive``; the edge router picks the LB by a salted
   hash of the 5-tuple (ECMP; CPython's tuple-of-ints hash, not randomised, so reproducible);
   the SYN crosses the client->LB links; the next request is drawn;
2. **event** SYN at the LB: the LB hands the core every buffered packet stamped earlier (one
   C call), then the SYN itself; the core (or the controller, for oracle policies) picks the
   server; the SYN crosses the LB->server links;
3. **event** SYN at the server: refused (failed server or workers+backlog full -> RST to the
   client, request dropped) or accepted: SYN-ACK straight to the client (DSR), then the client's
   ACK and request segment(s) (PSH|ACK) through the LB to the server, sent when the SYN-ACK
   arrives;
4. **event** request at the server: CPU work starts (or waits for a worker);
5. **event** (the server's single completion timer) work done: the response (response_bytes in
   MSS segments) goes straight to the client; the client ACKs every 2nd segment and the last one
   (at their arrival times) through the LB; then closes with RST|ACK (``traffic.close: rst``,
   MARLLB's SO_LINGER 0 clients) or FIN|ACK, the server's FIN|ACK and a final ACK (``fin``).
   JCT = last response byte at the client - SYN send time.

So 5 events per request (+ stale server timers). Packet times are computed arithmetically
through the link FIFOs when a packet's train is created (:mod:`simulator.network`): the client's
packets in steps 3 and 5 are computed up to an RTT before they are sent; the links serve
packets that arrive before such ahead-of-time trains first (time order, sub-us error, see
simulator/network.py; tests/simulator/test_packet_timing.py bounds the one-way delays).
Trains of fixed shape on idle links use precomputed templates (same times). Client->server
packets of established flows are pushed, stamped with their LB arrival time, into a per-LB
time-ordered buffer that is flushed to the core right before each new-flow decision and at each
LB step, so the core sees every packet in time order and ``n_flow_on`` is exact at decision time.
The server seen by each flushed packet is checked against the flow's server (``misrouted``).
Every ``lb.step_s`` each LB publishes its core's state as an shm frame and the step's features
are computed from that frame (:mod:`simulator.features`).

The event loop serves the simulation's own queue of calls (:meth:`Simulation.schedule`, a C heap:
simulator/_eventq.c) together with SimPy's event queue, in time order, so SimPy processes (e.g. of
a controller) still run.
Everything hangs off one :class:`Simulation`; nothing is global. Parts are injected: any
:class:`~simulator.protocols.DataPlane` factory, server factory, traffic source and controller.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from typing import Any, Callable, Sequence

import networkx as nx
import numpy as np
import simpy

from simulator.config import ExperimentConfig, JobConfig, UserError
from simulator.features import FEATURE_NAMES, FeatureCache, as_dict, frames_features
from simulator.gc_policy import sparse_gc
from simulator.hugepages import small_pages
from simulator.network import PathTable, Template, TemplateCache, build_links, send_chain
from simulator.packet import ACK, FIN, HEADER_BYTES, MSS, PSH, RST, SYN, VIP, VIP_PORT, Packet, client_ip
from simulator.protocols import Controller, DataPlane, TrafficSource
from simulator.records import COMPLETED, DROPPED, PENDING, MemoryRecorder, RecorderFactory
from simulator.server import PsServer, effects_by_server
from simulator.traffic import JobSizes

try:
    from simulator._eventq import EventQueue
    from simulator._request import RequestRecord
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise ImportError(f"{exc.name} (C extension) is not built; run "
                      "`pip install -e .` in the repository root (needs a C compiler)") from exc

__all__ = ["Simulation", "Request", "PENDING", "COMPLETED", "DROPPED", "FEATURES"]

log = logging.getLogger(__name__)

SYN_BYTES = HEADER_BYTES + 20  # SYN / SYN-ACK carry TCP options
RTO_SYN_S = 1.0  # initial SYN retransmission timeout (RFC 6298)
RTO_S = 0.2  # Linux minimum RTO, for other segments
EPHEMERAL_LO, EPHEMERAL_N = 32768, 60999 - 32768 + 1
#: per-server features recorded every LB step (reservoir summaries in seconds)
FEATURES = FEATURE_NAMES[1:]


class Request(RequestRecord):
    """One request/flow. Times in simulated seconds (-1.0 = not reached). Its fields (id,
    client, kidx, lb, server, t0, work_s, io_s, t_srv_arrive, t_srv_done, t_done, status,
    paths, resp_tms) are stored inline in C (simulator/_request.c): a request in flight is
    one block, not a dozen scattered number objects that each miss the caches at scale.
    ``Request(rid, client, kidx, lb, t0, work_s, io_s=0.0)``."""

    __slots__ = ()

    def __reduce__(self) -> tuple:
        """Pickling and copying: the constructor's arguments, then the fields set since."""
        return (type(self), (self.id, self.client, self.kidx, self.lb, self.t0, self.work_s, self.io_s),
                (self.server, self.t_srv_arrive, self.t_srv_done, self.t_done, self.status, self.paths,
                 self.resp_tms))

    def __setstate__(self, state: tuple) -> None:
        (self.server, self.t_srv_arrive, self.t_srv_done, self.t_done, self.status, self.paths,
         self.resp_tms) = state

    @property
    def key(self) -> tuple[int, int, int, int]:
        """(client ip, VIP, client port, VIP port) of the flow (ints)."""
        c, off = divmod(self.kidx, EPHEMERAL_N)
        return (client_ip(c), VIP, EPHEMERAL_LO + off, VIP_PORT)


class LbNode:
    """An LB: its data-plane core, its shm region and the time-ordered buffer of
    client->server packets of flows whose server is already known. The buffer is a heap of
    trains (a request's back-to-back packets, e.g. its ACK train), entries
    ``(t_first, seq, t_last, req, times, flags, sizes, packets or None, i0)``: packets
    ``i0..`` of the train are still to be handed to the core; times are LB arrival times."""

    def __init__(self, idx: int, dp: DataPlane) -> None:
        self.idx = idx
        self.dp = dp
        self.shm: Any = None  # its ShmPublisher (the region it publishes frames into)
        self.reader: Any = None  # a simulator.shm.ShmRegion reader on the same region
        self.buf: list[tuple] = []
        self.misrouted = 0
        self.flushed = 0

    def flush(self, now_s: float) -> None:
        """Hand the core every buffered packet stamped <= now_s, in time order (ties: train
        order), in one call."""
        buf = self.buf
        if not buf or buf[0][0] > now_s:
            return
        pop = heapq.heappop
        e = buf[0]
        nb = len(buf)
        if (e[2] <= now_s and e[8] == 0 and (nb < 2 or buf[1][0] > now_s)
                and (nb < 3 or buf[2][0] > now_s)):  # common: exactly one whole train is due
            pop(buf)
            req = e[3]
            n = len(e[4])
            out = self.dp.process_packets(e[4], [req.kidx] * n, e[5], e[6])
            ok = out.count(req.server)
            if ok != n:
                self.misrouted += n - ok
            if e[7] is not None:
                for pk, srv in zip(e[7], out):
                    pk.server = srv
            self.flushed += n
            return
        parts = []
        while buf and buf[0][0] <= now_s:
            e = pop(buf)
            i = e[8]
            ts = e[4]
            if e[2] <= now_s:
                j = len(ts)
            else:  # part of the train is due: the rest goes back
                j = i + 1
                while ts[j] <= now_s:
                    j += 1
                heapq.heappush(buf, (ts[j], e[1], e[2], e[3], ts, e[5], e[6], e[7], j))
            parts.append((e, i, j))
        dp = self.dp
        if len(parts) == 1:
            e, i, j = parts[0]
            req = e[3]
            n = j - i
            if i == 0 and j == len(e[4]):
                out = dp.process_packets(e[4], [req.kidx] * n, e[5], e[6])
            else:
                out = dp.process_packets(e[4][i:j], [req.kidx] * n, e[5][i:j], e[6][i:j])
            ok = out.count(req.server)
            if ok != n:
                self.misrouted += n - ok
            if e[7] is not None:
                for pk, srv in zip(e[7][i:j], out):
                    pk.server = srv
            self.flushed += n
            return
        prev = -1.0
        for e, i, j in parts:  # heap order is time order unless two trains overlap
            if e[4][i] <= prev:
                break
            prev = e[4][j - 1]
        else:
            times: list[float] = []
            kidx: list[int] = []
            flags: list[int] = []
            sizes: list[int] = []
            for e, i, j in parts:
                times += e[4][i:j]
                kidx += [e[3].kidx] * (j - i)
                flags += e[5][i:j]
                sizes += e[6][i:j]
            out = dp.process_packets(times, kidx, flags, sizes)
            k = 0
            for e, i, j in parts:
                n = j - i
                seg = out[k:k + n]
                ok = seg.count(e[3].server)
                if ok != n:
                    self.misrouted += n - ok
                if e[7] is not None:
                    for pk, srv in zip(e[7][i:j], seg):
                        pk.server = srv
                k += n
            self.flushed += k
            return
        order = sorted((e[4][k], e[1], k, e) for e, i, j in parts for k in range(i, j))
        out = dp.process_packets([o[0] for o in order], [o[3][3].kidx for o in order],
                                 [o[3][5][o[2]] for o in order], [o[3][6][o[2]] for o in order])
        for o, srv in zip(order, out):
            e = o[3]
            if srv != e[3].server:
                self.misrouted += 1
            if e[7] is not None:
                e[7][o[2]].server = srv
        self.flushed += len(out)


class Simulation:
    """One run. ``dataplanes[k]`` is LB k's core (already configured with servers and static
    weights); ``servers`` default to :class:`PsServer` from the graph attributes.

    ``recorder(end_s, warmup_s, n_servers)`` makes the :class:`~simulator.records.Recorder`
    that sees every request arrive and finish and every LB step's rows (default
    :class:`~simulator.records.MemoryRecorder`: keeps them all, see :attr:`requests`).
    ``log_packets`` keeps every modelled Packet in ``packets`` for the whole run: a debugging
    aid (tests, pcap) whose memory grows with the run, unlike the recorders'."""

    def __init__(self, cfg: ExperimentConfig, graph: nx.Graph, source: TrafficSource,
                 dataplanes: Sequence[DataPlane], controller: Controller, *,
                 rng: np.random.Generator, ecmp_salt: int,
                 server_factory: Callable[..., Any] | None = None,
                 log_packets: bool = False, bg_rng: np.random.Generator | None = None,
                 io_rng: np.random.Generator | None = None,
                 recorder: RecorderFactory | None = None) -> None:
        self.cfg = cfg
        self.env = simpy.Environment()
        self._q = EventQueue(self.env)  # see schedule()
        self._push = self._q.push  # fn(arg) at a time never in the past: the handlers' own calls
        # the per-request handlers bound once: a bound method made at every push is one more
        # object per event, gone cold by the time the event runs at data-center scale
        self._h_send_syn, self._h_syn_lb = self._on_send_syn, self._on_syn_lb
        self._h_syn_srv, self._h_req_srv = self._on_syn_srv, self._on_req_srv
        self._eid = 0  # insertion numbers of the LBs' packet buffers
        self.end_s = cfg.duration_s
        self.source = source
        self.controller = controller
        self.rng = rng
        self.bg_rng = bg_rng if bg_rng is not None else np.random.default_rng(0)
        self.salt = ecmp_salt
        self.close_fin = cfg.traffic.close == "fin"
        self.req_bytes = cfg.traffic.request_bytes
        self.resp_bytes = cfg.traffic.response_bytes
        self.log_packets = log_packets
        self.packets: list[Packet] = []
        self.n_packets = 0
        self.n_arrived = 0  # requests created so far; the next one's id
        self._exhausted = False

        servers = sorted((n for n, k in graph.nodes(data="kind") if k == "server"),
                         key=lambda n: int(n[1:]))
        lbs = sorted((n for n, k in graph.nodes(data="kind") if k == "lb"), key=lambda n: int(n[2:]))
        clients = sorted((n for n, k in graph.nodes(data="kind") if k == "client"),
                         key=lambda n: int(n[1:]))
        self.server_names, self.lb_names, self.client_names = servers, lbs, clients
        self.n_servers, self.n_lbs, self.n_clients = len(servers), len(lbs), len(clients)
        if len(dataplanes) != self.n_lbs:
            raise ValueError(f"{len(dataplanes)} data planes for {self.n_lbs} LBs")
        self.lbs = [LbNode(k, dp) for k, dp in enumerate(dataplanes)]
        self.recorder = (recorder or MemoryRecorder)(cfg.duration_s, cfg.warmup_s, self.n_servers)
        self._finished = self.recorder.finished
        make = server_factory or PsServer
        self.servers = [make(i, graph.nodes[n]["cores"], graph.nodes[n]["workers"],
                             graph.nodes[n]["backlog"], self._q.schedule, self._on_done, self._on_drop)
                        for i, n in enumerate(servers)]
        self._apply_effects()
        job = cfg.traffic.job
        # the non-CPU part of each request, drawn in arrival order (the same for every policy)
        self._io = (JobSizes(JobConfig(dist=job.io_dist, mean_s=job.io_s),
                             io_rng if io_rng is not None else np.random.default_rng(0))
                    if job.io_s > 0 else None)

        links = build_links(graph)
        self.links = links
        # paths found on first use (p_xy[i][j]: from x i to y j); plain lists of the tables'
        # rows, as an exact list's index is the interpreter's fast path
        self.p_cl = list(PathTable(graph, links, clients, lbs, ("server", "lb")))
        self.p_ls = list(PathTable(graph, links, lbs, servers, ("client", "lb")))
        self.p_sc = list(PathTable(graph, links, servers, clients, ("lb",)))

        self._ports = [int(p) for p in rng.integers(0, EPHEMERAL_N, self.n_clients)]
        self._ips = [client_ip(c) for c in range(self.n_clients)]
        from simulator.dataplane import make_keys  # the C binding: imported once a core exists

        # every flow key a client can use (row c * EPHEMERAL_N + port offset), built once and
        # shared by the LB cores: packets then carry a row index instead of key bytes
        self.key_table = make_keys(np.repeat(np.array(self._ips, dtype=np.uint64), EPHEMERAL_N),
                                   VIP, np.tile(np.arange(EPHEMERAL_LO, EPHEMERAL_LO + EPHEMERAL_N),
                                                self.n_clients), VIP_PORT)
        for lb in self.lbs:
            lb.dp.set_key_table(self.key_table)
        self._open_shm(cfg.lb.shm_dir)
        self._cli_draws: list[int] = []
        self._expire_every = max(1, round(1.0 / cfg.lb.step_s))  # sweep idle flows about once a second
        # per-run packet templates (tuples, shared by all requests): the client's ACK and
        # request segments, the response segments, the client's delayed ACKs and RST
        req_payloads = [0] + _segments(self.req_bytes)
        self._n_req = len(req_payloads)
        self._req_sizes = tuple(HEADER_BYTES + x for x in req_payloads)
        self._req_flags = (ACK,) * (self._n_req - 1) + (PSH | ACK,)
        self._resp_payloads = _segments(self.resp_bytes)
        self._n_resp = n_resp = len(self._resp_payloads)
        self._resp_sizes = tuple(HEADER_BYTES + x for x in self._resp_payloads)
        self._resp_flags = (ACK,) * (n_resp - 1) + (PSH | ACK,)
        # delayed ACK: every 2nd segment, and the last one; then RST|ACK (close: rst)
        self._ack_idx = [i for i in range(n_resp) if i % 2 == 1 or i == n_resp - 1]
        n_ack = len(self._ack_idx) + 1
        self._ack_flags = (ACK,) * (n_ack - 1) + (RST | ACK,)
        self._ack_sizes = (HEADER_BYTES,) * n_ack
        self._templates = TemplateCache()  # shared by paths of the same link parameters
        # (request, response) templates by the shape ids (Path.sid) of s -> c, c -> lb, lb -> s
        self._tm_flow: dict[tuple[int, int, int], tuple] = {}
        self._feature_cache = FeatureCache()
        self.events = 0

    # -- scheduling --------------------------------------------------------------------------
    def schedule(self, t_s: float, fn: Callable[[Any], None], arg: Any = None) -> None:
        """Run fn(arg) at simulated time t_s (times in the past run now). Calls live in the
        simulation's own queue, in (time, insertion) order, served together with SimPy's event
        queue in time order (:meth:`run`), so SimPy processes (e.g. of a controller) still work."""
        self._q.schedule(t_s, fn, arg)

    def now(self) -> float:
        return self.env._now

    @property
    def requests(self) -> list[Request]:
        """Every request so far in arrival order (index = id); only a MemoryRecorder keeps them."""
        reqs = getattr(self.recorder, "requests", None)
        if reqs is None:
            raise AttributeError(f"{type(self.recorder).__name__} does not keep the requests "
                                 "(build the simulation with recorder=MemoryRecorder)")
        return reqs

    # -- packets -----------------------------------------------------------------------------
    def _log(self, req: Request, src: int, dst: int, sport: int, dport: int, flags: int,
             payload: int, t_send: float, t_lb: float, t_recv: float) -> Packet:
        size = SYN_BYTES if flags & SYN else HEADER_BYTES + payload
        p = Packet(req.id, src, dst, sport, dport, flags, size, payload,
                   t_send, t_lb, t_recv, req.lb, req.server)
        self.packets.append(p)
        return p

    def _to_server(self, req: Request, times: list[float], flags: Sequence[int],
                   sizes: Sequence[int]) -> list[float]:
        """A train of client->server packets of a flow whose server is known: client->LB
        links, the LB's buffer (to be flushed to the core in time order), LB->server links.
        Returns the arrival times at the server."""
        p1 = self.p_cl[req.client][req.lb]
        t_lb = p1.send_train(times, sizes, RTO_S)
        p2 = self.p_ls[req.lb][req.server]
        t_srv = p2.send_train(t_lb, sizes, RTO_S)
        if p1.reordered and any(a > b for a, b in zip(t_lb, t_lb[1:])):
            order = sorted(range(len(t_lb)), key=t_lb.__getitem__)
            times, flags, sizes, t_lb, t_srv = ([x[i] for i in order] for x in
                                                 (times, flags, sizes, t_lb, t_srv))
        pk = None
        if self.log_packets:
            ip, port = req.key[0], req.key[2]
            pk = [self._log(req, ip, VIP, port, VIP_PORT, f, x - HEADER_BYTES, ts, tl, tv)
                  for f, x, ts, tl, tv in zip(flags, sizes, times, t_lb, t_srv)]
        self._eid += 1
        heapq.heappush(self.lbs[req.lb].buf,
                       (t_lb[0], self._eid, t_lb[-1], req, t_lb, flags, sizes, pk, 0))
        self.n_packets += len(times)
        return t_srv

    def _to_server_tm(self, req: Request, base: float, tms: tuple[Template, Template],
                      flags: Sequence[int], sizes: Sequence[int]) -> list[float]:
        """:meth:`_to_server` for a train of fixed shape sent at ``base`` + offsets: the
        precomputed templates ``tms`` (client->LB, LB->server) when the links are idle (the
        common case), else the link-by-link arithmetic. Returns the arrival times at the server."""
        tm1, tm2 = tms
        d_lb = self.p_cl[req.client][req.lb].send_template_at(base, tm1)
        if d_lb is None:
            return self._to_server(req, [base + x for x in tm1.send], flags, sizes)
        b_lb = base + d_lb
        t_lb = [b_lb + x for x in tm1.arr]
        p2 = self.p_ls[req.lb][req.server]
        t_srv = p2.send_template(b_lb, tm2)  # tm2's offsets are from base, like tm1's
        if t_srv is None:
            t_srv = p2.send_train(t_lb, sizes, RTO_S)
        pk = None
        if self.log_packets:
            ip, port = req.key[0], req.key[2]
            pk = [self._log(req, ip, VIP, port, VIP_PORT, f, x - HEADER_BYTES, base + ts, tl, tv)
                  for f, x, ts, tl, tv in zip(flags, sizes, tm1.send, t_lb, t_srv)]
        self._eid += 1
        heapq.heappush(self.lbs[req.lb].buf,
                       (t_lb[0], self._eid, t_lb[-1], req, t_lb, flags, sizes, pk, 0))
        self.n_packets += tm1.n
        return t_srv

    def _flow_templates(self, c: int, lb: int, s: int) -> tuple:
        """The paths s -> c, c -> lb, lb -> s of a flow and the templates of its packets:
        (paths, request templates, response templates). Request templates (from the SYN-ACK's
        send time): the server's SYN-ACK s -> c and the client's ACK + request segments, sent
        together on its arrival, c -> lb -> s: (client->LB, LB->server, the Chain of all three,
        request arrival offset, SYN-ACK arrival offset, (client->LB, LB->server) from the
        SYN-ACK's arrival instead). Response templates: the response s -> c (all segments sent
        at once) and the client's delayed ACKs + RST it triggers, c -> lb -> s, offsets from the
        same base: (response, ACKs client->LB, ACKs LB->server, the Chain of all three).
        Templates are kept per triple of path shapes, not per client/LB/server triple: a data
        center's 64 x 1,024 triples have a handful of shapes, and a per-triple cache would stay
        cold for millions of requests."""
        paths = (self.p_sc[s][c], self.p_cl[c][lb], self.p_ls[lb][s])
        shapes = (paths[0].sid, paths[1].sid, paths[2].sid)
        tms = self._tm_flow.get(shapes)
        if tms is None:
            tmpl = self._templates.get
            p_sc, p_cl, p_ls = paths
            sa = tmpl(p_sc, (0.0,), (SYN_BYTES,))
            t_sa = sa.arr[0]
            tm1 = tmpl(p_cl, (t_sa,) * self._n_req, self._req_sizes)
            tm2 = tmpl(p_ls, tm1.arr, self._req_sizes)
            r1 = tmpl(p_cl, (0.0,) * self._n_req, self._req_sizes)
            r2 = tmpl(p_ls, r1.arr, self._req_sizes)
            req_tms = (tm1, tm2, self._templates.chain((sa, tm1, tm2)), max(tm2.arr), t_sa, (r1, r2))
            tm = tmpl(p_sc, (0.0,) * self._n_resp, self._resp_sizes)
            acks = [tm.arr[i] for i in self._ack_idx] + [tm.arr[-1]]
            ack1 = tmpl(p_cl, acks, self._ack_sizes)
            ack2 = tmpl(p_ls, ack1.arr, self._ack_sizes)
            resp_tms = (tm, ack1, ack2, self._templates.chain((tm, ack1, ack2)))
            tms = self._tm_flow[shapes] = (req_tms, resp_tms)
        return paths, tms[0], tms[1]

    def _buffer_tm(self, req: Request, base: float, shifts: Sequence[float], tm1: Template,
                   tm2: Template, flags: Sequence[int], sizes: Sequence[int]) -> None:
        """Push a template train of a chain sent at ``base`` (client->LB tm1, LB->server tm2)
        into its LB's buffer (and the packet log); ``shifts``: :func:`send_chain`'s waits of
        the chain's three trains (the one that triggered this train, tm1, tm2)."""
        b_lb = base + shifts[1]
        t_lb = [b_lb + x for x in tm1.arr]
        pk = None
        if self.log_packets:
            ip, port = req.key[0], req.key[2]
            b_send, b_srv = base + shifts[0], base + shifts[2]
            pk = [self._log(req, ip, VIP, port, VIP_PORT, f, x - HEADER_BYTES, b_send + ts, tl, b_srv + tv)
                  for f, x, ts, tl, tv in zip(flags, sizes, tm1.send, t_lb, tm2.arr)]
        self._eid += 1
        heapq.heappush(self.lbs[req.lb].buf,
                       (t_lb[0], self._eid, t_lb[-1], req, t_lb, flags, sizes, pk, 0))
        self.n_packets += tm1.n

    def _to_client(self, req: Request, t_send: float, flags: int, payload: int, size: int = 0) -> float:
        size = size or HEADER_BYTES + payload
        t = self.p_sc[req.server][req.client].send(t_send, size, RTO_S)
        if self.log_packets:
            self._log(req, VIP, req.key[0], VIP_PORT, req.key[2], flags, payload, t_send, math.nan, t)
        self.n_packets += 1
        return t

    def _apply_effects(self) -> None:
        """cfg.effects: hidden properties of the chosen servers (a server in one entry at most)."""
        for i, eff in effects_by_server(self.cfg.effects, self.n_servers).items():
            if not hasattr(self.servers[i], "set_effects"):
                raise UserError("effects need simulated servers (this run's servers are real)")
            self.servers[i].set_effects(eff)

    # -- arrivals ----------------------------------------------------------------------------
    def _generate(self) -> None:
        """Create the next request, send its SYN and schedule its arrival at the LB."""
        nxt = self.source.next_request()
        if nxt is None or nxt[0] > self.end_s:
            self._exhausted = True
            return
        t0, work = nxt
        if self.n_clients == 1:
            c = 0
        else:
            if not self._cli_draws:
                self._cli_draws = self.rng.integers(0, self.n_clients, 4096).tolist()
            c = self._cli_draws.pop()
        ports = self._ports
        off = ports[c]
        ports[c] = off + 1 if off + 1 < EPHEMERAL_N else 0
        n_lbs = self.n_lbs
        lb = hash((self._ips[c], EPHEMERAL_LO + off, self.salt)) % n_lbs if n_lbs > 1 else 0
        req = Request(self.n_arrived, c, c * EPHEMERAL_N + off, lb, t0, work,
                      self._io.next() if self._io is not None else 0.0)
        self.n_arrived += 1
        self.recorder.arrived(req)
        self._push(t0, self._h_send_syn, req)

    def _on_send_syn(self, req: Request) -> None:
        """The client sends req's SYN now (its links see it at its own time, never ahead of
        other packets) and the next request is drawn."""
        t_lb = self.p_cl[req.client][req.lb].send(req.t0, SYN_BYTES, RTO_SYN_S)
        self._push(t_lb, self._h_syn_lb, req)
        self._generate()

    # -- handlers ----------------------------------------------------------------------------
    def _on_syn_lb(self, req: Request) -> None:
        now = self.env._now
        lb = self.lbs[req.lb]
        if lb.buf and lb.buf[0][0] <= now:
            lb.flush(now)
        s = lb.dp.process_idx(now, req.kidx, SYN, SYN_BYTES, self.controller.force(now, req.lb))
        if s < 0:  # no eligible server: the LB drops the SYN
            req.status = DROPPED
            req.t_done = now
            self._finished(req)
        else:
            req.server = s
            t_srv = self.p_ls[req.lb][s].send(now, SYN_BYTES, RTO_SYN_S)
            if self.log_packets:
                self._log(req, req.key[0], VIP, req.key[2], VIP_PORT, SYN, 0, req.t0, now, t_srv)
            self._push(t_srv, self._h_syn_srv, req)
        self.n_packets += 1

    def _on_syn_srv(self, req: Request) -> None:
        now = self.env._now
        if not self.servers[req.server].admit(req, now):
            req.status = DROPPED
            req.t_done = self._to_client(req, now, RST | ACK, 0)
            self._finished(req)
            return
        # the response reuses the paths and templates: a data center's path rows are cold
        paths, tms, req.resp_tms = self._flow_templates(req.client, req.lb, req.server)
        req.paths = paths
        shifts = send_chain(now, paths, tms[2])  # SYN-ACK, then the client's ACK + request
        if shifts is not None:
            self.n_packets += 1
            if self.log_packets:
                self._log(req, VIP, req.key[0], VIP_PORT, req.key[2], SYN | ACK, 0, now, math.nan,
                          now + shifts[0] + tms[4])
            self._buffer_tm(req, now, shifts, tms[0], tms[1], self._req_flags, self._req_sizes)
            t_req = now + shifts[2] + tms[3]
        else:
            t_sa = self._to_client(req, now, SYN | ACK, 0, SYN_BYTES)
            t_req = max(self._to_server_tm(req, t_sa, tms[5], self._req_flags, self._req_sizes))
        self._push(t_req, self._h_req_srv, req)

    def _on_req_srv(self, req: Request) -> None:
        if req.status == PENDING:
            self.servers[req.server].request_arrived(req, self.env._now)

    def _on_done(self, req: Request, now: float) -> None:
        """The server finished req's CPU work at ``now``: response, client ACKs, close."""
        paths, tms = req.paths, req.resp_tms
        req.paths = None  # a MemoryRecorder keeps the request
        shifts = None if self.close_fin else send_chain(now, paths, tms[3])  # response + ACKs
        if shifts is not None:
            self.n_packets += self._n_resp
            b_cli = now + shifts[0]
            req.t_done = b_cli + tms[0].arr[-1]
            req.status = COMPLETED
            self._finished(req)  # final now: what follows only reads req
            if self.log_packets:
                ip, port = req.key[0], req.key[2]
                for f, x, t in zip(self._resp_flags, self._resp_payloads, tms[0].arr):
                    self._log(req, VIP, ip, VIP_PORT, port, f, x, now, math.nan, b_cli + t)
            self._buffer_tm(req, now, shifts, tms[1], tms[2], self._ack_flags, self._ack_sizes)
            return
        path = paths[0]
        d_cli = path.send_template_at(now, tms[0])
        if d_cli is None:
            arr = path.send_train([now] * self._n_resp, self._resp_sizes, RTO_S)
            tms = None
        else:
            b_cli = now + d_cli
            arr = [b_cli + x for x in tms[0].arr]
        self.n_packets += self._n_resp
        if self.log_packets:
            ip, port = req.key[0], req.key[2]
            for f, x, t in zip(self._resp_flags, self._resp_payloads, arr):
                self._log(req, VIP, ip, VIP_PORT, port, f, x, now, math.nan, t)
        acks = [arr[i] for i in self._ack_idx]
        if path.reordered:
            t_last = max(arr)
            acks.sort()
        else:
            t_last = arr[-1]
        req.t_done = t_last
        req.status = COMPLETED
        self._finished(req)
        if self.close_fin:
            n = len(acks)
            self._to_server(req, acks, (ACK,) * n, (HEADER_BYTES,) * n)
            t_srv = self._to_server(req, [t_last], (FIN | ACK,), (HEADER_BYTES,))[0]
            t_cli = self._to_client(req, t_srv, FIN | ACK, 0)
            self._to_server(req, [t_cli], (ACK,), (HEADER_BYTES,))
        elif tms is not None:  # the ACK train has the template's shape, shifted by the wait
            self._to_server_tm(req, b_cli, tms[1:3], self._ack_flags, self._ack_sizes)
        else:
            acks.append(t_last)
            self._to_server(req, acks, self._ack_flags, self._ack_sizes)

    def _on_drop(self, req: Request, now: float) -> None:
        """The server failed with req admitted: it is reset."""
        req.status = DROPPED
        req.paths = None
        req.t_done = self._to_client(req, now, RST | ACK, 0)
        self._finished(req)

    # -- LB steps ----------------------------------------------------------------------------
    def _open_shm(self, shm_dir: str | None) -> None:
        """One shm region per LB: in memory, or the file <shm_dir>/lb<k>.shm when asked."""
        from pathlib import Path

        from simulator.dataplane import DataPlaneError
        from simulator.shm import DEFAULT_RING, MIN_RING, ShmRegion

        if shm_dir is not None:
            Path(shm_dir).mkdir(parents=True, exist_ok=True)
        for lb in self.lbs:
            path = None if shm_dir is None else str(Path(shm_dir) / f"{self.lb_names[lb.idx]}.shm")
            try:
                # in memory the one reader reads each frame right after it is published, in this
                # thread: the shortest ring the layout allows does (a file region keeps the
                # default ring for readers in other processes); at 64 LBs x 4,096 servers that
                # is 2 x 64 frames of 4.3 MB less to zero and keep
                lb.shm = lb.dp.open_shm(path, ring_len=MIN_RING if path is None else DEFAULT_RING)
            except DataPlaneError as exc:
                raise UserError(f"lb.shm_dir: {exc}") from None
            lb.reader = (ShmRegion.from_buffer(lb.shm.buffer, role="reader") if lb.shm.buffer is not None
                         else ShmRegion.open(lb.shm.path, role="reader"))

    def _on_step(self, k: int) -> None:
        """Every lb.step_s, per LB: hand the core the buffered packets, publish its state as an
        shm frame, compute the features from the frame (what a real agent sees), let the
        controller set weights, record the step (every ``lb.record_every``-th), and sweep idle
        flows about once a second. A controller with ``reads_features = False`` is not called:
        features are then computed for recorded steps only; one with ``feature_set = "robust"``
        gets the robust set (:data:`simulator.features.FEATURE_SETS`).

        A frame nobody reads is not published: an in-memory region (no ``lb.shm_dir``) gets
        frames on the steps whose features are computed, a file region every step (another
        process may read it). Publishing rewrites and checksums the whole frame (1.15 MB per LB
        at 1,024 servers): 2-3 % of the CPU at 64 LBs with a static policy
        (bench/sim_scale/results/README.md)."""
        now = self.env._now
        n = self.n_servers
        every = self.cfg.lb.record_every
        record = every > 0 and k % every == 0
        # a controller that ignores features (static and oracle policies) needs them only for
        # the steps table: then they are read and computed on recorded steps alone
        wanted = record or getattr(self.controller, "reads_features", True)
        frames = []
        publish = wanted or self.cfg.lb.shm_dir is not None  # a file: another process may read it
        for lb in self.lbs:
            lb.flush(now)
            if publish:
                lb.shm.publish(now, time.time())
            if wanted:
                # a region in this process's memory has one writer, this thread, done with the
                # frame: the features read it in place (verified as a copy is), not a copy; a
                # real data plane's region (a file) is written by another process
                frames.append(lb.reader.latest_out(in_place=lb.shm.buffer is not None))
        per_lb: list[dict[str, np.ndarray]] = []
        if wanted:
            # features of all LBs in one vectorised call (each LB's rows from its own frame
            # only); the cache recomputes only reservoirs that changed since it last ran
            robust = getattr(self.controller, "feature_set", "paper") == "robust"
            mats = frames_features(frames, n, self._feature_cache, robust=robust)
            for lb in self.lbs:
                feats = as_dict(mats[lb.idx * n:(lb.idx + 1) * n])
                w = self.controller.on_step(now, lb.idx, feats)
                if w is not None:
                    lb.dp.set_weights(w)
                per_lb.append(feats)
        # recorded once every LB has reported: a joint controller sets all weights at the last LB
        for lb in self.lbs:
            dp = lb.dp
            if record:
                feats = per_lb[lb.idx]
                feats["weight"] = dp.weights[:n]  # in force from now on (after the controller)
                feats["t_s"] = np.full(n, now)
                feats["lb"] = np.full(n, lb.idx)
                feats["server"] = np.arange(n)
                self.recorder.step(feats)
            if k % self._expire_every == 0:
                dp.expire(now)
        if now + self.cfg.lb.step_s <= self.end_s + 1e-12:
            self.schedule(now + self.cfg.lb.step_s, self._on_step, k + 1)

    # -- run ---------------------------------------------------------------------------------
    def run(self, progress: Callable[[float], None] | None = None) -> None:
        """Run until duration_s; ``progress(t_s)`` is called about every 1 % of the run."""
        self.start(progress)
        self.advance(self.end_s)
        self.finish()

    def start(self, progress: Callable[[float], None] | None = None) -> None:
        """Schedule the run's first events (steps, warm-up, config events, traffic); time stays 0."""
        cfg = self.cfg
        self.schedule(cfg.lb.step_s, self._on_step, 1)
        self.schedule(cfg.warmup_s, self._reset_stats, None)
        for ev in cfg.events:
            self.schedule(ev.at_s, self._apply_event, ev)
        self._start_background()
        self.controller.start(self)
        self._generate()
        if progress is not None:
            tick = self.end_s / 100

            def _progress(t: float) -> None:
                progress(t)
                if t + tick <= self.end_s:
                    self.schedule(t + tick, _progress, t + tick)
            self.schedule(tick, _progress, tick)

    def advance(self, until_s: float) -> None:
        """Process every event at times <= until_s (capped at duration_s); then now = until_s.
        Stopping right after a step time leaves the LBs between two steps, which is how the RL
        envs act: weights set now apply to the flows that start from now on."""
        env = self.env
        q = self._q
        sq = env._queue  # SimPy's own events (processes of controllers, if any)
        end = min(until_s, self.end_s)
        with sparse_gc(), small_pages():
            n = self._loop(env, q, sq, end)
        env._now = max(env._now, end)
        self.events += n

    @staticmethod
    def _loop(env: simpy.Environment, q: EventQueue, sq: list, end: float) -> int:
        """Process the events of ``q`` (ours) and ``sq`` (SimPy's) at times <= end, in time
        order (ours first at equal times); returns how many."""
        n = 0
        while True:
            n += q.run(end, sq)  # ours, up to end or to SimPy's next event, whichever is first
            if sq and sq[0][0] <= end and sq[0][0] < q.peek():
                env.step()
                n += 1
            else:
                return n

    def next_time(self, packets: bool = False) -> float:
        """Time of the next event (inf if none); with ``packets`` also of the next buffered
        client->server packet (a real-time run hands real data planes each packet on time)."""
        t = self._q.peek()
        sq = self.env._queue
        if sq and sq[0][0] < t:
            t = sq[0][0]
        if packets:
            for lb in self.lbs:
                if lb.buf and lb.buf[0][0] < t:
                    t = lb.buf[0][0]
        return t

    def flush_lbs(self, now_s: float) -> None:
        """Hand every LB's data plane its buffered packets stamped <= now_s."""
        for lb in self.lbs:
            if lb.buf and lb.buf[0][0] <= now_s:
                lb.flush(now_s)

    def finish(self) -> None:
        """End the run at duration_s: hand the cores their last packets, close server statistics."""
        end = self.end_s
        self.advance(end)
        for lb in self.lbs:
            lb.flush(end)
        for s in self.servers:
            s.close_stats(end)

    def _start_background(self) -> None:
        """Co-located load (cfg.background): per chosen server an on/off chain of periods."""
        bg = self.cfg.background
        if bg is None:
            return
        idx = list(range(self.n_servers)) if bg.servers is None else bg.servers
        for i in idx:
            if not 0 <= i < self.n_servers:
                raise UserError(f"background.servers: no server {i} (the topology has "
                                f"{self.n_servers}, indices 0..{self.n_servers - 1})")
        for i in idx:
            if bg.off_s == 0:
                self.servers[i].set_background(bg.fraction, 0.0)
                continue
            on = bg.dist == "exp" and self.bg_rng.random() < bg.on_s / (bg.on_s + bg.off_s)
            self.schedule(0.0, self._bg_toggle, (i, on))

    def _bg_toggle(self, arg: tuple[int, bool]) -> None:
        i, on = arg
        bg = self.cfg.background
        now = self.env._now
        self.servers[i].set_background(bg.fraction if on else 0.0, now)
        mean = bg.on_s if on else bg.off_s
        d = self.bg_rng.exponential(mean) if bg.dist == "exp" else mean
        self.schedule(now + d, self._bg_toggle, (i, not on))

    def _reset_stats(self, _: Any) -> None:
        for s in self.servers:
            s.reset_stats(self.env._now)

    def _apply_event(self, ev: Any) -> None:
        srv = self.servers[ev.server]
        now = self.env._now
        if ev.kind == "capacity":
            srv.set_cores(ev.cores, now)
        elif ev.kind == "fail":
            srv.fail(now)
        else:
            srv.recover(now)
        log.info("t=%.3f s: server %d %s", now, ev.server, ev.kind)


def _segments(nbytes: int) -> list[int]:
    """Payload sizes of nbytes cut into MSS segments."""
    return [MSS] * (nbytes // MSS) + ([nbytes % MSS] if nbytes % MSS else [])
