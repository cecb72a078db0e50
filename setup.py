"""Build hook for the project's six C extensions.

All metadata lives in pyproject.toml; this file only adds the extensions, so that
``pip install -e .`` / ``pip install .`` compile them with no manual step:

- ``simulator._lbcore``: the data-plane core, vpp_plugin/core/*.c through cffi;
- ``simulator._netcore``: the link FIFO arithmetic (simulator/_netcore.c, CPython C API).
  -ffp-contract=off: no fused multiply-add, so its times equal the Python reference's bits;
- ``simulator._eventq``: the simulation's event queue and loop (simulator/_eventq.c);
- ``simulator._stats``: the reservoir statistics behind the LB features (simulator/_stats.c);
- ``simulator._request``: the per-request record, numbers stored inline (simulator/_request.c);
- ``simulator._psserver``: the processor-sharing server's state and hot path (simulator/_psserver.c,
  -ffp-contract=off like _netcore: the Python model's bits).
"""

from setuptools import Extension, setup

setup(
    cffi_modules=["simulator/_build_core.py:ffibuilder"],
    ext_modules=[Extension("simulator._netcore", ["simulator/_netcore.c"],
                           extra_compile_args=["-O2", "-std=c99", "-Wall", "-ffp-contract=off"]),
                 Extension("simulator._eventq", ["simulator/_eventq.c"],
                           extra_compile_args=["-O2", "-std=c99", "-Wall"]),
                 Extension("simulator._stats", ["simulator/_stats.c"],
                           extra_compile_args=["-O2", "-std=c99", "-Wall"]),
                 Extension("simulator._request", ["simulator/_request.c"], depends=["simulator/_request.h"],
                           extra_compile_args=["-O2", "-std=c99", "-Wall"]),
                 Extension("simulator._psserver", ["simulator/_psserver.c"], depends=["simulator/_request.h"],
                           extra_compile_args=["-O2", "-std=c99", "-Wall", "-ffp-contract=off"])],
)
