"""Checkpoint files: plain tensors and containers only, loaded with `weights_only=True`.

A checkpoint holds what resuming and exporting need: model and optimizer
state, the round reached, the full hyperparameters, the model name and its
data shape args, class names and normalisation, and the metrics of that round.
Nothing in it needs unpickling of arbitrary objects.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from trainables.errors import UserError
from trainables.files import CHECKPOINT_FILE, write_atomic

FORMAT = "hpsearch-checkpoint/1"
FILENAME = CHECKPOINT_FILE


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` atomically (a crash never leaves half a file) and return the path."""
    path = Path(path)
    if path.is_dir() or not path.suffix:  # a folder (existing or not) gets checkpoint.pt inside
        path = path / FILENAME
    return write_atomic(path, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint file (or a directory holding `checkpoint.pt`) safely onto the CPU."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt or foreign file
        raise UserError(f"{path} is not a readable hpsearch checkpoint ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not an hpsearch checkpoint (no format {FORMAT!r})")
    return state
