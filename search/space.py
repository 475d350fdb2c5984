"""A spec's search space as an Optuna define-by-run function (conditional parameters only when active)."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Iterator

from search.spec import Param


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines ("A new study created in memory ...") off while the block runs, its level restored after:
    hpsearch makes studies for its own bookkeeping, and a library call must not change the process's logging."""
    logger = logging.getLogger("optuna")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


class DefineByRun:
    """Samples a spec's space with Optuna's trial API; conditional parameters only when active.

    A class (not a closure) so Tune can pickle it with the searcher state.
    """

    def __init__(self, space: tuple[Param, ...], baseline: dict[str, Any]) -> None:
        self.space, self.baseline = space, baseline

    def __call__(self, trial: Any) -> None:
        current = dict(self.baseline)
        for p in self.space:
            if not p.active(current):
                continue
            if p.kind == "choice":
                value = trial.suggest_categorical(p.name, list(p.choices))
            elif p.kind == "int":
                value = trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
            else:
                value = trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
            current[p.name] = value
        return None



def distributions(space: tuple[Param, ...]) -> dict[str, Any]:
    """Optuna distributions of a spec's searched parameters (what DefineByRun suggests from)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = CategoricalDistribution(list(p.choices))
        elif p.kind == "int":
            out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            out[p.name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out
