"""One root seed feeds everything: python `random`, numpy, torch, and per-episode seeds.

Per-episode seeds are derived with `numpy.random.SeedSequence(root, spawn_key=(index,))`, so episode `i`
gets the same seed no matter which worker collects it or in which order.
"""

from __future__ import annotations

import random

import numpy as np

__all__ = ["seed_everything", "episode_seed"]


def seed_everything(seed: int) -> np.random.Generator:
    """Seed `random`, numpy's legacy global RNG and torch (if importable); return a fresh Generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a declared extra
        pass
    return np.random.default_rng(seed)


def episode_seed(root_seed: int, index: int) -> int:
    """Seed of training episode `index` (0-based) under `root_seed`; a 31-bit non-negative int."""
    ss = np.random.SeedSequence(root_seed, spawn_key=(index,))
    return int(ss.generate_state(1, dtype=np.uint32)[0] >> 1)
