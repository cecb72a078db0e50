"""Learning benchmark (slow, not CI): train QMIX and I-SAC on `moderate`, evaluate against every
heuristic and the oracles on held-out seeds at three loads.

1. Train each algorithm for a wall-clock budget (default 30 min) with `marllb train`, episode loads
   drawn uniformly from --train-loads (one model per algorithm serves every evaluation load), with
   greedy-policy snapshots every --snapshot-every episodes. With --parallel the algorithms train at
   the same time, one process (one core) each.
2. Learning curve: every snapshot runs greedily at the middle evaluation load on the validation
   seeds (not the test seeds).
3. Test: every heuristic (ecmp, wcmp, awcmp, lsq, sed, lsq2, sed2), the oracles (gsq, gsed, srt) and
   the final checkpoints at each --loads value on the --seeds (held out: training episode seeds are
   31-bit hashes), through `marllb eval` (run-contract directories).
4. Reference measured in the same run: the no-queueing floor, SED at load 0.02 (service time +
   network), the lowest mean JCT any policy can reach.
5. Model selection (early stopping): per algorithm the snapshot with the lowest mean JCT on the
   validation seeds of the learning curve is also tested, as ``<algo>_best`` (the test seeds
   never take part in the choice).
6. Capacity readers: an algorithm whose actions follow a capacity head (``--hp capacity_action=true``)
   is also tested without its levels, as ``<algo>_reader`` (`agents.deploy.write_capacity_reader`:
   SED weighted by the head's reading of the LB's frames, written to OUT/train_<algo>/capacity_reader.pt).

Writes OUT/learning.json, OUT/table.md, OUT/comparison.csv, OUT/paired.csv, OUT/learning_curve.png,
OUT/jct_bars.png (see bench/learning/report.py). Targets (issue 4): QMIX >= 20 % lower mean JCT than
the best local-information heuristic at 85-95 % load and never > 5 % worse at any load.

    python bench/learning/run.py [--budget-min 30] [--parallel] [--algos qmix,isac] [--out DIR]
    python bench/learning/run.py --skip-train --out DIR   # re-evaluate existing training runs
    python bench/learning/run.py --skip-train --reuse-eval --out DIR   # only the runs not yet in DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import write_report  # noqa: E402
from experiments.evaluate import EvalPoint, plan_eval, run_eval  # noqa: E402
from agents.deploy import write_capacity_reader  # noqa: E402
from agents.common.checkpoint import load_checkpoint  # noqa: E402
from simulator.policies import ORACLES  # noqa: E402
from simulator.config import load_config  # noqa: E402

LOCAL = ("ecmp", "wcmp", "lsq", "sed", "lsq2", "sed2")  #: decide from what the LB itself sees
HEURISTICS = (*LOCAL, "awcmp")  #: awcmp also probes the servers' busy workers
FLOOR_LOAD = 0.02


def _ints(text: str) -> list[int]:
    if "-" in text and "," not in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


def _git_commit() -> str | None:
    """HEAD of the checkout the benchmark runs from (provenance of learning.json)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _relabel(point: EvalPoint, label: str) -> EvalPoint:
    return EvalPoint(label, point.load, point.seed, point.cfg)


def _evaluate(points: list[EvalPoint], out: Path, args: argparse.Namespace) -> pd.DataFrame:
    """run_eval's runs table; with --reuse-eval, OUT's runs.csv if it already holds every point."""
    done = out / "runs.csv"
    if args.reuse_eval and done.exists():
        runs = pd.read_csv(done)
        planned = {p.dirname for p in points}
        if planned <= set(runs["dir"]):
            print(f"[learning] reusing {done}", flush=True)
            return runs[runs["dir"].isin(planned)]
    return run_eval(points, out, progress=False, workers=args.workers)[0]


def best_snapshots(curve_runs: pd.DataFrame, training: dict[str, dict]) -> dict[str, str]:
    """Per algorithm, the snapshot with the lowest mean JCT over the validation runs (label
    ``<algo>@ep<N>``): ``{"<algo>_best": path}``."""
    chosen = {}
    for algo, t in training.items():
        mine = curve_runs[curve_runs["label"].str.startswith(f"{algo}@")]
        if mine.empty:
            continue
        label = mine.groupby("label")["jct_mean_s"].mean().idxmin()
        chosen[f"{algo}_best"] = str(Path(t["run_dir"]) / "snapshots" / f"{label.split('@', 1)[1]}.pt")
    return chosen


def capacity_readers(checkpoints: dict[str, Path]) -> dict[str, str]:
    """``{"<algo>_reader": path}`` for the checkpoints whose actions follow a capacity head, each
    reader written next to its checkpoint."""
    readers = {}
    for algo, ckpt in checkpoints.items():
        if load_checkpoint(ckpt)["config"].get("capacity_action"):
            readers[f"{algo}_reader"] = str(write_capacity_reader(ckpt, ckpt.with_name("capacity_reader.pt")))
    return readers


