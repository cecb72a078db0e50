"""Run the C unit tests (CTest) of vpp_plugin/core from pytest, so `pytest` covers them.

Configures and builds the CMake project in a temporary directory (-j2), then runs ctest; the
test fails with ctest's output if any C test fails. Skips with the reason if cmake, ctest or a C
compiler is missing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CORE_DIR = Path(__file__).resolve().parents[2] / "vpp_plugin" / "core"


def _run(cmd: list[str], cwd: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)


def test_ctest_suite_passes(tmp_path: Path) -> None:
    for tool in ("cmake", "ctest"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install cmake)")
    if not any(shutil.which(cc) for cc in ("cc", "gcc", "clang")):
        pytest.skip("no C compiler (cc/gcc/clang) found")
    build = tmp_path / "build"
    cfg = _run(["cmake", "-S", str(CORE_DIR), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"],
               tmp_path, 120)
    assert cfg.returncode == 0, f"cmake configure failed:\n{cfg.stdout}\n{cfg.stderr}"
    bld = _run(["cmake", "--build", str(build), "-j2"], tmp_path, 300)
    assert bld.returncode == 0, f"cmake build failed:\n{bld.stdout[-4000:]}\n{bld.stderr[-4000:]}"
    listed = _run(["ctest", "-N"], build, 60)
    assert "test_core_flow" in listed.stdout, f"core tests not registered:\n{listed.stdout}"
    res = _run(["ctest", "--output-on-failure", "--timeout", "120"], build, 600)
    assert res.returncode == 0, f"ctest failed:\n{res.stdout[-8000:]}\n{res.stderr[-2000:]}"
    assert "100% tests passed" in res.stdout
