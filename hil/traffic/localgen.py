"""The local traffic generator ``mlb_gen`` (vpp_plugin/host/mlb_gen.c) driven from Python: it
sends a :class:`~hil.traffic.program.Program` on an interface inside a network namespace, or
writes the packets it would send to a pcap.

    res = run_generator(program, "mlb-c", "eth0", duration_s=10, mult=0.5)   # blocks
    h = start_generator(program, "mlb-c", "eth0")                            # until stopped
    ...; res = h.stop()
    pcap_of(program, 1000, Path("gen.pcap"))       # the first 1000 packets, due times as timestamps

Lifecycle: the program's text form (``Program.to_text``) goes to a temporary file that lives
as long as the run; mlb_gen is ``ip netns exec NS mlb_gen ...`` (``ip netns exec`` execs, so
the child's PID is mlb_gen's own and SIGTERM reaches it directly). mlb_gen prints one JSON
object when it ends (duration over, every burst done, SIGTERM/SIGINT), parsed into
:class:`GenResult`. Any failure (bad program, missing interface, no root, a timeout) raises
``UserError`` carrying mlb_gen's stderr. Rates: the streams' ``rate_pps`` times ``mult``;
``streams`` (default: the program's measured streams) picks what is sent, e.g.
``program.ramp_up``.

Counting: ``sent`` is what the kernel accepted, ``failed`` what it refused (a full device
backlog: ENOBUFS), ``due`` what a perfect sender had sent by the end; ``sent < due`` means
mlb_gen fell behind (see ``lag_us``), never silently.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simulator.config import UserError

from hil.traffic.program import Program, Stream

__all__ = ["StreamResult", "GenResult", "GenHandle", "run_generator", "start_generator", "pcap_of",
           "generator_binary"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamResult:
    name: str
    sent: int  # packets the kernel accepted
    failed: int  # packets the kernel refused
    due: int  # packets a perfect sender had sent by the end
    rate_pps: float  # the rate it ran at (rate_pps * mult)
    latency: bool


@dataclass(frozen=True)
class GenResult:
    """What one mlb_gen run did (its JSON; ``raw`` keeps all of it)."""

    sent: int
    failed: int
    due: int
    elapsed_s: float  # from the first due time to the end of the loop
    offered_pps: float  # sent / elapsed_s
    t_start_unix_ns: int  # CLOCK_REALTIME at the start of the schedule (due time 0)
    t_end_unix_ns: int
    stopped_by: str  # "duration", "done" (every stream finished) or "signal"
    lag_us: dict  # mean / p50 / p99 / max of (send time - due time) per packet, microseconds
    cpu_s: float  # mlb_gen's user + system CPU time
    streams: tuple[StreamResult, ...]
    raw: dict

    @staticmethod
    def from_json(text: str) -> "GenResult":
        d = json.loads(text)
        return GenResult(
            sent=int(d["sent"]), failed=int(d["failed"]), due=int(d["due"]),
            elapsed_s=float(d["elapsed_s"]), offered_pps=float(d["offered_pps"]),
            t_start_unix_ns=int(d["t_start_unix_ns"]), t_end_unix_ns=int(d["t_end_unix_ns"]),
            stopped_by=d["stopped_by"], lag_us=dict(d["lag_us"]), cpu_s=float(d["cpu_s"]),
            streams=tuple(StreamResult(name=s["name"], sent=int(s["sent"]), failed=int(s["failed"]),
                                       due=int(s["due"]), rate_pps=float(s["rate_pps"]),
                                       latency=bool(s["latency"])) for s in d["streams"]),
            raw=d)

    def stream(self, name: str) -> StreamResult:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(name)


def generator_binary() -> Path:
    """Path of mlb_gen ($MARLLB_MLB_GEN, else built on first use: hil.hostbin)."""
    from hil.hostbin import host_binary

    return host_binary(name="mlb_gen")


def _write_program(program: Program, streams: tuple[Stream, ...] | None) -> Path:
    fd, name = tempfile.mkstemp(prefix="mlb-gen-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.write(program.to_text(streams))
    return Path(name)


def _argv(ns: str | None, prog: Path, iface: str, duration_s: float | None, mult: float,
          cpu: int | None) -> list[str]:
    argv = [str(generator_binary()), "--program", str(prog), "--iface", iface, "--mult", repr(mult)]
    if duration_s is not None:
        argv += ["--duration", repr(float(duration_s))]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    return (["ip", "netns", "exec", ns] if ns else []) + argv


def _result(rc: int, out: str, err: str, what: str) -> GenResult:
    if rc != 0:
        raise UserError(f"mlb_gen failed ({what}, exit {rc}): {err.strip() or '(no message)'}")
    try:
        return GenResult.from_json(out.strip().splitlines()[-1])
    except (IndexError, ValueError, KeyError) as e:
        raise UserError(f"mlb_gen ({what}) printed no result ({e}); stderr: {err.strip()}") from e


class GenHandle:
    """A running mlb_gen. ``stop()`` sends SIGTERM and returns its result; ``wait()`` waits for
    it to end on its own (duration over or bursts done). Usable as a context manager (stops
    it on exit if still running)."""

    def __init__(self, argv: list[str], prog: Path, what: str) -> None:
        self._prog, self._what = prog, what
        self.result: GenResult | None = None
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float | None = None) -> GenResult:
        if self.result is not None:
            return self.result
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as e:
            self._end()
            raise UserError(f"mlb_gen ({self._what}) still running after {timeout} s: killed") from e
        self._prog.unlink(missing_ok=True)
        self.result = _result(self.proc.returncode, out, err, self._what)
        r = self.result
        if r.sent + r.failed < r.due:
            log.warning("mlb_gen (%s) fell behind: %d of %d due packets sent or refused "
                        "(lag p99 %s us, max %s us)", self._what, r.sent + r.failed, r.due,
                        r.lag_us.get("p99"), r.lag_us.get("max"))
        if r.failed:
            log.warning("mlb_gen (%s): the kernel refused %d packets (last error: %s)", self._what,
                        r.failed, r.raw.get("last_error"))
        return r

    def stop(self, timeout: float = 5.0) -> GenResult:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def _end(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; remove the program file."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.communicate()
        self._prog.unlink(missing_ok=True)

    def __enter__(self) -> "GenHandle":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.result is not None:
            return
        if exc_type is None:
            self.stop()
        else:  # leaving on an error: end it without hiding that error
            self._end()


def start_generator(program: Program, ns: str | None, iface: str, *, duration_s: float | None = None,
                    mult: float = 1.0, streams: tuple[Stream, ...] | None = None,
                    cpu: int | None = None) -> GenHandle:
    """Start mlb_gen sending ``streams`` (default: the program's measured streams) on ``iface``
    in namespace ``ns`` (None: this namespace); it runs until ``duration_s`` (None: until
    stopped, or until every stream's count is sent)."""
    prog = _write_program(program, streams)
    try:
        return GenHandle(_argv(ns, prog, iface, duration_s, mult, cpu), prog,
                         f"{program.name} on {ns or '-'}/{iface}")
    except BaseException:
        prog.unlink(missing_ok=True)
        raise


def run_generator(program: Program, ns: str | None, iface: str, *, duration_s: float | None,
                  mult: float = 1.0, streams: tuple[Stream, ...] | None = None,
                  cpu: int | None = None, timeout: float | None = None) -> GenResult:
    """Send the program for ``duration_s`` seconds (None: until every stream's count is sent)
    and return what mlb_gen counted. ``timeout`` (default: duration + 30 s, or 300 s) kills a
    run that does not end and raises UserError."""
    if timeout is None:
        timeout = (duration_s + 30.0) if duration_s is not None else 300.0
    h = start_generator(program, ns, iface, duration_s=duration_s, mult=mult, streams=streams,
                        cpu=cpu)
    return h.wait(timeout)


def pcap_of(program: Program, count: int, path: Path, mult: float = 1.0,
            streams: tuple[Stream, ...] | None = None) -> Path:
    """Write the first ``count`` packets mlb_gen would send (streams merged by due time, ties in
    stream order) to a pcap with nanosecond timestamps = due times (0 = start of the run);
    sends nothing and needs no privileges. Returns ``path``."""
    prog = _write_program(program, streams)
    try:
        p = subprocess.run([str(generator_binary()), "--program", str(prog), "--pcap-out", str(path),
                            "--count", str(count), "--mult", repr(mult)],
                           capture_output=True, text=True, errors="replace", timeout=300)
    finally:
        prog.unlink(missing_ok=True)
    if p.returncode != 0:
        raise UserError(f"mlb_gen --pcap-out {path} failed (exit {p.returncode}): {p.stderr.strip()}")
    return Path(path)
