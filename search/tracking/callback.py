"""MLflow tracking owned by the driver: one parent run per search, one nested run per trial.

Ray's stock `MLflowLoggerCallback` logs trials flat, with no search run above
them, marks ASHA-stopped trials as finished and duplicates runs on restart
(ray#19978, optuna#5148, mlflow#4248). This observer of Tune's callback hooks (search.callbacks.SearchHooks forwards them) instead:
- opens (or, on resume, reopens) the search's parent run and maps every trial
  id to its child run (`mlflow.parentRunId`), persisting the map beside the
  search so resume and retries reuse the same runs;
- buffers per-round metrics (`step` = round, an epoch by default) and writes
  them with `log_batch` at most every `flush_seconds`, from one writer only
  (one SQLite writer, optuna#820): Tune's hooks only queue; a writer *process*
  makes the MLflow calls, a run's params, metrics and end tags going out in one
  `log_batch`. A process, not a thread: MLflow's client is CPU-bound Python, and
  a writer thread fighting Tune's loop for the GIL made every MLflow call ~4x
  slower and capped a search of short trials at the writer's pace
  (benchmarks/scale.py);
- ends each child run FINISHED (complete), KILLED + `pruned=true` (ASHA) or
  FAILED + the error (failed or diverged), and never leaves a run RUNNING when
  the search ends or is interrupted; at the end, what a killed driver had not
  yet written (a run, rounds, an end status) is written from Tune's records.
"""
from __future__ import annotations

import json
import math
import multiprocessing
import os
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search import results as R
from search.spec import SearchSpec
from search.tracking.writer import SYNC, RunWriter, check_tracking_uri, sqlite_file, writer_main
from trainables import metrics as M

__all__ = ["MlflowTracker", "TrackingInfo", "artifact_root", "default_tracking_uri", "resolve_tracking_uri", "ui_url"]


def default_tracking_uri(storage_root: str | Path) -> str:
    """The embedded store: an SQLite file beside the searches (no server needed)."""
    return f"sqlite:///{Path(storage_root).expanduser().resolve() / 'mlflow.db'}"


def resolve_tracking_uri(explicit: str | None, storage_root: str | Path) -> str:
    """--tracking-uri, else $MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(storage_root)


def artifact_root(storage_root: str | Path) -> str:
    return (Path(storage_root).expanduser().resolve() / "mlartifacts").as_uri()


def ui_url(tracking_uri: str, experiment_id: str, host: str = "127.0.0.1", port: int = 5000) -> str:
    """Direct link to the experiment's runs page (MLflow 3 opens experiments on a GenAI page)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else f"http://{host}:{port}"
    return f"{base}/#/experiments/{experiment_id}/runs"


def compare_url(tracking_uri: str, experiment_id: str, run_ids: list[str], host: str = "127.0.0.1", port: int = 5000) -> str:
    """Link to MLflow's compare-runs page for `run_ids` (a search's trials): their parallel coordinates,
    scatter and contour plots of params against metrics (the UI's own route, `?runs=[...]&experiments=[...]`)."""
    from urllib.parse import quote

    base = ui_url(tracking_uri, experiment_id, host, port).split("/#/", 1)[0]
    runs = quote(json.dumps(sorted(run_ids), separators=(",", ":")), safe="")
    experiments = quote(json.dumps([str(experiment_id)], separators=(",", ":")), safe="")
    return f"{base}/#/compare-runs?runs={runs}&experiments={experiments}"


def search_info(spec: SearchSpec) -> dict[str, Any]:
    """What the parent run records about the spec (plain data for the writer process)."""
    return {"name": spec.name, "raw": spec.raw, "tags": {
        "dataset": spec.dataset, "model": spec.model, "seed": str(spec.seed), "metric": spec.metric, "mode": spec.mode}}


