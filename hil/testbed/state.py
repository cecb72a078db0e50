"""What of the testbed is up: its plan's shape and the processes we started, kept in
``<state_dir>/state.json`` so that a later command (or `down` after a crash) finds them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hil.testbed.plan import state_dir

__all__ = ["Running", "load_state", "STATE_FILE"]

STATE_FILE = "state.json"


@dataclass
class Running:
    """What is up: the plan's shape and the processes we started (by role)."""

    shape: dict[str, Any]
    plan: dict[str, Any]
    procs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    cgroups: dict[str, dict[str, int]] = field(default_factory=dict)
    cgroup_version: int = 0
    created_wall_s: float = 0.0

    def save(self) -> None:
        d = state_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1, default=str))
        tmp.replace(d / STATE_FILE)


def load_state() -> Running | None:
    f = state_dir() / STATE_FILE
    try:
        return Running(**json.loads(f.read_text()))
    except (OSError, ValueError, TypeError):
        return None
