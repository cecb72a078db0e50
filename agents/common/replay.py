"""Episode replay: whole episodes are stored and sampled, so recurrent agents train on sequences.

Shape legend: T = steps in an episode, N = agents (LBs), O = observation size, S = state size,
H = action heads (servers), B = episodes in a batch, Tm = longest episode in a batch.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Episode", "EpisodeBatch", "EpisodeReplayBuffer"]


@dataclass
class Episode:
    """One multi-agent episode of T steps.

    obs_TNO: observations at steps 0..T (T+1 rows; row T is the observation after the last action).
    state_TS: global state at steps 0..T.
    actions_TNH: weight levels chosen at steps 0..T-1 (int64).
    rewards_TN: reward each agent received for step t.
    terminated: the episode ended in a true terminal state (no bootstrap); False for a time limit.
    seed: the seed the episode was collected with (env reset and exploration).
    capacity_TH: each server's true capacity / nominal cores after step t (the env's privileged
    ``capacity`` info, aligned with obs rows 1..T), a target for auxiliary losses; None if absent.
    """

    obs_TNO: np.ndarray
    state_TS: np.ndarray
    actions_TNH: np.ndarray
    rewards_TN: np.ndarray
    terminated: bool
    seed: int = -1
    info: dict[str, Any] = field(default_factory=dict)
    capacity_TH: np.ndarray | None = None

    @property
    def length(self) -> int:
        return int(self.actions_TNH.shape[0])

    def total_reward(self) -> float:
        """Sum over steps of the mean over agents of the reward."""
        return float(self.rewards_TN.mean(axis=1).sum())


@dataclass
class EpisodeBatch:
    """B episodes padded to the longest length Tm (numpy arrays).

    obs_BTNO and state_BTS have Tm+1 rows; padded rows repeat zeros.  mask_BT is 1.0 for real steps.
    terminated_BT is 1.0 only at the last real step of a truly terminated episode.
    """

    obs_BTNO: np.ndarray
    state_BTS: np.ndarray
    actions_BTNH: np.ndarray
    rewards_BTN: np.ndarray
    terminated_BT: np.ndarray
    mask_BT: np.ndarray
    capacity_BTH: np.ndarray | None = None  # None unless every episode has capacity_TH

    @classmethod
    def from_episodes(cls, episodes: list[Episode]) -> "EpisodeBatch":
        B = len(episodes)
        Tm = max(e.length for e in episodes)
        _, N, O = episodes[0].obs_TNO.shape
        S = episodes[0].state_TS.shape[1]
        H = episodes[0].actions_TNH.shape[2]
        obs = np.zeros((B, Tm + 1, N, O), np.float32)
        state = np.zeros((B, Tm + 1, S), np.float32)
        act = np.zeros((B, Tm, N, H), np.int64)
        rew = np.zeros((B, Tm, N), np.float32)
        term = np.zeros((B, Tm), np.float32)
        mask = np.zeros((B, Tm), np.float32)
        for b, e in enumerate(episodes):
            T = e.length
            obs[b, : T + 1] = e.obs_TNO
            state[b, : T + 1] = e.state_TS
            act[b, :T] = e.actions_TNH
            rew[b, :T] = e.rewards_TN
            mask[b, :T] = 1.0
            if e.terminated and T > 0:
                term[b, T - 1] = 1.0
        cap = None
        if all(e.capacity_TH is not None for e in episodes):
            cap = np.zeros((B, Tm, H), np.float32)
            for b, e in enumerate(episodes):
                cap[b, : e.length] = e.capacity_TH
        return cls(obs, state, act, rew, term, mask, cap)


class EpisodeReplayBuffer:
    """FIFO store of at most `capacity` episodes; uniform sampling without replacement.

    Sampling uses the numpy Generator given at construction, so a seeded buffer returns the same
    batches for the same insertion sequence.
    """

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self.rng = rng
        self._episodes: deque[Episode] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._episodes)

    def add(self, episode: Episode) -> None:
        """Append an episode, evicting the oldest when full."""
        self._episodes.append(episode)

    def sample(self, batch_size: int) -> EpisodeBatch:
        """B = min(batch_size, len) distinct episodes, padded into an `EpisodeBatch`."""
        n = len(self._episodes)
        if n == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = self.rng.choice(n, size=min(batch_size, n), replace=False)
        return EpisodeBatch.from_episodes([self._episodes[i] for i in sorted(idx)])

    # -- persistence (for resume) -------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write all episodes and the sampling RNG state to one .npz file."""
        arrays: dict[str, np.ndarray] = {}
        for i, e in enumerate(self._episodes):
            arrays[f"{i}/obs"] = e.obs_TNO
            arrays[f"{i}/state"] = e.state_TS
            arrays[f"{i}/actions"] = e.actions_TNH
            arrays[f"{i}/rewards"] = e.rewards_TN
            arrays[f"{i}/meta"] = np.asarray([int(e.terminated), e.seed], np.int64)
            if e.capacity_TH is not None:
                arrays[f"{i}/capacity"] = e.capacity_TH
        import json

        arrays["rng_state"] = np.frombuffer(json.dumps(self.rng.bit_generator.state).encode(), np.uint8)
        arrays["n"] = np.asarray([len(self._episodes), self.capacity], np.int64)
        with open(path, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "EpisodeReplayBuffer":
        """Inverse of `save`: same episodes, same capacity, same RNG state."""
        import json

        with np.load(path) as z:
            n, capacity = (int(x) for x in z["n"])
            rng = np.random.default_rng()
            rng.bit_generator.state = json.loads(bytes(z["rng_state"]).decode())
            buf = cls(capacity, rng)
            for i in range(n):
                term, seed = (int(x) for x in z[f"{i}/meta"])
                cap = z[f"{i}/capacity"] if f"{i}/capacity" in z.files else None
                buf.add(Episode(z[f"{i}/obs"], z[f"{i}/state"], z[f"{i}/actions"], z[f"{i}/rewards"],
                                bool(term), seed, capacity_TH=cap))
        return buf
