"""Open-loop HTTP/1.0 client of the local testbed: replays one client's rows of a schedule.

    python -m hil.testbed.client --schedule S.npz --client I --vip A.B.C.D --port 80 \\
        --start-wall T0 --duration-s D --out R.parquet [--close rst|fin] [--timeout S] \\
        [--response-bytes B] [--path /work.php] [--mark-base M]

Runs inside the client's network namespace and needs nothing but its arguments. It waits until
wall time T0, then opens request i's TCP connection to VIP:port at T0 + t_s[i] (rows with
``client == I`` and ``t_s < D``), whatever the state of the earlier ones (open loop). Each
request: non-blocking connect (SO_MARK = mark_base + lb when --mark-base is given: the testbed
routes each mark through one LB), ``GET {path}?n={n_iter}&b={B} HTTP/1.0``, read status line,
headers and the Content-Length body, then close -- ``rst``: SO_LINGER {1, 0} and close, an RST
as MARLLB's clients do (no TIME_WAIT anywhere); ``fin``: wait for the server's FIN (HTTP/1.0
servers close first, so the client keeps no TIME_WAIT) at most until the request's timeout, then
a normal close.

One thread, one epoll, non-blocking sockets. Sends are due in schedule order and every request
gets the same timeout, so both the send queue and the deadline queue are FIFOs (the timer heap
degenerates to a deque). The poll timeout is the next due time, rounded up to 1 ms by epoll:
sends are never early and typically < 1-2 ms late; lateness = t_send - t_arrive is reported.

Times (columns ``t_*_s``) are seconds relative to T0 on a monotonic clock anchored to the wall
clock at start-up; they are the times the event loop observed each step (connect = the socket
became writable, first/last byte = the recv that returned it).

End of run: sending stops at T0 + D; requests in flight are then given until their own timeout.
SIGTERM/SIGINT: sending stops at once, requests in flight get up to 1 s more, those still open
after that are recorded as ``in_flight`` (aborted by the end of the run, not by --timeout);
rows not sent are ``not_sent``. The parquet is written in every case (atomically) and one JSON
line of counts and lateness statistics goes to stdout; exit status 0.

Outcomes: completed | refused (connect failed: ECONNREFUSED, RST or other error before the
connection completed; errno kept) | reset (ECONNRESET/EPIPE after it) | timeout (not done after
--timeout s) | http_error (status != 200, malformed or short response) | not_sent | in_flight.
"""

from __future__ import annotations

import argparse
import collections
import errno as errno_mod
import gc
import json
import logging
import math
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "run_client", "OUTCOMES", "COLUMNS"]

log = logging.getLogger("hil.testbed.client")

OUTCOMES = ("completed", "refused", "reset", "timeout", "http_error", "not_sent", "in_flight")
(COMPLETED, REFUSED, RESET, TIMEOUT, HTTP_ERROR, NOT_SENT, IN_FLIGHT) = range(len(OUTCOMES))
COLUMNS = ("id", "client", "lb", "t_arrive_s", "t_send_s", "t_connect_s", "t_first_byte_s",
           "t_last_byte_s", "outcome", "http_status", "server", "service_s", "cpu_s",
           "t_server_start_s", "work_s", "n_iter", "bytes", "errno", "worker_pid", "cpu_start_s")

SO_MARK = getattr(socket, "SO_MARK", 36)
LINGER0 = struct.pack("ii", 1, 0)
STOP_GRACE_S = 1.0
_MAX_HEAD = 64 * 1024

# connection states
_CONNECTING, _READING, _DRAINING, _DONE = range(4)


class _Conn:
    __slots__ = ("i", "sock", "fd", "state", "head", "hdr_done", "clen", "body", "status", "out")

    def __init__(self, i: int, sock: socket.socket, out: bytes) -> None:
        self.i = i
        self.sock = sock
        self.fd = sock.fileno()
        self.state = _CONNECTING
        self.head = bytearray()
        self.hdr_done = False
        self.clen = -1
        self.body = 0
        self.status = -1
        self.out = out


