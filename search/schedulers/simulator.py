"""Driving a real scheduler without a Ray runtime: a stand-in for Tune's controller, and Tune's loop on a virtual clock.

`Controller` is what a scheduler's hooks receive from Ray Tune 2.60's `TuneController` (its
`TrialRunnerWrapper`): `get_trials()`, `get_live_trials()`, `stop_trial()`, `pause_trial()`,
`search_alg`; the trials are real `ray.tune` Trial stubs (`trial_id`, `status`, `set_status`,
`config`, `last_result`, `should_recover()`). As in Tune, a trial's `last_result` is the result the scheduler and the
search algorithm last heard (set after them), and what a stopped running trial completes with. Tests call its `add`
and `report` by hand.

`Simulation` is the loop around it, driven the way `TuneController` drives a search, each event at
the virtual time a trial's round ends: while fewer than `max_pending_trials` wait, the search
algorithm is asked for a trial (a FINISHED suggestion ends the search); whenever a worker is free,
`scheduler.choose_trial_to_run` first (a PAUSED trial it returns resumes, a PENDING one starts),
then any PENDING trial; each result goes to `scheduler.on_trial_result` and, unless it says STOP, to
the search algorithm; PAUSE frees the worker; STOP, the trainable's last round or a time budget end
the trial through `stop_trial`, as Tune does. A trial's first round after it starts costs `start_overhead`
more seconds, its first after a resume `resume_overhead` (Tune reports both inside `time_this_iter_s`). What a
trial's rounds report and how long they take is the subclass's (benchmarks/simulate.py replays recorded learning
curves).
"""
from __future__ import annotations

import heapq
import os
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

ENDED = (Trial.TERMINATED, Trial.ERROR)


class SearchGenerator:
    """What Tune's `SearchGenerator` does around a Searcher: count trials to `num_samples`, honour FINISHED. Without a
    searcher it has no configurations to give and is finished once told (`finished = True`)."""

    def __init__(self, searcher: Searcher | None = None, num_samples: int | None = None) -> None:
        self.searcher, self.total_samples, self.counter, self.finished = searcher, num_samples, 0, False

    def is_finished(self) -> bool:
        return self.finished or (self.total_samples is not None and self.counter >= self.total_samples)

    def set_finished(self) -> None:
        self.finished = True

    def next_config(self, trial_id: str) -> dict[str, Any] | None:
        if self.is_finished() or self.searcher is None:
            return None
        config = self.searcher.suggest(trial_id)
        if config == Searcher.FINISHED:
            self.finished = True
            return None
        if config is None:
            return None
        self.counter += 1
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if self.searcher is not None:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if self.searcher is not None:
            self.searcher.on_trial_complete(trial_id, result=result, error=error)


def max_pending_trials(search_alg: SearchGenerator) -> int:
    """How many trials Tune keeps PENDING for a custom searcher (Ray 2.60's `_get_max_pending_trials`): the
    TUNE_MAX_PENDING_TRIALS_PG variable if set, else a ConcurrencyLimiter's max_concurrent, else 1."""
    if os.environ.get("TUNE_MAX_PENDING_TRIALS_PG", "auto") != "auto":
        return int(os.environ["TUNE_MAX_PENDING_TRIALS_PG"])
    searcher = search_alg.searcher
    while searcher is not None:
        if isinstance(searcher, ConcurrencyLimiter):
            return int(searcher.max_concurrent)
        searcher = getattr(searcher, "searcher", None)
    return 1


