"""Live progress of a search as plain lines (readable in a terminal, a log file or CI).

One line when a trial starts or ends, and a status line at most every
`interval` seconds: trials running / done / pruned / failed and the best so far.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

from search import results as R
from search.spec import SearchSpec
from trainables import metrics as M


class ProgressCallback:
    """Observer of a search's Tune hooks (search.callbacks.SearchHooks) that prints its progress through `emit`
    (print by default; None = silent)."""

    def __init__(self, spec: SearchSpec, total_rounds: int, emit: Callable[[str], None] | None, interval: float = 15.0,
                 rungs: tuple[int, ...] = (), experiment_dir: str | Path | None = None) -> None:
        self.spec, self.total_rounds, self.emit, self.interval, self.rungs = spec, total_rounds, emit, interval, tuple(rungs)
        self.experiment_dir = experiment_dir  # where search.stopping records a trial's user error
        self.started = time.monotonic()
        self.last_status = 0.0
        self.best: tuple[float, str] | None = None
        self.ended: dict[str, str] = {}
        self.paused: set[str] = set()

    def _user_errors(self) -> dict[str, str]:
        return R.read_user_errors(self.experiment_dir) if self.experiment_dir is not None else {}

    def _say(self, message: str) -> None:
        if self.emit is not None:
            self.emit(f"[{time.monotonic() - self.started:7.1f}s] {message}")

    def _counts(self, trials: list[Any]) -> str:
        running = sum(t.status == "RUNNING" for t in trials)
        paused = sum(t.status == "PAUSED" for t in trials)
        done = sum(v == R.Outcome.COMPLETED for v in self.ended.values())
        pruned = sum(v == R.Outcome.PRUNED for v in self.ended.values())
        timed_out = sum(v == R.Outcome.TIMED_OUT for v in self.ended.values())
        failed = sum(v in (R.Outcome.FAILED, R.Outcome.DIVERGED) for v in self.ended.values())
        best = f"best {self.spec.metric} {self.best[0]:.4f} ({self.best[1]})" if self.best else "no result yet"
        waiting = f"{paused} paused, " if paused else ""
        cut = f"{timed_out} timed out, " if timed_out else ""
        return (f"{running} running, {waiting}{done} completed, {pruned} pruned, {cut}{failed} failed of "
                f"{self.spec.budget.samples} | {best}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        rounds = int((trial.last_result or {}).get(M.ROUND, 0))
        if rounds:  # a paused trial promoted past its rung, or a trial restored after a failure
            self._say(f"resume {trial.trial_id} after round {rounds}/{self.total_rounds}")
            return
        params = ", ".join(f"{k}={_short(v)}" for k, v in sorted(trial.config.items()))
        self._say(f"start {trial.trial_id}: {params or 'baseline'}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.spec.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and result.get(M.STATUS) != M.STATUS_DIVERGED:
            if self.best is None or (value > self.best[0] if self.spec.mode == "max" else value < self.best[0]):
                self.best = (float(value), trial.trial_id)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        rounds = int(last.get(M.ROUND, 0))
        outcome, _ = R.trial_end(trial.trial_id, last, self.total_rounds, self.rungs, self._user_errors())
        self.ended[trial.trial_id] = outcome
        value = last.get(self.spec.metric)
        shown = f"{value:.4f}" if isinstance(value, (int, float)) else "-"
        self._say(f"{outcome} {trial.trial_id} after {rounds}/{self.total_rounds} rounds, {self.spec.metric} {shown} | {self._counts(trials)}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.ended[trial.trial_id] = R.Outcome.FAILED
        self._say(f"failed {trial.trial_id} (see {trial.path}/error.txt) | {self._counts(trials)}")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        user_errors = self._user_errors()
        if trial.trial_id in user_errors:  # search.stopping ends the search instead of retrying it
            self.ended[trial.trial_id] = R.Outcome.FAILED
            self._say(f"failed {trial.trial_id}: {user_errors[trial.trial_id]} (see {trial.path}/error.txt); the search stops")
            return
        self._say(f"retry {trial.trial_id} from its last checkpoint after a failure (see {trial.path}/error.txt) | {self._counts(trials)}")

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self.rungs:  # ASHA with promotions: a line when a trial starts waiting at a rung
            for trial in trials:
                if trial.status == "PAUSED" and trial.trial_id not in self.paused:
                    self.paused.add(trial.trial_id)
                    rounds = int((trial.last_result or {}).get(M.ROUND, 0))
                    self._say(f"pause {trial.trial_id} at round {rounds}/{self.total_rounds} (rung {R.rung_of(rounds, self.rungs)}) "
                              f"until it ranks in its rung's top 1/{self.spec.budget.reduction_factor:g}")
                elif trial.status != "PAUSED":
                    self.paused.discard(trial.trial_id)
        now = time.monotonic()
        if now - self.last_status >= self.interval and any(t.status == "RUNNING" for t in trials):
            self.last_status = now
            self._say(self._counts(trials))


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
