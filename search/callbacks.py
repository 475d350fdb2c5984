"""The Tune callbacks a search runs with. They only observe; the search's end is search.tuner's and search.finalize's.

Two go into Tune's RunConfig:
- `ResultLogger`: Tune's JSON result logger (result.json: what hpsearch reads back), kept from losing rows
  when a trial restarts from a checkpoint;
- `SearchHooks`: one callback (and stopper) that forwards Tune's hooks to the driver's observers:
  `search.stopping.UserErrorStop` first (the others then see whether a trial's user error stops the
  search), live progress (search.progress), MLflow tracking (search.tracking.callback), the upload of the
  MLflow run map of a search stored on a URI (`MirrorUpload`), and any callbacks an experiment adds.

Tune pickles its RunConfig into tuner.pkl and a resumed search unpickles it. The observers belong to
the driver that runs the search (a print function, a writer process, the stopper whose message the
driver raises), so `SearchHooks` pickles as nothing and a restore hands it the resuming driver's fresh
observers (`restoring`), instead of reaching into Tune's private restored run config.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import time
from pathlib import Path
from typing import Any, Iterator

from ray.tune import Callback, Stopper
from ray.tune.logger import JsonLoggerCallback
from ray.tune.result import EXPR_RESULT_FILE

from search import layout as L
from search import storage as S
from trainables.errors import UserError

log = logging.getLogger(__name__)

MIRROR_UPLOAD_SECONDS = 30.0  # URI storage: how often the driver uploads the MLflow run map

_HOOKS = ("setup", "on_step_begin", "on_step_end", "on_trial_start", "on_trial_restore", "on_trial_save", "on_trial_result",
          "on_trial_complete", "on_trial_recover", "on_trial_error", "on_checkpoint", "on_experiment_end")
_restored_observers: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("hpsearch_restored_observers",
                                                                                        default=None)


class ResultLogger(JsonLoggerCallback):
    """Tune's JSON result logger, minus the step that loses rows when a trial restarts from a checkpoint.

    Tune's logger writes result.json in the driver's staging folder and copies it to the storage every
    few minutes; when a trial restarts (a node lost, a crash), it overwrites the staging file with the
    storage copy, so every round reported since the last copy disappeared from the trial's learning
    curve (seen on a two-node cluster: rounds 9-14 gone). The staging file of this driver is the more
    complete one: it is put back after Tune's restore (Tune appends to the file, so its next rows follow
    it); the storage copy is used only when there is none (a resume by a new driver).
    """

    def log_trial_start(self, trial: Any) -> None:
        local = Path(trial.local_path, EXPR_RESULT_FILE) if trial.local_path else None
        kept = local.read_bytes() if local is not None and local.is_file() else b""
        super().log_trial_start(trial)
        if kept and local is not None and len(kept) > local.stat().st_size:
            local.write_bytes(kept)


class SearchHooks(Callback, Stopper):
    """Forwards Tune's callback hooks to `observers` in order, and ends the search when an observer's
    `stop_all()` says so (see the module docstring). Pickles as nothing: see `restoring`."""

    def __init__(self, observers: list[Any]) -> None:
        self.observers = list(observers)

    def __getstate__(self) -> dict[str, Any]:
        return {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.observers = list(_restored_observers.get() or [])

    def __deepcopy__(self, memo: dict[int, Any]) -> "SearchHooks":
        return self  # the driver's live observers, not copies

    def _forward(self, hook: str, **info: Any) -> None:
        for observer in self.observers:
            method = getattr(observer, hook, None)
            if method is not None:
                method(**info)

    def get_state(self) -> dict[str, Any] | None:
        return None

    def set_state(self, state: dict[str, Any]) -> None:
        return None

    # Stopper: per-result stopping is the scheduler's; an observer may end everything
    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return any(getattr(observer, "stop_all", lambda: False)() for observer in self.observers)


def _forwarding(hook: str) -> Any:
    def forward(self: SearchHooks, **info: Any) -> None:
        self._forward(hook, **info)

    forward.__name__ = hook
    return forward


for _hook in _HOOKS:
    setattr(SearchHooks, _hook, _forwarding(_hook))


@contextlib.contextmanager
def restoring(observers: list[Any]) -> Iterator[None]:
    """While Tune restores a search (`Tuner.restore` unpickles tuner.pkl), its `SearchHooks` take `observers`."""
    token = _restored_observers.set(list(observers))
    try:
        yield
    finally:
        _restored_observers.reset(token)


class MirrorUpload:
    """Observer (URI storage): uploads the driver's MLflow run map from the local mirror to the search's URI
    every MIRROR_UPLOAD_SECONDS and when the experiment ends, so a resume on another machine reuses the same
    MLflow runs."""

    def __init__(self, folder: L.SearchFolder, every: float = MIRROR_UPLOAD_SECONDS) -> None:
        self.folder, self.every = folder, every
        self._last = time.monotonic()

    def upload(self) -> None:
        if self.folder.runs_file.is_file():
            S.upload(self.folder.runs_file, self.folder.uri(L.RUNS))
        self._last = time.monotonic()

    def on_step_end(self, **info: Any) -> None:
        if time.monotonic() - self._last >= self.every:
            try:
                self.upload()
            except UserError as exc:  # a transient storage error must not stop the search: retried next time
                log.warning("uploading %s failed: %s", L.RUNS, exc)

    def on_experiment_end(self, **info: Any) -> None:
        self.upload()
