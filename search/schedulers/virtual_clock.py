"""ASHA with promotions whose decisions do not depend on timing: the same spec and seed, the same search.

With two workers, `PromotionASHA` decides as results arrive: which trial a rung promotes, and what
the sampler has seen when it proposes the next configuration, depend on which worker finished
first (benchmarks/README.md, "reproducible parallel search"). `ReproducibleASHA` makes each decision
on a virtual clock instead, as a simulator of the search would:

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

Trial seeds are fixed by the spec, so a trial's results are the same in every run, and so is every
decision. What is not reproducible: a time budget (the clock decides when the finish phase starts;
from then on this is `PromotionASHA`), `report_every: auto` (it times the data: set the number it
chose), a resumed search (a killed driver's state is taken as it was saved), and training on a GPU
where cuDNN picks non-deterministic kernels. What it costs: a worker that finished early waits;
measured in benchmarks/README.md. `budget.reproducible: false` selects `PromotionASHA`.
"""
from __future__ import annotations

import logging
from typing import Any

from search.schedulers.promotion import PromotionASHA
from trainables import metrics as M

log = logging.getLogger(__name__)


class ReproducibleASHA(PromotionASHA):
    """`PromotionASHA` deciding on a virtual clock (see the module docstring); `samples` is the number
    of configurations in all. `attach(searcher)` before the search: it proposes the configurations."""

    SAVED = PromotionASHA.SAVED + ("virtual", "vnow", "jobs", "waits", "wait_seconds", "virtual_until_s")

    def __init__(self, *args: Any, samples: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples = int(samples)
        self.searcher: Any = None  # a RungAwareTPE in deferred mode
        self.virtual = True  # False once the finish phase starts, or in a resumed search: PromotionASHA decides
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
        self._started = False
        self._reporting: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["searcher"] = None
        return state

    def attach(self, searcher: Any) -> None:
        """The sampler that proposes configurations; it is told rungs and ends in virtual order."""
        searcher.deferred = True
        self.searcher = searcher

    def _active(self) -> bool:
        """Whether the virtual schedule decides (else PromotionASHA, in arrival order)."""
        if self.virtual and (self.finishing or self.restored or self.searcher is None):
            self._leave("the finish phase started" if self.finishing else "a resumed search" if self.restored
                        else "no sampler to propose configurations")
        if self.virtual and not self._started:
            self._started = True
            self._assign()
        return self.virtual

    # -- Tune hooks -------------------------------------------------------------------------
    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        if not self._active() or trial.trial_id in self.jobs:
            return
        if not self.unbound:
            self._leave(f"trial {trial.trial_id} did not come from the virtual schedule's proposals")
            return
        key = self.unbound.pop(0)  # Tune makes trials from the sampler's proposals in the order they were made
        self.jobs[trial.trial_id] = self.jobs.pop(key)
        self.index[trial.trial_id] = self.index.pop(key)
        self._save()

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if not self._active():
            return super().on_trial_result(tune_controller, trial, result)
        self._controller = tune_controller or self._controller
        if self.time_attr not in result:
            return self.CONTINUE
        trial_id = trial.trial_id
        t = self._note(trial_id, result)
        ends_itself = t >= self.max_t or result.get(M.STATUS) == M.STATUS_DIVERGED
        self._maybe_finish(tune_controller)
        if not self._active():
            return self.CONTINUE if ends_itself else self._decide(tune_controller, trial_id, t, result)
        job = self.jobs.get(trial_id)
        if job is None or ends_itself or t < job[1]:
            return self.CONTINUE  # between rungs; an end comes through on_trial_complete
        self._report(trial_id, kind="rung", round=t, score=self._score(result), result=dict(result))
        if trial_id in self.continue_now:  # promoted on the spot: no pause, no restart
            self.continue_now.discard(trial_id)
            self._save()
            return self.CONTINUE
        self.paused_at[trial_id] = t
        self._tell("paused", trial_id, t)
        self._save()
        return self.PAUSE

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        self._end(trial, result, error=False)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        if self._active() and trial.trial_id in self.jobs and trial.should_recover():
            return  # Tune restarts it from its last checkpoint (a lost node): the same job, its end still to come
        self._end(trial, None, error=True)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self._end(trial, None, error=False)

    def _end(self, trial: Any, result: dict[str, Any] | None, *, error: bool) -> None:
        trial_id = trial.trial_id
        if not self._active() or trial_id not in self.jobs or trial_id in self.reported:
            self._forget(trial_id, result)  # e.g. a paused trial ended at its rung
            return
        last = result or trial.last_result or {}
        self._report(trial_id, kind="end", round=int(last.get(self.time_attr, self.progress.get(trial_id, 0))),
                     result=dict(last), error=error, diverged=last.get(M.STATUS) == M.STATUS_DIVERGED)
        self._save()

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """The next paused trial a job was given to, else a new trial Tune made from a proposal, else None."""
        self._controller = tune_controller
        if self._active():
            self._maybe_finish(tune_controller)
        if not self._active():
            return super().choose_trial_to_run(tune_controller)
        from ray.tune.experiment import Trial

        trials = tune_controller.get_trials()
        by_id = {t.trial_id: t for t in trials}
        for trial_id in list(self.to_stop):
            trial = by_id.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                self.to_stop.remove(trial_id)
                self._stop_at_rung(tune_controller, trial)
        if sum(t.status == Trial.RUNNING for t in trials) >= self.max_concurrent:
            return None
        for trial_id in self.to_resume:
            trial = by_id.get(trial_id)
            if trial is not None and trial.status == Trial.PAUSED:
                self.to_resume.remove(trial_id)
                level = self.resume_level.pop(trial_id, 0)
                self._fresh.add(trial_id)
                self._tell("finalist" if trial_id in self.finalists else "promoted", trial_id, level)
                self._save()
                return trial
        pending = [t for t in trials if t.status == Trial.PENDING]
        return pending[0] if pending else None

    def admission(self) -> str:
        """A new configuration may start when the virtual schedule proposed one Tune has not made a trial of."""
        if not self._active():
            return super().admission()
        return "yes" if self.searcher.queued else "wait"

    def _start_finish(self, why: str, left: float | None = None) -> None:
        if self.virtual:  # the clock decides from here: every result that came in first takes its place
            self._leave(f"the finish phase started ({why})")
        super()._start_finish(why, left)

    # -- the virtual schedule ---------------------------------------------------------------
    def _report(self, trial_id: str, **end: Any) -> None:
        """A job end came in: process every end that may be processed now, in virtual order."""
        self.reported[trial_id] = {**end, "at": self.clock()}
        self._reporting = trial_id
        try:
            while self.reported:
                _, _, first = min((job[0], self.index.get(key, 0), key) for key, job in self.jobs.items())
                if first not in self.reported:
                    break  # it waits for a job that ends before it in virtual time
                self._apply(first)
        finally:
            self._reporting = None
        if trial_id in self.reported:
            self.waits += 1

    def _apply(self, trial_id: str) -> None:
        """One job end, at its virtual time: into its rung (or the trial's end), then the freed worker's next job."""
        end, _ = self.jobs.pop(trial_id)
        self.vnow = max(self.vnow, end)
        event = self.reported.pop(trial_id)
        self.wait_seconds += max(0.0, self.clock() - event["at"])
        self._record(trial_id, event)
        self._assign()

    def _record(self, trial_id: str, event: dict[str, Any]) -> None:
        if event["kind"] == "rung":
            self.rungs[event["round"]][trial_id] = float(event["score"])
            self.paused_at[trial_id] = event["round"]
            if self.searcher is not None:
                self.searcher.observe_rung(trial_id, event["result"])
        else:
            if self.searcher is not None:
                self.searcher.observe_end(trial_id, result=event["result"], error=event.get("error", False),
                                          diverged=event.get("diverged", False))
            self._forget(trial_id, {self.time_attr: event["round"]})

    def _assign(self) -> None:
        """ASHA's get_job for every free virtual worker: a promotion (highest rung first), else a new configuration;
        with neither left and nothing running, the best trial trains to max_t if none did, and the rest end."""
        while len(self.jobs) < self.max_concurrent:
            waiting = self._to_resume()
            if waiting:
                self._resume(waiting[0], finalist=False)
            elif self.proposals < self.samples:
                key = self.searcher.propose()
                self.proposals += 1
                self.index[key] = self.proposals
                first = self.levels[0] if self.levels else self.max_t
                self.jobs[key] = [self.vnow + first, first]
                self.unbound.append(key)
            else:
                break
        if self.jobs or self.reported or self.proposals < self.samples:
            return
        candidates = [t for t in self._candidates() if t in self.paused_at]
        if not self.completed and not self.finalists and candidates:
            self.finalists = candidates[:1]
            self._resume(candidates[0], finalist=True)
        else:
            self.to_stop += [t for t in self.paused_at if t not in self.to_stop]

    def _resume(self, trial_id: str, *, finalist: bool) -> None:
        """Give a paused trial the next job: to the next rung (promoted), or to max_t (the finalist)."""
        level = self._note_resume(trial_id, finalist=finalist)
        target = self.max_t if finalist else self._target(level)
        self.jobs[trial_id] = [self.vnow + (target - level), target]
        if trial_id == self._reporting:
            self.continue_now.add(trial_id)
            self._tell("finalist" if finalist else "promoted", trial_id, level)
        else:
            self.to_resume.append(trial_id)
            self.resume_level[trial_id] = level

    def _leave(self, why: str) -> None:
        """From here on PromotionASHA decides as results arrive: the ends not processed yet are taken in order."""
        log.info("reproducible ASHA: %s; decisions from here on follow arrival order", why)
        self.virtual = False
        if self.started_at is not None:
            self.virtual_until_s = self.clock() - self.started_at
        for trial_id in sorted(self.reported, key=lambda k: (self.jobs[k][0], self.index.get(k, 0))):
            self._record(trial_id, self.reported.pop(trial_id))
        for trial_id in self.to_resume:  # given a job but not resumed yet: back to waiting at its rung
            level = self.resume_level.pop(trial_id)
            self.paused_at[trial_id] = level
            if trial_id in self.promoted.get(level, []):
                self.promoted[level].remove(trial_id)
        self.to_resume.clear()
        if self.searcher is not None:
            for key in self.searcher.queued:
                self.searcher.trials.pop(key, None)
            self.searcher.queued.clear()
            self.searcher.deferred = False
        self.unbound.clear()
        self.jobs.clear()
        self._save()

    def debug_string(self) -> str:
        mode = f"virtual time {self.vnow:g}" if self.virtual else "arrival order"
        return f"{super().debug_string()} ({mode}, {self.waits} waits)"
