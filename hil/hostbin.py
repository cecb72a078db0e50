"""Where the host programs of vpp_plugin/host are (``lb_rl_host``, the load balancer on
AF_PACKET rings, and ``mlb_gen``, the local traffic generator), building them with CMake on
first use.

    from hil.hostbin import host_binary
    exe = host_binary()                  # Path; builds <repo>/build/host/lb_rl_host if absent or stale
    gen = host_binary(name="mlb_gen")    # <repo>/build/host/mlb_gen

``MARLLB_LB_RL_HOST`` / ``MARLLB_MLB_GEN`` override the path (then nothing is built: the file
must exist).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from simulator.config import UserError

__all__ = ["ENV_VAR", "ENV_VARS", "REPO_ROOT", "default_path", "build_command", "host_binary"]

ENV_VARS = {"lb_rl_host": "MARLLB_LB_RL_HOST", "mlb_gen": "MARLLB_MLB_GEN"}  # program -> override
ENV_VAR = ENV_VARS["lb_rl_host"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def _check_name(name: str) -> None:
    if name not in ENV_VARS:
        raise ValueError(f"unknown host program {name!r} (known: {', '.join(ENV_VARS)})")


def default_path(name: str = "lb_rl_host") -> Path:
    _check_name(name)
    return REPO_ROOT / "build" / "host" / name


def build_command(name: str = "lb_rl_host") -> list[list[str]]:
    """The two commands that build program ``name`` (run from the repository root)."""
    _check_name(name)
    src, out = REPO_ROOT / "vpp_plugin" / "host", REPO_ROOT / "build" / "host"
    return [
        ["cmake", "-S", str(src), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", str(out), "-j2", "--target", name],
    ]


def _shell(cmds: list[list[str]]) -> str:
    return " && ".join(" ".join(c) for c in cmds)


def host_binary(build: bool = True, name: str = "lb_rl_host") -> Path:
    """Path of host program ``name`` (``lb_rl_host`` or ``mlb_gen``): $MARLLB_LB_RL_HOST /
    $MARLLB_MLB_GEN if set, else <repo>/build/host/<name>, built with CMake if it is absent or
    older than its C sources and ``build`` is true. Raises UserError (with the command that
    fixes it) if the binary is missing and cannot be built."""
    _check_name(name)
    var = ENV_VARS[name]
    env = os.environ.get(var)
    if env:
        p = Path(env)
        if not p.is_file() or not os.access(p, os.X_OK):
            raise UserError(f"{var}={env}: not an executable file")
        return p
    exe = default_path(name)
    if exe.is_file() and os.access(exe, os.X_OK) and not _stale(exe):
        return exe
    cmds = build_command(name)
    if not build and exe.is_file():
        return exe
    if not build:
        raise UserError(f"{exe} not built; build it with: {_shell(cmds)}")
    missing = [t for t in ("cmake", "cc") if shutil.which(t) is None]
    if missing:
        raise UserError(
            f"cannot build {exe}: {', '.join(missing)} not found (Debian: apt-get install cmake "
            f"gcc); then run: {_shell(cmds)}"
        )
    exe.parent.mkdir(parents=True, exist_ok=True)
    with open(exe.parent.parent / ".host_build.lock", "w") as lock:  # one build dir, one lock
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel tests, two shells)
        if exe.is_file() and not _stale(exe):
            return exe
        _build(name, cmds)
    if not exe.is_file():
        raise UserError(f"build finished but {exe} is missing; run: {_shell(cmds)}")
    # make relinks only what changed: a source of another program (or a comment) leaves exe
    # older than the tree, so mark it checked or every call would run cmake again
    os.utime(exe)
    return exe


def _stale(exe: Path) -> bool:
    """True if a C source or CMake file of the host runner or the core is newer than exe."""
    built = exe.stat().st_mtime
    srcs = [REPO_ROOT / "vpp_plugin" / "host", REPO_ROOT / "vpp_plugin" / "core"]
    return any(f.stat().st_mtime > built for d in srcs for f in d.rglob("*")
               if f.suffix in (".c", ".h", ".txt", ".cmake"))


def _build(name: str, cmds: list[list[str]]) -> None:
    for cmd in cmds:
        p = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
            raise UserError(
                f"building {name} failed ({' '.join(cmd)} exited {p.returncode}):\n{tail}\n"
                f"fix the error, then run: {_shell(cmds)}"
            )