def train_all(args: argparse.Namespace, out: Path) -> dict[str, dict]:
    """Run `marllb train` per algorithm (in parallel processes with --parallel); returns per algo
    its run directory, wall seconds and episodes trained."""
    procs: dict[str, tuple[subprocess.Popen, float, Path]] = {}
    info: dict[str, dict] = {}
    for algo in args.algos:
        run_dir = out / f"train_{algo}"
        cmd = [sys.executable, "-m", "experiments.cli", "train", str(args.config), "--algo", algo,
               "--episodes", "100000", "--seed", str(args.train_seed), "--reward", args.reward,
               "--load-range", args.train_loads, "--time-budget-min", str(args.budget_min),
               "--snapshot-every", str(args.snapshot_every), "--torch-threads", "1",
               "--action-scale", args.action_scale, "--features", args.features, "--out", str(run_dir),
               "--no-progress", "--workers", str(args.train_workers)]
        cmd += [x for hp in args.hp for x in ("--hp", hp)]
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        print(f"[learning] training {algo}: {' '.join(cmd[2:])}", flush=True)
        with open(out / f"train_{algo}.log", "w") as log_file:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env=env)
        procs[algo] = (proc, time.perf_counter(), run_dir)
        if not args.parallel:
            _wait(algo, procs[algo], info)
    for algo, entry in procs.items():
        if algo not in info:
            _wait(algo, entry, info)
    return info


def _wait(algo: str, entry: tuple[subprocess.Popen, float, Path], info: dict[str, dict]) -> None:
    proc, t0, run_dir = entry
    if proc.wait() != 0:
        raise SystemExit(f"[learning] training {algo} failed (exit {proc.returncode}); "
                         f"see {run_dir.parent / f'train_{algo}.log'}")
    info[algo] = {"run_dir": str(run_dir), "wall_s": time.perf_counter() - t0}
    print(f"[learning] {algo} trained in {info[algo]['wall_s'] / 60:.1f} min", flush=True)


