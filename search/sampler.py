"""The sampler: Optuna's TPE over a spec's define-by-run space, told what each trial really reached.

Ray's `OptunaSearch` tells the Optuna study a trial ASHA stopped after one round as COMPLETE with
that round's value (ray/tune/search/optuna/optuna_search.py, `on_trial_complete`), so TPE ranked a
configuration's 1-epoch accuracy against another's 30-epoch one; and with ASHA with promotions a
paused trial told it nothing until the search ended. `RungAwareTPE` instead adds to its study
- at every rung a trial reaches, a PRUNED record of it with its learning curve so far, which TPE
  ranks after every complete trial and, among pruned ones, by the step reached, then by the value
  there (optuna/samplers/_tpe/sampler.py, `_split_trials`): like is compared with like;
- when a trial reaches `max_t`, a COMPLETE record with its best value (the search ranks by the best epoch);
- when a trial ends between rungs (the clock cut it, it diverged), a PRUNED record at its last round.
A promoted trial thus appears once per rung it passed, each record true at its step (an Optuna trial
cannot change once told, and a paused trial may be promoted later). Each event adds one record, so a
suggestion costs what TPE costs, not a rebuild of the study. The TPE sampler is seeded with the spec's
seed: the same sequence of events gives the same suggestions.

`deferred` (set by search.schedulers.ReproducibleASHA): trials' reports only record their curves; the
scheduler tells the study each rung and each end (`observe_rung`, `observe_end`) in its virtual-time
order and asks for each new configuration (`propose`) at the point of that order where it starts, so
the suggestions do not depend on which worker reported first.
"""
from __future__ import annotations

import copy
import math
import pickle
from typing import Any, Callable

from ray.tune.search import ConcurrencyLimiter, Searcher

from trainables import metrics as M

RUNNING, COMPLETE, PRUNED, FAILED = "running", "complete", "pruned", "failed"
WARM_PREFIX = "warm:"  # records of earlier searches' trials (search.warm): told, never suggested


