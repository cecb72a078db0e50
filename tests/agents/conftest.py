"""Fixtures for the agent tests: toy envs live next to the tests (tests/agents/toy_lb_env.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(1)
