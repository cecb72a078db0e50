"""The search for the highest offered load a data plane carries with loss at or below a target:
NDR (loss 0) and PDR (loss <= 0.5 %) in one search, after FD.io CSIT's MLRsearch (RFC 9971):

* **all targets from one trial sequence**: every trial's loss ratio is classified against every
  target, so the trials the NDR search makes also narrow the PDR interval and vice versa;
* **short trials first**: a first phase with ``initial_trial_s`` trials finds each target's
  interval to the resolution; the final phase re-measures with ``trial_s`` trials, starting
  from the first phase's bounds and widening them (doubling the step) when a longer trial
  disagrees. Only final-duration trials define the result;
* **resolution** is relative: a target is done when its lower bound (passed) and upper bound
  (failed) differ by at most ``resolution`` x the upper bound, or the lower bound is
  ``max_load`` (the data plane carried the most we can offer), or the upper bound is
  ``min_load`` (it failed even at the least);
* **latency stop rule**: a trial whose p99 latency exceeds ``latency_bound_us`` counts as failed
  for every target, which ends the search upwards there;
* loss = sent - received, where "sent" is what the generator really put on the wire (packets it
  failed to send are not lost ones), and the load that matters is the one offered
  (``Trial.offered_pps``), not the one aimed at: a trial's bound sits at its offered load. A
  trial that passed although the generator offered clearly less than asked (by more than half
  the resolution) ends that target: its result is the generator's limit
  (``TargetResult.generator_limited``), not the data plane's.

A :class:`Measurer` runs one trial: ``measure(load_pps, duration_s) -> Trial``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol

__all__ = ["Target", "Trial", "Measurer", "TargetResult", "SearchResult", "search", "DEFAULT_TARGETS"]


@dataclass(frozen=True)
class Target:
    name: str
    loss_ratio: float  # the highest loss ratio that passes


DEFAULT_TARGETS = (Target("NDR", 0.0), Target("PDR", 0.005))


@dataclass
class Trial:
    load_pps: float  # what the search asked for
    duration_s: float
    sent: int  # what the generator put on the wire
    received: int  # what reached the far side
    offered_pps: float = 0.0  # sent / the trial's real duration
    p99_us: float | None = None
    extra: dict = field(default_factory=dict)  # anything the measurer adds (counters, CPU, ...)

    @property
    def lost(self) -> int:
        return max(0, self.sent - self.received)

    @property
    def loss_ratio(self) -> float:
        return self.lost / self.sent if self.sent else 1.0

    def to_dict(self) -> dict:
        return asdict(self) | {"lost": self.lost, "loss_ratio": self.loss_ratio}


class Measurer(Protocol):
    def measure(self, load_pps: float, duration_s: float) -> Trial: ...


@dataclass
class TargetResult:
    target: Target
    lower_pps: float | None  # highest load that passed a final trial (None: not even min_load)
    upper_pps: float | None  # lowest load that failed a final trial (None: max_load passed)
    lower_trial: Trial | None = None  # the final trial at lower_pps (its offered rate, counters)
    generator_limited: bool = False  # the generator could not offer more than lower_pps

    @property
    def rate_pps(self) -> float | None:
        """The conservative answer: the lower bound's offered rate."""
        if self.lower_trial is None:
            return None
        return self.lower_trial.offered_pps or self.lower_pps


@dataclass
class SearchResult:
    targets: list[TargetResult]
    trials: list[Trial]
    resolution: float
    latency_bound_us: float | None

    def by_name(self, name: str) -> TargetResult:
        return next(t for t in self.targets if t.target.name == name)


class _Bounds:
    """One target's interval during one phase."""

    def __init__(self, target: Target, step: float):
        self.target = target
        self.lo: float | None = None  # passed
        self.hi: float | None = None  # failed
        self.lo_trial: Trial | None = None
        self.hi_trial: Trial | None = None
        self.step = step  # relative width of the next expansion
        self.gen_limited = False

    def state(self) -> tuple:
        return self.lo, self.hi, self.step, self.gen_limited


