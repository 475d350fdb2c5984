"""Trial schedulers: ASHA with promotions (the default, `asha`), its reproducible form, and the stopping `asha-stop`.

    rungs.py          the rung system: rung levels, rank scores, who ranks where, who may go on (no Ray)
    finish.py         the finish phase of a time budget: when it starts, its finalists, affordable promotions (no Ray)
    state.py          the saved state (asha_rungs.state): what it holds, saving, loading, `end_pauses`
    decisions.py      `Decision` (what happened to a trial) and `Admission` (may a new configuration start)
    promotion.py      `PromotionASHA`: the Ray Tune scheduler composing the above, deciding in arrival order
    virtual_clock.py  `VirtualClock`, and `ReproducibleASHA`: PromotionASHA deciding on a virtual clock
    asha_stop.py      `AshaStop`: the stopping variant on the same rungs
    simulator.py      a stand-in for Tune's controller and a loop replaying results through a scheduler
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray.tune.schedulers import FIFOScheduler

from search.schedulers.asha_stop import AshaStop
from search.schedulers.decisions import Admission, Decision
from search.schedulers.finish import FINISH_EARLIEST
from search.schedulers.promotion import PromotionASHA
from search.schedulers.rungs import rank_score, rung_levels
from search.schedulers.state import end_pauses, load_state
from search.schedulers.virtual_clock import ReproducibleASHA

if TYPE_CHECKING:
    from search.spec import SearchSpec

__all__ = ["FINISH_EARLIEST", "Admission", "AshaStop", "Decision", "PromotionASHA", "ReproducibleASHA", "build_scheduler",
           "end_pauses", "load_state", "rank_score", "rung_levels"]


def build_scheduler(spec: SearchSpec, n_train: int, *, state_dir: Path | str | None = None) -> Any:
    """The spec's trial scheduler: ASHA with promotions (asha; reproducible unless `budget.reproducible: false`),
    the stopping ASHA (asha-stop) or FIFO (fifo, or a spec with nothing to search). `state_dir`: the search's
    location (a folder or a URI), where ASHA with promotions saves its state."""
    from search import rounds as B  # search.rounds plans with this package's rungs: imported when used, not in a cycle

    rounds = B.plan(spec, n_train)
    kind = spec.budget.scheduler
    if kind == "fifo" or not spec.space:
        return FIFOScheduler()
    if kind == "asha-stop":
        return AshaStop(spec.metric, spec.mode, max_t=rounds.total, grace=rounds.grace,
                        reduction_factor=spec.budget.reduction_factor)
    options = dict(max_t=rounds.total, grace=rounds.grace, reduction_factor=spec.budget.reduction_factor,
                   max_concurrent=spec.budget.max_concurrent, time_budget_s=spec.budget.time_budget_s, state_dir=state_dir)
    if spec.budget.reproducible:
        return ReproducibleASHA(spec.metric, spec.mode, samples=spec.budget.samples, **options)
    return PromotionASHA(spec.metric, spec.mode, **options)