class Controller:
    """The part of Tune's controller a scheduler uses (see the module docstring). `results` holds each trial's last
    result (what Tune completes a stopped running trial with; also its `trial.last_result`)."""

    def __init__(self, scheduler: TrialScheduler, search_alg: SearchGenerator | None = None) -> None:
        self.scheduler = scheduler
        self.search_alg = search_alg if search_alg is not None else SearchGenerator()
        self.trials: list[Trial] = []
        self.results: dict[str, dict[str, Any]] = {}

    def get_trials(self) -> list[Trial]:
        return self.trials

    def get_live_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.status not in ENDED]

    def created(self, trial: Trial) -> None:
        """A new trial, before the scheduler hears of it (a subclass gives it its training)."""

    def add(self, trial_id: str, config: dict[str, Any] | None = None, *, running: bool = True) -> Trial:
        """A trial as Tune adds one (the scheduler's `on_trial_add`), RUNNING at once unless `running` is False."""
        trial = Trial("__fake", trial_id=trial_id, stub=True, config=dict(config or {}))
        self.created(trial)
        self.trials.append(trial)
        self.scheduler.on_trial_add(self, trial)
        if running and trial.status == Trial.PENDING:
            trial.set_status(Trial.RUNNING)
        return trial

    def report(self, trial: Trial, result: dict[str, Any]) -> str:
        """A running trial's result, as Tune processes it: the scheduler decides; unless it says STOP the search
        algorithm hears the result; PAUSE pauses the trial, STOP stops it. The decision."""
        self.results[trial.trial_id] = result
        decision = self.scheduler.on_trial_result(self, trial, result)
        if decision != TrialScheduler.STOP:
            self.search_alg.on_trial_result(trial.trial_id, result)
        # Tune's _process_trial_result: the trial's last_result is set after the scheduler and the search algorithm
        # heard the result, before the decision is carried out (a stopped trial completes with it).
        trial.update_last_result(dict(result))
        if decision == TrialScheduler.STOP:
            self.stop_trial(trial)
        elif decision == TrialScheduler.PAUSE:
            self.pause_trial(trial)
        return decision

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        trial.set_status(Trial.PAUSED)

    def stop_trial(self, trial: Trial) -> None:
        """Tune's `stop_trial`: a PENDING or PAUSED trial is removed, a RUNNING one completes with its last result;
        the search algorithm hears it completed."""
        if trial.status in ENDED:
            return
        if trial.status in (Trial.PENDING, Trial.PAUSED):
            self.scheduler.on_trial_remove(self, trial)
            self.search_alg.on_trial_complete(trial.trial_id)
        elif trial.status == Trial.RUNNING:
            last = dict(self.results.get(trial.trial_id, {}))
            self.scheduler.on_trial_complete(self, trial, last)
            self.search_alg.on_trial_complete(trial.trial_id, result=last)
        trial.set_status(Trial.TERMINATED)