def wall_times(elapsed_s: float, earlier: dict | None = None) -> dict:
    """learning.json's wall times: this invocation's, or for a --skip-train re-evaluation
    (``earlier``: the learning.json it reuses) the first invocation's, training included, kept
    as ``bench_wall_s`` next to the re-evaluation's own."""
    if earlier is None:
        return {"bench_wall_s": elapsed_s}
    return {"bench_wall_s": earlier.get("bench_wall_s"), "reeval_wall_s": elapsed_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "experiments/configs/train_moderate.yaml")
    ap.add_argument("--algos", type=lambda s: s.split(","), default=["qmix", "isac"])
    ap.add_argument("--budget-min", type=float, default=30.0, help="training wall budget per algorithm")
    ap.add_argument("--parallel", action="store_true", help="train the algorithms at the same time")
    ap.add_argument("--reward", default="product")
    ap.add_argument("--action-scale", default="absolute", choices=("absolute", "relative"))
    ap.add_argument("--features", default="paper", choices=("paper", "robust"), help="the agents' feature set")
    ap.add_argument("--heuristics", type=lambda s: s.split(","), default=list(HEURISTICS),
                    help="heuristics of the test (default all)")
    ap.add_argument("--oracles", type=lambda s: s.split(","), default=list(ORACLES),
                    help="oracles of the test (default all)")
    ap.add_argument("--hp", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--train-loads", default="0.7,0.97", help="LO,HI of the per-episode load draw")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--snapshot-every", type=int, default=25)
    ap.add_argument("--loads", type=lambda s: [float(x) for x in s.split(",")], default=[0.75, 0.85, 0.95])
    ap.add_argument("--seeds", type=_ints, default=_ints("1000-1009"), help="test seeds, e.g. 1000-1009")
    ap.add_argument("--val-seeds", type=_ints, default=[900, 901], help="learning-curve seeds")
    ap.add_argument("--workers", type=int, default=2, help="eval processes")
    ap.add_argument("--train-workers", type=int, default=0,
                    help="rollout processes of each training (0: in the training process); the "
                         "same seed gives the same agent with any number. Helps only where "
                         "collecting episodes, not the updates, takes the time (not so for "
                         "I-SAC on a 2-core machine: its updates take most of it)")
    ap.add_argument("--skip-train", action="store_true", help="use OUT/train_<algo>/ as they are")
    ap.add_argument("--reuse-eval", action="store_true",
                    help="keep OUT's finished evaluation tables when they hold every planned run")
    ap.add_argument("--report-only", action="store_true",
                    help="redo tables and plots from OUT's finished runs (no simulation)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/out/learning")
    args = ap.parse_args()

    out = args.out
    if args.report_only:
        meta = json.loads((out / "learning.json").read_text())
        keep = ("comparison", "paired", "targets", "floor_jct_mean_s", "headroom_vs_best_local")
        meta = {k: v for k, v in meta.items() if k not in keep}
        runs = {part: pd.read_csv(out / part / "runs.csv") for part in ("test", "curve", "floor")}
        for part in ("selected", "readers"):
            if meta.get(part):
                runs["test"] = pd.concat([runs["test"], pd.read_csv(out / part / "runs.csv")], ignore_index=True)
        print(write_report(out, meta, runs["test"], runs["curve"], runs["floor"]))
        return
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config)
    t_start = time.perf_counter()
    earlier = json.loads((out / "learning.json").read_text()) \
        if args.skip_train and (out / "learning.json").exists() else {}
    if args.skip_train:  # keep what an earlier invocation measured of the trainings
        training = {a: earlier.get("training", {}).get(a, {"run_dir": str(out / f"train_{a}"), "wall_s": None})
                    for a in args.algos}
    else:
        training = train_all(args, out)
    checkpoints = {a: Path(t["run_dir"]) / "last.pt" for a, t in training.items()}

    # learning curve: greedy snapshots at the middle load, validation seeds
    mid_load = sorted(args.loads)[len(args.loads) // 2]
    curve_points = plan_eval(cfg, ["sed", "lsq", "gsed", "sed_true"], [], args.val_seeds, [mid_load])
    for algo, t in training.items():
        snaps = sorted((Path(t["run_dir"]) / "snapshots").glob("ep*.pt"))
        if snaps:
            curve_points += [_relabel(p, f"{algo}@{Path(p.cfg.policy.checkpoint).stem}")
                             for p in plan_eval(cfg, [], [str(s) for s in snaps], args.val_seeds, [mid_load])]
    print(f"[learning] learning curve: {len(curve_points)} runs", flush=True)
    curve_runs = _evaluate(curve_points, out / "curve", args)
    selected = best_snapshots(curve_runs, training)

    # test: heuristics, oracles and the final agents on held-out seeds
    test_points = plan_eval(cfg, [*args.heuristics, *args.oracles], [str(c) for c in checkpoints.values()],
                            args.seeds, args.loads)
    labels = {str(c): a for a, c in checkpoints.items()}
    test_points = [_relabel(p, labels.get(str(p.cfg.policy.checkpoint), p.label)) for p in test_points]
    floor_points = plan_eval(cfg, ["sed"], [], args.seeds[:3], [FLOOR_LOAD])
    print(f"[learning] test: {len(test_points)} runs (+{len(floor_points)} floor runs)", flush=True)
    test_runs = _evaluate(test_points, out / "test", args)
    floor_runs = _evaluate(floor_points, out / "floor", args)
    if selected:
        sel_points = [_relabel(p, label) for label, ckpt in selected.items()
                      for p in plan_eval(cfg, [], [ckpt], args.seeds, args.loads)]
        print(f"[learning] selected snapshots: {selected}; {len(sel_points)} runs", flush=True)
        test_runs = pd.concat([test_runs, _evaluate(sel_points, out / "selected", args)], ignore_index=True)
    readers = capacity_readers(checkpoints)
    if readers:
        reader_points = [_relabel(p, label) for label, ckpt in readers.items()
                         for p in plan_eval(cfg, [], [ckpt], args.seeds, args.loads)]
        print(f"[learning] capacity readers: {list(readers)}; {len(reader_points)} runs", flush=True)
        test_runs = pd.concat([test_runs, _evaluate(reader_points, out / "readers", args)], ignore_index=True)

    meta = {"config": str(args.config), "algos": args.algos, "budget_min": args.budget_min,
            "parallel": args.parallel, "train_workers": args.train_workers, "reward": args.reward, "hp": args.hp,
            "action_scale": args.action_scale, "features": args.features, "heuristics": args.heuristics,
            "train_loads": args.train_loads, "train_seed": args.train_seed, "loads": args.loads,
            "seeds": args.seeds, "val_seeds": args.val_seeds, "curve_load": mid_load,
            "training": training, "selected": selected, "readers": readers, "local_heuristics": list(LOCAL),
            "oracles": list(args.oracles), "python": platform.python_version(), "cpus": os.cpu_count(),
            "commit": _git_commit(),
            "trained_at_commit": earlier.get("trained_at_commit", earlier.get("commit")) if args.skip_train else None,
            **wall_times(time.perf_counter() - t_start, earlier if args.skip_train else None)}
    summary = write_report(out, meta, test_runs, curve_runs, floor_runs)
    print(summary)


if __name__ == "__main__":
    main()
