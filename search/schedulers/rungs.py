"""ASHA's rungs: which trials reached which rung, with which score, and which of them may train further.

ASHA (Li et al., "A System for Massively Parallel Hyperparameter Tuning", MLSys 2020) trains every
configuration to the first rung (the grace period), and a trial at rung k goes on to rung k + 1 only if
it ranks in the top 1/reduction_factor of the results rung k has seen: a rung of n results lets
floor(n / rf) through. This module is that bookkeeping and nothing else (no Ray, no clock): the
schedulers of this package (ASHA with promotions, the stopping `asha-stop`) decide with it.

A rung compares `rank_score`: the metric, its ties broken by the val loss.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, Callable

from trainables import metrics as M

TIE_BREAKERS = {M.VAL_ACC: M.VAL_LOSS, M.VAL_TOP5: M.VAL_LOSS}  # a counted metric -> a continuous one to order its ties
TIE_WEIGHT = 1e-6  # x loss / (1 + loss) < 1e-6: below one image of any val split up to 100,000 images
MODES = ("max", "min")


def rung_levels(grace: int, reduction_factor: float, max_t: int, *,
                rounding: Callable[[float], int] = round) -> tuple[int, ...]:
    """The rounds at which a trial meets a rung: grace x rf^k below max_t (ASHA's milestones), rounded to the
    nearest round (ASHA with promotions) or by `rounding` (Ray's ASHA: the first round at or past it, a ceiling)."""
    levels, k = [], 0
    while True:
        level = int(rounding(grace * reduction_factor ** k))
        if level >= max_t:
            return tuple(levels)
        if not levels or level > levels[-1]:
            levels.append(level)
        k += 1


def rank_score(result: dict[str, Any], metric: str, mode: str) -> float | None:
    """The value a rung compares: `metric`, with ties broken by the tie-breaker metric (lower loss ranks higher).

    Accuracy on a few hundred val images takes a few dozen values, so trials can tie exactly at a
    rung's cutoff. The val loss orders those ties without changing any ranking that accuracy decides.
    """
    value = result.get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    breaker = result.get(TIE_BREAKERS.get(metric, ""))
    if not math.isfinite(value) or not isinstance(breaker, (int, float)) or not math.isfinite(breaker):
        return float(value)
    sign = -1.0 if mode == "max" else 1.0  # lower loss is better: in max mode subtract it
    breaker = max(float(breaker), 0.0)
    return float(value) + sign * TIE_WEIGHT * breaker / (1.0 + breaker)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be 'max' or 'min', but got {mode=!r}")
    return mode


class Rungs:
    """Per rung (a round in `levels`): trial -> score recorded there, in arrival order, and the trials promoted out
    of it. `rungs[level]` is a rung's {trial: score}. A missing or non-finite score ranks last."""

    def __init__(self, levels: Sequence[int], *, reduction_factor: float, mode: str, max_t: int) -> None:
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, but got {reduction_factor=}")
        self.levels = tuple(int(level) for level in levels)
        self.reduction_factor, self.mode, self.max_t = float(reduction_factor), check_mode(mode), int(max_t)
        self.scores: dict[int, dict[str, float]] = {level: {} for level in self.levels}
        self.promoted: dict[int, list[str]] = {level: [] for level in self.levels}

    def __contains__(self, level: object) -> bool:
        return level in self.scores

    def __getitem__(self, level: int) -> dict[str, float]:
        return self.scores[level]

    @property
    def worst(self) -> float:
        return -math.inf if self.mode == "max" else math.inf

    def record(self, trial_id: str, level: int, score: float | None) -> None:
        """A trial's score at rung `level` (a trial recorded again keeps its place in the arrival order)."""
        valid = score is not None and math.isfinite(score)
        self.scores[level][trial_id] = float(score) if valid else self.worst

    def warm(self, scores: dict[str, dict[int, float]]) -> None:
        """Earlier searches' results at these rungs, by trial ids no trial of this search has: they rank in their
        rungs (a new trial is promoted only by beating them) and are never promoted themselves."""
        for trial_id, by_level in scores.items():
            for level, score in by_level.items():
                if level in self.scores and score is not None and math.isfinite(score):
                    self.scores[level].setdefault(trial_id, float(score))

    # -- ranking -----------------------------------------------------------------------------
    def ranked(self, level: int) -> list[str]:
        """Trials of a rung, best first (ties: the earlier arrival first)."""
        rung = self.scores[level]
        order = {t: i for i, t in enumerate(rung)}
        sign = -1.0 if self.mode == "max" else 1.0
        return sorted(rung, key=lambda t: (sign * rung[t], order[t]))

    def rank(self, trial_id: str, level: int) -> int:
        """A trial's place in its rung (0: the best), -1 if it has no result there."""
        return self.ranked(level).index(trial_id) if trial_id in self.scores.get(level, {}) else -1

    def size(self, level: int) -> int:
        return len(self.scores.get(level, {}))

    def top(self, level: int) -> list[str]:
        """Trials of rung `level` in its top floor(n / rf), best first (ASHA's bar for more training)."""
        return self.ranked(level)[: int(len(self.scores[level]) // self.reduction_factor)]

    def promotable(self, level: int) -> list[str]:
        """Trials of rung `level` in its top floor(n / rf) that were not promoted yet, best first."""
        done = set(self.promoted[level])
        return [t for t in self.top(level) if t not in done]

    def latest(self, level: int, window: int) -> list[float]:
        """The scores of a rung's latest `window` results (0: all of them), oldest first."""
        scores = list(self.scores[level].values())
        return scores[-window:] if window else scores

    # -- promotions --------------------------------------------------------------------------
    def promote(self, trial_id: str, level: int) -> None:
        if level in self.promoted:
            self.promoted[level].append(trial_id)

    def unpromote(self, trial_id: str, level: int) -> None:
        if trial_id in self.promoted.get(level, []):
            self.promoted[level].remove(trial_id)

    def was_promoted(self, trial_id: str, level: int) -> bool:
        return trial_id in self.promoted.get(level, [])

    def next_level(self, level: int) -> int:
        """Where a promotion out of round `level` ends: the next rung above it, else max_t."""
        return next((lv for lv in self.levels if lv > level), self.max_t)

    # -- a trial's standing ------------------------------------------------------------------
    def highest_rung(self, trial_id: str, up_to_round: int) -> int | None:
        """The highest rung a trial has a result at, up to round `up_to_round` (None: none yet)."""
        return max((lv for lv in self.levels if lv <= up_to_round and trial_id in self.scores[lv]), default=None)

    def in_rung_top(self, trial_id: str, up_to_round: int) -> bool:
        """Whether a trial ranks in the top 1/reduction_factor of the highest rung it reported at (up to
        `up_to_round`), or was promoted out of it."""
        level = self.highest_rung(trial_id, up_to_round)
        if level is None:
            return False
        return trial_id in self.top(level) or trial_id in self.promoted[level]

    def best_first(self, trials: Iterable[tuple[str, int]]) -> list[str]:
        """(trial, round reached) pairs with a result at a rung: the most advanced first (highest rung), then by score."""
        sign = -1.0 if self.mode == "max" else 1.0
        out = []
        for trial_id, reached in trials:
            level = self.highest_rung(trial_id, reached)
            if level is not None:
                out.append((-level, sign * self.scores[level][trial_id], trial_id))
        return [t for _, _, t in sorted(out)]
