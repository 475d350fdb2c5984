"""The finish phase of ASHA with promotions: the last part of a time budget goes to the best configurations.

With a time budget, the search must end with a model trained to `max_t`, and ASHA alone would
spend the whole budget on rungs. So the finish phase starts when the time left is what the best
paused or running trials need to train to the end (their measured round times, x FINISH_SAFETY,
plus RESUME_SECONDS for the restart), but never before FINISH_EARLIEST of the budget has gone;
those finalists (as many as workers) get the workers first and run to `max_t`:
- the first finalist is the best candidate: the most advanced (highest rung), then the best score;
- a finalist after the first must also be able to finish in the time left, and rank in the top
  1/reduction_factor of its rung (or have been promoted out of it): a weak configuration is not
  trained to the end for being fast (benchmarks/README.md#anytime, section 1);
- a worker the finalists do not need goes on with promotions that can reach their next rung before
  the deadline, then new configurations, until the clock ends the search.
Before the finish phase, a promotion that alone would take more than 1/reduction_factor of the
rungs' worker time (the time before the finish phase) waits (`affordable`): training a
configuration nearly to the end is the finish phase's job, and those rounds buy more configurations
at the first rungs (benchmarks/README.md#anytime).
A search without a time budget that has run out of new configurations trains its best trial to the
end if none got there.

Plain logic on the rungs (search.schedulers.rungs) and each trial's progress and pace: no Ray, no
clock (the scheduler passes the seconds elapsed).
"""
from __future__ import annotations

import logging
from typing import Any

from search.schedulers.rungs import Rungs
from trainables import metrics as M

log = logging.getLogger(__name__)

FINISH_SAFETY = 1.25  # the finish phase starts when the time left is 1.25 x the finalists' measured need
RESUME_SECONDS = 5.0  # a finalist's restart from its checkpoint and its last save, on top of its rounds
FINISH_EARLIEST = 0.5  # ... but never before half the time budget has gone (else a search would only finish)


class Progress:
    """Per trial: the last round it reported and its pace (mean wall seconds of its rounds), and the trials that
    reached max_t (saved with the rungs); which trials this driver added and which just (re)started (not saved)."""

    def __init__(self) -> None:
        self.rounds: dict[str, int] = {}  # trial -> last round reported (a trial that ended has none)
        self.seconds: dict[str, float] = {}  # trial -> mean wall seconds of its rounds
        self.completed: list[str] = []  # trials that reached max_t
        self.known: set[str] = set()  # trials Tune added in this driver (a killed driver's unsaved ones are not)
        self.fresh: set[str] = set()  # trials whose next report is the first since they (re)started

    def add(self, trial_id: str) -> None:
        self.known.add(trial_id)
        self.fresh.add(trial_id)

    def restart(self, trial_id: str) -> None:
        """A trial (re)starts: its next report's time includes the start-up."""
        self.fresh.add(trial_id)

    def note(self, trial_id: str, round: int, result: dict[str, Any]) -> None:
        """A report of round `round`: where the trial is, and its pace (a first report after a (re)start also timed
        the start-up: its training seconds count only if the trial has no pace yet)."""
        seconds = result.get("time_this_iter_s", result.get(M.ROUND_SECONDS))  # wall time between reports
        if trial_id in self.fresh:
            self.fresh.discard(trial_id)
            seconds = result.get(M.ROUND_SECONDS, seconds) if trial_id not in self.seconds else None
        if isinstance(seconds, (int, float)) and seconds > 0:
            previous = self.seconds.get(trial_id)
            self.seconds[trial_id] = float(seconds) if previous is None else 0.7 * previous + 0.3 * float(seconds)
        self.rounds[trial_id] = round

    def end(self, trial_id: str, *, completed: bool) -> None:
        """A trial ended (max_t, stopped, failed, diverged): no longer anywhere."""
        self.rounds.pop(trial_id, None)
        if completed and trial_id not in self.completed:
            self.completed.append(trial_id)

    def need(self, trial_id: str, max_t: int) -> float:
        """Seconds a trial needs to reach max_t from where it is, at its pace, with its restart."""
        return (max_t - self.rounds[trial_id]) * self.seconds.get(trial_id, 0.0) + RESUME_SECONDS


