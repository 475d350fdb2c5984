"""ASHA with promotions whose decisions do not depend on timing: the same spec and seed, the same search.

With two workers, `PromotionASHA` decides as results arrive: which trial a rung promotes, and what
the sampler has seen when it proposes the next configuration, depend on which worker finished
first (benchmarks/README.md#anytime, section 2). A `VirtualClock` makes each decision on a virtual
clock instead, as a simulator of the search would:

- every piece of work is a *job*: a new configuration trained to the first rung, or a paused trial
  resumed from rung a to the next rung b (or to max_t). `max_concurrent` virtual workers run jobs;
  a job of n rounds started at virtual time v ends at v + n (one round = one unit);
- job ends are processed in virtual order (end time, then trial index: the baseline is 1), each
  only once every job that ends before it in that order has reported: a result that comes in early
  waits (its trial pauses at the rung, its worker idles) for the ones before it;
- processing an end records the result in its rung and tells the sampler (`RungAwareTPE` in
  deferred mode); the freed virtual worker then takes ASHA's next job: the best promotable paused
  trial (highest rung first), else a new configuration, proposed by the sampler right then, from
  what it was told up to that virtual time.

`ReproducibleASHA` is `PromotionASHA` with a virtual clock: while the clock is on, the scheduler's
hooks hand it their decisions; it shares the scheduler's rungs, pauses and finish phase. Trial seeds
are fixed by the spec, so a trial's results are the same in every run, and so is every decision.
What is not reproducible: a time budget (the clock decides when the finish phase starts; from then
on the clock is off and results are taken as they arrive), `report_every: auto` (it times the data:
set the number it chose), a resumed search (a killed driver's state is taken as it was saved), and
training on a GPU where cuDNN picks non-deterministic kernels. What it costs: a worker that finished
early waits; measured in benchmarks/README.md#anytime. `budget.reproducible: false` selects
`PromotionASHA`.
"""
from __future__ import annotations

import logging
from typing import Any

from ray.tune.experiment import Trial

from search.schedulers.decisions import Admission, Decision
from search.schedulers.promotion import PromotionASHA
from trainables import metrics as M

log = logging.getLogger(__name__)