class Simulation(Controller):
    """Tune's loop on a virtual clock with `workers` workers (see the module docstring); `time_budget` virtual seconds
    (then every live trial is stopped); `start_overhead` seconds added to a trial's first round, `resume_overhead` to
    its first round after each resume. A subclass says what a trial's rounds take (`round_seconds`) and report
    (`train`), and when its trainable returns (`returns`)."""

    def __init__(self, scheduler: TrialScheduler, search_alg: SearchGenerator, *, workers: int,
                 time_budget: float | None = None, start_overhead: float = 0.0, resume_overhead: float = 0.0) -> None:
        super().__init__(scheduler, search_alg)
        if start_overhead < 0 or resume_overhead < 0:
            raise ValueError(f"overheads must be >= 0 seconds, but got {start_overhead=!r}, {resume_overhead=!r}")
        self.workers, self.time_budget = int(workers), time_budget
        self.start_overhead, self.resume_overhead = float(start_overhead), float(resume_overhead)
        self.max_pending = max_pending_trials(search_alg)
        self.now = 0.0
        self.events: list[tuple[float, int, str, int]] = []  # (virtual time, order, trial, token) of each round's end
        self.tokens: dict[str, int] = {}  # trial -> the token of its current round (a stale event is dropped)
        self.started: dict[str, float] = {}  # trial -> virtual time its current stint began
        self.fresh: dict[str, float] = {}  # trial -> (re)start seconds its next result pays: the first since it (re)started
        self.by_id: dict[str, Trial] = {}
        self._seq = self._ids = 0
        self.busy_seconds = self.idle_seconds = self.idle_sampling_seconds = self.sampling_end = 0.0
        self.counts = {"pause": 0, "resume": 0, "stopped_paused": 0}
        self.stuck = self.timed_out = False

    def clock(self) -> float:
        return self.now

    # -- a trial's training: the subclass's -----------------------------------------------------
    def round_seconds(self, trial: Trial) -> float:
        """Virtual seconds the trial's next round takes (0: it has none left)."""
        raise NotImplementedError

    def train(self, trial: Trial, *, fresh: bool, overhead: float = 0.0) -> dict[str, Any]:
        """The result of the trial's next round (`fresh`: the first since it (re)started, which also took `overhead`
        seconds to start or resume: Tune's `time_this_iter_s` of that result includes them)."""
        raise NotImplementedError

    def returns(self, trial: Trial) -> bool:
        """Whether the trainable returns after the result it just reported (Tune then stops the trial)."""
        raise NotImplementedError

    # -- Tune's side ----------------------------------------------------------------------------
    def running(self) -> int:
        return sum(t.status == Trial.RUNNING for t in self.trials)

    def pending(self) -> list[Trial]:
        return [t for t in self.trials if t.status == Trial.PENDING]

    def finished(self) -> bool:
        return self.search_alg.is_finished() and all(t.status in ENDED for t in self.trials)

    def pause_trial(self, trial: Trial, should_checkpoint: bool = True) -> None:
        self.counts["pause"] += 1
        self._free(trial)
        super().pause_trial(trial, should_checkpoint)

    def stop_trial(self, trial: Trial) -> None:
        if trial.status == Trial.PAUSED:
            self.counts["stopped_paused"] += 1
        elif trial.status == Trial.RUNNING:
            self._free(trial)
        super().stop_trial(trial)

    def run(self) -> None:
        """Until every trial has ended (or the time budget, or a search Tune would never end: `stuck`)."""
        idle = 0
        while True:
            self._steps()
            if not self.events:
                if self.finished():
                    return
                # Nothing runs: Tune keeps stepping (the scheduler may start its finish phase, resume a finalist,
                # stop the trials left paused). A few steps without any change is a search Tune would never end.
                idle += 1
                if idle > 5:
                    self.stuck = True
                    return
                continue
            idle = 0
            at, _, trial_id, token = heapq.heappop(self.events)
            if token != self.tokens.get(trial_id):
                continue
            if self.time_budget is not None and at > self.time_budget:
                self.now, self.timed_out = self.time_budget, True
                self.search_alg.set_finished()  # Tune's time budget: no new trial, every live one stopped
                for trial in list(self.trials):
                    self.stop_trial(trial)
                return
            self._idle_until(at)
            self.now = at
            self._deliver(self.by_id[trial_id])

    def _steps(self) -> None:
        """Tune's steps between two events: ask the searcher, start trials, until nothing changes."""
        for _ in range(10_000):
            added = self._add_trials()
            started = self._start_trials()
            if not (added or started):
                return

    def _add_trials(self) -> bool:
        """Ask the searcher while fewer than max_pending trials are PENDING (Tune's `_maybe_update_trial_queue`)."""
        added = False
        while len(self.pending()) < self.max_pending and not self.search_alg.is_finished():
            self._ids += 1
            trial_id = f"{self._ids:05d}"  # Tune draws a fresh id per attempt too (Trial.generate_id)
            config = self.search_alg.next_config(trial_id)
            if config is None:
                break
            self.by_id[trial_id] = self.add(trial_id, config, running=False)
            added = True
        return added

    def _start_trials(self) -> bool:
        """While a worker is free: the scheduler's choice first, then any PENDING trial (Tune's `_maybe_add_actors`)."""
        started = False
        while self.running() < self.workers:
            trial = self.scheduler.choose_trial_to_run(self)
            if trial is None or trial.status not in (Trial.PENDING, Trial.PAUSED):
                pending = self.pending()
                if not pending:
                    break
                trial = pending[0]
            resumed = trial.status == Trial.PAUSED
            if resumed:
                self.counts["resume"] += 1
            overhead = self.resume_overhead if resumed else self.start_overhead
            trial.set_status(Trial.RUNNING)
            self.started[trial.trial_id] = self.now
            self.fresh[trial.trial_id] = overhead
            self._schedule(trial, self.now + overhead + self.round_seconds(trial))
            started = True
            self._add_trials()  # Tune's next step asks the searcher again before choosing
        return started

    def _deliver(self, trial: Trial) -> None:
        """A round ended: its result to the scheduler and the searcher; the trial's next round, unless it paused,
        stopped or returned."""
        fresh = trial.trial_id in self.fresh
        overhead = self.fresh.pop(trial.trial_id, 0.0)
        decision = self.report(trial, self.train(trial, fresh=fresh, overhead=overhead))
        if decision in (TrialScheduler.PAUSE, TrialScheduler.STOP):
            return
        if self.returns(trial):
            self.stop_trial(trial)
        else:
            self._schedule(trial, self.now + self.round_seconds(trial))

    def _schedule(self, trial: Trial, at: float) -> None:
        self._seq += 1
        self.tokens[trial.trial_id] = self._seq
        heapq.heappush(self.events, (at, self._seq, trial.trial_id, self._seq))

    def _free(self, trial: Trial) -> None:
        self.busy_seconds += self.now - self.started.get(trial.trial_id, self.now)
        self.tokens[trial.trial_id] = 0

    def _idle_until(self, at: float) -> None:
        """Worker-seconds left idle from now to `at` (nothing starts between events), and how many while the searcher
        still had configurations to give: idle workers in mid-search mean the loop or the admission held trials back."""
        idle = (self.workers - self.running()) * (at - self.now)
        self.idle_seconds += idle
        if not self.search_alg.is_finished():
            self.idle_sampling_seconds += idle
            self.sampling_end = at
