"""Inference latency of the deployable policies: time per decision for one LB with 24 servers, on one
core (torch.set_num_threads(1)), under torch.inference_mode (inside `Policy.act`).

A decision = `policy.act({lb: obs})` including numpy<->torch conversion and the GRU state update.
Reference measured in the same run: the numpy fairness-potential policy (no torch).
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

import numpy as np
import torch

from agents.common.spaces import EnvSignature
from agents.fairness_potential import FairnessPotentialConfig, FairnessPotentialPolicy
from agents.qmix import QmixAgent, QmixConfig
from agents.sac_gru import SacGruAgent, SacGruConfig

N_SERVERS = 24
FEATURES = 11  # n_flow_on + 5 flow_duration + 5 fct summaries per server (issue 4 layout)


def time_policy(policy, obs_list, repeats: int) -> dict[str, float]:
    """Median and p99 over `repeats` blocks of per-decision time in microseconds."""
    per_block_us = []
    policy.reset()
    for o in obs_list[:200]:  # warm-up
        policy.act({"lb0": o})
    for _ in range(repeats):
        policy.reset()
        t0 = time.perf_counter_ns()
        for o in obs_list:
            policy.act({"lb0": o})
        per_block_us.append((time.perf_counter_ns() - t0) / 1e3 / len(obs_list))
    singles = []
    policy.reset()
    for o in obs_list:
        t0 = time.perf_counter_ns()
        policy.act({"lb0": o})
        singles.append((time.perf_counter_ns() - t0) / 1e3)
    return {"mean_us": statistics.median(per_block_us), "p50_us": float(np.percentile(singles, 50)),
            "p99_us": float(np.percentile(singles, 99))}


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
    policies = {
        "fairness_potential_numpy (reference)": FairnessPotentialPolicy(sig, FairnessPotentialConfig()),
        "qmix": QmixAgent(QmixConfig(hidden=args.hidden), sig).greedy_policy(),
        "sac_gru": SacGruAgent(SacGruConfig(hidden=args.hidden), sig).greedy_policy(),
    }
    load_before = os.getloadavg()[0]
    results = {name: time_policy(p, obs_list, args.repeats) for name, p in policies.items()}
    ref = results["fairness_potential_numpy (reference)"]["mean_us"]
    for name, r in results.items():
        r["ratio_to_reference"] = r["mean_us"] / ref
        r["meets_100us_target"] = r["mean_us"] <= 100.0
        print(f"{name:40s} mean {r['mean_us']:8.1f} us  p50 {r['p50_us']:8.1f}  p99 {r['p99_us']:8.1f}  "
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
