"""cffi (API, out-of-line) build of the data-plane core: ``simulator._lbcore``.

setup.py lists this as ``cffi_modules=["simulator/_build_core.py:ffibuilder"]`` so
``pip install -e .`` (or ``pip install .``) compiles every ``vpp_plugin/core/*.c`` (tests and
fuzz targets live in subdirectories and are not included) into one extension module. Running
this file directly builds the module in place (``python simulator/_build_core.py``).

The C headers are the single source of truth: ``lb_rl_core.h`` (and ``lb_rl_shm.h`` when it
exists) are read and fed to ``cdef`` after dropping ``#include``, ``#if*``/``#endif`` and
value-less ``#define`` (include guard) lines, so the headers must stay cffi-parseable: plain
declarations, integer ``#define`` constants, no function-like macros.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parent.parent
CORE_DIR = ROOT / "vpp_plugin" / "core"
HEADERS = ("lb_rl_core.h", "lb_rl_shm.h")

_SKIP = re.compile(r"^\s*#\s*(include|ifndef|ifdef|if|elif|else|endif|pragma)\b")
_GUARD = re.compile(r"^\s*#\s*define\s+\w+\s*(/\*.*\*/)?\s*$")


def header_for_cdef(path: Path) -> str:
    """Return the text of a C header with the preprocessor lines cffi cannot parse removed."""
    out = []
    for line in path.read_text().splitlines():
        if _SKIP.match(line) or _GUARD.match(line):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _rel(p: Path) -> str:
    """Path relative to the current directory when below it (setuptools wants relative
    sources when building from the project root), else absolute."""
    try:
        return os.path.relpath(p) if Path.cwd() in p.parents else str(p)
    except ValueError:  # different drive (Windows)
        return str(p)


def make_ffibuilder(absolute: bool = False) -> FFI:
    """Build the FFI description: cdef from the headers, sources = vpp_plugin/core/*.c
    (paths relative to the current directory for setuptools, or absolute)."""
    rel = str if absolute else _rel
    ffi = FFI()
    present = [h for h in HEADERS if (CORE_DIR / h).exists()]
    for h in present:
        ffi.cdef(header_for_cdef(CORE_DIR / h))
    sources = sorted(rel(p) for p in CORE_DIR.glob("*.c"))
    ffi.set_source(
        "simulator._lbcore",
        "".join(f'#include "{h}"\n' for h in present),
        sources=sources,
        include_dirs=[rel(CORE_DIR)],
        depends=sorted(rel(p) for p in CORE_DIR.glob("*.h")),  # rebuild when a header changes
        extra_compile_args=["-O2", "-std=c99", "-Wall"],
        libraries=["m"],
    )
    return ffi


ffibuilder = make_ffibuilder()

if __name__ == "__main__":
    # In-place build without pip; afterwards only the new _lbcore*.so is left importable.
    tmp = ROOT / "build" / "cffi"
    built = Path(make_ffibuilder(absolute=True).compile(tmpdir=str(tmp), verbose=False))
    for old in (ROOT / "simulator").glob("_lbcore*.so"):
        old.unlink()
    # cffi compiles against the limited API (Py_LIMITED_API) like the setuptools build, so use
    # the same .abi3.so name: a later `pip install -e .` then replaces this file, never hides
    # behind it (a .cpython-3xx-*.so would be imported first).
    built.replace(ROOT / "simulator" / "_lbcore.abi3.so")
