"""Data-center scale end to end (issue 14): QMIX trains on 8 LBs x 128 servers and its
checkpoint drives `marllb sim run`; the 1,024-server, 64-LB preset runs; sizes the layout cannot
hold are refused naming the field. (Speed and memory at scale: bench/sim_scale.)"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from experiments.cli import main

WIDE = {"name": "wide", "seed": 0, "duration_s": 1.5,
        "topology": {"preset": "datacenter",
                     "params": {"spines": 2, "leaves": 4, "servers_per_leaf": 32, "lbs": 8}},
        "traffic": {"kind": "poisson", "load": 0.7, "job": {"dist": "exp", "mean_s": 0.2}},
        "policy": {"name": "sed"},
        "lb": {"step_s": 0.25, "reservoir_size": 16, "table_size": 16384}}


def test_qmix_trains_on_8_lbs_x_128_servers_and_its_checkpoint_runs(tmp_path) -> None:
    cfg = tmp_path / "wide.yaml"
    cfg.write_text(yaml.safe_dump(WIDE))
    assert main(["train", str(cfg), "--algo", "qmix", "--episodes", "3", "--out", str(tmp_path / "q"),
                 "--no-progress", "--torch-threads", "1", "--hp", "learning_starts_episodes=1",
                 "--hp", "batch_episodes=2"]) == 0
    scalars = pd.read_csv(tmp_path / "q" / "scalars.csv")
    assert sorted(scalars.loc[scalars["tag"] == "charts/episode_return", "episode"]) == [0, 1, 2]
    assert main(["sim", "run", str(cfg), "--out", str(tmp_path / "run"), "--no-progress",
                 "--set", "policy.name=agent", "--set", f"policy.checkpoint={tmp_path / 'q' / 'last.pt'}"]) == 0
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(s["per_server"]) == 128 and s["arrived"] == s["completed"] + s["dropped"] + s["in_flight"] > 0
    steps = pd.read_parquet(tmp_path / "run" / "steps.parquet")
    assert set(steps["lb"]) == set(range(8)) and steps["server"].max() == 127
    assert sum(1 for x in s["per_server"] if x["completed"] > 0) > 100  # the agents' weights spread flows


def test_datacenter_preset_runs_1024_servers_64_lbs(tmp_path) -> None:
    from simulator.config import load_config

    cfg = "experiments/configs/datacenter.yaml"
    assert main(["sim", "run", cfg, "--out", str(tmp_path), "--no-progress",
                 "--set", "duration_s=0.6", "--set", "warmup_s=0"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert len(s["per_server"]) == 1024 and s["arrived"] == s["completed"] + s["dropped"] + s["in_flight"]
    rate = 0.7 * sum(x["cores"] for x in s["per_server"]) / 0.2  # traffic.load x cores / mean job
    assert s["arrived"] == pytest.approx(rate * 0.6, rel=0.05)  # Poisson, n ~ 13,000: 5 % is > 5 sigma
    assert load_config(cfg).topology.preset == "datacenter"
    small = sum(x["completed"] for x in s["per_server"] if x["cores"] == 4)
    assert small > 0.15 * s["completed"]  # sed2 (the config's policy) also uses the 4-CPU servers


def test_plain_sed_at_64_lbs_herds_onto_the_big_servers(tmp_path) -> None:
    """Why the datacenter config runs sed2: an LB's SED score of an empty 4-CPU server is 1/4, of
    an 8-CPU server with k of *its* flows (k + 1)/8, so it picks a 4-CPU server only once all 512
    8-CPU servers hold one of its flows. Each of the 64 LBs sees ~340 flows/s of 0.2 s: in 0.6 s
    it opens ~200 flows, far fewer than 512, so no request may reach a 4-CPU server."""
    assert main(["sim", "run", "experiments/configs/datacenter.yaml", "--out", str(tmp_path), "--no-progress",
                 "--set", "duration_s=0.6", "--set", "warmup_s=0", "--set", "policy.name=sed"]) == 0
    s = json.loads((tmp_path / "summary.json").read_text())
    small = [x["completed"] for x in s["per_server"] if x["cores"] == 4]
    big = [x["completed"] for x in s["per_server"] if x["cores"] == 8]
    assert len(small) == len(big) == 512 and sum(small) == 0 and sum(big) == s["completed"] > 5000


@pytest.mark.parametrize("topology, message", [
    ({"lbs": 1, "servers": []}, "topology: Value error, give either 'preset' or both 'lbs' and a non-empty 'servers' list"),
    ({"preset": "datacenter", "params": {"servers_per_leaf": 0}}, "servers_per_leaf and lbs must be >= 1"),
    ({"lbs": 1, "servers": [{"cores": 1}] * 4097}, "topology.servers: 4097 servers, the shm layout allows at most 4096"),
])
def test_bad_sizes_name_the_field(tmp_path, capsys, topology: dict, message: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**WIDE, "topology": topology}))
    assert main(["sim", "run", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) != 0
    err = capsys.readouterr().err
    assert message in err and err.startswith("marllb: error:") and err.count("marllb: error:") == 1
    assert not (tmp_path / "out" / "summary.json").exists()


@pytest.mark.parametrize("every", [0, 1, 4])
def test_record_every_keeps_every_nth_step(tmp_path, every: int) -> None:
    """lb.record_every n: the steps table has the rows of steps n, 2n, ... only (all LBs and
    servers each), none for 0; the run itself is the same (summary unchanged)."""
    runs = {}
    for n in (1, every):
        out = tmp_path / f"every{n}"
        assert main(["sim", "run", "experiments/configs/quickstart.yaml", "--out", str(out), "--no-progress",
                     "--set", "duration_s=3", "--set", "warmup_s=0", "--set", f"lb.record_every={n}"]) == 0
        runs[n] = (json.loads((out / "summary.json").read_text()), pd.read_parquet(out / "steps.parquet"))
    (s_all, steps_all), (s_n, steps_n) = runs[1], runs[every]
    drop = {"wall_s"}
    assert {k: v for k, v in s_n.items() if k not in drop} == {k: v for k, v in s_all.items() if k not in drop}
    step_s = 0.25
    want = steps_all[steps_all["t_s"].map(lambda t: every > 0 and round(t / step_s) % every == 0)]
    assert list(steps_n.columns) == list(steps_all.columns)
    pd.testing.assert_frame_equal(steps_n.reset_index(drop=True), want.reset_index(drop=True))
