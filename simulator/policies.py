"""Load-balancing policies (controllers) on top of the data-plane core.

Each policy names the core policy the LBs run, the static weights given to the core, and may
set weights every step or force the server of a new flow (oracles, simulator only).

===========  =====================================================================================
policy       rule
===========  =====================================================================================
ecmp         core ECMP: hash of the 5-tuple into equal buckets; all weights 1
wcmp         core WCMP: weighted random (alias table) with static weights w_i = cores_i
awcmp        core WCMP, weights from probes: every ``probe_interval_s`` each server's busy
             workers b_i are read; the answer arrives after a delay U(lo, hi)
             (``probe_delay_s``) and sets w_i = cores_i / (b_i + 1); the vector (normalised
             to sum 1) is written to every LB
lsq          core LSQ: argmin over servers of the LB's local n_flow_on (ties at random)
sed          core SED: argmin (n_flow_on + 1) / w_i with static w_i = cores_i
lsq2, sed2   LSQ / SED between two distinct random servers (power of two choices)
gsq          oracle: argmin of the true number of requests at the server (in service + waiting,
             all LBs together), ties at random
gsed         oracle: argmin (n_i + 1) / c_i on the true counts n_i, ties at random
srt          oracle: argmin of true remaining CPU work per core, sum(remaining work) / c_i
             (oracles use the true capacity c_i = cores_i minus co-located background load)
sed_true     oracle reference: core SED with static weights = the servers' effective capacities
             under their hidden effects (the best static weights)
sed_now      oracle reference: core SED on each LB's own counts, its weights set every step to
             the servers' true capacities c_i at that moment (0 while failed): what an agent
             that drives SED's weights, as ours do, could reach knowing every hidden effect,
             background burst and event as it happens
agent        a learned policy: its controller (agents.sim_controller, built by experiments.runs)
             is passed in as build_simulation(controller=...); the simulator never imports
             agents, so make_policy refuses the name
===========  =====================================================================================

Oracles force the choice through the core's forced-server argument, so the core still tracks
the flow and its features exactly as for any other policy. Failed servers are skipped by oracles
(they read true state); core policies do not know about failures (no health checks).
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Sequence

import numpy as np

from simulator.config import PolicyConfig, UserError

__all__ = ["StaticPolicy", "AwcmpPolicy", "OraclePolicy", "CapacityWeightsPolicy", "make_policy", "CORE_POLICY",
           "ORACLES"]

AGENT_NEEDS_CONTROLLER = (
    "policy 'agent' runs a checkpoint through agents.sim_controller.CheckpointController, which the "
    "simulator does not import: use `marllb sim run` / experiments.runs.run_one, or pass "
    "controller=CheckpointController(cfg) to simulator.run.run_experiment")

#: policies that read what a load balancer cannot know (true server state, hidden effects):
#: references for the simulator, never run in a real data plane, not "heuristics" in comparisons
ORACLES = ("gsq", "gsed", "srt", "sed_true", "sed_now")

# sed_true: SED whose static weights are the servers' true effective capacities (an oracle
# reference: build_simulation passes simulator.run.effective_capacities as its cores)
CORE_POLICY = {"ecmp": "ecmp", "wcmp": "wcmp", "awcmp": "wcmp", "lsq": "lsq", "sed": "sed",
               "lsq2": "lsq2", "sed2": "sed2", "gsq": "ecmp", "gsed": "ecmp", "srt": "ecmp", "sed_true": "sed",
               "sed_now": "sed"}


class StaticPolicy:
    """A core policy with static weights (ecmp: all 1; others: cores)."""

    reads_features = False  # on_step ignores its features and returns None (see Controller)

    def __init__(self, name: str) -> None:
        self.name = name
        self.core_policy = CORE_POLICY[name]

    def static_weights(self, cores: Sequence[float]) -> list[float]:
        if self.core_policy == "ecmp":
            return [1.0] * len(cores)
        return [float(c) for c in cores]

    def start(self, sim: Any) -> None:
        return None

    def force(self, now_s: float, lb: int) -> int:
        return -1

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> Sequence[float] | None:
        return None


class AwcmpPolicy(StaticPolicy):
    """Active WCMP: periodic probes of busy workers, w_i = cores_i / (busy_i + 1)."""

    def __init__(self, cfg: PolicyConfig, rng: random.Random) -> None:
        super().__init__("awcmp")
        self.interval_s = cfg.probe_interval_s
        self.lo, self.hi = cfg.probe_delay_s
        if not 0 <= self.lo <= self.hi:
            raise UserError(f"policy.probe_delay_s must be 0 <= lo <= hi, got {cfg.probe_delay_s}")
        self.rng = rng
        self.sim: Any = None
        self.w: list[float] = []

    def start(self, sim: Any) -> None:
        self.sim = sim
        self.w = [s.cores for s in sim.servers]
        sim.schedule(0.0, self._probe_all, None)

    def _probe_all(self, _: Any) -> None:
        sim = self.sim
        now = sim.now()
        for i, srv in enumerate(sim.servers):
            answer = (i, srv.cores / (srv.busy_workers() + 1))
            sim.schedule(now + self.rng.uniform(self.lo, self.hi), self._answer, answer)
        sim.schedule(now + self.interval_s, self._probe_all, None)

    def _answer(self, answer: tuple[int, float]) -> None:
        i, w = answer
        self.w[i] = w
        total = sum(self.w)
        norm = [x / total for x in self.w]
        for lb in self.sim.lbs:
            lb.dp.set_weights(norm)


class OraclePolicy(StaticPolicy):
    """gsq / gsed / srt: force the new-flow choice from true server state."""

    def __init__(self, name: str, rng: random.Random) -> None:
        super().__init__(name)
        self.rng = rng
        self.sim: Any = None

    def start(self, sim: Any) -> None:
        self.sim = sim

    def force(self, now_s: float, lb: int) -> int:
        best = float("inf")
        cands: list[int] = []
        name = self.name
        for i, srv in enumerate(self.sim.servers):
            if srv.failed:
                continue
            if name == "gsq":
                score = float(srv.n_requests())
            elif name == "gsed":
                score = (srv.n_requests() + 1) / srv.capacity
            else:
                score = srv.remaining_work_s(now_s) / srv.capacity
            if score < best:
                best = score
                cands = [i]
            elif score == best:
                cands.append(i)
        if not cands:
            return -1
        return cands[0] if len(cands) == 1 else cands[self.rng.randrange(len(cands))]


class CapacityWeightsPolicy(StaticPolicy):
    """sed_now: every step, each LB's SED weights become the servers' true capacities.

    With ``known`` (server indices), only those servers' weights follow their true capacity;
    the others keep ``sed_true``'s static weights (their effective capacities without
    background or events): which hidden change an oracle's gain comes from
    (bench/learning/oracle_parts.py). ``known=None`` is every server, i.e. sed_now.

    With ``lag_s`` > 0 the weights set at a step are those that were true at the last step at
    least ``lag_s`` earlier (``sed_true``'s before the first such step): what an estimator that
    reads every change exactly but that late could reach."""

    reads_features = True  # so that on_step runs every step (it ignores the features)

    def __init__(self, known: Sequence[int] | None = None, lag_s: float = 0.0) -> None:
        super().__init__("sed_now")
        if not lag_s >= 0.0:
            raise UserError(f"lag_s {lag_s}: must be >= 0 seconds")
        self.sim: Any = None
        self.known = None if known is None else sorted(set(int(i) for i in known))
        self.lag_s = float(lag_s)
        self.static: list[float] = []
        self._past: deque[tuple[float, list[float]]] = deque()  # (step time, true weights), oldest first

    def start(self, sim: Any) -> None:
        from simulator.run import effective_capacities  # run imports this module

        self.sim = sim
        n = len(sim.servers)
        if self.known is not None and any(not 0 <= i < n for i in self.known):
            raise UserError(f"known servers {self.known}: this topology has servers 0..{n - 1}")
        self.static = effective_capacities(sim.cfg, [srv.cores for srv in sim.servers])

    def _true_weights(self) -> list[float]:
        servers = self.sim.servers
        if self.known is None:
            return [0.0 if srv.failed else srv.capacity for srv in servers]
        w = list(self.static)
        for i in self.known:
            w[i] = 0.0 if servers[i].failed else servers[i].capacity
        return w

    def on_step(self, now_s: float, lb: int, features: dict[str, np.ndarray]) -> Sequence[float] | None:
        if not self.lag_s:
            return self._true_weights()
        past = self._past
        if not past or past[-1][0] < now_s:  # once per step, whichever LB asks first
            past.append((now_s, self._true_weights()))
        due = now_s - self.lag_s + 1e-9  # a step exactly lag_s ago counts despite rounding
        while len(past) > 1 and past[1][0] <= due:
            past.popleft()
        return list(past[0][1]) if past[0][0] <= due else list(self.static)


def make_policy(cfg: PolicyConfig, rng: random.Random) -> StaticPolicy:
    """The controller for ``cfg.name``; UserError for names that cannot run."""
    name = cfg.name
    if name == "agent":
        raise UserError(AGENT_NEEDS_CONTROLLER)
    if name == "awcmp":
        return AwcmpPolicy(cfg, rng)
    if name in ("gsq", "gsed", "srt"):
        return OraclePolicy(name, rng)
    if name == "sed_now":
        return CapacityWeightsPolicy()
    if name in CORE_POLICY:
        return StaticPolicy(name)
    raise UserError(f"unknown policy {name!r}; known: {', '.join(sorted(CORE_POLICY))}, agent")
