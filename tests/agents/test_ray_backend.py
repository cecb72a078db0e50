"""agents.common.executors: the order-preserving parallel map, on the local process pool and on Ray,
and "same seeds => same results" across backends for training rollouts and eval points.

The Ray tests share one local Ray instance (2 CPUs) started by a module fixture and shut down after;
they skip with the reason when Ray (the ``marllb[ray]`` extra) is not installed.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
import time

import pandas as pd
import pytest
import torch
import yaml
from toy_lb_env import make_toy

from agents.common.executors import make_executor
from agents.qmix import QmixAgent, QmixConfig
from agents.sac_gru import SacGruConfig
from agents.training import train
from simulator.config import UserError

HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="Ray is not installed (pip install 'marllb[ray]')")

SMALL = dict(hidden=16, batch_episodes=3, updates_per_episode=2, learning_starts_episodes=1)
CONFIGS = {
    "qmix": lambda: QmixConfig(**SMALL, epsilon_anneal_episodes=4, target_update_interval=3),
    "isac": lambda: SacGruConfig(**SMALL),
}
TINY = {"name": "tiny", "duration_s": 1.5,
        "topology": {"lbs": 1, "servers": [{"cores": 1, "workers": 32}, {"cores": 3, "workers": 32}]},
        "traffic": {"load": 0.85, "job": {"mean_s": 0.05}}, "policy": {"name": "sed"}}


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray (2 CPUs) for the whole module; executors reuse it and leave it running."""
    if not HAVE_RAY:
        pytest.skip("Ray is not installed (pip install 'marllb[ray]')")
    import ray

    from agents.common.executors import init_ray

    assert init_ray(2), "Ray was already initialised before this module"
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------------
# the executor contract (module-level functions: workers import them by name)
# ------------------------------------------------------------------------------------------------
def _counter_state() -> dict:
    return {"pid": os.getpid(), "inits": 1, "jobs": 0}


def _slow_double(state: dict, job: int) -> tuple[int, int, int]:
    """Later jobs finish first (job i sleeps (5 - i) * 40 ms), so completion order != job order."""
    time.sleep(max(0, 5 - job) * 0.04)
    state["jobs"] += 1
    return 2 * job, state["pid"], state["jobs"]


def _fail_on_three(state: object, job: int) -> int:
    if job == 3:
        raise UserError("job 3 is bad")
    return job


def _check_contract(results: list[tuple[int, int, int]], n_jobs: int, workers: int) -> None:
    assert [r[0] for r in results] == [2 * j for j in range(n_jobs)]  # job order, not finish order
    pids = {r[1] for r in results}
    assert 1 <= len(pids) <= workers and os.getpid() not in pids
    # the state is built once per worker and kept across jobs: per worker the job counter is 1..k
    for pid in pids:
        counts = sorted(r[2] for r in results if r[1] == pid)
        assert counts == list(range(1, len(counts) + 1))


def test_local_executor_keeps_job_order_worker_state_and_raises() -> None:
    with make_executor("local", 2, init=_counter_state) as ex:
        seen: list = []
        results = ex.map(_slow_double, list(range(6)), on_done=lambda i, r: seen.append((i, r)))
        _check_contract(results, 6, 2)
        assert sorted(seen) == list(enumerate(results))  # on_done saw every job with its result
        assert ex.map(_slow_double, []) == []
        with pytest.raises(UserError, match="job 3 is bad"):
            ex.map(_fail_on_three, list(range(5)))


@needs_ray
def test_ray_executor_keeps_job_order_worker_state_and_raises(ray_session) -> None:
    with make_executor("ray", 2, init=_counter_state) as ex:
        seen: list = []
        results = ex.map(_slow_double, list(range(6)), on_done=lambda i, r: seen.append((i, r)))
        assert sorted(seen) == list(enumerate(results))
        assert ex.map(_slow_double, []) == []
        with pytest.raises(UserError, match="job 3 is bad"):  # a RayTaskError that is a UserError
            ex.map(_fail_on_three, list(range(5)))
    _check_contract(results, 6, 2)
    assert len({r[1] for r in results}) == 2  # both actors got work (the first two jobs at once)
    assert ray_session.is_initialized()  # the executor did not shut down a Ray it did not start


def test_bad_arguments_are_user_errors() -> None:
    with pytest.raises(UserError, match="choose one of local, ray"):
        make_executor("dask", 2)
    with pytest.raises(UserError, match="workers >= 1"):
        make_executor("local", 0)
    with pytest.raises(UserError, match="only used with --backend ray"):
        make_executor("local", 1, ray_address="auto")


