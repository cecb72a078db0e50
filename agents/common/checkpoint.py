"""Checkpoint files: one torch file holding the algorithm name, its config, the env signature,
module/optimizer state dicts and a small training state.

Files are loaded with ``torch.load(weights_only=True)``: only tensors and plain Python containers are
stored, never pickled objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from simulator.config import UserError

from .spaces import EnvSignature

__all__ = ["FORMAT_VERSION", "save_checkpoint", "load_checkpoint"]

FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, *, algo: str, config: dict[str, Any], signature: EnvSignature,
                    state: dict[str, Any]) -> None:
    """Atomically write a checkpoint (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": FORMAT_VERSION, "algo": algo, "config": config,
               "signature": signature.to_dict(), "state": state}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path, expected: EnvSignature | None = None,
                    algo: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; check its algorithm and (if given) that it fits the env signature `expected`.

    Raises `UserError` for a missing/unreadable file or wrong algorithm and `SignatureMismatchError`
    for another topology."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any decode failure is a user-facing bad file
        raise UserError(f"checkpoint {path} is not a readable marllb checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise UserError(f"checkpoint {path}: unknown format (expected version {FORMAT_VERSION})")
    if algo is not None and payload["algo"] != algo:
        raise UserError(f"checkpoint {path} holds a {payload['algo']!r} agent, not {algo!r}")
    payload["signature"] = EnvSignature.from_dict(payload["signature"])
    if expected is not None:
        payload["signature"].check_compatible(expected, what=f"checkpoint {path.name}")
    return payload
