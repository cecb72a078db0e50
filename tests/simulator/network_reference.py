"""The pure-Python link FIFO arithmetic that simulator/_netcore.c implements: the code of
simulator/network.py before the C port (commit 1b3103a), kept as the reference the C code is
tested against to the bit (tests/simulator/test_netcore.py). Not used by the simulator.
Templates and chains are built by simulator.network's own (Python) constructors, which read
only the links' k8, delay_s and qcap, so both sides send the same trains."""

from __future__ import annotations

from collections import deque
from typing import Sequence

from simulator.network import Chain, Template


class Link:
    """One direction of a graph edge.

    State: ``last`` = departure time of the last accepted packet; ``q`` = departure times of
    accepted packets, oldest first, possibly including some that already left (they are only
    pruned when the count could reach ``qcap``: fewer than ``qcap`` entries => fewer than
    ``qcap`` packets in the link => no drop, so the drop-tail decision is exact)."""

    __slots__ = ("u", "v", "bps", "k8", "delay_s", "qcap", "last", "q", "tqb", "tqd", "hist",
                 "drops")

    def __init__(self, u: str, v: str, bandwidth_bps: float, delay_s: float, queue_pkts: int) -> None:
        self.u = u
        self.v = v
        self.bps = float(bandwidth_bps)
        self.k8 = 8.0 / self.bps  # transmission seconds per byte
        self.delay_s = float(delay_s)
        self.qcap = int(queue_pkts)
        self.last = 0.0  # departure time of the last accepted packet (0 before any; times >= 0)
        self.q: deque[float] = deque()  # departure times of packets possibly still in the link
        # the last template train (Path.send_template), kept lazily: its departures are
        # tqb + tqd[i], older than every entry of q; tqd = () when none
        self.tqb = 0.0
        self.tqd: tuple[float, ...] = ()
        # the last few template trains, oldest first: (first arrival, ``last`` just before it)
        self.hist: deque[tuple[float, float]] = deque(maxlen=8)
        self.drops = 0

    def materialise(self) -> None:
        """Put the lazily kept template departures into ``q`` (slow path only)."""
        if self.tqd:
            b = self.tqb
            self.q.extendleft([b + x for x in reversed(self.tqd)])
            self.tqd = ()

    def send(self, t_s: float, size: int) -> float:
        """Offer a packet of ``size`` bytes at ``t_s``; return its arrival time at ``v`` or -1.0
        if the queue is full (drop-tail)."""
        q = self.q
        if t_s >= self.last:
            if len(q) + len(self.tqd) >= self.qcap:
                q.clear()
                self.tqd = ()
            start = t_s
        else:
            if len(q) + len(self.tqd) >= self.qcap:
                self.materialise()
                while q[0] <= t_s:
                    q.popleft()
                if len(q) >= self.qcap:
                    self.drops += 1
                    return -1.0
            start = self.last
        d = start + size * self.k8
        self.last = d
        q.append(d)
        return d + self.delay_s


def _fits_before(lk: Link, t_first: float, t_last: float) -> bool:
    """Whether a train arriving at ``lk`` over [t_first, t_last] is served ahead of the
    template trains computed ahead of time there, as on an idle link: every packet arrives
    before the latest recorded train's first arrival, and what the link held before the
    earliest train that follows it left by t_first (then :meth:`Path.send_train` computes the
    idle-link departures for it and does not record it, see :meth:`Path.send`)."""
    hist = lk.hist
    return bool(hist) and t_last < hist[-1][0] and _pre_before(hist, t_last) <= t_first


_ALL_IDLE: tuple = ((), (), None)  # a plan: every link idle when the train arrives


def _plan(links: Sequence[Link], first: Sequence[float], last_in: Sequence[float],
          deps: Sequence[tuple[float, ...]], tight: Sequence[bool],
          base_s: float) -> tuple[list[Link], list[Link], list[float] | None] | None:
    """How a template train sent at ``base_s`` goes over ``links``, or None when some link
    needs the link-by-link arithmetic. Returns (ahead, behind, shifts):

    - a link idle when the train arrives (the common case) takes it at its idle-link times;
    - ``ahead``: links where the train fits ahead of trains computed ahead of time
      (:func:`_fits_before`): it is not recorded there;
    - ``behind``: links still busy when the train arrives, with no train computed ahead of
      time arriving later and room for the whole train, where the train is back-to-back
      (``tight``: each packet reaches the link before the previous one left it). FIFO then
      starts its first packet when the link empties, at ``last``, and every later packet right
      after the one before, as on the idle link: the whole train, and everything it triggers
      downstream, is shifted by the wait (exact: d_i = max(a_0, last) + sum of transmission
      times, the Lindley recursion of a tight train);
    - ``shifts``: per link, how much later than on idle links the train departs there (None
      when nothing waits)."""
    for lk, f in zip(links, first):
        if lk.last > base_s + f:
            break
    else:
        return _ALL_IDLE
    ahead: list[Link] = []
    behind: list[Link] = []
    shifts: list[float] | None = None
    delta = 0.0
    for j, (lk, f, fl, tt, d) in enumerate(zip(links, first, last_in, tight, deps)):
        t0 = base_s + delta + f
        if lk.last > t0:
            if _fits_before(lk, t0, base_s + delta + fl):
                ahead.append(lk)
            elif tt and not (lk.hist and lk.hist[-1][0] > t0) and _room(lk, t0, len(d)):
                behind.append(lk)
                if shifts is None:
                    shifts = [0.0] * j
                delta = lk.last - base_s - f  # its first packet starts at last: a later start
            else:
                return None
        if shifts is not None:
            shifts.append(delta)
    return ahead, behind, shifts