class VirtualClock:
    """Who decides while it is on (`active()`): the virtual schedule of the module docstring, over `scheduler`'s
    rungs and pauses. `samples` is the number of configurations in all; `attach(searcher)` before the search."""

    def __init__(self, scheduler: PromotionASHA, *, samples: int) -> None:
        self.scheduler, self.samples = scheduler, int(samples)
        self.searcher: Any = None  # a RungAwareTPE in deferred mode: it proposes the configurations
        self.deciding = True  # False once the finish phase starts, or in a resumed search: arrival order decides
        self.vnow = 0.0  # virtual time of the last job end processed
        self.jobs: dict[str, list[float]] = {}  # trial (or proposal key) -> [virtual end, target round] of its job
        self.index: dict[str, int] = {}  # trial (or proposal key) -> its place in the order of proposals (1: baseline)
        self.reported: dict[str, dict[str, Any]] = {}  # job ends not processed yet: kind (rung | end), round, result, ...
        self.proposals = 0  # configurations proposed so far (<= samples)
        self.unbound: list[str] = []  # proposal keys Tune has not made a trial of yet, oldest first
        self.to_resume: list[str] = []  # paused trials a job was given to, for Tune to resume, in order
        self.resume_level: dict[str, int] = {}  # trial -> the rung it is resumed from
        self.to_stop: list[str] = []  # paused trials to end at their rung (the search is out of work)
        self.continue_now: set[str] = set()  # the reporting trial, given its next job as it reported
        self.waits = 0  # job ends that came in before an earlier one and waited for it
        self.wait_seconds = 0.0  # wall seconds job ends waited before being processed, summed over workers
        self.virtual_until_s: float | None = None  # seconds into the search when arrival order took over (None: never)
        self.started = False
        self.reporting: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "searcher": None}

    def attach(self, searcher: Any) -> None:
        """The sampler that proposes configurations; it is told rungs and ends in virtual order."""
        searcher.deferred = True
        self.searcher = searcher

    def active(self) -> bool:
        """Whether the virtual schedule decides (on the first call, it gives the virtual workers their jobs)."""
        s = self.scheduler
        if self.deciding and (s.finish.finishing or s.restored or self.searcher is None):
            self.leave("the finish phase started" if s.finish.finishing else "a resumed search" if s.restored
                       else "no sampler to propose configurations")
        if self.deciding and not self.started:
            self.started = True
            self._assign()
        return self.deciding

    # -- the scheduler's hooks, while the clock decides -----------------------------------------
    def on_add(self, trial_id: str) -> None:
        """Tune made a trial of the oldest proposal (it makes them in the order they were made): the job is its."""
        if trial_id in self.jobs:
            return
        if not self.unbound:
            self.leave(f"trial {trial_id} did not come from the virtual schedule's proposals")
            return
        key = self.unbound.pop(0)
        self.jobs[trial_id] = self.jobs.pop(key)
        self.index[trial_id] = self.index.pop(key)

    def on_result(self, trial_id: str, t: int, result: dict[str, Any], *, ends_itself: bool) -> str:
        s = self.scheduler
        job = self.jobs.get(trial_id)
        if job is None or ends_itself or t < job[1]:
            return s.CONTINUE  # between rungs; an end comes through on_end
        self._report(trial_id, kind="rung", round=t, score=s.score(result), result=dict(result))
        if trial_id in self.continue_now:  # promoted on the spot: no pause, no restart
            self.continue_now.discard(trial_id)
            return s.CONTINUE
        return s.pause(trial_id, t, Decision.PAUSED)

    def recovers(self, trial: Any) -> bool:
        """A failed trial Tune restarts from its last checkpoint (a lost node) keeps its job."""
        return trial.trial_id in self.jobs and trial.should_recover()

    def on_end(self, trial: Any, result: dict[str, Any] | None, *, error: bool) -> bool:
        """A trial's job ended (False: not a job's end, e.g. a paused trial ended at its rung)."""
        s, trial_id = self.scheduler, trial.trial_id
        if trial_id not in self.jobs or trial_id in self.reported:
            return False
        last = result or trial.last_result or {}
        self._report(trial_id, kind="end", round=int(last.get(s.time_attr, s.progress.rounds.get(trial_id, 0))),
                     result=dict(last), error=error, diverged=last.get(M.STATUS) == M.STATUS_DIVERGED)
        return True

    def choose(self, tune_controller: Any) -> Any:
        """The next paused trial a job was given to, else a new trial Tune made from a proposal, else None."""
        s = self.scheduler
        trials = tune_controller.get_trials()
        by_id = {t.trial_id: t for t in trials}
        for trial_id in list(self.to_stop):
            trial = by_id.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                self.to_stop.remove(trial_id)
                s.stop_at_rung(tune_controller, trial)
        if sum(t.status == Trial.RUNNING for t in trials) >= s.max_concurrent:
            return None
        for trial_id in self.to_resume:
            trial = by_id.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                self.to_resume.remove(trial_id)
                level = self.resume_level.pop(trial_id, 0)
                s.progress.restart(trial_id)
                s.tell(Decision.FINALIST if trial_id in s.finish.finalists else Decision.PROMOTED, trial_id, level)
                return trial
        pending = [t for t in trials if t.status == Trial.PENDING]
        return pending[0] if pending else None

    def admission(self) -> Admission:
        """A new configuration may start when the virtual schedule proposed one Tune has not made a trial of."""
        return Admission.YES if self.searcher.queued else Admission.WAIT

    # -- the virtual schedule -------------------------------------------------------------------
    def _report(self, trial_id: str, **end: Any) -> None:
        """A job end came in: process every end that may be processed now, in virtual order."""
        self.reported[trial_id] = {**end, "at": self.scheduler.clock()}
        self.reporting = trial_id
        try:
            while self.reported:
                _, _, first = min((job[0], self.index.get(key, 0), key) for key, job in self.jobs.items())
                if first not in self.reported:
                    break  # it waits for a job that ends before it in virtual time
                self._apply(first)
        finally:
            self.reporting = None
        if trial_id in self.reported:
            self.waits += 1

    def _apply(self, trial_id: str) -> None:
        """One job end, at its virtual time: into its rung (or the trial's end), then the freed worker's next job."""
        end, _ = self.jobs.pop(trial_id)
        self.vnow = max(self.vnow, end)
        event = self.reported.pop(trial_id)
        self.wait_seconds += max(0.0, self.scheduler.clock() - event["at"])
        self._record(trial_id, event)
        self._assign()

    def _record(self, trial_id: str, event: dict[str, Any]) -> None:
        s = self.scheduler
        if event["kind"] == "rung":
            s.rungs.record(trial_id, event["round"], event["score"])
            s.paused_at[trial_id] = event["round"]
            if self.searcher is not None:
                self.searcher.observe_rung(trial_id, event["result"])
        else:
            if self.searcher is not None:
                self.searcher.observe_end(trial_id, result=event["result"], error=event.get("error", False),
                                          diverged=event.get("diverged", False))
            s.forget(trial_id, {s.time_attr: event["round"]})

    def _assign(self) -> None:
        """ASHA's get_job for every free virtual worker: a promotion (highest rung first), else a new configuration;
        with neither left and nothing running, the best trial trains to max_t if none did, and the rest end."""
        s = self.scheduler
        while len(self.jobs) < s.max_concurrent:
            waiting = s.promotions()
            if waiting:
                self._resume(waiting[0], finalist=False)
            elif self.proposals < self.samples:
                key = self.searcher.propose()
                self.proposals += 1
                self.index[key] = self.proposals
                first = s.levels[0] if s.levels else s.max_t
                self.jobs[key] = [self.vnow + first, first]
                self.unbound.append(key)
            else:
                break
        if self.jobs or self.reported or self.proposals < self.samples:
            return
        candidates = [t for t in s.finish.candidates() if t in s.paused_at]
        if not s.progress.completed and not s.finish.finalists and candidates:
            s.finish.finalists = candidates[:1]
            self._resume(candidates[0], finalist=True)
        else:
            self.to_stop += [t for t in s.paused_at if t not in self.to_stop]

    def _resume(self, trial_id: str, *, finalist: bool) -> None:
        """Give a paused trial the next job: to the next rung (promoted), or to max_t (the finalist)."""
        s = self.scheduler
        level = s.take_from_rung(trial_id, finalist=finalist)
        target = s.max_t if finalist else s.rungs.next_level(level)
        self.jobs[trial_id] = [self.vnow + (target - level), target]
        if trial_id == self.reporting:
            self.continue_now.add(trial_id)
            s.tell(Decision.FINALIST if finalist else Decision.PROMOTED, trial_id, level)
        else:
            self.to_resume.append(trial_id)
            self.resume_level[trial_id] = level

    def leave(self, why: str) -> None:
        """From here on the scheduler decides as results arrive: the ends not processed yet are taken in order."""
        log.info("reproducible ASHA: %s; decisions from here on follow arrival order", why)
        s = self.scheduler
        self.deciding = False
        if s.started_at is not None:
            self.virtual_until_s = s.clock() - s.started_at
        for trial_id in sorted(self.reported, key=lambda k: (self.jobs[k][0], self.index.get(k, 0))):
            self._record(trial_id, self.reported.pop(trial_id))
        for trial_id in self.to_resume:  # given a job but not resumed yet: back to waiting at its rung
            level = self.resume_level.pop(trial_id)
            s.paused_at[trial_id] = level
            s.rungs.unpromote(trial_id, level)
        self.to_resume.clear()
        if self.searcher is not None:
            for key in self.searcher.queued:
                self.searcher.trials.pop(key, None)
            self.searcher.queued.clear()
            self.searcher.deferred = False
        self.unbound.clear()
        self.jobs.clear()

    def describe(self) -> str:
        mode = f"virtual time {self.vnow:g}" if self.deciding else "arrival order"
        return f"{mode}, {self.waits} waits"


class ReproducibleASHA(PromotionASHA):
    """`PromotionASHA` deciding on a `VirtualClock` (see the module docstring); `samples` is the number of
    configurations in all. `attach(searcher)` before the search: it proposes the configurations."""

    def __init__(self, *args: Any, samples: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.virtual_clock = VirtualClock(self, samples=samples)

    def attach(self, searcher: Any) -> None:
        self.virtual_clock.attach(searcher)
