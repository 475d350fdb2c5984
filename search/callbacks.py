"""The Tune callbacks a search runs with (search_callbacks): Tune's JSON result logger (patched so a
restarted trial keeps its rounds), live progress, MLflow tracking, and for a search stored on a URI
the periodic upload of the driver's MLflow run map.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from search import rounds as B
from search import results as R
from search import storage as S
from search.spec import SearchSpec
from trainables.data import DataBundle
from trainables.errors import UserError

log = logging.getLogger(__name__)

MIRROR_UPLOAD_SECONDS = 30.0  # URI storage: how often the driver uploads the MLflow run map


def result_logger() -> Any:
    """Tune's JSON result logger, minus the step that loses rows when a trial restarts from a checkpoint.

    Tune's logger writes result.json in the driver's staging folder and copies it to the storage every
    few minutes; when a trial restarts (a node lost, a crash), it overwrites the staging file with the
    storage copy, so every round reported since the last copy disappeared from the trial's learning
    curve (seen on a two-node cluster: rounds 9-14 gone). The staging file of this driver is always
    the more complete one: it is kept; the storage copy is used only when there is none (a resume
    by a new driver).
    """
    from ray.tune.logger import JsonLoggerCallback

    class ResultLogger(JsonLoggerCallback):
        def _restore_from_remote(self, file_name: str, trial: Any) -> None:
            local_file = Path(trial.local_path, file_name)
            if local_file.is_file() and local_file.stat().st_size > 0:
                return
            super()._restore_from_remote(file_name, trial)

    return ResultLogger()


def search_callbacks(spec: SearchSpec, data: DataBundle, experiment_dir: Path, state: dict[str, Any], on_event: Any) -> list[Any]:
    """hpsearch's own Tune callbacks: the result logger, live progress, MLflow tracking, the URI mirror upload."""
    from search.progress import ProgressCallback

    # Only Tune's JSON logger (result.json: what hpsearch reads back); Tune's CSV and tensorboardX loggers are
    # off (their cost is measured in benchmarks/README.md, "scale"); MLflow is the UI.
    rounds = B.total_rounds(spec, len(data.train))
    callbacks: list[Any] = [result_logger(), ProgressCallback(spec, rounds, on_event, rungs=tuple(state.get("rungs", ())),
                                                                   experiment_dir=experiment_dir)]
    uri_storage = S.is_uri(state.get("storage"))
    if state.get("track", True):
        from search.tracking.callback import MlflowTracker

        if uri_storage:  # the tracker writes its run map to the local mirror; the store is local (SQLite is no bucket file)
            uri, artifacts = _tracking_for_uri_storage(state)
            callbacks.append(MlflowTracker(spec, experiment_dir, uri, artifacts, rounds, resumed=bool(state.get("resumed")),
                                           rungs=tuple(state.get("rungs", ())), parent_tags=state.get("parent_tags")))
        else:
            callbacks.append(MlflowTracker.for_search(spec, experiment_dir, state, rounds))
    if uri_storage:
        callbacks.append(MirrorUpload(experiment_dir, S.join(state["storage"], state["name"])))
    return callbacks


def _tracking_for_uri_storage(state: dict[str, Any]) -> tuple[str, str | None]:
    """MLflow tracking URI and artifact root of a search stored on a URI (fixed in `state` for resume)."""
    from search.tracking.writer import sqlite_file
    from search.tracking.callback import artifact_root, resolve_tracking_uri

    uri = resolve_tracking_uri(state.get("tracking_uri"), S.local_tracking_root(state["storage"]))
    state["tracking_uri"] = uri
    if not uri.startswith("sqlite:"):
        return uri, None
    db = sqlite_file(uri) or Path("mlflow.db").resolve()
    return uri, artifact_root(db.parent)  # artifacts beside the SQLite file, as for local storage


class MirrorUpload:
    """Tune callback (URI storage): uploads the driver's MLflow run map from the local mirror to the
    search's URI every MIRROR_UPLOAD_SECONDS and when the experiment ends, so a resume on another
    machine reuses the same MLflow runs."""

    def __init__(self, mirror: Path, experiment_uri: str, every: float = MIRROR_UPLOAD_SECONDS) -> None:
        self.mirror, self.experiment_uri, self.every = Path(mirror), experiment_uri, every
        self._last = time.monotonic()

    # The hooks of `ray.tune.Callback` this one does not use (duck-typed: importing Ray's class here
    # would slow down every CLI command that imports this module).
    def setup(self, **info: Any) -> None: ...
    def on_step_begin(self, **info: Any) -> None: ...
    def on_trial_start(self, **info: Any) -> None: ...
    def on_trial_restore(self, **info: Any) -> None: ...
    def on_trial_save(self, **info: Any) -> None: ...
    def on_trial_result(self, **info: Any) -> None: ...
    def on_trial_complete(self, **info: Any) -> None: ...
    def on_trial_recover(self, **info: Any) -> None: ...
    def on_trial_error(self, **info: Any) -> None: ...
    def on_checkpoint(self, **info: Any) -> None: ...
    def get_state(self) -> None:
        return None

    def set_state(self, state: Any) -> None: ...

    def upload(self) -> None:
        path = self.mirror / R.RUNS_FILE
        if path.is_file():
            S.upload(path, S.join(self.experiment_uri, R.RUNS_FILE))
        self._last = time.monotonic()

    def on_step_end(self, **info: Any) -> None:
        if time.monotonic() - self._last >= self.every:
            try:
                self.upload()
            except UserError as exc:  # a transient storage error must not stop the search: retried next time
                log.warning("uploading %s failed: %s", R.RUNS_FILE, exc)

    def on_experiment_end(self, **info: Any) -> None:
        self.upload()

