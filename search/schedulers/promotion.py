"""ASHA with promotions (the default `budget.scheduler: asha`), on Ray Tune's public scheduler interface.

`PromotionASHA` is Algorithm 2 of the ASHA paper (Li et al., MLSys 2020), as Syne Tune's
`type="promotion"` runs it:
- a trial that reaches a rung *pauses* there (its checkpoint is the one it just reported);
- whenever a worker is free (`choose_trial_to_run`), a paused trial in the top
  1/reduction_factor of its rung's results is resumed, highest rung first; otherwise a new
  configuration starts (Tune starts the searcher's pending trial);
- no trial goes past a rung for being first: a rung of n results promotes floor(n / rf).
Ray's stopping ASHA lets the first trial to reach each rung through for lack of rivals, so
with two workers the budget went to whatever the sampler proposed first (issue 13).
Paused trials left at the end are stopped: pruned at their rung.

This class is the adapter between Tune and three plain parts: the rungs (search.schedulers.rungs),
the finish phase with a time budget (search.schedulers.finish: when it starts, its finalists, which
promotions are affordable) and the saved state (search.schedulers.state, written after every hook that
changed it, so a resumed search pauses its trials again). Decisions follow the order results arrive
in, unless a virtual clock decides (search.schedulers.virtual_clock, `ReproducibleASHA`).
"""
from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Any, Callable

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler

from search.schedulers.decisions import Admission, Decision
from search.schedulers.finish import FinishPhase, Progress
from search.schedulers.rungs import Rungs, check_mode, rank_score, rung_levels
from search.schedulers.state import StateFile
from trainables import metrics as M

if TYPE_CHECKING:
    from search.schedulers.virtual_clock import VirtualClock


def _saving(hook: Callable[..., Any]) -> Callable[..., Any]:
    """A call from Tune (or the searcher's admission question): the saved state is read first (once), and written
    after it if it changed."""

    @functools.wraps(hook)
    def run(self: PromotionASHA, *args: Any, **kwargs: Any) -> Any:
        self.state_file.load(self)
        try:
            return hook(self, *args, **kwargs)
        finally:
            self.state_file.save(self)

    return run


