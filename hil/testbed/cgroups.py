"""CPU quotas through cgroups, v1 (``cpu/<name>/cpu.cfs_quota_us``) or v2 (``<name>/cpu.max``),
written directly (no cgroup-tools). Every group the testbed makes is named ``mlb-*`` (and its
children ``mlb-*/<child>``).

CFS bandwidth control is not processor sharing: within one period a group runs at full speed
until its quota is spent, then waits. A short period makes a quota behave more like a slower CPU;
the kernel's minimum quota is 1 ms, so the period is the shortest of 5 ms .. 100 ms that gives
a quota of at least 1 ms."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from simulator.config import UserError

__all__ = ["CgroupFs", "detect", "period_for", "MIN_QUOTA_US"]

MIN_QUOTA_US = 1000
_MIN_PERIOD_US, _MAX_PERIOD_US = 5000, 100_000
_ROOT = Path("/sys/fs/cgroup")


def period_for(cpus: float) -> int:
    """CFS period (µs) for a quota of ``cpus`` CPUs: the shortest in [5, 100] ms whose quota is
    at least the kernel's 1 ms minimum."""
    return int(min(_MAX_PERIOD_US, max(_MIN_PERIOD_US, math.ceil(MIN_QUOTA_US / cpus))))


@dataclass(frozen=True)
class CgroupFs:
    """One cgroup hierarchy with the CPU controller: ``version`` 1 or 2, ``base`` the directory
    under which groups are made."""

    version: int
    base: Path

    def path(self, name: str) -> Path:
        return self.base / name

    def create(self, name: str, cpus: float | None, *, subtree: bool = False) -> dict[str, int]:
        """Make (or reuse) group ``name`` (``mlb-*``, or a child ``mlb-*/x``) limited to ``cpus``
        CPUs (None: no limit of its own); ``subtree`` lets it have CPU-limited children (v2
        needs the controller enabled for them). Returns period and quota (µs)."""
        if not name.startswith("mlb-"):
            raise ValueError(f"cgroup {name!r}: testbed groups are named mlb-*")
        d = self.path(name)
        d.mkdir(exist_ok=True)
        if subtree and self.version == 2:
            (d / "cgroup.subtree_control").write_text("+cpu")
        if cpus is None:
            return {}
        period = period_for(cpus)
        quota = max(MIN_QUOTA_US, int(round(cpus * period)))
        if self.version == 1:
            # lift the quota first: the kernel checks the new period against the old quota
            (d / "cpu.cfs_quota_us").write_text("-1")
            (d / "cpu.cfs_period_us").write_text(str(period))
            (d / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            (d / "cpu.max").write_text(f"{quota} {period}")
        return {"period_us": period, "quota_us": quota}

    def move(self, pid: int, name: str) -> None:
        """Move one process into group name."""
        (self.path(name) / "cgroup.procs").write_text(str(pid))

    def children(self, name: str) -> list[str]:
        """Child groups of name, as ``name/child``."""
        d = self.path(name)
        return sorted(f"{name}/{p.name}" for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def procs_all(self, name: str) -> list[int]:
        """Processes in name and all its descendants."""
        return self.procs(name) + [p for c in self.children(name) for p in self.procs_all(c)]

    def limits(self, name: str) -> dict[str, int] | None:
        """Quota and period now in force (None if the group does not exist)."""
        d = self.path(name)
        if not d.is_dir():
            return None
        if self.version == 1:
            return {"quota_us": int((d / "cpu.cfs_quota_us").read_text()),
                    "period_us": int((d / "cpu.cfs_period_us").read_text())}
        q, p = (d / "cpu.max").read_text().split()
        return {"quota_us": -1 if q == "max" else int(q), "period_us": int(p)}

    def stat(self, name: str) -> dict[str, int]:
        """The group's cpu.stat (throttling counters; v2 also usage_usec)."""
        out: dict[str, int] = {}
        f = self.path(name) / "cpu.stat"
        if f.is_file():
            for line in f.read_text().splitlines():
                k, _, v = line.partition(" ")
                if v.strip().lstrip("-").isdigit():
                    out[k] = int(v)
        return out

    def procs(self, name: str) -> list[int]:
        f = self.path(name) / "cgroup.procs"
        if not f.is_file():
            return []
        return [int(x) for x in f.read_text().split()]

    def enter_command(self, name: str) -> str:
        """Shell snippet that moves the current shell into the group (then ``exec`` the daemon:
        its children inherit the group)."""
        return f"echo $$ > {self.path(name) / 'cgroup.procs'}"

    def remove(self, name: str, timeout_s: float = 3.0) -> None:
        """Remove an empty group and its children (retries while their last processes exit)."""
        for child in self.children(name):
            self.remove(child, timeout_s)
        d = self.path(name)
        deadline = time.monotonic() + timeout_s
        while d.is_dir():
            try:
                d.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise UserError(f"cannot remove cgroup {d}: processes {self.procs(name)} still in it") from None
                time.sleep(0.05)

    def groups(self, prefix: str = "mlb-") -> list[str]:
        if not self.base.is_dir():
            return []
        return sorted(p.name for p in self.base.iterdir() if p.is_dir() and p.name.startswith(prefix))


def detect(root: Path = _ROOT) -> CgroupFs:
    """The CPU-controller hierarchy of this machine, or UserError saying how to get one."""
    v1 = root / "cpu"
    if (v1 / "cpu.cfs_quota_us").is_file() and os.access(v1, os.W_OK):
        return CgroupFs(1, v1)
    ctrl = root / "cgroup.controllers"
    if ctrl.is_file() and "cpu" in ctrl.read_text().split():
        sub = root / "cgroup.subtree_control"
        if "cpu" not in sub.read_text().split():
            try:
                sub.write_text("+cpu")
            except OSError as e:
                raise UserError(f"cgroup v2 at {root}: cannot enable the cpu controller for "
                                f"child groups ({e.strerror}): run as root") from None
        return CgroupFs(2, root)
    raise UserError(f"no cgroup CPU controller at {root} (neither v1 {v1}/cpu.cfs_quota_us nor v2 "
                    f"'cpu' in {ctrl}); mount one, e.g. `mount -t cgroup2 none {root}`")
