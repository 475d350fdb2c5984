"""`asha-stop`: ASHA's stopping variant (Ray Tune's `ASHAScheduler`, hpsearch's scheduler before issue 13).

A trial that reaches a rung goes on if its `rank_score` (ties broken) is at or above the rung's cutoff,
else it stops there; nothing pauses, nothing is resumed. The cutoff is Ray's: the (1 - 1/rf) quantile
of the rung's results (numpy's linear percentile), so the first trial at a rung, which has no rivals
yet, goes on. Unlike Ray's, the cutoff is taken over the rung's latest `asha_window(rf)` results only:
Ray's ASHA ranks a trial against *every* result its rung has seen, and TPE proposes better
configurations as it learns, so late trials beat most early ones; ranking against the rung's recent
results keeps the rate closer to 1/reduction_factor (benchmarks/README.md#search_efficiency). The
rungs are Ray's milestones: the first round at or past grace x rf^k.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler

from search.schedulers.rungs import Rungs, check_mode, rank_score, rung_levels
from trainables import metrics as M

RECENT_PER_REDUCTION = 2  # a rung ranks a trial against its last 2 x reduction_factor results (asha_window)


def asha_window(reduction_factor: float) -> int:
    """How many of a rung's latest results a trial is ranked against: RECENT_PER_REDUCTION x reduction_factor."""
    return max(2, math.ceil(RECENT_PER_REDUCTION * reduction_factor))


class AshaStop(FIFOScheduler):
    """Stopping ASHA on the `round` counter (see the module docstring). `window` is how many of a rung's latest
    results a trial is ranked against (default `asha_window(reduction_factor)`; 0 = all of them, as Ray does)."""

    def __init__(self, metric: str, mode: str, *, max_t: int, grace: int, reduction_factor: float,
                 window: int | None = None, time_attr: str = M.ROUND) -> None:
        super().__init__()
        if window is not None and window < 0:
            raise ValueError(f"window must be >= 0 (0: all of a rung's results), but got {window=}")
        self._metric, self._mode, self.time_attr = metric, check_mode(mode), time_attr
        self.max_t, self.grace, self.reduction_factor = int(max_t), int(grace), float(reduction_factor)
        self.window = asha_window(reduction_factor) if window is None else int(window)
        self.levels = rung_levels(self.grace, self.reduction_factor, self.max_t, rounding=math.ceil)
        self.rungs = Rungs(self.levels, reduction_factor=self.reduction_factor, mode=mode, max_t=self.max_t)
        self.num_stopped = 0

    @property
    def metric(self) -> str:  # what Tune checks every result carries
        return self._metric

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return metric in (None, self._metric) and mode in (None, self._mode)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        score = rank_score(result, self._metric, self._mode)
        if self.time_attr not in result or score is None:
            return self.CONTINUE
        t = int(result[self.time_attr])
        if t >= self.max_t:
            self.num_stopped += 1
            return self.STOP
        level = self._rung(trial.trial_id, t)
        if level is None or not math.isfinite(score):
            return self.CONTINUE  # past its rungs, or a value no cutoff can rank (Ray's lets NaN through too)
        cutoff = self.cutoff(level)
        self.rungs.record(trial.trial_id, level, score)
        if cutoff is not None and self._oriented(score) < cutoff:
            self.num_stopped += 1
            return self.STOP
        return self.CONTINUE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        """A last result at a rung the trial has no result at yet ranks there (as Ray's ASHA records it)."""
        score = rank_score(result or {}, self._metric, self._mode)
        if self.time_attr not in (result or {}) or score is None or not math.isfinite(score):
            return
        level = self._rung(trial.trial_id, int(result[self.time_attr]))
        if level is not None:
            self.rungs.record(trial.trial_id, level, score)

    def _oriented(self, score: float) -> float:
        """Higher is better, as Ray's ASHA compares rewards (its metric_op: +1 for max, -1 for min)."""
        return score if self._mode == "max" else -score

    def _rung(self, trial_id: str, t: int) -> int | None:
        """Where a report of round `t` is ranked: the highest rung at or below it the trial has no result at
        (Ray's bracket walks its milestones from the top the same way)."""
        return next((lv for lv in reversed(self.levels) if lv <= t and trial_id not in self.rungs[lv]), None)

    def cutoff(self, level: int) -> float | None:
        """The (1 - 1/rf) quantile of the rung's latest `window` results (higher is better), None if it has none."""
        recent = [self._oriented(s) for s in self.rungs.latest(level, self.window)]
        return float(np.percentile(recent, (1 - 1 / self.reduction_factor) * 100)) if recent else None

    def debug_string(self) -> str:
        cutoffs = ", ".join(f"{lv}: {self.cutoff(lv)}" for lv in self.levels)
        return f"stopping ASHA: {self.num_stopped} stopped, cutoffs {{{cutoffs}}}"