class RungAwareTPE(Searcher):
    """Ray Tune `Searcher` over `space` (a define-by-run callable taking an Optuna trial); see the module docstring.

    `rungs` are the rounds at which the scheduler ranks trials; `points_to_evaluate` are suggested
    first (the spec's baseline).
    """

    def __init__(self, space: Callable[[Any], Any], *, metric: str, mode: str, seed: int, max_t: int,
                 rungs: tuple[int, ...] = (), points_to_evaluate: list[dict[str, Any]] | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', but got {mode=!r}")
        self.space, self.seed, self.max_t, self.rungs = space, int(seed), int(max_t), tuple(int(r) for r in rungs)
        self.points = [dict(p) for p in (points_to_evaluate or [])]
        self.trials: dict[str, dict[str, Any]] = {}  # trial id -> params, distributions, curve, state, told steps
        self.told: list[tuple[str, str, int]] = []  # (trial id, state, step) of every record, in order: rebuilds the study
        self.deferred = False  # True: the scheduler tells rungs and ends and asks for proposals (module docstring)
        self.queued: list[str] = []  # deferred: proposals made, not yet given to a Tune trial, oldest first
        self._study: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_study": None}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return metric in (None, self.metric) and mode in (None, self.mode)

    # -- the study --------------------------------------------------------------------------
    def sampler(self) -> Any:
        """The Optuna sampler behind the study: TPE (a benchmark's random-search ablation overrides it)."""
        import optuna

        return optuna.samplers.TPESampler(seed=self.seed)

    def study(self) -> Any:
        """The Optuna study TPE samples from (rebuilt from `told` after a restore)."""
        if self._study is None:
            import optuna

            from search.space import quiet_optuna

            sampler = self.sampler()
            with quiet_optuna():
                self._study = optuna.create_study(direction="maximize" if self.mode == "max" else "minimize", sampler=sampler)
            for trial_id, state, step in self.told:
                self._add(trial_id, state, step)
        return self._study

    def _add(self, trial_id: str, state: str, step: int) -> None:
        import optuna

        record = self.trials[trial_id]
        curve = {int(k): float(v) for k, v in record["curve"].items() if int(k) <= step}
        if not curve:
            return
        if state == COMPLETE:
            best = max(curve.values()) if self.mode == "max" else min(curve.values())
            frozen = optuna.trial.create_trial(params=record["params"], distributions=record["distributions"], value=best,
                                               intermediate_values=curve, state=optuna.trial.TrialState.COMPLETE)
        else:
            frozen = optuna.trial.create_trial(params=record["params"], distributions=record["distributions"],
                                               intermediate_values=curve, state=optuna.trial.TrialState.PRUNED)
        self._study.add_trial(frozen)

    def _tell(self, trial_id: str, state: str, step: int) -> None:
        record = self.trials[trial_id]
        if step in record["told"] and state != COMPLETE:
            return
        record["told"].append(step)
        self.told.append((trial_id, state, step))
        if self._study is not None:
            self._add(trial_id, state, step)

    # -- suggestions ------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if self.deferred:  # the oldest proposal the scheduler asked for, now a Tune trial
            if not self.queued:
                return None
            key = self.queued.pop(0)
            self.trials[trial_id] = self.trials.pop(key)
            return dict(self.trials[trial_id]["params"])
        return self._ask(trial_id)

    def propose(self) -> str:
        """Deferred mode: sample the next configuration now, from what the study was told so far; its key."""
        key = f"proposal:{sum(not t.startswith(WARM_PREFIX) for t in self.trials)}"
        self._ask(key)
        self.queued.append(key)
        return key

    def _ask(self, trial_id: str) -> dict[str, Any]:
        from optuna.trial import TrialState

        study = self.study()
        asked = sum(not t.startswith(WARM_PREFIX) for t in self.trials)
        if asked < len(self.points):
            study.enqueue_trial(self.points[asked])
        ot_trial = study.ask()
        self.space(ot_trial)
        params, distributions = dict(ot_trial.params), dict(ot_trial.distributions)
        study.tell(ot_trial, state=TrialState.FAIL)  # the asked trial was only a proposal: its records come as it trains
        self.trials[trial_id] = {"params": params, "distributions": distributions, "curve": {}, "state": RUNNING, "told": []}
        return params

    def warm(self, trials: list[Any], distributions: dict[str, Any]) -> None:
        """Records of earlier searches' trials (search.warm.WarmTrial): pruned at each rung reached, complete at max_t."""
        for warm in trials:
            trial_id = WARM_PREFIX + warm.source
            if trial_id in self.trials:
                continue
            self.trials[trial_id] = {"params": dict(warm.params), "distributions": {k: distributions[k] for k in warm.params},
                                     "curve": dict(warm.curve), "state": COMPLETE if warm.complete else PRUNED, "told": []}
            for step in sorted(s for s in warm.curve if s in self.rungs):
                self._tell(trial_id, PRUNED, step)
            if warm.complete:
                self._tell(trial_id, COMPLETE, self.max_t)
            elif warm.curve and max(warm.curve) not in self.rungs:
                self._tell(trial_id, PRUNED, max(warm.curve))

    # -- what trials report -----------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        step = self._record(trial_id, result)
        if step in self.rungs and not self.deferred:
            self._tell(trial_id, PRUNED, step)

    def _record(self, trial_id: str, result: dict[str, Any]) -> int | None:
        """A reported value into the trial's curve; its round (None if it carries no finite value)."""
        record = self.trials.get(trial_id)
        value = result.get(self.metric)
        if record is None or M.ROUND not in result or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or not M.val_is_fresh(result):
            return None
        step = int(result[M.ROUND])
        record["curve"][step] = float(value)
        return step

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        record = self.trials.get(trial_id)
        if record is None or record["state"] != RUNNING:
            return
        if result:
            self.on_trial_result(trial_id, result)
        if not self.deferred:
            self.observe_end(trial_id, error=error, diverged=bool(result) and result.get(M.STATUS) == M.STATUS_DIVERGED)

    def observe_rung(self, trial_id: str, result: dict[str, Any]) -> None:
        """A trial's result at a rung becomes a pruned record (deferred mode: the scheduler's order)."""
        self._record(trial_id, result)
        step = int(result.get(M.ROUND, 0))
        if trial_id in self.trials and step in self.trials[trial_id]["curve"]:
            self._tell(trial_id, PRUNED, step)

    def observe_end(self, trial_id: str, *, result: dict[str, Any] | None = None, error: bool = False,
                    diverged: bool = False) -> None:
        """A trial ended: complete at max_t, else pruned at its last round (failed: nothing told)."""
        record = self.trials.get(trial_id)
        if record is None or record["state"] != RUNNING:
            return
        if result:
            self._record(trial_id, result)
        last = max(record["curve"], default=0)
        if error:
            record["state"] = FAILED
        elif last >= self.max_t and not diverged:
            record["state"] = COMPLETE
            self._tell(trial_id, COMPLETE, last)
        else:
            record["state"] = PRUNED
            if last and (not record["told"] or last > max(record["told"])):
                self._tell(trial_id, PRUNED, last)

    def tpe_view(self) -> dict[str, int]:
        """How many records TPE sees as complete and as pruned (tests, the benchmarks)."""
        import optuna

        states = [t.state for t in self.study().get_trials(deepcopy=False)]
        return {"complete": states.count(optuna.trial.TrialState.COMPLETE), "pruned": states.count(optuna.trial.TrialState.PRUNED)}

    # -- Tune's searcher checkpoint ---------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        state = {"trials": self.trials, "told": self.told, "points": self.points, "seed": self.seed, "max_t": self.max_t,
                 "rungs": self.rungs, "deferred": self.deferred, "queued": self.queued}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.trials, self.told, self.points = state["trials"], state["told"], state["points"]
        self.seed, self.max_t, self.rungs = state["seed"], state["max_t"], tuple(state["rungs"])
        for key in state.get("queued", []):  # a resumed search decides in arrival order (search.schedulers.virtual_clock)
            self.trials.pop(key, None)
        self.deferred, self.queued = False, []
        self._study = None


