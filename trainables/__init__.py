"""What one trial does: data sets, models, the training loop and the Tune trainable.

Usable without the search (`hpsearch train`); never imports `search`. The names below
load on first use (PEP 562): `trainables.metrics` or `trainables.errors` alone stay light.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "DATASETS": "trainables.data", "DataBundle": "trainables.data", "Split": "trainables.data",
    "create_dataset": "trainables.data", "register_dataset": "trainables.data",
    "DivergedError": "trainables.errors", "UserError": "trainables.errors",
    "MODELS": "trainables.models", "create_model": "trainables.models", "list_models": "trainables.models",
    "register_model": "trainables.models",
    "RunSettings": "trainables.train", "Trainer": "trainables.train", "fit": "trainables.train",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'trainables' has no attribute {name!r}")
