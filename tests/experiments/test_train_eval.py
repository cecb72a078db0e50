"""`marllb train --algo fairness` and `marllb eval`: run-contract directories per (policy, load,
seed), the comparison table checked against statistics recomputed here, a checkpoint for another
topology refused with one clear error. (Learning itself: tests/envs/test_learning_smoke.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from experiments.cli import main
from experiments.evaluate import ci95, compare
from experiments.runs import OUTPUT_FILES

TINY = {"name": "tiny", "duration_s": 2.0,
        "topology": {"lbs": 1, "servers": [{"cores": 1, "workers": 32}, {"cores": 3, "workers": 32}]},
        "traffic": {"load": 0.85, "job": {"mean_s": 0.05}}, "policy": {"name": "sed"}}


@pytest.fixture(scope="module")
def fairness_ckpt(tmp_path_factory):
    """A fairness-potential checkpoint made by `marllb train --algo fairness` (no learning)."""
    d = tmp_path_factory.mktemp("train")
    (d / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["train", str(d / "tiny.yaml"), "--algo", "fairness", "--episodes", "2", "--seed", "4",
                 "--out", str(d / "run"), "--no-progress"]) == 0
    return d


def test_fairness_train_writes_config_logs_and_a_loadable_checkpoint(fairness_ckpt) -> None:
    from agents.common.spaces import EnvSignature
    from agents.deploy import load_policy
    from agents.fairness_potential import FairnessPotentialPolicy
    from simulator.config import load_config
    from simulator.envs import parallel_env

    run = fairness_ckpt / "run"
    assert {"config.yaml", "config.json", "scalars.csv", "last.pt"} <= {p.name for p in run.iterdir()}
    scalars = pd.read_csv(run / "scalars.csv")
    assert sorted(scalars.loc[scalars["tag"] == "charts/episode_return", "episode"]) == [0, 1]
    env = parallel_env(load_config(run / "config.yaml"))
    policy = load_policy(run / "last.pt", EnvSignature.from_env(env))
    assert isinstance(policy, FairnessPotentialPolicy)
    assert policy.config.features_per_server == 11 and policy.config.obs_log1p_scale_s == 0.1


def test_eval_writes_run_contract_per_point_and_a_consistent_table(fairness_ckpt, tmp_path) -> None:
    cfg = fairness_ckpt / "tiny.yaml"
    out = tmp_path / "eval"
    assert main(["eval", str(cfg), "--policies", "ecmp,sed", "--checkpoint", str(fairness_ckpt / "run/last.pt"),
                 "--seeds", "11,12", "--loads", "0.6,0.9", "--out", str(out), "--no-progress"]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 3 * 2 * 2
    for row in runs.itertuples():
        d = out / row.dir
        assert d.name == f"{row.label}__load{row.load:g}__seed{row.seed}"
        assert all((d / f).exists() for f in OUTPUT_FILES)
        run_cfg = yaml.safe_load((d / "config.yaml").read_text())
        assert run_cfg["seed"] == row.seed and run_cfg["traffic"]["load"] == pytest.approx(row.load)
        assert run_cfg["policy"]["name"] == ("agent" if row.label == "agent" else row.label)
        summary = json.loads((d / "summary.json").read_text())
        assert summary["jct_mean_s"] == pytest.approx(row.jct_mean_s)
    # higher load, more arrivals (same seeds): the load really reached the traffic
    arrivals = {(r.label, r.load, r.seed): json.loads((out / r.dir / "summary.json").read_text())["arrived"]
                for r in runs.itertuples()}
    assert all(arrivals[("sed", 0.9, s)] > arrivals[("sed", 0.6, s)] for s in (11, 12))
    table = pd.read_csv(out / "comparison.csv")
    assert len(table) == 6
    for row in table.itertuples():
        sel = runs[(runs["label"] == row.label) & np.isclose(runs["load"], row.load)]
        x = sel["jct_mean_s"].to_numpy()
        assert row.n == 2 and row.jct_mean_s == pytest.approx(x.mean())
        # n = 2: t(0.975, 1) = 12.706, s = |x1 - x2| / sqrt(2), half-width = t s / sqrt(2)
        assert row.jct_mean_ci95_s == pytest.approx(12.706 * abs(x[0] - x[1]) / 2, rel=1e-4)
        best = table[(table["load"] == row.load) & ~table["is_agent"]]["jct_mean_s"].min()
        assert row.vs_best_heuristic == pytest.approx(row.jct_mean_s / best - 1)
    # ECMP ignores the 1:3 capacities: SED beats it at 90 % load (mean over the two seeds)
    at90 = table[table["load"] == 0.9].set_index("label")
    assert at90.loc["sed", "jct_mean_s"] < at90.loc["ecmp", "jct_mean_s"]


def test_ci95_matches_student_t() -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy (dev extra) gives the reference quantiles")
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10, 31, 45, 200):
        x = rng.normal(size=n)
        ref = stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)
        assert ci95(x) == pytest.approx(ref, rel=2e-3)
    assert math.isnan(ci95(np.array([1.0])))


def test_compare_by_hand() -> None:
    """The best heuristic is the best local one: the oracle (gsed, lower still) is no candidate."""
    runs = pd.DataFrame({
        "label": ["sed", "sed", "ecmp", "ecmp", "agent", "agent", "gsed", "gsed"],
        "load": [None] * 8, "is_agent": [False, False, False, False, True, True, False, False],
        "jct_mean_s": [0.10, 0.14, 0.30, 0.50, 0.09, 0.09, 0.05, 0.05], "jct_p90_s": [0.2] * 8,
        "throughput_rps": [10.0] * 8, "jain_fairness": [1.0] * 8})
    t = compare(runs).set_index("label")
    assert t.loc["gsed", "vs_best_heuristic"] == pytest.approx(0.05 / 0.12 - 1)
    assert t.loc["sed", "jct_mean_s"] == pytest.approx(0.12)
    assert t.loc["agent", "vs_best_heuristic"] == pytest.approx(0.09 / 0.12 - 1)
    assert t.loc["ecmp", "vs_best_heuristic"] == pytest.approx(0.40 / 0.12 - 1)
    assert t.loc["agent", "jct_mean_ci95_s"] == pytest.approx(0.0)


def test_eval_errors_are_one_clear_message(fairness_ckpt, tmp_path, capsys) -> None:
    cfg = fairness_ckpt / "tiny.yaml"
    other = dict(TINY, topology={"lbs": 1, "servers": [{"cores": 1}, {"cores": 3}, {"cores": 3}]})
    (tmp_path / "other.yaml").write_text(yaml.safe_dump(other))
    ckpt = str(fairness_ckpt / "run/last.pt")
    cases = [
        (["eval", str(tmp_path / "other.yaml"), "--checkpoint", ckpt, "--seeds", "1"], "checkpoint"),
        (["eval", str(cfg), "--policies", "nope"], "unknown policy"),
        (["eval", str(cfg), "--checkpoint", str(tmp_path / "missing.pt")], "no such file"),
        (["eval", str(cfg)], "nothing to evaluate"),
        (["eval", str(cfg), "--policies", "sed", "--seeds", "a,b"], "--seeds"),
    ]
    for args, needle in cases:
        capsys.readouterr()
        assert main([*args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, (args, err)


def test_policy_agent_runs_through_the_default_runner(fairness_ckpt) -> None:
    """experiments.runs injects the checkpoint controller (the simulator never imports agents):
    the fairness rule's weights (levels 1.0..2.0) reach the steps table; another topology is
    refused; the simulator alone refuses 'agent' with a message saying how to run it."""
    from experiments.runs import default_runner
    from simulator.config import UserError, parse_config
    from simulator.run import run_experiment

    run = default_runner()
    cfg = dict(TINY, seed=5, policy={"name": "agent", "checkpoint": str(fairness_ckpt / "run/last.pt")})
    res = run(parse_config(cfg), progress=False)
    assert res.summary["policy"] == "agent" and res.summary["completed"] > 0
    w = res.steps.loc[res.steps["t_s"] > 0.5, "weight"].to_numpy()
    assert set(np.round(w, 6)) <= set(np.round(1.0 + 0.2 * np.arange(6), 6))
    bad = dict(cfg, topology={"lbs": 1, "servers": [{"cores": 1}, {"cores": 3}, {"cores": 3}]})
    with pytest.raises(UserError, match="checkpoint"):
        run(parse_config(bad), progress=False)
    with pytest.raises(UserError, match="marllb sim run"):
        run_experiment(parse_config(cfg), progress=False)
    missing = dict(cfg, policy={"name": "agent", "checkpoint": str(fairness_ckpt / "nope.pt")})
    with pytest.raises(UserError, match="nope.pt"):
        run(parse_config(missing), progress=False)


def _train_args(cfg: str, out, episodes: int, *extra: str) -> list[str]:
    return ["train", cfg, "--algo", "qmix", "--episodes", str(episodes), "--seed", "2", "--no-progress",
            "--hp", "hidden=16", "--hp", "batch_episodes=2", "--hp", "learning_starts_episodes=2",
            "--hp", "updates_per_episode=2", "--out", str(out), *extra]


def _params(path) -> dict:
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["state"]
    flat = {}

    def walk(prefix: str, x) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(x, torch.Tensor):
            flat[prefix] = x

    walk("", state)
    return flat


def test_train_resume_is_exact_and_workers_give_the_same_parameters(tmp_path) -> None:
    import torch

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(dict(TINY, duration_s=1.0)))
    cfg = str(tmp_path / "tiny.yaml")
    assert main(_train_args(cfg, tmp_path / "a", 3)) == 0
    assert main(_train_args(cfg, tmp_path / "a", 5, "--resume")) == 0
    scalars = pd.read_csv(tmp_path / "a" / "scalars.csv")
    assert sorted(scalars.loc[scalars["tag"] == "charts/episode_return", "episode"]) == [0, 1, 2, 3, 4]
    # resuming after 3 episodes ends with the parameters of an uninterrupted 5-episode run
    assert main(_train_args(cfg, tmp_path / "full", 5)) == 0
    pa, pf = _params(tmp_path / "a" / "last.pt"), _params(tmp_path / "full" / "last.pt")
    assert pa.keys() == pf.keys() and all(torch.equal(pa[k], pf[k]) for k in pa)
    # the same 3 episodes collected in a spawned worker process: identical parameters
    assert main(_train_args(cfg, tmp_path / "b", 3)) == 0
    assert main(_train_args(cfg, tmp_path / "c", 3, "--workers", "1")) == 0
    pb, pc = _params(tmp_path / "b" / "last.pt"), _params(tmp_path / "c" / "last.pt")
    assert pb.keys() == pc.keys() and len(pb) > 0
    assert all(torch.equal(pb[k], pc[k]) for k in pb)


@pytest.mark.parametrize("algo, flags", [("qmix", []), ("qmix", ["--prev-action"]),
                                         ("qmix", ["--prev-action", "--action-scale", "relative"]),
                                         ("qmix", ["--prev-action", "--features", "robust", "--hp", "agent_net=servers"]),
                                         ("fairness", []), ("fairness", ["--prev-action", "--continuous"]),
                                         ("fairness", ["--continuous", "--action-scale", "relative"])],
                         ids=["qmix", "qmix-prev-action", "qmix-prev-action-relative", "qmix-robust-servers", "fairness",
                              "fairness-prev-action-continuous", "fairness-continuous-relative"])
def test_policy_agent_in_a_sim_run_acts_exactly_as_in_the_env(algo, flags, tmp_path) -> None:
    """Train/deploy parity: the same checkpoint, driven once by the env (reset seed s) and once as
    `policy: agent` in run_experiment on the run seed the env derives from s, sets the same
    weights at every step (same observations in both paths, incl. previous weights and Box
    actions). The fairness rule's weights move with the observed durations, so equal weight
    sequences mean equal observations step by step."""
    from agents.common.spaces import EnvSignature
    from agents.deploy import load_policy
    from simulator.config import parse_config
    from experiments.runs import default_runner
    from simulator.envs import parallel_env

    cfg = dict(TINY, duration_s=3.0)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(cfg))
    hp = ["--hp", "hidden=16", "--hp", "batch_episodes=2", "--hp", "learning_starts_episodes=2",
          "--hp", "updates_per_episode=2"] if algo == "qmix" else []
    args = ["train", str(tmp_path / "tiny.yaml"), "--algo", algo, "--episodes", "3", "--seed", "1",
            "--no-progress", "--out", str(tmp_path / "run"), *hp, *flags]
    assert main(args) == 0
    ckpt = tmp_path / "run" / "last.pt"
    scale = "relative" if "relative" in flags else "absolute"
    features = "robust" if "robust" in flags else "paper"
    env = parallel_env(cfg, prev_action="--prev-action" in flags, continuous="--continuous" in flags,
                       action_scale=scale, features=features)
    policy = load_policy(ckpt, EnvSignature.from_env(env))
    assert policy.signature.action_scale == scale and policy.signature.features == features
    obs, _ = env.reset(seed=21)
    policy.reset()
    env_w = []
    while env.agents:
        obs, _, _, _, info = env.step(policy.act(obs, deterministic=True))
        env_w.append(np.asarray(info["lb1"]["weights"], float))
    run_seed = int(np.random.default_rng(21).integers(2**31))  # the env's derivation (no load range)
    res = default_runner()(parse_config(dict(cfg, seed=run_seed, policy={"name": "agent", "checkpoint": str(ckpt)})),
                           progress=False)
    # steps row k (t = 0.25 (k + 1)) holds the weights the controller set at that step
    sim_w = res.steps.pivot(index="t_s", columns="server", values="weight").sort_index().to_numpy()
    n = len(env_w)
    assert n >= 10
    np.testing.assert_allclose(sim_w[:n], np.array(env_w), rtol=1e-6)
    if algo == "fairness":
        assert len({tuple(np.round(w, 6)) for w in env_w}) > 2  # the weights really moved
    if scale == "relative":  # factors of the static weights, TINY's cores 1 and 3
        from simulator.actions import RELATIVE_FACTORS

        factors = np.array(env_w) / np.array([1.0, 3.0])
        assert factors.min() >= RELATIVE_FACTORS[0] - 1e-9 and factors.max() <= RELATIVE_FACTORS[-1] + 1e-9
        if "--continuous" not in flags:
            assert np.isclose(factors[..., None], RELATIVE_FACTORS).any(axis=-1).all()


def test_eval_workers_give_the_same_numbers(fairness_ckpt, tmp_path) -> None:
    base = ["eval", str(fairness_ckpt / "tiny.yaml"), "--policies", "sed", "--checkpoint",
            str(fairness_ckpt / "run/last.pt"), "--seeds", "3,4", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a, b = pd.read_csv(tmp_path / "a" / "runs.csv"), pd.read_csv(tmp_path / "b" / "runs.csv")
    pd.testing.assert_frame_equal(a, b)
    for d in a["dir"]:
        ra = pd.read_parquet(tmp_path / "a" / d / "requests.parquet")
        rb = pd.read_parquet(tmp_path / "b" / d / "requests.parquet")
        pd.testing.assert_frame_equal(ra, rb)


def test_two_lbs_steps_table_holds_the_weights_each_lb_got(tmp_path) -> None:
    """With two LBs the joint decision is taken when the last LB reports; the steps table of the
    sim run must still show, for the first LB too, the weights set at that step (as the env saw)."""
    from agents.common.spaces import EnvSignature
    from agents.deploy import load_policy
    from experiments.runs import default_runner
    from simulator.config import parse_config
    from simulator.envs import parallel_env

    cfg = dict(TINY, duration_s=3.0, topology=dict(TINY["topology"], lbs=2))
    (tmp_path / "two.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "two.yaml"), "--algo", "fairness", "--episodes", "1",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    ckpt = tmp_path / "run" / "last.pt"
    env = parallel_env(cfg)
    policy = load_policy(ckpt, EnvSignature.from_env(env))
    obs, _ = env.reset(seed=21)
    policy.reset()
    env_w: dict[str, list[np.ndarray]] = {a: [] for a in env.possible_agents}
    while env.agents:
        obs, _, _, _, info = env.step(policy.act(obs, deterministic=True))
        for a in env_w:
            env_w[a].append(np.asarray(info[a]["weights"], float))
    run_seed = int(np.random.default_rng(21).integers(2**31))
    res = default_runner()(parse_config(dict(cfg, seed=run_seed, policy={"name": "agent", "checkpoint": str(ckpt)})),
                           progress=False)
    for k, agent in enumerate(env.possible_agents):
        mine = res.steps[res.steps["lb"] == k]
        sim_w = mine.pivot(index="t_s", columns="server", values="weight").sort_index().to_numpy()
        n = len(env_w[agent])
        assert len({tuple(np.round(w, 6)) for w in env_w[agent]}) > 2  # the weights really moved
        np.testing.assert_allclose(sim_w[:n], np.array(env_w[agent]), rtol=1e-6, err_msg=agent)


def test_train_torch_threads_is_applied_and_checked(tmp_path, capsys) -> None:
    import torch

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(dict(TINY, duration_s=1.0)))
    before = torch.get_num_threads()
    try:
        want = 1 if before != 1 else 2
        assert main([*_train_args(str(tmp_path / "tiny.yaml"), tmp_path / "a", 1), "--torch-threads", str(want)]) == 0
        assert torch.get_num_threads() == want
        assert main([*_train_args(str(tmp_path / "tiny.yaml"), tmp_path / "b", 1), "--torch-threads", "0"]) == 2
        assert "--torch-threads 0: must be >= 1" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_feature_set_is_part_of_the_checkpoint_signature(tmp_path, capsys) -> None:
    """A checkpoint trained on the robust set refuses the paper's env, naming the field; a
    signature written before the field existed reads as the paper's set; the fairness rule,
    which reads the paper's layout, refuses the robust set."""
    from agents.common.spaces import EnvSignature, SignatureMismatchError
    from agents.deploy import load_policy
    from simulator.envs import parallel_env

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["train", str(tmp_path / "tiny.yaml"), "--algo", "qmix", "--episodes", "1", "--no-progress",
                 "--hp", "hidden=16", "--features", "robust", "--out", str(tmp_path / "run")]) == 0
    ckpt = tmp_path / "run" / "last.pt"
    robust_env = parallel_env(TINY, features="robust")
    assert load_policy(ckpt, EnvSignature.from_env(robust_env)).signature.features == "robust"
    paper_env = parallel_env(TINY)
    with pytest.raises(SignatureMismatchError, match="features: checkpoint last.pt has 'robust', env has 'paper'"):
        load_policy(ckpt, EnvSignature.from_env(paper_env))
    old = EnvSignature.from_env(paper_env).to_dict()
    del old["features"]
    assert EnvSignature.from_dict(old).features == "paper"
    capsys.readouterr()
    assert main(["train", str(tmp_path / "tiny.yaml"), "--algo", "fairness", "--episodes", "1", "--no-progress",
                 "--features", "robust", "--out", str(tmp_path / "f")]) == 2
    assert "--features robust: the fairness-potential rule reads the paper" in capsys.readouterr().err
