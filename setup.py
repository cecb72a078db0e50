"""Build hook for the cffi extension simulator._lbcore (the C data-plane core).

All metadata lives in pyproject.toml; this file only adds the cffi module, so that
``pip install -e .`` / ``pip install .`` compile vpp_plugin/core/*.c with no manual step.
"""

from setuptools import setup

setup(cffi_modules=["simulator/_build_core.py:ffibuilder"])