def search(measurer: Measurer, *, min_load: float, max_load: float,
           targets: tuple[Target, ...] = DEFAULT_TARGETS, resolution: float = 0.02,
           trial_s: float = 2.0, initial_trial_s: float | None = 0.5,
           latency_bound_us: float | None = None, max_trials: int = 60,
           on_trial: Callable[[Trial, int], None] | None = None) -> SearchResult:
    """Search every target's highest passing load in [min_load, max_load] (packets/s) to the
    relative ``resolution``. ``initial_trial_s`` None or >= trial_s skips the short phase.
    ``on_trial(trial, n)`` is called after each trial (progress). Stops after ``max_trials``
    (the result then says which targets are not narrowed)."""
    if not 0 < min_load < max_load:
        raise ValueError(f"need 0 < min_load < max_load, got {min_load}, {max_load}")
    if not 0 < resolution < 1:
        raise ValueError(f"resolution is relative, in (0, 1): got {resolution}")
    trials: list[Trial] = []

    def passes(t: Trial, tg: Target) -> bool:
        if latency_bound_us is not None and t.p99_us is not None and t.p99_us > latency_bound_us:
            return False
        return t.loss_ratio <= tg.loss_ratio

    phases = [trial_s] if initial_trial_s is None or initial_trial_s >= trial_s else [initial_trial_s, trial_s]
    hints: list[tuple[float | None, float | None]] = [(None, None)] * len(targets)
    final: list[_Bounds] = []
    for duration in phases:
        bounds = [_Bounds(tg, resolution) for tg in targets]
        cache: dict[float, Trial] = {}

        def next_load(b: _Bounds, hint: tuple[float | None, float | None]) -> float | None:
            lo, hi = b.lo, b.hi
            if b.gen_limited:
                return None
            if lo is None and hi is None:
                return hint[0] if hint[0] is not None else (hint[1] if hint[1] is not None else max_load)
            if lo is None:  # only failed so far: step down, doubling the step, or straight to
                if hi <= min_load:  # the rate the failed trial got through, if lower
                    return None
                t = b.hi_trial
                got = t.received / t.duration_s if t is not None and t.duration_s > 0 else hi
                return max(min_load, min(hi * (1 - b.step), got))
            if hi is None:  # only passed so far: step up
                if lo >= max_load:
                    return None
                if hint[1] is not None and hint[1] > lo and b.step == resolution:
                    return min(max_load, hint[1])
                return min(max_load, lo * (1 + b.step))
            if hi - lo <= resolution * hi:
                return None
            # bisect, but when the failed bound is far above the passed one (a first trial at
            # max_load, a guess from a received rate), creep up from the passed bound with a
            # doubling step first: the answer is usually just above it
            return min((lo + hi) / 2, lo * (1 + b.step))

        while len(trials) < max_trials:
            todo = [(b, next_load(b, h)) for b, h in zip(bounds, hints)]
            todo = [(b, x) for b, x in todo if x is not None]
            if not todo:
                break
            b, load = todo[0]  # targets in order (NDR first): later ones reuse its trials
            load = round(load, 3)
            t = cache.get(load)
            before = [bb.state() for bb in bounds] if t is not None else None
            if t is None:
                t = measurer.measure(load, duration)
                cache[load] = t
                trials.append(t)
                if on_trial:
                    on_trial(t, len(trials))
            at = min(load, t.offered_pps) if t.offered_pps > 0 else load
            short_of = at < load * (1 - resolution / 2)
            for bb in bounds:
                ok = passes(t, bb.target)
                if ok and short_of and (bb.hi is None or at < bb.hi):
                    bb.lo, bb.lo_trial, bb.gen_limited = at, t, True
                elif ok and (bb.lo is None or at > bb.lo) and (bb.hi is None or at < bb.hi):
                    widened = bb.lo is not None
                    bb.lo, bb.lo_trial = at, t
                    if widened:
                        bb.step *= 2
                elif not ok and (bb.hi is None or at < bb.hi):
                    widened = bb.hi is not None and bb.lo is None
                    bb.hi, bb.hi_trial = at, t
                    if widened:
                        bb.step *= 2
                if bb.lo is not None and bb.hi is not None and bb.lo >= bb.hi:
                    # a noisy measurement: a higher load passed after a lower one failed;
                    # keep the failure (conservative) and search below it again
                    bb.lo, bb.lo_trial = None, None
            if before is not None and before == [bb.state() for bb in bounds]:
                break  # a repeated load that moved no bound (after a noisy reset): stop, not spin
        hints = [(b.lo, b.hi) for b in bounds]
        final = bounds
    return SearchResult(
        targets=[TargetResult(b.target, b.lo, b.hi, b.lo_trial, b.gen_limited) for b in final],
        trials=trials, resolution=resolution, latency_bound_us=latency_bound_us)


def trials_bound(min_load: float, max_load: float, resolution: float, n_targets: int) -> int:
    """An upper bound on a phase's trials when loss grows with load: per target, bisection of
    [min_load, max_load] to the relative resolution, plus the first trial and one expansion."""
    per = math.ceil(math.log2(max_load / (resolution * min_load))) + 2
    return n_targets * per
