"""Trial schedulers: ASHA with promotions (the default) and Ray's stopping ASHA (`asha-stop`).

`PromotionASHA` is Algorithm 2 of the ASHA paper (Li et al., MLSys 2020), as Syne Tune's
`type="promotion"` runs it, on Ray Tune's public `TrialScheduler` interface:
- a trial that reaches a rung *pauses* there (its checkpoint is the one it just reported);
- whenever a worker is free (`choose_trial_to_run`), a paused trial in the top
  1/reduction_factor of its rung's results is resumed, highest rung first; otherwise a new
  configuration starts (Tune starts the searcher's pending trial);
- no trial goes past a rung for being first: a rung of n results promotes floor(n / rf).
Ray's stopping ASHA lets the first trial to reach each rung through for lack of rivals, so
with two workers the budget went to whatever the sampler proposed first (issue 13).

With a time budget, the last part of it goes to the best configurations reaching `max_t`
(the finish phase): when the time left is what the best paused or running trials need to
train to the end (measured round times, x FINISH_SAFETY), those finalists (as many as
workers) get the workers first and run to `max_t`. A finalist after the first must also rank in
the top 1/reduction_factor of its rung (or have been promoted out of it): a weak configuration
is not trained to the end for being fast. A worker the finalists do not need goes on with
promotions that can reach their next rung before the deadline, then new configurations, until
the clock ends the search. Before
the finish phase, a promotion that alone would take more than 1/reduction_factor of the rungs'
worker time (the time before the finish phase; `affordable`) waits: training a configuration
nearly to the end is the finish phase's job, and those rounds buy more configurations at the
first rungs (benchmarks/README.md, "anytime"). A search
without a time budget that has run out of new configurations trains its best trial to the end
if none got there. Paused trials left at the end are stopped: pruned at their rung.

Rung decisions and pauses are saved to `asha_rungs.state` in the search folder on every
change, so a resumed search (Tune restores paused trials as PENDING) pauses them again
instead of letting them train past their rung.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable

from search.storage import is_uri
from trainables import metrics as M
from trainables.files import write_atomic

log = logging.getLogger(__name__)

# JSON, but not named *.json: on resume Tune copies the search folder's *.json and *.pkl into its
# staging folder and copies them back when it ends, which would put the killed driver's rungs back.
STATE_FILE = "asha_rungs.state"
FINISH_SAFETY = 1.25  # the finish phase starts when the time left is 1.25 x the finalists' measured need
RESUME_SECONDS = 5.0  # a finalist's restart from its checkpoint and its last save, on top of its rounds
FINISH_EARLIEST = 0.5  # ... but never before half the time budget has gone (else a search would only finish)

RANK_SCORE = "hpsearch_rank_score"  # what Ray's ASHA ranks trials by (never written to result.json)
TIE_BREAKERS = {M.VAL_ACC: M.VAL_LOSS, M.VAL_TOP5: M.VAL_LOSS}  # a counted metric -> a continuous one to order its ties
RECENT_PER_REDUCTION = 2  # asha-stop: a rung ranks a trial against its last 2 x reduction_factor results (asha_window)
TIE_WEIGHT = 1e-6  # x loss / (1 + loss) < 1e-6: below one image of any val split up to 100,000 images


def rung_levels(grace: int, reduction_factor: float, max_t: int, *,
                rounding: Callable[[float], int] = round) -> tuple[int, ...]:
    """The rounds at which a trial meets a rung: grace x rf^k below max_t (ASHA's milestones), rounded to the
    nearest round (this module's schedulers) or by `rounding` (Ray's ASHA: the first round at or past it, a ceiling)."""
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


# ----------------------------------------------------------------------------------------------
# ASHA with promotions


def _base_scheduler() -> type:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler


class PromotionASHA(_base_scheduler()):  # type: ignore[misc]
    """ASHA that pauses trials at rungs and promotes the top 1/reduction_factor (see the module docstring).

    `state_dir` is the search folder, or the URI of a search stored on one. `on_decision(kind, trial_id, round)` hears "paused", "promoted", "finalist" and "stopped" (tests, the
    tracker's tags). `clock` is injectable so the simulator can run the same object on a virtual clock.
    """

    SAVED = ("rungs", "promoted", "paused_at", "progress", "round_seconds", "completed", "stopped", "resumed", "finishing",
             "finalists")  # what asha_rungs.state holds (and a resumed search reads back)

    def __init__(self, metric: str, mode: str, *, max_t: int, grace: int, reduction_factor: float,
                 max_concurrent: int, time_budget_s: float | None = None, state_dir: str | os.PathLike | None = None,
                 time_attr: str = M.ROUND, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', but got {mode=!r}")
        if reduction_factor <= 1:
            raise ValueError(f"reduction_factor must be > 1, but got {reduction_factor=}")
        self._metric, self._mode = metric, mode
        self.max_t, self.grace, self.reduction_factor = int(max_t), int(grace), float(reduction_factor)
        self.max_concurrent, self.time_budget_s, self.time_attr = int(max_concurrent), time_budget_s, time_attr
        self.levels = rung_levels(self.grace, self.reduction_factor, self.max_t)
        self.state_dir = str(state_dir) if state_dir else None
        self.clock = clock
        # rung state: per level, trial -> score recorded there, and the trials promoted out of it
        self.rungs: dict[int, dict[str, float]] = {level: {} for level in self.levels}
        self.promoted: dict[int, list[str]] = {level: [] for level in self.levels}
        self.paused_at: dict[str, int] = {}  # trial -> the rung it waits at
        self.progress: dict[str, int] = {}  # trial -> last round reported
        self.round_seconds: dict[str, float] = {}  # trial -> mean wall seconds of its rounds
        self.completed: list[str] = []  # trials that reached max_t
        self.stopped: list[str] = []  # paused trials ended at their rung when the search ran out of work
        self.resumed: list[tuple[str, int, int, int]] = []  # (trial, rung, its rank there, rung size) of each resume
        self.finishing = False
        self.finalists: list[str] = []
        self.started_at: float | None = None
        self.on_decision: Callable[[str, str, int], None] | None = None
        self._controller: Any = None
        self._loaded = False
        self.restored = False  # the rungs came from a killed driver's saved state (a resumed search)
        self._known: set[str] = set()  # trials Tune added in this driver (a killed driver's unsaved ones are not)
        self._fresh: set[str] = set()  # trials whose next report is the first since they (re)started: its time includes start-up

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

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return metric in (None, self._metric) and mode in (None, self._mode)

    # -- ranking ----------------------------------------------------------------------------
    def _better(self, a: float, b: float) -> bool:
        return a > b if self._mode == "max" else a < b

    def _ranked(self, level: int) -> list[str]:
        """Trials of a rung, best first (ties: the earlier arrival first)."""
        rung = self.rungs[level]
        order = {t: i for i, t in enumerate(rung)}
        sign = -1.0 if self._mode == "max" else 1.0
        return sorted(rung, key=lambda t: (sign * rung[t], order[t]))

    def _top(self, level: int) -> list[str]:
        """Trials of rung `level` in its top floor(n / rf), best first (ASHA's bar for more training)."""
        return self._ranked(level)[: int(len(self.rungs[level]) // self.reduction_factor)]

    def promotable(self, level: int) -> list[str]:
        """Trials of rung `level` in its top floor(n / rf) that were not promoted yet, best first."""
        done = set(self.promoted[level])
        return [t for t in self._top(level) if t not in done]

    # -- Tune hooks -------------------------------------------------------------------------
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self._controller = tune_controller or self._controller
        self._load()
        if self.started_at is None:
            self.started_at = self.clock()
        from ray.tune.experiment import Trial

        self._known.add(trial.trial_id)
        self._fresh.add(trial.trial_id)
        # Tune restores paused trials as PENDING; a trial still waiting at its rung stays paused (add_trial
        # files the trial under the status it has after this hook). One whose pause Tune's saved state
        # missed (the driver died in between) goes back to its last saved round and meets the rung again.
        if trial.trial_id in self.paused_at and trial.status == Trial.PENDING:
            restored = int((trial.last_result or {}).get(self.time_attr, 0))
            if restored >= self.paused_at[trial.trial_id]:
                trial.set_status(Trial.PAUSED)
            else:
                del self.paused_at[trial.trial_id]
                self.progress[trial.trial_id] = restored

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        self._controller = tune_controller or self._controller
        if self.time_attr not in result:
            return self.CONTINUE
        t = self._note(trial.trial_id, result)
        if t >= self.max_t or result.get(M.STATUS) == M.STATUS_DIVERGED:
            return self.CONTINUE  # the trainable ends the trial itself (max_t reached, or a non-finite loss)
        return self._decide(tune_controller, trial.trial_id, t, result)

    def _note(self, trial_id: str, result: dict[str, Any]) -> int:
        """Bookkeeping of a report (its round, the trial's measured round time); the round."""
        t = int(result[self.time_attr])
        seconds = result.get("time_this_iter_s", result.get(M.ROUND_SECONDS))  # wall time between reports
        if trial_id in self._fresh:  # the first report after a (re)start also timed the start-up
            self._fresh.discard(trial_id)
            seconds = result.get(M.ROUND_SECONDS, seconds) if trial_id not in self.round_seconds else None
        if isinstance(seconds, (int, float)) and seconds > 0:
            previous = self.round_seconds.get(trial_id)
            self.round_seconds[trial_id] = float(seconds) if previous is None else 0.7 * previous + 0.3 * float(seconds)
        self.progress[trial_id] = t
        self.paused_at.pop(trial_id, None)
        return t

    def _decide(self, tune_controller: Any, trial_id: str, t: int, result: dict[str, Any]) -> str:
        """Pause, promote or let a trial go on after its report of round `t` (< max_t)."""
        self._maybe_finish(tune_controller)
        if t in self.rungs:
            self.rungs[t][trial_id] = self._score(result)
        if self.finishing and trial_id not in self.finalists and self._finalists_waiting():
            return self._pause(trial_id, t, "cut")  # its worker goes to a finalist
        if t not in self.rungs:
            return self.CONTINUE
        if self.finishing and trial_id in self.finalists:  # a finalist goes on to max_t
            self._save()
            return self.CONTINUE
        if trial_id in self.promoted[t]:  # promoted before a restart sent it back below this rung
            return self.CONTINUE
        if trial_id in self.promotable(t) and self.affordable(trial_id, t):
            self.promoted[t].append(trial_id)
            self._tell("promoted", trial_id, t)
            self._save()
            return self.CONTINUE
        return self._pause(trial_id, t, "paused")

    def _score(self, result: dict[str, Any]) -> float:
        """What a result ranks by in its rung (a missing or non-finite value ranks last)."""
        score = rank_score(result, self._metric, self._mode)
        if score is None or not math.isfinite(score):
            return -math.inf if self._mode == "max" else math.inf
        return score

    def warm(self, scores: dict[str, dict[int, float]]) -> None:
        """Earlier searches' results at this search's rungs (search.warm), by a trial id no Tune trial has: they rank
        in their rungs (a new trial is promoted only by beating them) and are never resumed."""
        for trial_id, by_level in scores.items():
            for level, score in by_level.items():
                if level in self.rungs and score is not None and math.isfinite(score):
                    self.rungs[level].setdefault(trial_id, float(score))
        self._save()

    def _pause(self, trial_id: str, t: int, why: str) -> str:
        self.paused_at[trial_id] = t
        self._tell(why, trial_id, t)
        self._save()
        return self.PAUSE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._forget(trial.trial_id, result)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial.trial_id, None)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._forget(trial.trial_id, None)

    def _forget(self, trial_id: str, result: dict[str, Any] | None) -> None:
        """A trial ended (max_t, stopped, failed, diverged): no longer a candidate for promotion or the finish."""
        self.paused_at.pop(trial_id, None)
        self.progress.pop(trial_id, None)
        if result and int(result.get(self.time_attr, 0)) >= self.max_t and trial_id not in self.completed:
            self.completed.append(trial_id)
        self._save()

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """A paused trial to resume (promotable, or a finalist), else the next pending trial, else None."""
        from ray.tune.experiment import Trial

        self._controller = tune_controller
        trials = tune_controller.get_trials()
        by_id = {t.trial_id: t for t in trials}
        running = sum(t.status == Trial.RUNNING for t in trials)
        pending = [t for t in trials if t.status == Trial.PENDING]
        self._maybe_finish(tune_controller)
        if running < self.max_concurrent:
            for trial_id in self._to_resume():
                trial = by_id.get(trial_id)
                if trial is not None and trial.status == Trial.PAUSED:
                    self._fresh.add(trial_id)
                    finalist = self.finishing and trial_id in self.finalists
                    level = self._note_resume(trial_id, finalist=finalist)
                    self._tell("finalist" if finalist else "promoted", trial_id, level)
                    self._save()
                    return trial
        if pending:
            return pending[0]
        if running == 0 and self._no_new_trials(tune_controller):
            if not self.finishing:
                self._start_finish(why="no new configurations")
                return None  # the next call resumes the finalist
            for trial in trials:  # the search is over: trials still waiting at a rung end there
                if trial.status == Trial.PAUSED and trial.trial_id not in self.finalists:
                    self._stop_at_rung(tune_controller, trial)
        return None

    def _note_resume(self, trial_id: str, *, finalist: bool) -> int:
        """Bookkeeping of a paused trial given its next run: no longer waiting, its rank in its rung recorded,
        promoted out of it (unless it is a finalist); the rung it waited at."""
        level = self.paused_at.pop(trial_id)
        rank = self._ranked(level).index(trial_id) if trial_id in self.rungs.get(level, {}) else -1
        self.resumed.append((trial_id, level, rank, len(self.rungs.get(level, {}))))
        if level in self.promoted and not finalist:
            self.promoted[level].append(trial_id)
        return level

    def _stop_at_rung(self, tune_controller: Any, trial: Any) -> None:
        """End a paused trial where it waits (the search has no more work for it)."""
        self._tell("stopped", trial.trial_id, self.paused_at.get(trial.trial_id, 0))
        self.stopped.append(trial.trial_id)
        self._save()
        tune_controller.stop_trial(trial)

    def _finalists_waiting(self) -> list[str]:
        return [t for t in self.finalists if t in self.paused_at]

    def _to_resume(self) -> list[str]:
        """Paused trials to resume, in order: finalists waiting for a worker, then ASHA's promotions."""
        order = self._finalists_waiting() if self.finishing else []
        for level in reversed(self.levels):  # the highest rung first (ASHA's get_job)
            order += [t for t in self.promotable(level) if self.paused_at.get(t) == level and self.affordable(t, level)]
        return order

    def _target(self, level: int) -> int:
        """Where a promotion out of round `level` ends: the next rung above it, else max_t."""
        return next((lv for lv in self.levels if lv > level), self.max_t)

    def affordable(self, trial_id: str, level: int) -> bool:
        """May a trial be promoted out of rung `level` now? Always without a time budget. With one: before the
        finish phase, unless the promotion (to the next rung, or max_t) would take more than 1/reduction_factor
        of the rungs' worker time at the trial's measured pace (the rungs get what the finish phase leaves: at
        least FINISH_EARLIEST of the budget, as search.rounds plans it); in the finish phase, if it reaches its
        next rung before the time budget ends."""
        pace = self.round_seconds.get(trial_id)
        if self.time_budget_s is None or not pace:
            return True
        target = self._target(level)
        if self.finishing:  # a promotion the clock would cut before its next rung tells nothing: a new configuration does
            return self.started_at is None or (target - level) * pace <= self.time_budget_s - (self.clock() - self.started_at)
        rungs_seconds = max(FINISH_EARLIEST * self.time_budget_s, self.time_budget_s - self.max_t * pace) * self.max_concurrent
        return (target - level) * pace <= rungs_seconds / self.reduction_factor

    @staticmethod
    def _no_new_trials(tune_controller: Any) -> bool:
        search_alg = getattr(tune_controller, "search_alg", None)
        return search_alg is None or search_alg.is_finished()

    # -- the finish phase -------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        """Trials that could still be trained to max_t, most advanced and best first."""
        sign = -1.0 if self._mode == "max" else 1.0
        out = []
        for trial_id, t in self.progress.items():
            if t >= self.max_t or trial_id in self.completed or trial_id not in self._known:
                continue
            level = self._highest_rung(trial_id)
            if level is None:
                continue
            out.append((-level, sign * self.rungs[level][trial_id], trial_id))
        return [t for _, _, t in sorted(out)]

    def _highest_rung(self, trial_id: str) -> int | None:
        """The highest rung a trial has a result at, up to the round it reached (None: none yet)."""
        t = self.progress.get(trial_id, 0)
        return max((lv for lv in self.levels if lv <= t and trial_id in self.rungs[lv]), default=None)

    def _in_rung_top(self, trial_id: str) -> bool:
        """Whether a trial ranks in the top 1/reduction_factor of the highest rung it reported at, or was promoted
        out of it."""
        level = self._highest_rung(trial_id)
        if level is None:
            return False
        return trial_id in self._top(level) or trial_id in self.promoted[level]

    def _need(self, trial_id: str) -> float:
        """Seconds a trial needs to reach max_t from where it is, at its measured pace."""
        return (self.max_t - self.progress[trial_id]) * self.round_seconds.get(trial_id, 0.0) + RESUME_SECONDS

    def _maybe_finish(self, tune_controller: Any) -> None:
        """Start the finish phase once the time left is what the best candidate needs (x FINISH_SAFETY)."""
        if self.finishing or self.time_budget_s is None or self.started_at is None:
            return
        elapsed = self.clock() - self.started_at
        if elapsed < FINISH_EARLIEST * self.time_budget_s:
            return
        candidates = self._candidates()
        if not candidates:
            return
        left = self.time_budget_s - elapsed
        if left <= FINISH_SAFETY * self._need(candidates[0]):
            self._start_finish(why=f"{left:.0f} s left, the best candidate needs ~{self._need(candidates[0]):.0f} s", left=left)

    def _start_finish(self, why: str, left: float | None = None) -> None:
        """Freeze the finalists: the best candidate, and the next best (up to max_concurrent) that can still finish
        and rank in their rung's top 1/reduction_factor."""
        self.finishing = True
        candidates = self._candidates()
        if left is None:  # no time budget: the searcher has run out of configurations
            self.finalists = [] if self.completed else candidates[:1]
        else:
            self.finalists = candidates[:1] + [t for t in candidates[1:] if FINISH_SAFETY * self._need(t) <= left
                                               and self._in_rung_top(t)][: self.max_concurrent - 1]
        log.info("finish phase (%s): finalists %s", why, self.finalists)
        for trial_id in self.finalists:
            self._tell("finalist", trial_id, self.progress.get(trial_id, 0))
        self._save()

    def admission(self) -> str:
        """May the searcher start a new configuration: "yes", or "wait" (max_concurrent trials run or wait
        to run, or a finalist waits for a worker). In the finish phase a worker the finalists do not need
        goes on with ASHA's work (promotions, then new configurations) until the clock ends the search."""
        from ray.tune.experiment import Trial

        if self.finishing and self._finalists_waiting():
            return "wait"
        if self._controller is None:
            return "yes"
        busy = sum(t.status in (Trial.RUNNING, Trial.PENDING) for t in self._controller.get_trials())
        return "yes" if busy < self.max_concurrent else "wait"

    # -- bookkeeping ------------------------------------------------------------------------
    def _tell(self, kind: str, trial_id: str, t: int) -> None:
        if self.on_decision is not None:
            self.on_decision(kind, trial_id, t)

    def _state_path(self) -> Path | None:
        """Where the rungs are saved: `state_dir`, or for a search stored on a URI its local mirror on the
        machine running the driver now (a resume on another machine finds its own mirror, not the first's)."""
        if self.state_dir and is_uri(self.state_dir):
            from search.storage import mirror_dir

            return mirror_dir(self.state_dir) / STATE_FILE
        return Path(self.state_dir) / STATE_FILE if self.state_dir else None

    def _save(self) -> None:
        path = self._state_path()
        if path is None:
            return
        state = {k: getattr(self, k) for k in self.SAVED}
        state["rungs"] = {str(k): v for k, v in self.rungs.items()}
        state["promoted"] = {str(k): v for k, v in self.promoted.items()}
        state["levels"] = list(self.levels)
        write_atomic(path, json.dumps(state, default=float))

    def _load(self) -> None:
        """Once, on the first hook: the rung state a killed driver saved (resume)."""
        if self._loaded:
            return
        self._loaded = True
        path = self._state_path()
        if path is None or not path.is_file():
            return
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("%s is unreadable: the resumed search rebuilds its rungs from new results", path)
            return
        if [int(x) for x in state.get("levels", [])] != list(self.levels):
            return
        self.restored = bool(state.get("progress"))  # a killed driver's trials (a warm start's own save has none)
        self.rungs = {int(k): dict(v) for k, v in state["rungs"].items()}
        self.promoted = {int(k): list(v) for k, v in state["promoted"].items()}
        self.paused_at = {k: int(v) for k, v in state["paused_at"].items()}
        self.progress = {k: int(v) for k, v in state["progress"].items()}
        self.round_seconds = dict(state["round_seconds"])
        self.completed = list(state["completed"])
        self.stopped = list(state.get("stopped", []))
        self.resumed = [tuple(x) for x in state.get("resumed", [])]
        self.finishing, self.finalists = bool(state["finishing"]), list(state["finalists"])

    def debug_string(self) -> str:
        sizes = ", ".join(f"{lv}: {len(self.rungs[lv])}" for lv in self.levels)
        return f"ASHA with promotions: rungs {{{sizes}}}, {len(self.paused_at)} paused"


def end_pauses(experiment_dir: str | os.PathLike) -> None:
    """The search is over (its budget ran out): no trial waits at a rung any more, each ended where it was."""
    path = Path(experiment_dir) / STATE_FILE
    state = load_state(experiment_dir)
    if state is None or not state.get("paused_at"):
        return
    state["stopped"] = list(state.get("stopped", [])) + [t for t in state["paused_at"] if t not in state.get("stopped", [])]
    state["paused_at"] = {}
    write_atomic(path, json.dumps(state, default=float))


def load_state(experiment_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The saved rung state of a search folder, or None (another scheduler, or none saved)."""
    path = Path(experiment_dir) / STATE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


# ----------------------------------------------------------------------------------------------
# Ray's stopping ASHA (`asha-stop`)


def recent_cutoff(full_cutoff: Callable[[dict], Any], window: int) -> Callable[[dict], Any]:
    """A rung's cutoff taken over its last `window` recorded results instead of all of them (dicts keep arrival order)."""

    def cutoff(recorded: dict) -> Any:
        return full_cutoff(dict(list(recorded.items())[-window:]))

    return cutoff


def asha_window(reduction_factor: float) -> int:
    """How many of a rung's latest results a trial is ranked against: RECENT_PER_REDUCTION x reduction_factor."""
    return max(2, math.ceil(RECENT_PER_REDUCTION * reduction_factor))


def asha_scheduler(metric: str, mode: str, *, max_t: int, grace: int, reduction_factor: float, window: int | None = None) -> Any:
    """Ray's ASHAScheduler on the `round` counter, ranking trials by `rank_score` (ties broken) against each
    rung's latest `window` results (default `asha_window(reduction_factor)`; 0 = all of them, as Ray does).

    Ray's ASHA promotes a trial in the top 1/reduction_factor of *every* result its rung has seen; TPE
    proposes better configurations as it learns, so late trials beat most early ones. Ranking against the
    rung's recent results keeps the rate closer to 1/reduction_factor (benchmarks/README.md, `wide-space`).
    """
    from ray.tune.schedulers import ASHAScheduler

    window = asha_window(reduction_factor) if window is None else window

    class TieBreakingASHA(ASHAScheduler):
        @property
        def metric(self) -> str:  # what Tune checks every result carries; the score is added here
            return metric

        def _scored(self, result: dict[str, Any] | None) -> dict[str, Any] | None:
            if not result:
                return result
            score = rank_score(result, metric, mode)
            return result if score is None else {**result, RANK_SCORE: score}

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            return super().on_trial_result(tune_controller, trial, self._scored(result))

        def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
            super().on_trial_complete(tune_controller, trial, self._scored(result))

    scheduler = TieBreakingASHA(time_attr=M.ROUND, metric=RANK_SCORE, mode=mode, max_t=max_t, grace_period=grace,
                                reduction_factor=reduction_factor)
    if window:
        for bracket in scheduler._brackets:  # Ray's _Bracket.cutoff(recorded) is the one place the rung's results are ranked
            bracket.cutoff = recent_cutoff(bracket.cutoff, window)
    return scheduler
