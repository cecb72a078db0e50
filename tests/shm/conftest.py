"""Fixtures for the shm tests: the C tools built from vpp_plugin/core with the system compiler."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "vpp_plugin" / "core"
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror"]


def _core_lib(out_dir: Path, cc: str) -> Path:
    """Compile vpp_plugin/core/*.c once into out_dir/liblb_rl_core.a."""
    lib = out_dir / "liblb_rl_core.a"
    if lib.exists():
        return lib
    objs = []
    for src in sorted(CORE.glob("*.c")):
        obj = out_dir / (src.stem + ".o")
        cmd = [cc, *CFLAGS, "-I", str(CORE), "-c", str(src), "-o", str(obj)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"building {src.name} failed:\n{' '.join(cmd)}\n{res.stderr}")
        objs.append(str(obj))
    subprocess.run(["ar", "rcs", str(lib), *objs], check=True)
    return lib


def build_tool(name: str, out_dir: Path, cc: str = "gcc") -> Path:
    """Build vpp_plugin/core/tools/<name>.c against the core into out_dir; skip if impossible."""
    if shutil.which(cc) is None or shutil.which("ar") is None:
        pytest.skip(f"{cc}/ar not installed: cannot build the C side of the shm tests")
    if not (CORE / "lb_rl_core.c").exists():
        pytest.skip("vpp_plugin/core/lb_rl_core.c is absent: the C core is not built yet")
    lib = _core_lib(out_dir, cc)
    out = out_dir / name
    cmd = [cc, *CFLAGS, "-I", str(CORE), "-I", str(CORE / "tools"),
           str(CORE / "tools" / f"{name}.c"), str(lib), "-lm", "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"building {name} failed:\n{' '.join(cmd)}\n{res.stderr}")
    return out


@pytest.fixture(scope="session")
def c_tools(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths of the built lb_rl_shm_layout and lb_rl_shm_conform tools."""
    d = tmp_path_factory.mktemp("shm_tools")
    return {n: build_tool(n, d) for n in ("lb_rl_shm_layout", "lb_rl_shm_conform")}
