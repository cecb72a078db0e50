"""Our end of the TRex driver: a subprocess running ``hil/trex/driver.py`` in a TRex client venv.

    from hil.trex.client import TrexDriver, compile_streams, connect

    streams = compile_streams(program, "official", mult=2.0)   # STLStream JSON dicts, offline
    with connect("10.0.0.5:4501") as drv:                     # UserError within 5 s if no server
        res = drv.trial(program, duration_s=10, tx_ports=[0], rx_ports=[1])

The TRex clients never load into this process (they replace scapy, simpy, zmq and yaml in
``sys.modules``); they run in the driver process, one JSON request and one JSON answer per line
over its stdin/stdout (protocol: ``hil/trex/driver.py``). Every request has a timeout enforced
here; on a timeout, or when the driver dies, the subprocess is killed and a UserError names the
command and what the driver said. The driver's stderr (its log and the client's prints) goes to
a temporary file whose last lines are quoted in errors.
"""

from __future__ import annotations

import json
import logging
import os
import select
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Sequence

from simulator.config import UserError
from hil.trex.venv import CLIENTS, client_python
from hil.traffic.program import Program

__all__ = ["DEFAULT_PORT", "DRIVER", "parse_server", "TrexDriver", "compile_streams", "connect"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 4501  # TRex's synchronous (JSON-RPC) port; the async port is one below
DRIVER = Path(__file__).resolve().with_name("driver.py")
_START_TIMEOUT_S = 30.0  # loading a client takes 1-2 s here


def parse_server(server: str) -> tuple[str, int]:
    """``"HOST[:PORT]"`` -> (host, port); PORT defaults to 4501. IPv6 hosts go in brackets
    (``[::1]:4501``). Raises UserError on anything else."""
    s = (server or "").strip()
    if not s:
        raise UserError("TRex server: empty address; expected HOST[:PORT], e.g. 10.0.0.5:4501")
    if s.startswith("["):
        host, sep, rest = s[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise UserError(f"TRex server {server!r}: expected [IPV6]:PORT")
        port_s = rest[1:] if rest else ""
    elif s.count(":") > 1:
        raise UserError(f"TRex server {server!r}: put an IPv6 address in brackets, e.g. [::1]:4501")
    else:
        host, _, port_s = s.partition(":")
        if ":" in s and not port_s:
            raise UserError(f"TRex server {server!r}: missing port after ':'")
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise UserError(f"TRex server {server!r}: bad host {host!r}; expected HOST[:PORT]")
    if not port_s:
        return host, DEFAULT_PORT
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise UserError(f"TRex server {server!r}: port must be a number in 1..65535, got {port_s!r}")
    return host, int(port_s)


class TrexDriver:
    """The driver subprocess for one TRex client ("official": lbr-trex-client 3.4.0, TRex v3.04's
    client; "stl": trex-stl-lib 0.3), started on construction (its venv is created on first use)
    and ended by :meth:`close` or the ``with`` block. Requests run one at a time."""

    def __init__(self, client: str = "official", python: Path | None = None):
        if client not in CLIENTS:
            raise UserError(f"unknown TRex client {client!r}; choose one of: {', '.join(CLIENTS)}")
        self.client = client
        py = python if python is not None else client_python(client)
        self._stderr: IO[bytes] = tempfile.TemporaryFile(prefix="mlb-trex-driver-")
        self._buf = b""
        # -I: isolated (no PYTHONPATH, no user site, script dir not in front of the venv's
        # packages) so nothing of ours leaks into the driver.
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [str(py), "-I", str(DRIVER), "--client", client],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
            close_fds=True, start_new_session=True)
        log.debug("TRex driver (%s) pid %d", client, self._proc.pid)

    # -- lifecycle --

    def __enter__(self) -> "TrexDriver":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def close(self, timeout_s: float = 5.0) -> None:
        """Ask the driver to quit (it disconnects), kill it if it does not; idempotent."""
        p, self._proc = self._proc, None
        try:
            if p is None:
                return
            if p.poll() is None and p.stdin is not None:
                try:
                    p.stdin.write(b'{"cmd": "quit"}\n')
                    p.stdin.flush()
                    p.stdin.close()
                except OSError:
                    pass
                try:
                    p.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    if f is not None and not f.closed:
                        f.close()
                except OSError:
                    pass
        finally:
            self._stderr.close()

    def _kill(self) -> None:
        p, self._proc = self._proc, None
        if p is not None:
            p.kill()
            p.wait()
            for f in (p.stdin, p.stdout):
                try:
                    if f is not None:
                        f.close()
                except OSError:
                    pass

    def stderr_tail(self, lines: int = 15) -> str:
        """The last lines the driver wrote to stderr."""
        try:
            self._stderr.flush()
            size = self._stderr.seek(0, os.SEEK_END)
            self._stderr.seek(max(0, size - 8192))
            text = self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # -- requests --

    def call(self, cmd: str, timeout_s: float, /, **args: Any) -> dict:
        """Send one request and return the driver's answer as it is (``ok`` true or false).
        Raises UserError (and kills the driver) when no answer comes in ``timeout_s`` or the
        driver has died."""
        p = self._proc
        if p is None or p.stdin is None or p.stdout is None:
            raise UserError(f"TRex driver ({self.client}): {cmd!r} after the driver was closed")
        line = json.dumps({"cmd": cmd, "args": args}) + "\n"
        try:
            p.stdin.write(line.encode())
            p.stdin.flush()
        except OSError:
            pass  # died: reported below from its exit status and stderr
        raw = self._readline(timeout_s)
        if raw is None:
            self._kill()
            raise UserError(f"TRex driver ({self.client}): no answer to {cmd!r} within "
                            f"{timeout_s:g} s; driver killed" + self._tail_note())
        if raw == b"":
            rc = p.wait()
            self._kill()
            raise UserError(f"TRex driver ({self.client}) exited ({rc}) during {cmd!r}"
                            + self._tail_note())
        try:
            ans = json.loads(raw)
        except ValueError:
            self._kill()
            raise UserError(f"TRex driver ({self.client}): not a JSON answer to {cmd!r}: "
                            f"{raw[:200]!r}" + self._tail_note()) from None
        if not isinstance(ans, dict) or "ok" not in ans:
            raise UserError(f"TRex driver ({self.client}): malformed answer to {cmd!r}: {ans!r:.200}")
        return ans

    def request(self, cmd: str, timeout_s: float, /, **args: Any) -> dict:
        """Send one request; the answer without ``ok``. An ``ok: false`` answer becomes a
        UserError naming the command and the driver's message."""
        ans = self.call(cmd, timeout_s, **args)
        if not ans["ok"]:
            raise UserError(f"TRex driver ({self.client}) {cmd}: {ans.get('error', '?')}")
        ans.pop("ok")
        return ans

    def _tail_note(self) -> str:
        tail = self.stderr_tail()
        return f"\ndriver stderr (last lines):\n{tail}" if tail else ""

    def _readline(self, timeout_s: float) -> bytes | None:
        """One line from the driver's stdout; None on timeout, b"" at EOF."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    # -- commands --

    def hello(self, timeout_s: float = _START_TIMEOUT_S) -> dict:
        """client, client_version, python and scapy (the client's own) versions."""
        return self.request("hello", timeout_s)

    def compile(self, program: Program, mult: float = 1.0, timeout_s: float = 60.0) -> dict:
        """{"streams": [...], "ramp_up": [...]}: each program stream as STLStream.to_json()."""
        return self.request("compile", timeout_s, program=json.loads(program.to_json()),
                            mult=mult)

    def connect(self, server: str, timeout_s: float = 5.0) -> dict:
        """Connect the driver's STLClient to ``HOST[:PORT]`` (sync RPC port, default 4501) and
        return the server's version and ports. UserError "no TRex server answering at
        HOST:PORT (...)" when nothing answers in ``timeout_s``."""
        host, port = parse_server(server)
        where = f"{host}:{port}"
        budget = max(0.2, timeout_s - 0.3)  # the driver's own deadline, inside ours
        try:
            ans = self.call("connect", timeout_s, host=host, port=port, timeout_s=budget)
        except UserError as e:
            raise UserError(f"no TRex server answering at {where} ({e})") from None
        if not ans["ok"]:
            msg = ans.get("error", "?")
            raise UserError(msg if where in msg else f"no TRex server answering at {where} ({msg})")
        ans.pop("ok")
        return ans

    def trial(self, program: Program, duration_s: float, tx_ports: Sequence[int],
              rx_ports: Sequence[int] = (), mult: float = 1.0, ramp_up: bool = False,
              drain_ms: int = 100, timeout_s: float | None = None) -> dict:
        """Run the program's streams (rates × ``mult``, on every tx port) for ``duration_s``
        after resetting the ports (and, with ``ramp_up``, after the ramp-up bursts finish);
        returns per-port counters (``ports[str(id)]``: opackets, ipackets, obytes, ibytes,
        tx_pps = opackets / duration_s) and per-pg_id latency (``latency[str(pg_id)]``: stream,
        tx_port, min_us, avg_us, max_us, jitter_us, histogram, err_cntrs, tx_pkts, rx_pkts)."""
        ramp_s = sum(s.start_s + s.count / (s.rate_pps * mult) for s in program.ramp_up) if ramp_up else 0.0
        t = timeout_s if timeout_s is not None else duration_s + ramp_s + 60.0
        return self.request("trial", t, program=json.loads(program.to_json()), mult=mult,
                            duration_s=duration_s, tx_ports=list(tx_ports),
                            rx_ports=list(rx_ports), ramp_up=ramp_up, drain_ms=drain_ms)

    def disconnect(self, timeout_s: float = 10.0) -> None:
        self.request("disconnect", timeout_s)


def compile_streams(program: Program, client: str, mult: float = 1.0) -> list[dict]:
    """The program's measured streams as ``client``'s STLStream.to_json() dicts (rates × mult),
    compiled offline in a driver subprocess."""
    with TrexDriver(client) as drv:
        return drv.compile(program, mult)["streams"]


def connect(server: str, client: str = "official", timeout_s: float = 5.0) -> TrexDriver:
    """A driver connected to the TRex server at ``HOST[:PORT]``: use it in a ``with`` block.
    Raises UserError "no TRex server answering at HOST:PORT (...)" within ``timeout_s`` (the
    driver's start-up included) when nothing answers."""
    deadline = time.monotonic() + timeout_s
    host, port = parse_server(server)
    drv = TrexDriver(client)
    try:
        # Wait for the driver to load its client (1-2 s) so the connect budget is what is left.
        try:
            drv.hello(timeout_s=max(0.5, deadline - time.monotonic() - 0.5))
        except UserError as e:
            raise UserError(f"no TRex server answering at {host}:{port} ({e})") from None
        drv.connect(server, timeout_s=max(0.5, deadline - time.monotonic()))
    except BaseException:
        drv._kill()
        drv.close()
        raise
    return drv
