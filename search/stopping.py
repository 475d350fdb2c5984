"""Stopping a search on a user mistake found inside a trial.

A `UserError` raised by a trial (a data set whose files a node cannot read, a user's data or model
code failing the same way on every call) would fail again on every retry and in every other trial:
Tune's retries (FailureConfig) are for lost nodes and crashes. `UserErrorStop` is a Tune callback
that sees each failed trial's exception and a Tune stopper that then ends the search; the driver
raises the trial's message as its own one-line `UserError` once the search is saved
(`hpsearch resume` continues it after the fix). The trial is recorded in the search folder
(results.USER_ERRORS_FILE) so the progress lines, MLflow and `hpsearch results` all call it failed.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import cloudpickle
from ray.tune import Callback, Stopper

from search import results as R
from trainables.errors import UserError

log = logging.getLogger(__name__)


def user_error_of(exc: BaseException | None) -> UserError | None:
    """The `UserError` behind a trial's failure (Ray wraps it in a RayTaskError), or None."""
    seen: set[int] = set()
    current = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # a RayTaskError's own exception (the dual class's text is Ray's)
        if isinstance(cause, UserError):
            return cause
        if isinstance(current, UserError):
            return current
        current = cause or current.__cause__ or current.__context__
    return None


def _trial_exception(trial: Any) -> BaseException | None:
    """The exception Tune pickled for a failed trial (written before the callbacks run)."""
    path = getattr(trial, "pickled_error_file", None)
    try:
        if path:
            with open(path, "rb") as f:
                return cloudpickle.load(f)
        return trial.get_pickled_error()
    except Exception:  # noqa: BLE001 - an unreadable error file: not a user error we can name
        log.debug("cannot read the error of trial %s", getattr(trial, "trial_id", "?"), exc_info=True)
        return None


class UserErrorStop(Callback, Stopper):
    """Ends the search at the first trial that failed on a `UserError` (see the module docstring)."""

    def __init__(self, experiment_dir: str | os.PathLike | None = None) -> None:
        self.experiment_dir = experiment_dir
        self.message: str | None = None
        self.trial_id: str | None = None

    def _check(self, trial: Any) -> None:
        if self.message is not None:
            return
        error = user_error_of(_trial_exception(trial))
        if error is not None:
            self.message, self.trial_id = str(error).splitlines()[0] if str(error) else type(error).__name__, trial.trial_id
            if self.experiment_dir is not None:
                R.record_user_error(self.experiment_dir, trial.trial_id, self.message)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check(trial)

    # Stopper: per-result stopping is the scheduler's; this one only ends everything
    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.message is not None

    def __getstate__(self) -> dict[str, Any]:  # pickled in Tune's tuner.pkl: a resumed search starts clean
        return {"experiment_dir": self.experiment_dir, "message": None, "trial_id": None}
