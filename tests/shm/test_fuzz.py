"""Run the libFuzzer harnesses in vpp_plugin/core/fuzz/ for a bounded time (slow-marked).

MARLLB_FUZZ_SECONDS (default 20) sets the time per harness; SHM.md says how to run them longer
with a persistent corpus. Skips when clang or its libFuzzer runtime is absent."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import CORE

HARNESSES = ["fuzz_shm_attach", "fuzz_shm_weights"]
FLAGS = ["-std=c99", "-g", "-O1", "-Wall", "-Wextra", "-Werror",
         "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined"]


def _build(name: str, out_dir: Path) -> Path:
    clang = shutil.which("clang")
    if clang is None:
        pytest.skip("clang not installed (apt-get install clang): cannot build libFuzzer harnesses")
    probe = out_dir / "probe.c"
    probe.write_text("#include <stddef.h>\n#include <stdint.h>\n"
                     "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\n"
                     "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)"
                     "{(void)d;(void)n;return 0;}\n")
    res = subprocess.run([clang, "-fsanitize=fuzzer", str(probe), "-o", str(out_dir / "probe")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"clang cannot link -fsanitize=fuzzer (libFuzzer runtime missing): {res.stderr[-300:]}")
    out = out_dir / name
    cmd = [clang, *FLAGS, "-I", str(CORE), *map(str, sorted(CORE.glob("*.c"))),
           str(CORE / "fuzz" / f"{name}.c"), "-lm", "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", HARNESSES)
def test_fuzz_harness_finds_nothing(name: str, tmp_path: Path) -> None:
    exe = _build(name, tmp_path)
    seconds = int(os.environ.get("MARLLB_FUZZ_SECONDS", "20"))
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    res = subprocess.run(
        [str(exe), f"-max_total_time={seconds}", "-rss_limit_mb=1024", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=seconds + 120,
    )
    crashes = sorted(p.name for p in tmp_path.glob("crash-*")) + sorted(
        p.name for p in tmp_path.glob("leak-*")) + sorted(p.name for p in tmp_path.glob("timeout-*"))
    tail = res.stderr[-2000:]
    assert res.returncode == 0 and not crashes, f"{name}: {crashes}\n{tail}"
    assert "Done" in res.stderr and "stat::number_of_executed_units" in res.stderr, tail
    runs = int(res.stderr.split("stat::number_of_executed_units:")[1].split()[0])
    print(f"{name}: {runs} executions in {seconds} s, no crash")
    assert runs > 1000
