"""Fixtures for the data-plane core binding tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE_DIR = ROOT / "vpp_plugin" / "core"


def _stale_reason() -> str | None:
    """Name the first core source newer than the built extension, if any."""
    built = sorted((ROOT / "simulator").glob("_lbcore*.so"))
    if not built:
        return None  # installed elsewhere (non-editable); nothing to compare
    so_mtime = max(p.stat().st_mtime for p in built)
    for src in sorted(CORE_DIR.glob("*.[ch]")):
        if src.stat().st_mtime > so_mtime:
            return f"{src.name} is newer than the built simulator/_lbcore: run `pip install -e .`"
    return None


@pytest.fixture(scope="session", autouse=True)
def _core_build_fresh() -> None:
    reason = _stale_reason()
    if reason:
        pytest.fail(reason, pytrace=False)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)
