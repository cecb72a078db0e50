"""bench/learning/oracle_parts.py: its --parts parsing and errors, and that a part knowing no
server is sed_true exactly (a part starts from sed_true's static weights)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "learning"))
from oracle_parts import parse_parts  # noqa: E402

from simulator.config import UserError  # noqa: E402

SCRIPT = ROOT / "bench" / "learning" / "oracle_parts.py"
CONFIG = ROOT / "experiments" / "configs" / "hidden_dynamic.yaml"


def test_parse_parts():
    assert parse_parts("failure=1; bursts=4,5,6;none=") == {"failure": [1], "bursts": [4, 5, 6], "none": []}


@pytest.mark.parametrize("spec, says", [
    ("bursts", "'bursts': expected name=server"),
    ("=1", "'=1': expected name=server"),
    ("x=a", "'x=a': expected name=server"),
    ("lsq=1", "'lsq' is a reference policy's label"),
    (";", "no entry"),
])
def test_bad_parts_are_named(spec, says):
    with pytest.raises(UserError, match=says):
        parse_parts(spec)


def test_server_out_of_range_is_one_clear_error():
    out = subprocess.run([sys.executable, str(SCRIPT), str(CONFIG), "--parts", "x=7"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == f"error: --parts x=[7]: {CONFIG} has servers 0..6"


def test_a_part_knowing_no_server_is_sed_true(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), str(CONFIG), "--rates", "420", "--seeds", "1000",
                          "--parts", "none=", "--workers", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("label")
    assert set(runs.index) == {"lsq", "sed", "sed_true", "sed_now", "gsed", "none"}
    assert runs.loc["none", "jct_mean_s"] == runs.loc["sed_true", "jct_mean_s"]
    assert runs.loc["none", "jct_p90_s"] == runs.loc["sed_true", "jct_p90_s"]
    assert runs.loc["sed_now", "jct_mean_s"] < runs.loc["sed_true", "jct_mean_s"]  # knowing more helps here
    table = (tmp_path / "parts.md").read_text()
    assert "| none |  | 420 |" in table and "| sed_now | all | 420 |" in table


def test_a_negative_lag_is_one_clear_error():
    out = subprocess.run([sys.executable, str(SCRIPT), str(CONFIG), "--lags", "0,-1"], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip() == "error: --lags 0,-1: a lag is >= 0 seconds"


def test_lagged_parts_run_next_to_the_parts(tmp_path):
    """The same part 1 s late is another run with its own label and row. (The lag-0 part is not
    sed_now by name to the bit: before the first step the script's runs hold sed_true's static
    weights, sed_now the nominal cores.)"""
    out = subprocess.run([sys.executable, str(SCRIPT), str(CONFIG), "--rates", "420", "--seeds", "1000",
                          "--parts", "all=0,1,2,3,4,5,6", "--lags", "0,1", "--workers", "1", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    runs = pd.read_csv(tmp_path / "runs.csv").set_index("label")
    assert set(runs.index) == {"lsq", "sed", "sed_true", "sed_now", "gsed", "all", "all@1s"}
    assert runs.loc["all@1s", "jct_mean_s"] != runs.loc["all", "jct_mean_s"]
    assert "| all@1s | 0,1,2,3,4,5,6 | 420 |" in (tmp_path / "parts.md").read_text()