def test_missing_ray_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(UserError, match=r"pip install 'marllb\[ray\]'"):
        make_executor("ray", 2)
    env_fn = functools.partial(make_toy, n_lbs=1, horizon=5)
    with pytest.raises(UserError, match=r"pip install 'marllb\[ray\]'"):
        train(env_fn, CONFIGS["isac"](), 2, workers=1, backend="ray", progress=False)
    with pytest.raises(UserError, match="workers=0"):
        train(env_fn, CONFIGS["isac"](), 2, workers=0, backend="ray", progress=False)


# ------------------------------------------------------------------------------------------------
# same seeds => same results, whichever backend
# ------------------------------------------------------------------------------------------------
@pytest.fixture
def ray_jobs(ray_session, monkeypatch) -> list[int]:
    """Counts the jobs that really went to Ray actors (len of each RayActorExecutor.map call)."""
    from agents.common.executors import RayActorExecutor

    calls: list[int] = []
    real_map = RayActorExecutor.map

    def spy(self, fn, jobs):
        calls.append(len(jobs))
        return real_map(self, fn, jobs)

    monkeypatch.setattr(RayActorExecutor, "map", spy)
    return calls


def _params(agent) -> list[torch.Tensor]:
    mods = [agent.net, agent.mixer] if isinstance(agent, QmixAgent) else agent.learners
    return [p.detach().clone() for m in mods for p in m.state_dict().values()]


@needs_ray
@pytest.mark.parametrize("name", ["isac"])  # exploration sampled by torch in the worker
def test_training_on_ray_equals_local_pool(name, ray_jobs) -> None:
    env_fn = functools.partial(make_toy, n_lbs=2, horizon=10)
    kw = dict(seed=13, workers=2, episodes_per_round=2, progress=False)
    a = train(env_fn, CONFIGS[name](), 6, backend="local", **kw)
    b = train(env_fn, CONFIGS[name](), 6, backend="ray", **kw)
    assert ray_jobs == [2, 2, 2]  # 3 rounds of 2 episodes on the actors
    assert a.agent.updates_done > 0
    assert len(a.returns) == 6 and a.returns == b.returns
    pa, pb = _params(a.agent), _params(b.agent)
    assert len(pa) == len(pb) > 0 and all(torch.equal(x, y) for x, y in zip(pa, pb))
    # and the comparison can fail: another seed gives other returns
    c = train(env_fn, CONFIGS[name](), 2, backend="ray", **dict(kw, seed=14))
    assert c.returns != a.returns[:2]


@needs_ray
def test_eval_on_ray_writes_the_same_tables(ray_jobs, tmp_path, monkeypatch) -> None:
    """`marllb eval --backend ray` (relative paths, checkpoint included) == `--backend local`."""
    from experiments.cli import main

    monkeypatch.chdir(tmp_path)  # relative config, checkpoint and out paths, as a user types them
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["train", "tiny.yaml", "--algo", "fairness", "--episodes", "1", "--seed", "2",
                 "--out", "ckpt", "--no-progress"]) == 0
    base = ["eval", "tiny.yaml", "--policies", "ecmp,sed", "--checkpoint", "ckpt/last.pt",
            "--seeds", "5,6", "--workers", "2", "--no-progress"]
    assert main([*base, "--out", "a"]) == 0
    assert ray_jobs == []
    assert main([*base, "--out", "b", "--backend", "ray"]) == 0
    assert ray_jobs == [3 * 2]  # (ecmp, sed, checkpoint) x 2 seeds, all on the actors
    ca, cb = pd.read_csv(tmp_path / "a/comparison.csv"), pd.read_csv(tmp_path / "b/comparison.csv")
    assert len(ca) == 3 and ca["n"].tolist() == [2, 2, 2]
    pd.testing.assert_frame_equal(ca, cb, check_exact=True)
    ra, rb = pd.read_csv(tmp_path / "a/runs.csv"), pd.read_csv(tmp_path / "b/runs.csv")
    pd.testing.assert_frame_equal(ra, rb, check_exact=True)
    assert ra["completed"].min() > 0
    for d in ra["dir"]:
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "a" / d / "requests.parquet"),
                                      pd.read_parquet(tmp_path / "b" / d / "requests.parquet"))


def test_cli_ray_backend_without_workers_is_a_user_error(tmp_path, capsys) -> None:
    from experiments.cli import main

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["eval", str(tmp_path / "tiny.yaml"), "--policies", "sed", "--seeds", "1",
                 "--backend", "ray", "--out", str(tmp_path / "e"), "--no-progress"]) == 2
    assert "workers=0" in capsys.readouterr().err