def _room(lk: Link, t0: float, n: int) -> bool:
    """Whether ``n`` packets arriving at ``lk`` from ``t0`` on all fit (drop-tail cannot drop
    any): the packets still there at t0 plus n at most ``qcap``. Forgets the departures up to
    t0 if needed (no packet is offered before t0 there any more: no train computed ahead of
    time arrives after t0)."""
    if len(lk.q) + len(lk.tqd) + n <= lk.qcap:
        return True
    lk.materialise()
    q = lk.q
    while q and q[0] <= t0:
        q.popleft()
    return len(q) + n <= lk.qcap


def _take(links: Sequence[Link], first: Sequence[float], deps: Sequence[tuple[float, ...]],
          lastdep: Sequence[float], base_s: float, plan: tuple, record_at_base: bool) -> None:
    """Apply a :func:`_plan` to the links' state. A train on an idle link replaces what the
    link holds (all of it left before the train arrives) and is kept lazily
    (:meth:`Link.materialise`); a train behind a backlog is appended to it. The train is
    recorded in the link's history, where it arrives at ``base_s`` only if
    ``record_at_base``."""
    ahead, behind, shifts = plan
    if not ahead and not behind:  # the common case: every link idle
        for lk, d, dl, f in zip(links, deps, lastdep, first):
            q = lk.q
            if q:
                q.clear()
            lk.tqb = base_s
            lk.tqd = d
            if record_at_base or f > 0.0:
                lk.hist.append((base_s + f, lk.last))
            lk.last = base_s + dl
        return
    for j, lk in enumerate(links):
        if lk in ahead:
            continue
        if shifts is None:
            b, f = base_s, first[j]
        else:  # departures wait shifts[j]; arrivals the waits of the links before
            b = base_s + shifts[j]
            f = first[j] + (shifts[j - 1] if j else 0.0)
        if record_at_base or f > 0.0:
            lk.hist.append((base_s + f, lk.last))
        if behind and lk in behind:
            lk.materialise()
            lk.q.extend([b + x for x in deps[j]])
        else:
            q = lk.q
            if q:
                q.clear()
            lk.tqb = b
            lk.tqd = deps[j]
        lk.last = b + lastdep[j]


def _pre_before(hist: deque[tuple[float, float]], t: float) -> float:
    """``last`` of a link just before the earliest recorded train that arrives after ``t``
    (hist: (first arrival, last before it), oldest first, first arrivals non-decreasing)."""
    pre = 0.0
    for first, pre_last in reversed(hist):
        if first <= t:
            break
        pre = pre_last
    return pre


_SHAPE_IDS: dict[tuple, int] = {}  # Path.shape -> Path.sid (a handful of shapes per topology)


