"""Fixtures for the shm tests: the C tools built from vpp_plugin/core with the system compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "vpp_plugin" / "core"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


def build_tool(name: str, out_dir: Path, cc: str = "gcc", extra: list[str] | None = None) -> Path:
    """Compile vpp_plugin/core/*.c + tools/<name>.c into out_dir/<name>; skip if impossible."""
    if shutil.which(cc) is None:
        pytest.skip(f"{cc} not installed: cannot build the C side of the shm tests")
    core_sources = sorted(CORE.glob("*.c"))
    if not (CORE / "lb_rl_core.c").exists():
        pytest.skip("vpp_plugin/core/lb_rl_core.c is absent: the C core is not built yet")
    out = out_dir / name
    cmd = [cc, *CFLAGS, *(extra or []), "-I", str(CORE), "-I", str(CORE / "tools"),
           *map(str, core_sources), str(CORE / "tools" / f"{name}.c"), "-lm", "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{' '.join(cmd)}\n{res.stderr}")
    return out


@pytest.fixture(scope="session")
def c_tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the built lb_rl_shm_layout and lb_rl_shm_conform tools."""
    d = tmp_path_factory.mktemp("shm_tools")
    return {n: build_tool(n, d) for n in ("lb_rl_shm_layout", "lb_rl_shm_conform")}
