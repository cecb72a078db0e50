"""Running host commands for the testbed: one place that runs `ip`, `sysctl` and friends,
inside a network namespace when asked, and turns a failure into one clear error.

Everything the testbed creates carries the ``mlb`` prefix (namespaces ``mlb-*``), and teardown
finds leftovers by that prefix only (never by a broad process name)."""

from __future__ import annotations

import ctypes
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from typing import Any, Callable, Sequence, TypeVar

from simulator.config import UserError

__all__ = ["PREFIX", "TESTBED_NAME", "HostCommandError", "run", "in_ns", "namespaces", "ns_pids", "kill_pids",
           "pid_alive", "require_tool", "live_realtime_owner", "realtime_leftover_pids", "in_netns_thread"]

log = logging.getLogger("marllb.hil.testbed")
T = TypeVar("T")

PREFIX = "mlb-"
#: names the testbed gives: switch, clients, LBs, servers, calibration, the gateway of swap-in
#: runs with a real data plane (``gw``, ``glb<k>``) and the throughput benchmarks' bench bed
#: (``pf-*``, hil/perf/bed.py); other mlb-* names, e.g. a test's or another benchmark's own
#: namespaces, belong to someone else and are left alone
TESTBED_NAME = re.compile(r"^mlb-(sw|cal|c\d+|lb\d+|s\d+|gw|glb\d+|pf-(sw|g|lb|s\d+))$")


class HostCommandError(UserError):
    """A host command failed; the message has the command line and its stderr."""


def in_ns(ns: str | None, argv: Sequence[str], cpus: Sequence[int] = ()) -> list[str]:
    """argv run inside network namespace ns (None: as is), pinned to cpus if given."""
    out = list(argv) if ns is None else ["ip", "netns", "exec", ns, *argv]
    return ["taskset", "-c", ",".join(map(str, cpus)), *out] if cpus else out


def run(argv: Sequence[str], *, ns: str | None = None, check: bool = True,
        input_text: str | None = None, timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a command (inside ``ns`` if given); raise HostCommandError on a non-zero exit when
    ``check``. Output is captured as text."""
    cmd = in_ns(ns, argv)
    log.debug("$ %s", " ".join(cmd))
    try:
        cp = subprocess.run(cmd, capture_output=True, text=True, input=input_text, timeout=timeout_s)
    except FileNotFoundError:
        raise HostCommandError(f"{cmd[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise HostCommandError(f"`{' '.join(cmd)}` did not finish within {timeout_s:.0f} s") from None
    if check and cp.returncode != 0:
        msg = (cp.stderr or cp.stdout).strip()
        raise HostCommandError(f"`{' '.join(cmd)}` failed (exit {cp.returncode}): {msg}")
    return cp


CLONE_NEWNET = 0x40000000


def in_netns_thread(ns: str, fn: Callable[[], T]) -> T:
    """fn() run in a short-lived thread that entered network namespace ns (setns changes only
    the calling thread; a socket fn opens stays in the namespace it was created in). An
    OSError of setns or fn is raised here."""
    box: dict[str, Any] = {}

    def enter_and_call() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/var/run/netns/{ns}") as fh:
                if libc.setns(fh.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns({ns})")
            box["result"] = fn()
        except OSError as e:
            box["error"] = e

    t = threading.Thread(target=enter_and_call, name=f"setns-{ns}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def namespaces(prefix: str = PREFIX) -> list[str]:
    """Network namespaces whose name starts with prefix."""
    if shutil.which("ip") is None:
        return []
    cp = run(["ip", "netns", "list"], check=False)
    names = [line.split()[0] for line in cp.stdout.splitlines() if line.strip()]
    return sorted(n for n in names if n.startswith(prefix))


def ns_pids(ns: str) -> list[int]:
    """PIDs of the processes living in namespace ns."""
    cp = run(["ip", "netns", "pids", ns], check=False)
    return [int(p) for p in cp.stdout.split() if p.isdigit()]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_pids(pids: Sequence[int], *, grace_s: float = 3.0) -> list[int]:
    """SIGTERM the given PIDs, wait up to grace_s, SIGKILL the survivors; returns PIDs that
    were still alive after SIGKILL (should be none)."""
    live = [p for p in pids if pid_alive(p)]
    for p in live:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace_s
    while live and time.monotonic() < deadline:
        _reap()
        live = [p for p in live if pid_alive(p)]
        if live:
            time.sleep(0.05)
    for p in live:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(0.05)
    _reap()
    return [p for p in live if pid_alive(p)]


def _reap() -> None:
    """Collect exited children of this process so they do not linger as zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


#: a swap-in run with its agent in a process keeps its LBs' shm files in this prefix + its PID
REALTIME_SHM_PREFIX = "/dev/shm/mlb-rt-"


def live_realtime_owner(path: str | os.PathLike[str]) -> int | None:
    """The PID of the swap-in run that owns ``path`` (under /dev/shm/mlb-rt-<pid>/) if that run
    is still going and is not this process; None otherwise (not a run's, or left by a dead one).
    A sim-only swap-in run needs no testbed, so tearing the testbed down must not touch it."""
    m = re.match(rf"^{re.escape(REALTIME_SHM_PREFIX)}(\d+)(/|$)", os.fspath(path))
    if m is None:
        return None
    owner = int(m[1])
    return owner if owner != os.getpid() and pid_alive(owner) else None


def realtime_leftover_pids() -> list[int]:
    """`marllb hil controller` processes on the shm files (/dev/shm/mlb-rt-<pid>/) of a swap-in
    run that is gone; a live run's controllers are its own."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        paths = [a.decode(errors="replace") for a in argv if a.startswith(REALTIME_SHM_PREFIX.encode())]
        if b"controller" in argv and paths and not any(live_realtime_owner(p) for p in paths):
            pids.append(int(d))
    return pids


def require_tool(name: str, fix: str) -> str:
    """Path of an executable, or UserError naming the command that installs it."""
    path = shutil.which(name)
    if path is None:
        raise UserError(f"{name} not found: {fix}")
    return path
