"""What machine and revision a benchmark ran on: the block every bench/*/run.py writes into its JSON."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine_info(**extra: object) -> dict[str, object]:
    """CPU model, CPU count, platform, Python, git commit of the checkout and the load average
    at the start, plus whatever the benchmark adds (compiler, server version, ...)."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"cpu": cpu, "nproc": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "git_commit": commit,
            "loadavg_start": os.getloadavg(), **extra}


def first_line(*argv: str) -> str:
    """First line of a tool's version output ('' when it prints nothing)."""
    out = subprocess.run(list(argv), capture_output=True, text=True).stdout.splitlines()
    return out[0] if out else ""
