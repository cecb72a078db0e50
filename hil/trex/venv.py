"""The virtual environments the TRex driver runs in, one per TRex Python client, made on first use.

    from hil.trex.venv import client_python
    py = client_python("official")   # <repo>/build/trex-venv/official/bin/python

Both clients carry their own scapy, simpy, zmq and yaml and put them into ``sys.modules``, so
they never load into our process: ``hil/trex/driver.py`` runs under this interpreter instead
(see :mod:`hil.trex.client`). Each venv holds its pinned client and what pip pulls in for it,
nothing of ours.

    python -m hil.trex.venv --all          # prepare both (CI does this before the tests)
    python -m hil.trex.venv official       # or name them
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

from simulator.config import UserError

__all__ = ["CLIENTS", "VENV_ROOT", "RETRY_AFTER_S", "venv_dir", "client_python", "main"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
VENV_ROOT = REPO_ROOT / "build" / "trex-venv"

#: client name -> the pinned PyPI requirement installed into its venv.
CLIENTS: dict[str, str] = {
    # 2019 repack of an old STL client; uses the venv's (current) scapy from PyPI.
    "stl": "trex-stl-lib==0.3",
    # TRex v3.04's official client (import lbr_trex_client, then trex.stl.api); no dependencies.
    "official": "lbr-trex-client==3.4.0",
}

_READY = ".marllb-ready"  # holds the requirement once the venv is complete
_PIP_TIMEOUT_S = 900.0
#: after a failed creation, callers get the same error without a new attempt for this long
#: (an offline machine would otherwise wait for pip's retries in every test session)
RETRY_AFTER_S = 600.0


def venv_dir(client: str) -> Path:
    """Where the venv of ``client`` lives (whether or not it exists yet)."""
    _check_client(client)
    return VENV_ROOT / client


def _check_client(client: str) -> None:
    if client not in CLIENTS:
        raise UserError(f"unknown TRex client {client!r}; choose one of: {', '.join(CLIENTS)}")


def _ready(d: Path, requirement: str) -> bool:
    marker, py = d / _READY, d / "bin" / "python"
    try:
        return py.is_file() and marker.read_text().strip() == requirement
    except OSError:
        return False


def client_python(client: str, retry: bool = False) -> Path:
    """Path of the Python interpreter of ``client``'s venv ("stl" or "official"), creating the
    venv (``python -m venv`` + ``pip install`` of the pinned client) if it is absent or
    incomplete. Idempotent, and a file lock makes parallel callers wait for one creation.
    Raises UserError naming the client, the failed command and pip's last lines; for
    RETRY_AFTER_S after a failure the same error comes back at once unless ``retry``."""
    _check_client(client)
    requirement = CLIENTS[client]
    d = venv_dir(client)
    py = d / "bin" / "python"
    if _ready(d, requirement):
        return py
    VENV_ROOT.mkdir(parents=True, exist_ok=True)
    failed = VENV_ROOT / f".{client}.failed"
    with open(VENV_ROOT / f".{client}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _ready(d, requirement):  # made by whoever held the lock before us
            return py
        if not retry and failed.exists() and time.time() - failed.stat().st_mtime < RETRY_AFTER_S:
            raise UserError(f"{failed.read_text().strip()}\n(an earlier attempt; run "
                            f"'python -m hil.trex.venv {client}' to try again now)")
        if d.exists():  # a half-made venv (interrupted, failed, other version): start over
            shutil.rmtree(d)
        t0 = time.monotonic()
        try:
            _run(client, [sys.executable, "-m", "venv", str(d)])
            _run(client, [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          "--no-input", requirement])
        except UserError as e:
            failed.write_text(str(e) + "\n")
            raise
        (d / _READY).write_text(requirement + "\n")
        failed.unlink(missing_ok=True)
        log.info("TRex client venv %s (%s) created in %.1f s", d, requirement, time.monotonic() - t0)
    return py


def _run(client: str, cmd: list[str]) -> None:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"creating the {client!r} TRex client venv: {' '.join(cmd)} "
                        f"did not finish in {_PIP_TIMEOUT_S:.0f} s") from None
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).strip().splitlines()[-12:])
        raise UserError(f"creating the {client!r} TRex client venv failed: {' '.join(cmd)} "
                        f"exited {p.returncode}:\n{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m hil.trex.venv",
                                 description="Create the TRex client venvs under build/trex-venv/.")
    ap.add_argument("clients", nargs="*", metavar="CLIENT", help=f"one of: {', '.join(CLIENTS)}")
    ap.add_argument("--all", action="store_true", help="all clients")
    a = ap.parse_args(argv)
    clients = list(CLIENTS) if a.all or not a.clients else a.clients
    status = 0
    for c in clients:
        try:
            sys.stdout.write(f"{c}: {client_python(c, retry=True)}\n")
        except UserError as e:
            sys.stderr.write(f"{e}\n")
            status = 1
    return status


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