@dataclass(frozen=True)
class TrackingInfo:
    """Where a search is in MLflow: the store, the experiment, the search's parent run and the UI's links."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    ui_url: str  # the experiment's runs page
    compare_url: str  # the trials side by side (parallel coordinates)


class MlflowTracker:
    """Observer of a search's Tune hooks that mirrors it into MLflow (see the module docstring).

    Tune calls the hooks on its driver loop; they only record what happened and queue it
    for the writer process (`search.tracking.writer.RunWriter`, the store's only writer), so
    a search of many short trials is slowed down neither by SQLite round trips nor by
    MLflow's Python competing with Tune's loop for the GIL. `flush()` waits until
    everything queued is in MLflow and takes back the writer's run map; the end of the
    experiment and `end_search` do that, after which the driver writes synchronously.
    The writer dies with the driver (a killed driver loses at most its queue, which the
    resumed search's `end_search` re-derives from Tune's records).
    """

    def __init__(self, spec: SearchSpec, experiment_dir: Path, tracking_uri: str, artifact_location: str | None,
                 total_rounds: int, *, flush_seconds: float = 2.0, runs: dict[str, Any] | None = None,
                 resumed: bool = False, rungs: tuple[int, ...] = (), parent_tags: dict[str, str] | None = None) -> None:
        self.spec, self.experiment_dir, self.tracking_uri = spec, Path(experiment_dir), tracking_uri
        self.parent_tags = dict(parent_tags or {})  # e.g. warm_start_from: the searches this one started from
        check_tracking_uri(tracking_uri)
        self.artifact_location, self.total_rounds, self.flush_seconds = artifact_location, total_rounds, flush_seconds
        self.resumed = resumed  # an earlier driver of this search may have died with writes queued
        self.rungs = tuple(rungs)  # where trials pause or stop: tells pruned from timed out
        self._paused: set[str] = set()  # trials tagged paused=true
        info = search_info(spec)
        info["tags"].update(self.parent_tags)
        self.writer = RunWriter(self.experiment_dir, tracking_uri, artifact_location, info,
                                flush_seconds=flush_seconds, runs=runs)
        self._proc: Any = None  # the writer process
        self._commands: Any = None  # driver → writer: (operation, args)
        self._replies: Any = None  # writer → driver: ("error", line) | ("synced", token, run map, error)
        self._error: str | None = None
        self._started: set[str] = set()  # trials whose run was requested

    @classmethod
    def for_search(cls, spec: SearchSpec, folder: Any, state: dict[str, Any], total_rounds: int) -> "MlflowTracker":
        """The tracker of a search (`folder`: its search.layout.SearchFolder); fixes its tracking URI in `state` so
        resume uses the same store. The embedded store is an SQLite file beside the searches, with its artifacts;
        for a search stored on a URI (SQLite cannot live in a bucket) on the driver's machine."""
        from search import storage as S

        root = S.local_tracking_root(state["storage"]) if folder.remote else state["storage"]
        uri = resolve_tracking_uri(state.get("tracking_uri"), root)
        state["tracking_uri"] = uri
        artifacts = None
        if uri.startswith("sqlite:"):
            db = sqlite_file(uri) or Path("mlflow.db").resolve()
            artifacts = artifact_root(db.parent if folder.remote else state["storage"])  # beside the SQLite file
        return cls(spec, folder.local, uri, artifacts, total_rounds, resumed=bool(state.get("resumed")),
                   rungs=tuple(state.get("rungs", ())), parent_tags=state.get("parent_tags"))

    @property
    def runs(self) -> dict[str, Any]:
        return self.writer.runs

    @property
    def client(self) -> Any:
        return self.writer.client

    @property
    def parent_run_id(self) -> str:
        return self.writer.parent_run_id

    # -- the writer process -----------------------------------------------------------------
    def _submit(self, operation: str, *args: Any) -> None:
        """Queue one `RunWriter` operation for the writer process, started on first use."""
        self._raise_writer_error()
        if self._proc is None:
            context = multiprocessing.get_context("spawn")  # fork would copy Ray's and gRPC's threads
            self._commands, self._replies = context.Queue(), context.Queue()
            die_with_parent = threading.current_thread() is threading.main_thread()
            self._proc = context.Process(target=writer_main, name="hpsearch-mlflow-writer", daemon=True,
                                         args=(self.writer.state(), self._commands, self._replies, os.getpid(), die_with_parent))
            self._proc.start()
        elif not self._proc.is_alive():
            raise RuntimeError(f"MLflow tracking failed: the writer process exited with code {self._proc.exitcode}")
        self._commands.put((operation, args))

    def _raise_writer_error(self) -> None:
        while self._replies is not None:
            try:
                message = self._replies.get_nowait()
            except queue.Empty:
                break
            if message[0] == "error":
                self._error = self._error or message[1]
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"MLflow tracking failed: {error}")

    def _sync(self, *, stop: bool) -> None:
        """Have the writer write everything pending; take back its run map (and stop it if asked)."""
        token = uuid.uuid4().hex
        self._commands.put((SYNC, (token, stop)))
        while True:
            try:
                message = self._replies.get(timeout=1.0)
            except queue.Empty:
                if not self._proc.is_alive():
                    code, self._proc = self._proc.exitcode, None
                    raise RuntimeError(f"MLflow tracking failed: the writer process exited with code {code}") from None
                continue
            if message[0] == "error":
                self._error = self._error or message[1]
            elif message[0] == "synced" and message[1] == token:
                with self.writer.lock:
                    self.writer.runs = message[2]
                self._error = self._error or message[3]
                break
        if stop:
            self._proc.join(timeout=30)
            for channel in (self._commands, self._replies):
                channel.close()
            self._proc = self._commands = self._replies = None

    def flush(self) -> None:
        """Write everything queued and buffered; returns when it is in MLflow."""
        if self._proc is not None:
            self._sync(stop=False)
        else:
            self.writer.write_pending()
        self._raise_writer_error()

    def close(self) -> None:
        """Flush, then stop the writer process (a later hook starts a new one)."""
        if self._proc is not None:
            self._sync(stop=True)
        self.writer.write_pending()
        self._raise_writer_error()

    # -- Tune hooks (driver loop: record and queue only) ------------------------------------
    def setup(self, **info: Any) -> None:
        self._submit("open_parent")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._request_child(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._request_child(trial)

    def _request_child(self, trial: Any) -> None:
        self._started.add(trial.trial_id)
        self._submit("child", *self.child_args(trial.trial_id, trial.config))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if trial.trial_id not in self._started:
            self._request_child(trial)
        step = int(result.get(M.ROUND, 0))  # a round replayed after a restart is skipped by the writer (queue_metrics)
        ts = int(time.time() * 1000)
        batch = []
        for key in M.curve_keys(result):
            value = result.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                batch.append((key, float(value), ts, step))
        self._submit("queue_metrics", trial.trial_id, step, batch)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """Tag runs `paused` while their trial waits at a rung (ASHA with promotions), untag them when resumed."""
        self._raise_writer_error()
        if not self.rungs:
            return
        for trial in trials:
            paused = trial.status == "PAUSED"
            if paused != (trial.trial_id in self._paused) and trial.trial_id in self._started:
                (self._paused.add if paused else self._paused.discard)(trial.trial_id)
                rounds = str((trial.last_result or {}).get(M.ROUND, 0))
                self._submit("tag", trial.trial_id, {"paused": str(paused).lower(), "paused_at_round": rounds} if paused
                             else {"paused": "false"})

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if trial.trial_id not in self._started:
            self._request_child(trial)
        self._submit("end", trial.trial_id, *outcome_tags(trial.trial_id, last, self.total_rounds, self.rungs,
                                                      R.read_user_errors(self.experiment_dir)))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = _error_line(trial)
        if trial.trial_id not in self._started:
            self._request_child(trial)
        self._submit("end", trial.trial_id, "FAILED", {"outcome": R.Outcome.FAILED, "error": message})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    # -- end of search ----------------------------------------------------------------------
    def end_search(self, result: Any, report: Any = None, error: str | None = None) -> "TrackingInfo":
        """Log how the search ended (search.tuner calls this after search.finalize): the summary, the final
        report it is given (or the error that prevented one), what a killed driver had not written; close every run."""
        from search.tracking import final

        self.close()  # everything queued is written; from here on the calls are synchronous
        final.reconcile(self, result.records)
        final.log_end(self, result, report, error)
        return TrackingInfo(
            tracking_uri=self.tracking_uri, experiment_id=self.runs["experiment_id"], parent_run_id=self.parent_run_id,
            ui_url=ui_url(self.tracking_uri, self.runs["experiment_id"]),
            compare_url=compare_url(self.tracking_uri, self.runs["experiment_id"], list(self.runs["trials"].values())))

    def child_args(self, trial_id: str, config: dict[str, Any]) -> tuple[str, dict[str, Any], str, str]:
        """The writer's `child` arguments for a trial: id, full config, whether it is the baseline, its sampled keys."""
        baseline = str(all(config.get(k) == v for k, v in self.spec.baseline_point().items())).lower()
        return trial_id, self.spec.full_config(dict(config)), baseline, ",".join(sorted(config))


def outcome_tags(trial_id: str, last: dict[str, Any], total_rounds: int, rungs: tuple[int, ...],
             user_errors: dict[str, str]) -> tuple[str, dict[str, str]]:
    """MLflow end status and tags of a trial Tune ended (`paused` is cleared: the trial has ended)."""
    rounds = int(last.get(M.ROUND, 0))
    outcome, error = R.trial_end(trial_id, last, total_rounds, rungs, user_errors)
    if outcome == R.Outcome.FAILED:
        return "FAILED", {"outcome": R.Outcome.FAILED, "error": error, "paused": "false"}
    if outcome == R.Outcome.DIVERGED:
        return "FAILED", {"outcome": R.Outcome.DIVERGED, "error": "diverged: non-finite training loss", "paused": "false"}
    if outcome == R.Outcome.COMPLETED:
        return "FINISHED", {"outcome": R.Outcome.COMPLETED, "pruned": "false", "paused": "false"}
    tags = {"outcome": outcome, "pruned": str(outcome == R.Outcome.PRUNED).lower(), "stopped_at_round": str(rounds),
            "paused": "false"}
    if rungs:
        tags["stopped_at_rung"] = str(R.rung_of(rounds, rungs))
    if outcome == R.Outcome.TIMED_OUT:
        tags["timed_out"] = "true"
    return "KILLED", tags


def _error_line(trial: Any) -> str:
    return R.error_line(Path(trial.path or trial.local_path or ""), limit=1000) or str(getattr(trial, "error_message", None) or "trial failed")
