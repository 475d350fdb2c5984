"""The sampler: Optuna's TPE over a spec's define-by-run space, told what each trial really reached.

Ray's `OptunaSearch` tells the Optuna study a trial ASHA stopped after one round as COMPLETE with
that round's value (ray/tune/search/optuna/optuna_search.py, `on_trial_complete`), so TPE ranked a
configuration's 1-epoch accuracy against another's 30-epoch one, and with ASHA with promotions a
paused trial told nothing at all until the search ended. `RungAwareTPE` keeps every trial's learning
curve and, before each suggestion, shows TPE a study in which
- a trial that reached `max_t` is COMPLETE with its best value (the search ranks by the best epoch);
- every other trial (paused, stopped at a rung, still running, diverged) is PRUNED with its
  intermediate values, which TPE ranks after every complete trial and, among themselves, by the
  step they reached, then by the value there (optuna/samplers/_tpe/sampler.py, `_split_trials`);
so a configuration is compared only with ones that trained as long. The study is rebuilt from
that record (cached frozen trials) because an Optuna trial cannot change once told, and a
paused trial may be promoted later. The TPE sampler of each suggestion is seeded from the spec's
seed and the number of trials so far: the same history gives the same suggestion.
"""
from __future__ import annotations

import copy
import math
import pickle
from typing import Any, Callable

from ray.tune.search import ConcurrencyLimiter, Searcher

from trainables import metrics as M

RUNNING, COMPLETE, PRUNED, FAILED = "running", "complete", "pruned", "failed"


class RungAwareTPE(Searcher):
    """Ray Tune `Searcher` over `space` (a define-by-run callable taking an Optuna trial); see the module docstring.

    `points_to_evaluate` are suggested first (the spec's baseline).
    """

    def __init__(self, space: Callable[[Any], Any], *, metric: str, mode: str, seed: int, max_t: int,
                 points_to_evaluate: list[dict[str, Any]] | None = None) -> None:
        super().__init__(metric=metric, mode=mode)
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', but got {mode=!r}")
        self.space, self.seed, self.max_t = space, int(seed), int(max_t)
        self.points = [dict(p) for p in (points_to_evaluate or [])]
        self.trials: dict[str, dict[str, Any]] = {}  # trial id -> params, distributions, curve, state
        self._frozen: dict[str, Any] = {}  # trial id -> the FrozenTrial last built for it

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_frozen": {}}

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return metric in (None, self.metric) and mode in (None, self.mode)

    # -- suggestions ------------------------------------------------------------------------
    def study(self) -> Any:
        """An in-memory Optuna study holding what every trial reached so far (see the module docstring)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=self.seed + len(self.trials))
        study = optuna.create_study(direction="maximize" if self.mode == "max" else "minimize", sampler=sampler)
        frozen = [f for f in (self._frozen_trial(t) for t in self.trials) if f is not None]
        if frozen:
            study.add_trials(frozen)
        return study

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        study = self.study()
        if len(self.trials) < len(self.points):
            study.enqueue_trial(self.points[len(self.trials)])
        ot_trial = study.ask()
        self.space(ot_trial)
        self.trials[trial_id] = {"params": dict(ot_trial.params), "distributions": dict(ot_trial.distributions),
                                 "curve": {}, "state": RUNNING}
        return dict(ot_trial.params)

    def _frozen_trial(self, trial_id: str) -> Any:
        import optuna

        record = self.trials[trial_id]
        key = (record["state"], len(record["curve"]))
        cached = self._frozen.get(trial_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        curve = {int(k): float(v) for k, v in record["curve"].items()}
        frozen = None
        if record["state"] == COMPLETE and curve:
            best = max(curve.values()) if self.mode == "max" else min(curve.values())
            frozen = optuna.trial.create_trial(params=record["params"], distributions=record["distributions"], value=best,
                                               intermediate_values=curve, state=optuna.trial.TrialState.COMPLETE)
        elif record["state"] != FAILED and curve:
            frozen = optuna.trial.create_trial(params=record["params"], distributions=record["distributions"],
                                               intermediate_values=curve, state=optuna.trial.TrialState.PRUNED)
        self._frozen[trial_id] = (key, frozen)
        return frozen

    # -- what trials report -----------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        record = self.trials.get(trial_id)
        value = result.get(self.metric)
        if record is None or M.ROUND not in result or not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        record["curve"][int(result[M.ROUND])] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        record = self.trials.get(trial_id)
        if record is None:
            return
        if result:
            self.on_trial_result(trial_id, result)
        if error:
            record["state"] = FAILED
        elif record["curve"] and max(record["curve"]) >= self.max_t and (not result or result.get(M.STATUS) != M.STATUS_DIVERGED):
            record["state"] = COMPLETE
        else:
            record["state"] = PRUNED

    def tpe_view(self) -> dict[str, int]:
        """How many trials TPE sees as complete and as pruned (tests, the benchmark)."""
        study = self.study()
        import optuna

        states = [t.state for t in study.get_trials(deepcopy=False)]
        return {"complete": states.count(optuna.trial.TrialState.COMPLETE), "pruned": states.count(optuna.trial.TrialState.PRUNED)}

    # -- Tune's searcher checkpoint ---------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        state = {"trials": self.trials, "points": self.points, "seed": self.seed, "max_t": self.max_t}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.trials, self.points, self.seed, self.max_t = state["trials"], state["points"], state["seed"], state["max_t"]
        self._frozen = {}


class AdmissionLimiter(ConcurrencyLimiter):
    """A ConcurrencyLimiter that asks ASHA with promotions whether a new configuration may start.

    Ray's limiter counts a paused trial as in flight, so two paused trials would block a 2-worker search;
    the scheduler, which knows which trials run, answers `admission()`: "yes", "wait" (max_concurrent
    trials run or wait to run) or "done" (the finish phase has begun). Being a ConcurrencyLimiter, it
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