class FinishPhase:
    """Whether the finish phase runs, and its finalists (see the module docstring)."""

    def __init__(self, rungs: Rungs, progress: Progress, *, time_budget_s: float | None, max_concurrent: int) -> None:
        self.rungs, self.progress = rungs, progress
        self.time_budget_s, self.max_concurrent = time_budget_s, int(max_concurrent)
        self.finishing = False
        self.finalists: list[str] = []

    def candidates(self) -> list[str]:
        """Trials that could still be trained to max_t, most advanced and best first."""
        max_t, progress = self.rungs.max_t, self.progress
        return self.rungs.best_first((t, r) for t, r in progress.rounds.items()
                                     if r < max_t and t not in progress.completed and t in progress.known)

    def due(self, elapsed: float | None) -> tuple[str, float] | None:
        """(why, seconds left) if the finish phase should start now, `elapsed` seconds into the search: the time left
        is what the best candidate needs (x FINISH_SAFETY), and FINISH_EARLIEST of the budget has gone."""
        if self.finishing or self.time_budget_s is None or elapsed is None:
            return None
        if elapsed < FINISH_EARLIEST * self.time_budget_s:
            return None
        candidates = self.candidates()
        if not candidates:
            return None
        left, need = self.time_budget_s - elapsed, self.progress.need(candidates[0], self.rungs.max_t)
        if left > FINISH_SAFETY * need:
            return None
        return f"{left:.0f} s left, the best candidate needs ~{need:.0f} s", left

    def start(self, why: str, left: float | None = None) -> list[str]:
        """Freeze the finalists: the best candidate, and the next best (up to max_concurrent) that can still finish
        and rank in their rung's top 1/reduction_factor. `left` None: no time budget, the searcher has run out of
        configurations; the best candidate is trained to the end if no trial got there."""
        self.finishing = True
        candidates = self.candidates()
        if left is None:
            self.finalists = [] if self.progress.completed else candidates[:1]
        else:
            further = [t for t in candidates[1:] if FINISH_SAFETY * self.progress.need(t, self.rungs.max_t) <= left
                       and self.rungs.in_rung_top(t, self.progress.rounds.get(t, 0))]
            self.finalists = candidates[:1] + further[: self.max_concurrent - 1]
        log.info("finish phase (%s): finalists %s", why, self.finalists)
        return self.finalists

    def waiting(self, paused_at: dict[str, int]) -> list[str]:
        """Finalists waiting at a rung for a worker."""
        return [t for t in self.finalists if t in paused_at]

    def affordable(self, trial_id: str, level: int, elapsed: float | None) -> bool:
        """May a trial be promoted out of rung `level` now? Always without a time budget. With one: before the
        finish phase, unless the promotion (to the next rung, or max_t) would take more than 1/reduction_factor
        of the rungs' worker time at the trial's measured pace (the rungs get what the finish phase leaves: at
        least FINISH_EARLIEST of the budget, as search.rounds plans it); in the finish phase, if it reaches its
        next rung before the time budget ends."""
        pace = self.progress.seconds.get(trial_id)
        if self.time_budget_s is None or not pace:
            return True
        rounds = self.rungs.next_level(level) - level
        if self.finishing:  # a promotion the clock would cut before its next rung tells nothing: a new configuration does
            return elapsed is None or rounds * pace <= self.time_budget_s - elapsed
        rungs_seconds = max(FINISH_EARLIEST * self.time_budget_s, self.time_budget_s - self.rungs.max_t * pace) * self.max_concurrent
        return rounds * pace <= rungs_seconds / self.rungs.reduction_factor
