"""Bad input -> UserError (or its ConfigError subclass) with a clear message."""

from __future__ import annotations

import pytest

from simulator.config import ConfigError, ExperimentConfig, UserError, parse_config
from simulator.run import run_experiment


def _run(data):
    return run_experiment(parse_config(data), progress=False)


def test_unknown_policy():
    with pytest.raises(ConfigError, match="policy.name"):
        parse_config({"policy": {"name": "roundrobin"}})


def test_negative_rate():
    with pytest.raises(ConfigError, match="traffic.rate"):
        parse_config({"traffic": {"rate": -5}})


def test_agent_without_its_controller_is_a_user_error_saying_how_to_run_it():
    """The simulator does not import agents: 'agent' without an injected controller is one
    UserError pointing at `marllb sim run` (missing checkpoints: tests/experiments)."""
    with pytest.raises(UserError, match="marllb sim run"):
        _run({"policy": {"name": "agent", "checkpoint": "x.pt"}, "duration_s": 1})


def test_missing_trace_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(UserError, match=f"{path}: trace file not found"):
        _run({"duration_s": 1, "traffic": {"kind": "trace", "path": str(path)}})


@pytest.mark.parametrize("lines,bad_line,what", [
    (["time,size", "0.1,0.01", "0.2,abc"], 3, "bad size"),
    (["0.1,0.01", "0.05,0.01"], 2, "before the previous"),
    (["0.1\t/dummy.php?n=100", "0.2\t/dummy.php?x=1"], 2, "n=<loop count>"),
    (["0.1,0.01,7"], 1, "expected 'time,size'"),
    (["0.1,0.01", "x,0.01"], 2, "bad time"),
    (["0.1,-1"], 1, "positive"),
])
def test_malformed_trace_line_names_file_and_line(tmp_path, lines, bad_line, what):
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=f"{path}:{bad_line}: .*{what}"):
        _run({"duration_s": 1, "traffic": {"kind": "trace", "path": str(path)}})


def test_missing_empirical_file(tmp_path):
    with pytest.raises(UserError, match="job size file not found"):
        _run({"duration_s": 1, "traffic": {"rate": 10, "job": {"dist": "empirical",
                                                               "path": str(tmp_path / "x")}}})


def test_user_error_is_not_a_crash_type():
    assert issubclass(ConfigError, UserError)
    ExperimentConfig()  # defaults are valid
