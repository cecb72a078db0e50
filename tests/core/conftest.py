"""Fixtures for the data-plane core binding tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_DIR = ROOT / "vpp_plugin" / "core"


def _stale_reason() -> str | None:
    """Name the first core source newer than the extension module Python would import."""
    spec = importlib.util.find_spec("simulator._lbcore")
    if spec is None or spec.origin is None:
        return "simulator._lbcore is not built: run `pip install -e .`"
    built = Path(spec.origin)
    if CORE_DIR.parent.parent not in built.parents:
        return None  # a non-editable install elsewhere: nothing to compare with
    so_mtime = built.stat().st_mtime
    for src in sorted(CORE_DIR.glob("*.[ch]")):
        if src.stat().st_mtime > so_mtime:
            return f"{src.name} is newer than {built.name}: run `pip install -e .`"
    return None


@pytest.fixture(scope="session", autouse=True)
def _core_build_fresh() -> None:
    reason = _stale_reason()
    if reason:
        pytest.fail(reason, pytrace=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)
