"""Fixtures for CLI tests.

`no_sim` makes any attempt to run the simulator fail the test (for inputs that must be rejected
before a run starts); `real_sim` skips unless the real simulator (simulator.run) is present.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import experiments.runs

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "experiments" / "configs"


@pytest.fixture
def no_sim(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the simulator must not run for rejected input")

    monkeypatch.setattr(experiments.runs, "default_runner", lambda: refuse)


@pytest.fixture
def real_sim() -> Any:
    try:
        from simulator.run import run_experiment
    except ImportError as exc:
        pytest.skip(f"real simulator not available yet (simulator.run: {exc})")
    return run_experiment


@pytest.fixture
def quickstart() -> Path:
    return CONFIGS / "quickstart.yaml"
