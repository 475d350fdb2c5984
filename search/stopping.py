"""Stopping a search on a user mistake found inside a trial.

A `UserError` raised by a trial (a data set whose files a node cannot read, a user's data or model
code failing the same way on every call) would fail again on every retry and in every other trial:
Tune's retries (FailureConfig) are for lost nodes and crashes. `UserErrorStop` is an observer of Tune's hooks
that sees each failed trial's exception and then ends the search (search.callbacks.SearchHooks is Tune's stopper); the driver
raises the trial's message as its own one-line `UserError` once the search is saved
(`hpsearch resume` continues it after the fix). The trial is recorded in the search folder
(search.layout.USER_ERRORS) so the progress lines, MLflow and `hpsearch results` all call it failed.
"""
from __future__ import annotations

import logging
import os
from typing import Any

import cloudpickle

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


class UserErrorStop:
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

    def stop_all(self) -> bool:
        """Whether the search must end (search.callbacks.SearchHooks asks this as Tune's stopper)."""
        return self.message is not None