class Path:
    """Links from one node to another, in order. ``delay_s`` = sum of propagation delays.
    ``reordered`` is set by :meth:`send_train` when a drop and retransmission may have put the
    arrivals out of order (otherwise FIFO links keep a non-decreasing train in order)."""

    __slots__ = ("links", "shape", "sid", "delay_s", "drops", "reordered")

    def __init__(self, links: list[Link]) -> None:
        self.links = links
        self.shape = tuple((lk.k8, lk.delay_s, lk.qcap) for lk in links)  # what templates depend on
        # a small int per distinct shape in this process: callers key template sets by it
        self.sid = _SHAPE_IDS.setdefault(self.shape, len(_SHAPE_IDS))
        self.delay_s = sum(lk.delay_s for lk in links)
        self.drops = 0
        self.reordered = False

    def send(self, t_s: float, size: int, rto_s: float) -> float:
        """Deliver one packet sent at ``t_s``; returns the arrival time of the first copy that
        gets through (a dropped copy is resent ``rto_s`` after its send time). Same arithmetic
        as :meth:`Link.send` on every link, inlined (hot path)."""
        while True:
            t = t_s
            for lk in self.links:
                q = lk.q
                last = lk.last
                hist = lk.hist
                if hist and t < hist[-1][0]:
                    # template trains computed ahead of time arrive at this link after t: a
                    # time-ordered link serves this packet before them, after what was there
                    # before the earliest of them (they are not shifted: at most this packet's
                    # transmission time of error; the packet is not recorded)
                    pre = _pre_before(hist, t)
                    t = (t if t >= pre else pre) + size * lk.k8 + lk.delay_s
                    continue
                if t >= last:
                    if len(q) + len(lk.tqd) >= lk.qcap:
                        q.clear()
                        lk.tqd = ()
                    d = t + size * lk.k8
                else:
                    if len(q) + len(lk.tqd) >= lk.qcap:
                        lk.materialise()
                        while q[0] <= t:
                            q.popleft()
                        if len(q) >= lk.qcap:
                            lk.drops += 1
                            break
                    d = last + size * lk.k8
                q.append(d)
                lk.last = d
                t = d + lk.delay_s
            else:
                return t
            self.drops += 1
            t_s += rto_s

    def send_train(self, times: list[float], sizes: list[int] | tuple[int, ...],
                   rto_s: float) -> list[float]:
        """Deliver packets sent at ``times`` (non-decreasing) with ``sizes``; returns their
        arrival times. Same FIFO arithmetic as :meth:`send`, one pass per link (the hot path:
        response trains, ACK trains); a dropped copy is resent ``rto_s`` after its send time
        (then ``reordered`` is set)."""
        ts = times
        dropped = False
        for lk in self.links:
            k8 = lk.k8
            dly = lk.delay_s
            q = lk.q
            last = lk.last
            qcap = lk.qcap
            if lk.tqd:
                lk.materialise()
            hist = lk.hist
            h_first = hist[-1][0] if hist else -1.0
            ins_last = -1.0
            out = []
            first = -1.0
            for t, size in zip(ts, sizes):
                if 0.0 <= t < h_first:  # ahead-of-time trains arrive after t: see send()
                    pre = _pre_before(hist, t)
                    if pre < ins_last:
                        pre = ins_last
                    ins_last = (t if t >= pre else pre) + size * k8
                    out.append(ins_last + dly)
                    continue
                if first < 0.0 <= t:
                    first = t
                    hist.append((t, last))
                if t >= last:
                    if len(q) >= qcap:
                        q.clear()
                    last = t + size * k8
                elif t < 0.0:  # dropped on an earlier link
                    out.append(-1.0)
                    continue
                else:
                    if len(q) >= qcap:
                        while q[0] <= t:
                            q.popleft()
                        if len(q) >= qcap:
                            lk.drops += 1
                            dropped = True
                            out.append(-1.0)
                            continue
                    last += size * k8
                q.append(last)
                out.append(last + dly)
            lk.last = last
            ts = out
        self.reordered = dropped
        if dropped:
            for i, t in enumerate(ts):
                if t < 0.0:
                    self.drops += 1
                    ts[i] = self.send(times[i] + rto_s, sizes[i], rto_s)
        return ts

    def send_template(self, base_s: float, tm: Template) -> list[float] | None:
        """Send the train of template ``tm`` at ``base_s`` (:meth:`send_template_at`); returns
        its arrival times at the path end, or None (nothing sent: use :meth:`send_train`)."""
        delta = self.send_template_at(base_s, tm)
        if delta is None:
            return None
        b = base_s + delta
        return [b + x for x in tm.arr]

    def send_template_at(self, base_s: float, tm: Template) -> float | None:
        """Send the train of template ``tm`` at ``base_s`` if, on every link, the train meets
        an idle link, fits entirely ahead of the trains computed ahead of time there, or waits
        back-to-back behind the link's backlog (see :func:`_plan`), and the link has room for
        the whole train (then no packet can be dropped). Returns by how much the train arrives
        later than on idle links (its arrivals are ``base_s + shift + tm.arr``), or None
        (nothing sent: use :meth:`send_train`)."""
        if not tm.fits:
            return None
        links = self.links
        plan = _plan(links, tm.first, tm.last_in, tm.deps, tm.tight, base_s)
        if plan is None:
            return None
        _take(links, tm.first, tm.deps, tm.lastdep, base_s, plan, True)
        self.reordered = False
        return 0.0 if plan[2] is None else plan[2][-1]


def send_chain(base_s: float, paths: Sequence[Path], ch: Chain) -> list[float] | None:
    """Send the trains of ``ch`` on ``paths`` at ``base_s`` as :meth:`Path.send_template_at`
    would, if it can on every link (:func:`_plan`); returns per path by how much its train
    arrives later than on idle links (a wait on one path delays the trains it triggers on the
    next), or None (nothing sent), also when a directed link appears twice (then the trains
    interact: all or nothing cannot hold)."""
    if not ch.fits:
        return None
    links: list[Link] = []
    for p in paths:
        links += p.links
    if len(set(links)) != len(links):
        return None
    plan = _plan(links, ch.first, ch.last_in, ch.deps, ch.tight, base_s)
    if plan is None:
        return None
    # the train reaches a link after base_s: only there can a later-offered packet arrive
    # before it (see Path.send), so only there is it recorded in the history
    _take(links, ch.first, ch.deps, ch.lastdep, base_s, plan, False)
    for p in paths:
        p.reordered = False
    shifts = plan[2]
    return [0.0] * len(paths) if shifts is None else [shifts[j] for j in ch.ends]
