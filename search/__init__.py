"""The orchestrator: specs, the Ray Tune search, MLflow tracking, results and export.

    from search import run_search
    result = run_search("spaces/quickstart.yaml", samples=8)
    print(result.best.config, result.best.best_value)

The names below load on first use (PEP 562), so a light submodule such as
`search.tracking.writer` (the MLflow writer process) does not pull in Ray and torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SearchSpec": "search.spec", "load_spec": "search.spec",
    "SearchResult": "search.tuner", "resume_search": "search.tuner", "run_search": "search.tuner",
    "Components": "search.tuner", "run_experiment": "search.tuner", "FinalReport": "search.finalize",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'search' has no attribute {name!r}")
