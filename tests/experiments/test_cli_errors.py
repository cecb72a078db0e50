"""Bad input through the CLI: exit code 2, one message on stderr naming file and field, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.cli import main


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


GOOD = """\
name: t
duration_s: 5
topology: {preset: unittest}
traffic: {kind: poisson, rate: 10, job: {dist: exp, mean_s: 0.1}}
policy: {name: sed}
"""


@pytest.mark.usefixtures("no_sim")
class TestRejectedBeforeRunning:
    def test_unknown_policy_in_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, GOOD.replace("name: sed", "name: roundrobin"))
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o")], capsys)
        assert code == 2
        assert str(cfg) in err and "policy.name" in err and "'sed'" in err

    def test_unknown_policy_via_set(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, GOOD)
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o"),
                             "--set", "policy.name=best"], capsys)
        assert code == 2 and "policy.name" in err

    def test_negative_rate(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, GOOD.replace("rate: 10", "rate: -3"))
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and str(cfg) in err and "traffic.rate" in err and "greater than 0" in err

    def test_missing_config_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        missing = tmp_path / "nope.yaml"
        code, err = run_cli(["sim", "run", str(missing), "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and str(missing) in err and "No such file" in err
        assert not (tmp_path / "o").exists()

    def test_malformed_yaml(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, "name: [unclosed\nseed: 1\n")
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and str(cfg) in err and "not valid YAML" in err
        assert "line" in err  # the YAML parser's position

    def test_top_level_not_a_mapping(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, "- 1\n- 2\n")
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and "mapping" in err

    @pytest.mark.parametrize("override, needle", [
        ("duration_s", "expected key=value"),
        ("=5", "expected key=value"),
        ("traffic.rate=[1", "not valid YAML"),
        ("traffic.kind.x=1", "'kind' is not a section"),
        ("trafic.rate=5", "trafic"),
        ("traffic.job.mean_s=-1", "traffic.job.mean_s"),
        ("seed=abc", "seed"),
    ])
    def test_bad_set(self, tmp_path: Path, capsys: pytest.CaptureFixture[str], override: str, needle: str) -> None:
        cfg = write(tmp_path, GOOD)
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o"), "--set", override], capsys)
        assert code == 2 and needle in err
        assert err.startswith("marllb: error:")

    def test_unknown_topology_names_file(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, GOOD.replace("preset: unittest", "preset: huge"))
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o")], capsys)
        assert code == 2
        assert f"{cfg}: topology.preset: unknown topology 'huge'" in err and "moderate" in err

    def test_bad_topology_param(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, GOOD)
        code, err = run_cli(["sim", "run", str(cfg), "--out", str(tmp_path / "o"),
                             "--set", "topology.preset=fat_tree,k=5"], capsys)
        assert code == 2 and "k must be an even integer" in err

    def test_sweep_unknown_policy(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, GOOD)
        code, err = run_cli(["sim", "sweep", str(cfg), "--policies", "sed,bogus", "--out", str(tmp_path)], capsys)
        assert code == 2 and "'bogus'" in err

    def test_sweep_bad_seeds(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        cfg = write(tmp_path, GOOD)
        code, err = run_cli(["sim", "sweep", str(cfg), "--policies", "sed", "--seeds", "1,x",
                             "--out", str(tmp_path)], capsys)
        assert code == 2 and "--seeds" in err


def test_plot_missing_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["plot", str(tmp_path / "none")], capsys)
    assert code == 2 and "no such run directory" in err


def test_plot_not_a_run_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["plot", str(tmp_path)], capsys)
    assert code == 2 and "not a run directory" in err


def test_unknown_subcommand_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2
    assert "usage: marllb" in capsys.readouterr().err


def test_bench_lists_runs_and_refuses_unknown_names(capfd: pytest.CaptureFixture[str]) -> None:
    """`marllb bench` lists bench/*/run.py, runs one with its arguments (here --help, which
    the script's own argparse answers) and names the known ones for a typo."""
    assert main(["bench"]) == 0
    listed = capfd.readouterr().out
    for name in ("core_speed", "sim_speed", "inference", "controller", "learning", "host_dataplane",
                 "client_rate", "testbed"):
        assert name in listed
    assert main(["bench", "sim_speed", "--help"]) == 0
    assert "--duration" in capfd.readouterr().out
    assert main(["bench", "sim_sped"]) == 2
    err = capfd.readouterr().err
    assert "known: " in err and "controller, core_speed" in err and "sim_speed" in err

def test_config_errors_name_the_line(tmp_path, capsys, no_sim) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntraffic:\n  kind: poisson\n  rate: -3\npolicy:\n  name: sde\n")
    assert main(["sim", "run", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: invalid config" in err
    assert "line 4: traffic.rate: Input should be greater than 0" in err
    assert "line 6: policy.name: Input should be" in err
    # a value from --set has no line in the file
    assert main(["sim", "run", str(bad), "--set", "policy.name=sed", "--set", "traffic.rate=-4"]) == 2
    err = capsys.readouterr().err
    assert "  traffic.rate: Input should be greater than 0" in err and "line 4" not in err