class _Results:
    """Per-row result columns as plain lists (cheap element writes in the hot loop)."""

    def __init__(self, n: int) -> None:
        nan = math.nan
        self.t_send = [nan] * n
        self.t_connect = [nan] * n
        self.t_first = [nan] * n
        self.t_last = [nan] * n
        self.outcome = [NOT_SENT] * n
        self.status = [-1] * n
        self.server = [-1] * n
        self.service = [nan] * n
        self.cpu = [nan] * n
        self.start_wall = [nan] * n
        self.pid = [-1] * n
        self.cpu_start = [nan] * n
        self.nbytes = [0] * n
        self.err = [0] * n


def load_rows(path: str, client: int) -> dict[str, np.ndarray]:
    """This client's rows of a schedule .npz (see hil.testbed.schedule), sorted by t_s."""
    with np.load(path, allow_pickle=False) as z:
        m = z["client"] == client
        rows = {k: z[k][m] for k in ("id", "t_s", "work_s", "n_iter", "lb", "client")}
    order = np.argsort(rows["t_s"], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def run_client(rows: dict[str, np.ndarray], *, vip: str, port: int, start_wall: float,
               duration_s: float, close: str = "rst", timeout_s: float = 30.0,
               response_bytes: int = 10_000, path: str = "/work.php",
               mark_base: int | None = None) -> tuple[_Results, dict[str, Any]]:
    """The event loop. Returns the per-row results and run info (stopped by signal, wall times)."""
    t_s = rows["t_s"].tolist()
    n_iter = rows["n_iter"].tolist()
    lbs = rows["lb"].tolist()
    n = len(t_s)
    res = _Results(n)
    n_send = sum(1 for t in t_s if t < duration_s)  # rows sorted by t_s
    addr = (vip, port)
    host = vip if port == 80 else f"{vip}:{port}"
    req_fmt = f"GET {path}?n=%d&b={int(response_bytes)} HTTP/1.0\r\nHost: {host}\r\n\r\n"
    rst = close == "rst"

    ep = select.epoll()
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    stop = {"sig": 0}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["sig"] = signum

    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    old_wakeup = signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
    wake_fd = wake_r.fileno()
    ep.register(wake_fd, select.EPOLLIN)

    mono = time.monotonic
    # relative time = mono() - base, with relative 0 = wall time start_wall
    base = mono() + (start_wall - time.time())
    if n_send and mono() - base > 0.0:
        log.warning("started %.3f s after T0: the first sends will be late", mono() - base)

    conns: dict[int, _Conn] = {}
    deadlines: collections.deque[tuple[float, _Conn]] = collections.deque()
    rbuf = bytearray(1 << 18)
    EPOLLIN, EPOLLOUT = select.EPOLLIN, select.EPOLLOUT
    AF_INET, SOCK_STREAM = socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    SOL_SOCKET, SO_ERROR, SO_LINGER = socket.SOL_SOCKET, socket.SO_ERROR, socket.SO_LINGER
    EINPROGRESS = errno_mod.EINPROGRESS
    r_send, r_conn, r_first, r_last = res.t_send, res.t_connect, res.t_first, res.t_last
    r_out, r_bytes, r_err = res.outcome, res.nbytes, res.err
    ep_register, ep_modify, ep_poll = ep.register, ep.modify, ep.poll

    def finish(c: _Conn, outcome: int, abort: bool, eof: bool = False) -> None:
        """Record the outcome and close: RST if abort or rst mode; else (fin mode, response
        complete) wait for the server's FIN first unless it came already (eof)."""
        r_out[c.i] = outcome
        s = c.sock
        if abort or rst:
            try:
                s.setsockopt(SOL_SOCKET, SO_LINGER, LINGER0)
            except OSError:
                pass
        elif not eof:
            c.state = _DRAINING  # until the server's FIN (or the request's deadline)
            return
        c.state = _DONE
        del conns[c.fd]
        s.close()  # closing the only reference removes the fd from the epoll set

    def parse_head(c: _Conn, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(None, 2)
        if len(parts) >= 2 and parts[0].startswith("HTTP/") and parts[1].isdigit():
            c.status = int(parts[1])
        i = c.i
        res.status[i] = c.status
        for line in lines[1:]:
            name, _, val = line.partition(":")
            name = name.strip().lower()
            if not name.startswith("x-") and name != "content-length":
                continue
            val = val.strip()
            try:
                if name == "content-length":
                    c.clen = int(val)
                elif name == "x-server":
                    res.server[i] = int(val)
                elif name == "x-service-s":
                    res.service[i] = float(val)
                elif name == "x-cpu-s":
                    res.cpu[i] = float(val)
                elif name == "x-start-wall":
                    res.start_wall[i] = float(val)
                elif name == "x-pid":
                    res.pid[i] = int(val)
                elif name == "x-cpu-start":
                    res.cpu_start[i] = float(val)
            except ValueError:
                log.debug("request row %d: bad header %r", i, line)

    def on_readable(c: _Conn, now: float) -> None:
        s, i = c.sock, c.i
        try:
            k = s.recv_into(rbuf)
        except BlockingIOError:
            return
        except (ConnectionResetError, BrokenPipeError) as e:
            r_err[i] = e.errno or 0
            if c.state == _DRAINING:
                finish(c, COMPLETED, True)
            else:
                finish(c, RESET, True)
            return
        except OSError as e:
            r_err[i] = e.errno or 0
            finish(c, RESET if c.state != _DRAINING else COMPLETED, True)
            return
        if c.state == _DRAINING:
            if k == 0:  # the server's FIN: a normal close leaves no TIME_WAIT here
                c.state = _DONE
                del conns[c.fd]
                s.close()
            return
        if k == 0:  # EOF before the response was complete
            if c.hdr_done and c.clen < 0:  # no Content-Length: the body ends at EOF
                r_last[i] = now
                finish(c, COMPLETED if c.status == 200 else HTTP_ERROR, False, eof=True)
            else:
                finish(c, HTTP_ERROR, True)
            return
        if r_bytes[i] == 0:
            r_first[i] = now
        r_bytes[i] += k
        if c.hdr_done:
            c.body += k
        else:
            head = c.head
            head += rbuf[:k]
            p = head.find(b"\r\n\r\n")
            if p < 0:
                if len(head) > _MAX_HEAD:
                    finish(c, HTTP_ERROR, True)
                return
            c.hdr_done = True
            parse_head(c, bytes(head[:p]))
            c.body = len(head) - p - 4
            c.head = bytearray()
        if c.clen >= 0 and c.body >= c.clen:
            r_last[i] = now
            finish(c, COMPLETED if c.status == 200 and c.body == c.clen else HTTP_ERROR, False)

    def on_writable(c: _Conn, now: float) -> None:
        s, i = c.sock, c.i
        if c.state == _CONNECTING:
            err = s.getsockopt(SOL_SOCKET, SO_ERROR)
            if err:
                r_err[i] = err
                finish(c, REFUSED, True)
                return
            r_conn[i] = now
            c.state = _READING
        try:
            sent = s.send(c.out)
        except BlockingIOError:
            return
        except OSError as e:
            r_err[i] = e.errno or 0
            finish(c, RESET, True)
            return
        if sent < len(c.out):
            c.out = c.out[sent:]
            return
        c.out = b""
        ep_modify(c.fd, EPOLLIN)

    k = 0  # next row to send
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the loop makes no reference cycles; no collector pauses between sends
    cpu0 = time.process_time()
    stop_at = math.inf
    stopping = False
    t_first_send = t_last_send = math.nan
    while True:
        now = mono() - base
        if stop["sig"] and not stopping:
            stopping = True
            stop_at = now + STOP_GRACE_S
            log.info("signal %d: stop sending at row %d/%d, %d in flight", stop["sig"], k,
                     n_send, len(conns))
        # -- sends that are due
        if not stopping:
            while k < n_send and t_s[k] <= now:
                try:
                    s = socket.socket(AF_INET, SOCK_STREAM)
                except OSError as e:  # EMFILE/ENFILE/ENOBUFS: the client's own limit
                    r_err[k] = e.errno or 0
                    log.warning("row %d not sent: %s", k, e)
                    k += 1
                    continue
                if mark_base is not None:
                    s.setsockopt(SOL_SOCKET, SO_MARK, mark_base + lbs[k])
                c = _Conn(k, s, (req_fmt % n_iter[k]).encode())
                now = mono() - base
                r_send[k] = now
                err = s.connect_ex(addr)
                conns[c.fd] = c
                deadlines.append((now + timeout_s, c))
                r_out[k] = IN_FLIGHT
                if err == EINPROGRESS:
                    ep_register(c.fd, EPOLLOUT)
                elif err == 0:
                    ep_register(c.fd, EPOLLOUT)
                else:
                    r_err[k] = err
                    finish(c, REFUSED, True)
                k += 1
        # -- deadlines
        while deadlines and deadlines[0][0] <= now:
            _, c = deadlines.popleft()
            if c.state == _DONE:
                continue
            if c.state == _DRAINING:  # response complete, the server never closed: close now
                c.state = _DONE
                del conns[c.fd]
                c.sock.close()
            else:
                finish(c, TIMEOUT, True)
        # -- end?
        sending = not stopping and k < n_send
        if not sending and not conns:
            break
        if stopping and now >= stop_at:
            break
        # -- wait
        nxt = math.inf
        if sending:
            nxt = t_s[k]
        if deadlines and deadlines[0][0] < nxt:
            nxt = deadlines[0][0]
        if stop_at < nxt:
            nxt = stop_at
        wait = nxt - now
        events = ep_poll(wait if wait > 0.0 else 0.0) if nxt < math.inf else ep_poll()
        if not events:
            continue
        now = mono() - base
        for fd, ev in events:
            c = conns.get(fd)
            if c is None:
                if fd == wake_fd:
                    try:
                        while wake_r.recv(64):
                            pass
                    except BlockingIOError:
                        pass
                continue
            if c.state == _CONNECTING or (ev & EPOLLOUT and c.out):
                on_writable(c, now)
            else:
                on_readable(c, now)
    sent_t = [t for t in r_send[:k] if t == t]
    if sent_t:
        t_first_send, t_last_send = sent_t[0], sent_t[-1]
    # what is still open was cut off by the end of the run (signal + grace)
    for c in list(conns.values()):
        if c.state == _DRAINING:
            c.state = _DONE
            del conns[c.fd]
            c.sock.close()
        else:
            finish(c, IN_FLIGHT, True)
    if gc_was_enabled:
        gc.enable()
    signal.set_wakeup_fd(old_wakeup)
    for s_, h in old_handlers.items():
        signal.signal(s_, h)
    ep.close()
    wake_r.close()
    wake_w.close()
    info = {"signal": stop["sig"], "rows_sent": k, "send_span_s": t_last_send - t_first_send,
            "loop_cpu_s": time.process_time() - cpu0}
    return res, info


def to_frame(rows: dict[str, np.ndarray], res: _Results, start_wall: float) -> Any:
    import pandas as pd

    return pd.DataFrame({
        "id": rows["id"].astype(np.int64),
        "client": rows["client"].astype(np.int32),
        "lb": rows["lb"].astype(np.int32),
        "t_arrive_s": rows["t_s"].astype(np.float64),
        "t_send_s": np.array(res.t_send, dtype=np.float64),
        "t_connect_s": np.array(res.t_connect, dtype=np.float64),
        "t_first_byte_s": np.array(res.t_first, dtype=np.float64),
        "t_last_byte_s": np.array(res.t_last, dtype=np.float64),
        "outcome": pd.Categorical.from_codes(np.array(res.outcome, dtype=np.int8),
                                             categories=list(OUTCOMES)),
        "http_status": np.array(res.status, dtype=np.int32),
        "server": np.array(res.server, dtype=np.int32),
        "service_s": np.array(res.service, dtype=np.float64),
        "cpu_s": np.array(res.cpu, dtype=np.float64),
        "t_server_start_s": np.array(res.start_wall, dtype=np.float64) - start_wall,
        "work_s": rows["work_s"].astype(np.float64),
        "n_iter": rows["n_iter"].astype(np.int64),
        "bytes": np.array(res.nbytes, dtype=np.int64),
        "errno": np.array(res.err, dtype=np.int32),
        "worker_pid": np.array(res.pid, dtype=np.int32),
        "cpu_start_s": np.array(res.cpu_start, dtype=np.float64),
    }, columns=list(COLUMNS))


def summarise(df: Any, info: dict[str, Any], client: int) -> dict[str, Any]:
    counts = df["outcome"].value_counts()
    sent = df["t_send_s"].notna().to_numpy()
    late = (df["t_send_s"] - df["t_arrive_s"]).to_numpy()[sent]
    span = info["send_span_s"]
    out: dict[str, Any] = {"client": client, "scheduled": int(len(df)), "sent": int(sent.sum())}
    out.update({o: int(counts.get(o, 0)) for o in OUTCOMES})
    out.update({
        "lateness_mean_s": float(late.mean()) if len(late) else None,
        "lateness_p99_s": float(np.quantile(late, 0.99)) if len(late) else None,
        "lateness_max_s": float(late.max()) if len(late) else None,
        "send_rate_per_s": float((sent.sum() - 1) / span) if sent.sum() > 1 and span > 0 else None,
        "loop_cpu_s": info["loop_cpu_s"],
        "signal": info["signal"],
    })
    return out


def write_parquet(df: Any, out: str) -> None:
    p = Path(out)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, p)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.testbed.client",
                                 description="Open-loop HTTP/1.0 client of the local testbed.")
    ap.add_argument("--schedule", required=True, help="schedule .npz (hil.testbed.schedule)")
    ap.add_argument("--client", type=int, required=True, help="replay the rows with client == I")
    ap.add_argument("--vip", required=True)
    ap.add_argument("--port", type=int, default=80)
    ap.add_argument("--start-wall", type=float, required=True, help="T0, wall time (time.time())")
    ap.add_argument("--duration-s", type=float, required=True, help="send rows with t_s < D")
    ap.add_argument("--out", required=True, help="result .parquet")
    ap.add_argument("--close", choices=("rst", "fin"), default="rst")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-request timeout (s)")
    ap.add_argument("--response-bytes", type=int, default=10_000)
    ap.add_argument("--path", default="/work.php")
    ap.add_argument("--mark-base", type=int, default=None,
                    help="set SO_MARK = mark_base + lb on each socket")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s client" + str(args.client) + " %(levelname)s %(message)s")
    _raise_nofile()
    if args.mark_base is not None:
        with socket.socket() as probe:  # fail now, not at the first send
            try:
                probe.setsockopt(socket.SOL_SOCKET, SO_MARK, args.mark_base)
            except OSError as e:
                ap.error(f"--mark-base: cannot set SO_MARK ({e}; needs CAP_NET_ADMIN)")
    rows = load_rows(args.schedule, args.client)
    log.info("%d rows, first at %.3f s", len(rows["id"]), rows["t_s"][0] if len(rows["id"]) else math.nan)
    res, info = run_client(rows, vip=args.vip, port=args.port, start_wall=args.start_wall,
                           duration_s=args.duration_s, close=args.close, timeout_s=args.timeout,
                           response_bytes=args.response_bytes, path=args.path,
                           mark_base=args.mark_base)
    # the run is over: a stop signal now (the testbed stops clients at the end of the run) must
    # not kill the process while it writes its records
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    df = to_frame(rows, res, args.start_wall)
    write_parquet(df, args.out)
    summary = summarise(df, info, args.client)
    summary["out"] = args.out
    sys.stdout.write(json.dumps(summary) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
