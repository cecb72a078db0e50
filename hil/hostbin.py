"""Where the ``lb_rl_host`` binary is (vpp_plugin/host), building it with CMake on first use.

    from hil.hostbin import host_binary
    exe = host_binary()          # Path; builds <repo>/build/host/lb_rl_host if absent or stale

``MARLLB_LB_RL_HOST`` overrides the path (then nothing is built: the file must exist).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

from simulator.config import UserError

__all__ = ["ENV_VAR", "REPO_ROOT", "default_path", "build_command", "host_binary"]

ENV_VAR = "MARLLB_LB_RL_HOST"
REPO_ROOT = Path(__file__).resolve().parents[1]


def default_path() -> Path:
    return REPO_ROOT / "build" / "host" / "lb_rl_host"


def build_command() -> list[list[str]]:
    """The two commands that build the binary (run from the repository root)."""
    src, out = REPO_ROOT / "vpp_plugin" / "host", REPO_ROOT / "build" / "host"
    return [
        ["cmake", "-S", str(src), "-B", str(out), "-DCMAKE_BUILD_TYPE=Release"],
        ["cmake", "--build", str(out), "-j2", "--target", "lb_rl_host"],
    ]


def _shell(cmds: list[list[str]]) -> str:
    return " && ".join(" ".join(c) for c in cmds)


def host_binary(build: bool = True) -> Path:
    """Path of lb_rl_host: $MARLLB_LB_RL_HOST if set, else <repo>/build/host/lb_rl_host, built
    with CMake if it is absent or older than its C sources and ``build`` is true. Raises
    UserError (with the command that fixes it) if the binary is missing and cannot be built."""
    env = os.environ.get(ENV_VAR)
    if env:
        p = Path(env)
        if not p.is_file() or not os.access(p, os.X_OK):
            raise UserError(f"{ENV_VAR}={env}: not an executable file")
        return p
    exe = default_path()
    if exe.is_file() and os.access(exe, os.X_OK) and not _stale(exe):
        return exe
    cmds = build_command()
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
    with open(exe.parent.parent / ".lb_rl_host.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time (parallel tests, two shells)
        if exe.is_file() and not _stale(exe):
            return exe
        _build(cmds)
    if not exe.is_file():
        raise UserError(f"build finished but {exe} is missing; run: {_shell(cmds)}")
    return exe


def _stale(exe: Path) -> bool:
    """True if a C source or CMake file of the host runner or the core is newer than exe."""
    built = exe.stat().st_mtime
    srcs = [REPO_ROOT / "vpp_plugin" / "host", REPO_ROOT / "vpp_plugin" / "core"]
    return any(f.stat().st_mtime > built for d in srcs for f in d.rglob("*")
               if f.suffix in (".c", ".h", ".txt", ".cmake"))


def _build(cmds: list[list[str]]) -> None:
    for cmd in cmds:
        p = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-15:])
            raise UserError(
                f"building lb_rl_host failed ({' '.join(cmd)} exited {p.returncode}):\n{tail}\n"
                f"fix the error, then run: {_shell(cmds)}"
            )
