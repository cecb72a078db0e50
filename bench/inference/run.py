"""Inference latency of the deployable policies: time per decision for one LB with 24 servers, on one
core (torch.set_num_threads(1); numpy's BLAS is single-threaded at these sizes: CPU time ~= wall time).

A decision = `policy.act({lb: obs})`: input assembly, the network forward (float32 numpy,
agents/common/fast_forward.py), the GRU state update, argmax and the action encoding.
Reference measured in the same run: the numpy fairness-potential policy (no torch).  Also measured in
the same run: the network forward alone, numpy twin vs the torch functional path
(`RecurrentHeadNet.step` under inference_mode, what `act` used before).
Each policy is timed in `--repeats` blocks of `--decisions` decisions (wall and CPU time per decision;
the spread over blocks is reported) and once decision by decision (p50/p99 of single decisions).
Writes bench/out/inference.json; target <= 100 us per decision.

    PYTHONPATH=. python bench/inference/run.py [--decisions 3000] [--hidden 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from agents.common.fast_forward import FastRecurrentHeadNet
from agents.common.nets import RecurrentHeadNet
from agents.common.policy import Policy
from agents.common.spaces import EnvSignature
from agents.fairness_potential import FairnessPotentialConfig, FairnessPotentialPolicy
from agents.qmix import QmixAgent, QmixConfig
from agents.sac_gru import SacGruAgent, SacGruConfig

N_SERVERS = 24
FEATURES = 11  # n_flow_on + 5 flow_duration + 5 fct summaries per server (issue 4 layout)


def time_calls(call: Callable[[np.ndarray], object], reset: Callable[[], object], obs_list: list[np.ndarray],
               repeats: int) -> dict[str, float]:
    """Per-call time in microseconds: `repeats` blocks over `obs_list` (mean per call in each block; the
    median block is `mean_us`, min/max the spread; CPU time alongside wall time), then one block timed
    call by call for p50/p99."""
    reset()
    for o in obs_list[:200]:  # warm-up
        call(o)
    wall_us, cpu_us = [], []
    for _ in range(repeats):
        reset()
        c0, t0 = time.process_time_ns(), time.perf_counter_ns()
        for o in obs_list:
            call(o)
        wall_us.append((time.perf_counter_ns() - t0) / 1e3 / len(obs_list))
        cpu_us.append((time.process_time_ns() - c0) / 1e3 / len(obs_list))
    singles = []
    reset()
    for o in obs_list:
        t0 = time.perf_counter_ns()
        call(o)
        singles.append((time.perf_counter_ns() - t0) / 1e3)
    return {"mean_us": statistics.median(wall_us), "mean_us_min": min(wall_us), "mean_us_max": max(wall_us),
            "cpu_us": statistics.median(cpu_us), "p50_us": float(np.percentile(singles, 50)),
            "p99_us": float(np.percentile(singles, 99))}


def time_policy(policy: Policy, obs_list: list[np.ndarray], repeats: int) -> dict[str, float]:
    """`time_calls` of one decision `policy.act({"lb0": obs})`, GRU state reset before each block."""
    return time_calls(lambda o: policy.act({"lb0": o}), policy.reset, obs_list, repeats)


def time_forwards(net: RecurrentHeadNet, obs_list: list[np.ndarray], repeats: int) -> dict[str, dict[str, float]]:
    """The network forward alone (input = obs + zero previous-action one-hot): torch functional step under
    inference_mode vs the numpy twin, state carried across calls."""
    pad = np.zeros(net.fc_in[0].in_features - obs_list[0].shape[0], np.float32)
    xs = [np.concatenate([o, pad])[None] for o in obs_list]
    fast = FastRecurrentHeadNet(net)
    st: dict[str, object] = {}

    def torch_step(x: np.ndarray) -> None:
        with torch.inference_mode():
            _, st["h"] = net.step(torch.from_numpy(x), st["h"])

    def numpy_step(x: np.ndarray) -> None:
        _, st["h"] = fast.step(x, st["h"])

    return {
        "forward_torch_step": time_calls(torch_step, lambda: st.update(h=torch.zeros(1, net.hidden)), xs, repeats),
        "forward_numpy": time_calls(numpy_step, lambda: st.update(h=fast.initial_state(1)), xs, repeats),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--decisions", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--out", default="bench/out/inference.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    obs_dim = N_SERVERS * FEATURES
    sig = EnvSignature(("lb0",), n_servers=N_SERVERS, obs_dim=obs_dim, state_dim=obs_dim)
    rng = np.random.default_rng(0)
    obs_list = list(rng.random((args.decisions, obs_dim), dtype=np.float32))
    qmix = QmixAgent(QmixConfig(hidden=args.hidden), sig)
    policies = {
        "fairness_potential_numpy (reference)": FairnessPotentialPolicy(sig, FairnessPotentialConfig()),
        "qmix": qmix.greedy_policy(),
        "sac_gru": SacGruAgent(SacGruConfig(hidden=args.hidden), sig).greedy_policy(),
    }
    load_before = os.getloadavg()[0]
    results = {name: time_policy(p, obs_list, args.repeats) for name, p in policies.items()}
    results.update({f"qmix_{k}": v for k, v in time_forwards(qmix.net, obs_list, args.repeats).items()})
    ref = results["fairness_potential_numpy (reference)"]["mean_us"]
    for name, r in results.items():
        r["ratio_to_reference"] = r["mean_us"] / ref
        r["meets_100us_target"] = r["mean_us"] <= 100.0
        print(f"{name:40s} mean {r['mean_us']:7.1f} us [{r['mean_us_min']:.1f}-{r['mean_us_max']:.1f}]  "
              f"cpu {r['cpu_us']:7.1f}  p50 {r['p50_us']:7.1f}  p99 {r['p99_us']:7.1f}  "
              f"x{r['ratio_to_reference']:.1f} vs reference")
    out = {"n_servers": N_SERVERS, "obs_dim": obs_dim, "hidden": args.hidden, "threads": torch.get_num_threads(),
           "torch": torch.__version__, "python": platform.python_version(), "machine": platform.processor(),
           "decisions": args.decisions, "repeats": args.repeats,
           "load_average_1m_before_after": [load_before, os.getloadavg()[0]], "results": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