class PromotionASHA(FIFOScheduler):
    """ASHA that pauses trials at rungs and promotes the top 1/reduction_factor (see the module docstring).

    `state_dir` is the search folder, or the URI of a search stored on one. `on_decision(decision, trial_id, round)`
    hears each `Decision` (tests, the simulator's counts). `clock` is injectable so the simulator can run the same
    object on a virtual clock.
    """

    def __init__(self, metric: str, mode: str, *, max_t: int, grace: int, reduction_factor: float,
                 max_concurrent: int, time_budget_s: float | None = None, state_dir: str | os.PathLike | None = None,
                 time_attr: str = M.ROUND, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._metric, self._mode = metric, check_mode(mode)
        self.max_t, self.grace, self.reduction_factor = int(max_t), int(grace), float(reduction_factor)
        self.max_concurrent, self.time_budget_s, self.time_attr = int(max_concurrent), time_budget_s, time_attr
        self.levels = rung_levels(self.grace, self.reduction_factor, self.max_t)
        self.rungs = Rungs(self.levels, reduction_factor=self.reduction_factor, mode=mode, max_t=self.max_t)
        self.progress = Progress()
        self.finish = FinishPhase(self.rungs, self.progress, time_budget_s=time_budget_s, max_concurrent=self.max_concurrent)
        self.state_file = StateFile(state_dir)
        self.clock = clock
        self.paused_at: dict[str, int] = {}  # trial -> the round it waits at (a rung, or where a finalist cut it)
        self.stopped: list[str] = []  # paused trials ended at their rung when the search ran out of work
        self.to_end: list[str] = []  # restored trials a killed driver had ended at their rung, for Tune to end again
        self.resumed: list[tuple[str, int, int, int]] = []  # (trial, rung, its rank there, rung size) of each resume
        self.started_at: float | None = None
        self.on_decision: Callable[[Decision, str, int], None] | None = None
        self.virtual_clock: VirtualClock | None = None  # while it decides, it does (ReproducibleASHA)
        self.restored = False  # the rungs came from a killed driver's saved state (a resumed search)
        self._controller: Any = None

    # Tune pickles the scheduler into tuner.pkl before the search: plain data only.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_controller=None, on_decision=None, clock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.clock = time.monotonic

    @property
    def metric(self) -> str:
        return self._metric

    @property
    def state_dir(self) -> str | None:
        """Where the search lives (a path or a URI): its state file is there, or in the URI's local mirror."""
        return self.state_file.location

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return metric in (None, self._metric) and mode in (None, self._mode)

    # -- Tune hooks -------------------------------------------------------------------------
    @_saving
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._controller = tune_controller or self._controller
        if self.started_at is None:
            self.started_at = self.clock()
        self.progress.add(trial.trial_id)
        # Tune restores paused trials as PENDING; a trial still waiting at its rung stays paused (add_trial
        # files the trial under the status it has after this hook). One whose pause Tune's saved state
        # missed (the driver died in between) goes back to its last saved round and meets the rung again.
        if trial.trial_id in self.stopped and trial.status == Trial.PENDING:
            # the killed driver ended it at its rung after Tune last saved it: it stays ended (choose_trial_to_run)
            trial.set_status(Trial.PAUSED)
            self.paused_at.pop(trial.trial_id, None)
            self.to_end.append(trial.trial_id)
        elif trial.trial_id in self.paused_at and trial.status == Trial.PENDING:
            restored = int((trial.last_result or {}).get(self.time_attr, 0))
            if restored >= self.paused_at[trial.trial_id]:
                trial.set_status(Trial.PAUSED)
            else:
                del self.paused_at[trial.trial_id]
                self.progress.rounds[trial.trial_id] = restored
        if self.virtual():
            self.virtual_clock.on_add(trial.trial_id)

    @_saving
    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._controller = tune_controller or self._controller
        virtual = self.virtual()
        if self.time_attr not in result:
            return self.CONTINUE
        trial_id, t = trial.trial_id, int(result[self.time_attr])
        self.progress.note(trial_id, t, result)
        self.paused_at.pop(trial_id, None)
        ends_itself = t >= self.max_t or result.get(M.STATUS) == M.STATUS_DIVERGED  # the trainable ends the trial
        if virtual:
            self._maybe_finish()
            if self.virtual():
                return self.virtual_clock.on_result(trial_id, t, result, ends_itself=ends_itself)
        return self.CONTINUE if ends_itself else self._decide(trial_id, t, result)

    def _decide(self, trial_id: str, t: int, result: dict[str, Any]) -> str:
        """Pause, promote or let a trial go on after its report of round `t` (< max_t), in arrival order."""
        self._maybe_finish()
        if t in self.rungs:
            self.rungs.record(trial_id, t, self.score(result))
        if self.finish.finishing and trial_id not in self.finish.finalists and self.finish.waiting(self.paused_at):
            return self.pause(trial_id, t, Decision.CUT)  # its worker goes to a finalist
        if t not in self.rungs or (self.finish.finishing and trial_id in self.finish.finalists):
            return self.CONTINUE  # between rungs, or a finalist going on to max_t
        if self.rungs.was_promoted(trial_id, t):  # promoted before a restart sent it back below this rung
            return self.CONTINUE
        if trial_id in self.rungs.promotable(t) and self.affordable(trial_id, t):
            self.rungs.promote(trial_id, t)
            self.tell(Decision.PROMOTED, trial_id, t)
            return self.CONTINUE
        return self.pause(trial_id, t, Decision.PAUSED)

    @_saving
    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._end(trial, result, error=False)

    @_saving
    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        if self.virtual() and self.virtual_clock.recovers(trial):
            return  # Tune restarts it from its last checkpoint (a lost node): the same job, its end still to come
        self._end(trial, None, error=True)

    @_saving
    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._end(trial, None, error=False)

    def _end(self, trial: Any, result: dict[str, Any] | None, *, error: bool) -> None:
        if not (self.virtual() and self.virtual_clock.on_end(trial, result, error=error)):
            self.forget(trial.trial_id, result)

    @_saving
    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """A paused trial to resume (promotable, or a finalist), else the next pending trial, else None."""
        self._controller = tune_controller
        for trial in [t for t in tune_controller.get_trials() if t.trial_id in self.to_end and t.status == Trial.PAUSED]:
            self.to_end.remove(trial.trial_id)
            tune_controller.stop_trial(trial)
        if self.virtual():
            self._maybe_finish()
            if self.virtual():
                return self.virtual_clock.choose(tune_controller)
        trials = tune_controller.get_trials()
        by_id = {t.trial_id: t for t in trials}
        running = sum(t.status == Trial.RUNNING for t in trials)
        pending = [t for t in trials if t.status == Trial.PENDING]
        self._maybe_finish()
        if running < self.max_concurrent:
            for trial_id in self.promotions():
                trial = by_id.get(trial_id)
                if trial is not None and trial.status == Trial.PAUSED:
                    finalist = self.finish.finishing and trial_id in self.finish.finalists
                    self.progress.restart(trial_id)
                    level = self.take_from_rung(trial_id, finalist=finalist)
                    self.tell(Decision.FINALIST if finalist else Decision.PROMOTED, trial_id, level)
                    return trial
        if pending:
            return pending[0]
        search_alg = getattr(tune_controller, "search_alg", None)
        if running == 0 and (search_alg is None or search_alg.is_finished()):  # no new configurations
            if not self.finish.finishing:
                self._start_finish(why="no new configurations")
                return None  # the next call resumes the finalist
            for trial in trials:  # the search is over: trials still waiting at a rung end there
                if trial.status == Trial.PAUSED and trial.trial_id not in self.finish.finalists:
                    self.stop_at_rung(tune_controller, trial)
        return None

    @_saving
    def admission(self) -> Admission:
        """May the searcher start a new configuration: YES, or WAIT (max_concurrent trials run or wait to run, or a
        finalist waits for a worker). In the finish phase a worker the finalists do not need goes on with ASHA's
        work (promotions, then new configurations) until the clock ends the search."""
        if self.virtual():
            return self.virtual_clock.admission()
        if self.finish.finishing and self.finish.waiting(self.paused_at):
            return Admission.WAIT
        if self._controller is None:
            return Admission.YES
        busy = sum(t.status in (Trial.RUNNING, Trial.PENDING) for t in self._controller.get_trials())
        return Admission.YES if busy < self.max_concurrent else Admission.WAIT

    # -- what the virtual clock shares --------------------------------------------------------
    def virtual(self) -> bool:
        """Whether a virtual clock decides (else this class does, in the order results arrive)."""
        return self.virtual_clock is not None and self.virtual_clock.active()

    def score(self, result: dict[str, Any]) -> float | None:
        return rank_score(result, self._metric, self._mode)

    def pause(self, trial_id: str, t: int, why: Decision) -> str:
        self.paused_at[trial_id] = t
        self.tell(why, trial_id, t)
        return self.PAUSE

    def promotions(self) -> list[str]:
        """Paused trials to resume, in order: finalists waiting for a worker, then ASHA's promotions."""
        order = self.finish.waiting(self.paused_at) if self.finish.finishing else []
        for level in reversed(self.levels):  # the highest rung first (ASHA's get_job)
            order += [t for t in self.rungs.promotable(level) if self.paused_at.get(t) == level and self.affordable(t, level)]
        return order

    def take_from_rung(self, trial_id: str, *, finalist: bool) -> int:
        """A paused trial is given its next run: no longer waiting, its rank in its rung recorded, promoted out of it
        (unless it is a finalist); the round it waited at."""
        level = self.paused_at.pop(trial_id)
        self.resumed.append((trial_id, level, self.rungs.rank(trial_id, level), self.rungs.size(level)))
        if not finalist:
            self.rungs.promote(trial_id, level)
        return level

    def stop_at_rung(self, tune_controller: Any, trial: Any) -> None:
        """End a paused trial where it waits (the search has no more work for it)."""
        self.tell(Decision.STOPPED, trial.trial_id, self.paused_at.get(trial.trial_id, 0))
        self.stopped.append(trial.trial_id)
        self.state_file.save(self)  # before Tune ends it
        tune_controller.stop_trial(trial)

    def forget(self, trial_id: str, result: dict[str, Any] | None) -> None:
        """A trial ended (max_t, stopped, failed, diverged): no longer a candidate for promotion or the finish."""
        self.paused_at.pop(trial_id, None)
        self.progress.end(trial_id, completed=bool(result) and int(result.get(self.time_attr, 0)) >= self.max_t)

    def affordable(self, trial_id: str, level: int) -> bool:
        """May a trial be promoted out of rung `level` now (search.schedulers.finish.FinishPhase.affordable)?"""
        elapsed = None if self.started_at is None else self.clock() - self.started_at
        return self.finish.affordable(trial_id, level, elapsed)

    def _maybe_finish(self) -> None:
        """Start the finish phase once the time left is what the best candidate needs (search.schedulers.finish)."""
        due = self.finish.due(None if self.started_at is None else self.clock() - self.started_at)
        if due is not None:
            self._start_finish(*due)

    def _start_finish(self, why: str, left: float | None = None) -> None:
        if self.virtual_clock is not None and self.virtual_clock.deciding:  # the clock decides from here
            self.virtual_clock.leave(f"the finish phase started ({why})")
        for trial_id in self.finish.start(why, left):
            self.tell(Decision.FINALIST, trial_id, self.progress.rounds.get(trial_id, 0))

    def tell(self, decision: Decision, trial_id: str, t: int) -> None:
        if self.on_decision is not None:
            self.on_decision(decision, trial_id, t)

    # -- a warm start, and what Tune shows ------------------------------------------------------
    def warm(self, scores: dict[str, dict[int, float]]) -> None:
        """Earlier searches' results at this search's rungs (search.warm), by a trial id no Tune trial has: they rank
        in their rungs (a new trial is promoted only by beating them) and are never resumed."""
        self.rungs.warm(scores)
        self.state_file.save(self)

    def debug_string(self) -> str:
        sizes = ", ".join(f"{lv}: {self.rungs.size(lv)}" for lv in self.levels)
        text = f"ASHA with promotions: rungs {{{sizes}}}, {len(self.paused_at)} paused"
        return text if self.virtual_clock is None else f"{text} ({self.virtual_clock.describe()})"