class AdmissionLimiter(ConcurrencyLimiter):
    """A ConcurrencyLimiter that asks ASHA with promotions whether a new configuration may start.

    Ray's limiter counts a paused trial as in flight, so two paused trials would block a 2-worker search;
    the scheduler, which knows which trials run, answers `admission()`: "yes", "wait" (max_concurrent
    trials run or wait to run, or a finalist of the finish phase waits for a worker) or "done" (no new configuration). Being a ConcurrencyLimiter, it
    also tells Tune to keep up to max_concurrent trials pending (Tune keeps 1 for other searchers).
    """

    def __init__(self, searcher: Searcher, max_concurrent: int, admission: Callable[[], str]) -> None:
        super().__init__(searcher, max_concurrent=max_concurrent)
        self.admission = admission

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        answer = self.admission()
        if answer == "done":
            return Searcher.FINISHED
        if answer == "wait":
            return None
        suggestion = self.searcher.suggest(trial_id)
        if suggestion is not None and suggestion != Searcher.FINISHED:
            self.live_trials.add(trial_id)
        return suggestion

    def get_state(self) -> dict[str, Any]:  # saved with the experiment: no scheduler inside
        state = {k: v for k, v in self.__dict__.items() if k not in ("searcher", "admission")}
        return copy.deepcopy(state)

    def set_state(self, state: dict[str, Any]) -> None:
        admission = self.admission
        self.__dict__.update(state)
        self.admission = admission
