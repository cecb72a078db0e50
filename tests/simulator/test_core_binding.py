"""The simulator has one data plane, the C core: without the compiled module it says how to
build it instead of falling back to anything else."""

from __future__ import annotations

import sys

import pytest

from simulator.config import LbConfig, UserError


def test_missing_core_module_is_a_clear_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "simulator._lbcore", None)  # import -> ImportError
    monkeypatch.delitem(sys.modules, "simulator.dataplane", raising=False)
    from simulator.run import make_dataplane

    with pytest.raises(UserError, match=r"pip install -e \."):
        make_dataplane(3, "sed", LbConfig(), seed=1)


def test_simulation_runs_the_c_core() -> None:
    from simulator.config import ExperimentConfig
    from simulator.dataplane import DataPlaneCore
    from simulator.run import build_simulation

    sim = build_simulation(ExperimentConfig.model_validate({"duration_s": 1, "traffic": {"rate": 50}}))
    assert all(type(lb.dp) is DataPlaneCore for lb in sim.lbs)
