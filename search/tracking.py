"""MLflow tracking owned by the driver: one parent run per search, one nested run per trial.

Ray's stock `MLflowLoggerCallback` logs trials flat, with no search run above
them, marks ASHA-stopped trials as finished and duplicates runs on restart
(ray#19978, optuna#5148, mlflow#4248). This Tune `Callback` instead:
- opens (or, on resume, reopens) the search's parent run and maps every trial
  id to its child run (`mlflow.parentRunId`), persisting the map beside the
  search so resume and retries reuse the same runs;
- buffers per-round metrics (`step` = round, an epoch by default) and writes
  them with `log_batch` at most every `flush_seconds`, from the driver only
  (one SQLite writer, optuna#820): Tune's hooks only queue, one writer thread
  makes the MLflow calls, a run's params, metrics and end tags going out in
  one `log_batch` (benchmarks/scale.py: MLflow calls on Tune's loop halved its
  trial throughput on 1,000 short trials);
- ends each child run FINISHED (complete), KILLED + `pruned=true` (ASHA) or
  FAILED + the error (failed or diverged), and never leaves a run RUNNING when
  the search ends or is interrupted; at the end, what a killed driver had not
  yet written (a run, rounds, an end status) is written from Tune's records.
"""
from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search import results as R
from search.spec import SearchSpec
from trainables import metrics as M

RUNS_FILE = "mlflow_runs.json"
PARAM_VALUE_MAX = 500
_STOP = object()  # tells the writer thread to flush and exit


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


def flatten(prefix: str, value: Any) -> dict[str, str]:
    """Nested spec → flat `a.b` params, values as short strings."""
    if isinstance(value, dict):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: str(value)[:PARAM_VALUE_MAX]}


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - not a git checkout, or no git
        return "unknown"


def hpsearch_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hpsearch")
    except PackageNotFoundError:
        return "unknown"


class MlflowTracker(Callback):
    """Tune callback that mirrors a search into MLflow (see the module docstring).

    Tune calls the hooks on its driver loop; they only record what happened and queue it.
    One writer thread (the store's only writer) does the MLflow calls in order, batching a
    run's params, metrics and end tags into one `log_batch` (at most every `flush_seconds`,
    and when the run ends), so a search of many short trials is not slowed down by SQLite
    round trips. `flush()` waits until everything queued is in MLflow; the end of the
    experiment and `finish_search` do that.
    """

    def __init__(self, spec: SearchSpec, experiment_dir: Path, tracking_uri: str, artifact_location: str | None,
                 total_rounds: int, *, flush_seconds: float = 2.0) -> None:
        self.spec, self.experiment_dir, self.tracking_uri = spec, Path(experiment_dir), tracking_uri
        self.artifact_location, self.total_rounds, self.flush_seconds = artifact_location, total_rounds, flush_seconds
        self.runs = self._load_runs()
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()  # guards `runs` between the writer and pickling / saving
        self._queue: queue.Queue = queue.Queue()
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._pending: dict[str, dict[str, list[Any]]] = {}  # run id → params / metrics / tags not yet written
        self._pending_round: dict[str, int] = {}  # trial id → highest round among its pending metrics
        self._last_flush = time.monotonic()
        self._dirty = False  # `runs` changed since it was last saved
        self._started: set[str] = set()  # trials whose run was requested (driver side)
        self._seen_round = dict(self.runs["logged_round"])  # trial id → last round queued (driver side)

    @classmethod
    def for_search(cls, spec: SearchSpec, experiment_dir: Path, state: dict[str, Any], total_rounds: int) -> "MlflowTracker":
        """The tracker of a search; fixes its tracking URI in `state` so resume uses the same store."""
        uri = resolve_tracking_uri(state.get("tracking_uri"), state["storage"])
        state["tracking_uri"] = uri
        artifacts = artifact_root(state["storage"]) if uri.startswith("sqlite:") else None
        return cls(spec, experiment_dir, uri, artifacts, total_rounds)

    # -- persistence ------------------------------------------------------------------------
    _RUNTIME = ("_client", "_lock", "_queue", "_writer", "_error", "_pending", "_pending_round", "_last_flush", "_dirty", "_started",
                "_seen_round")

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            state = {k: v for k, v in self.__dict__.items() if k not in self._RUNTIME}
            state["runs"] = json.loads(json.dumps(self.runs))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()

    def _load_runs(self) -> dict[str, Any]:
        path = self.experiment_dir / RUNS_FILE
        if path.is_file():
            return json.loads(path.read_text())
        return {"experiment_id": None, "parent_run_id": None, "trials": {}, "logged_round": {}, "ended": {}}

    def _save_runs(self) -> None:
        self.experiment_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.experiment_dir / f".{RUNS_FILE}.tmp"
        with self._lock:
            text = json.dumps(self.runs, separators=(",", ":"))
        tmp.write_text(text)
        tmp.replace(self.experiment_dir / RUNS_FILE)

    @property
    def client(self) -> Any:
        if self._client is None:
            import logging

            from mlflow.tracking import MlflowClient

            for noisy in ("mlflow", "alembic"):
                logging.getLogger(noisy).setLevel(logging.WARNING)

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def parent_run_id(self) -> str:
        return self.runs["parent_run_id"]

    # -- the writer thread ------------------------------------------------------------------
    def _submit(self, fn: Any, *args: Any) -> None:
        """Queue one MLflow operation for the writer (started on first use)."""
        self._raise_writer_error()
        if self._writer is None or not self._writer.is_alive():
            self._writer = threading.Thread(target=self._write_loop, name="hpsearch-mlflow-writer", daemon=True)
            self._writer.start()
        self._queue.put((fn, args))

    def _raise_writer_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"MLflow tracking failed: {type(error).__name__}: {error}") from error

    def _write_loop(self) -> None:
        while True:
            wait = None
            if self._pending or self._dirty:
                wait = max(0.0, self.flush_seconds - (time.monotonic() - self._last_flush))
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                self._guarded(self._write_pending)
                continue
            try:
                if item is _STOP:
                    self._guarded(self._write_pending)
                    return
                fn, args = item
                self._guarded(fn, *args)
                if (self._pending or self._dirty) and time.monotonic() - self._last_flush >= self.flush_seconds:
                    self._guarded(self._write_pending)
            finally:
                self._queue.task_done()

    def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - surfaced on the driver at its next hook or flush
            if self._error is None:
                self._error = exc

    def flush(self) -> None:
        """Write everything queued and buffered; returns when it is in MLflow."""
        if self._writer is not None and self._writer.is_alive():
            self._queue.put((self._write_pending, ()))
            self._queue.join()
        else:
            self._write_pending()
        self._raise_writer_error()

    def close(self) -> None:
        """Flush, then stop the writer thread (a later hook starts a new one)."""
        if self._writer is not None and self._writer.is_alive():
            self._queue.put(_STOP)
            self._queue.join()
            self._writer.join(timeout=30)
        self._writer = None
        self._write_pending()
        self._raise_writer_error()

    def _run_of(self, trial_id: str) -> str:
        return self.runs["trials"][trial_id]

    def _add(self, run_id: str, kind: str, items: list[Any]) -> None:
        self._pending.setdefault(run_id, {"params": [], "metrics": [], "tags": []})[kind].extend(items)

    def _write_pending(self, only: str | None = None) -> None:
        """One `log_batch` per run with pending params, metrics and tags (split at MLflow's batch limits)."""
        for run_id in [only] if only is not None else list(self._pending):
            batch = self._pending.pop(run_id, None)
            if batch is None:
                continue
            params, metrics, tags = batch["params"], batch["metrics"], batch["tags"]
            while params or metrics or tags:
                p, params = params[:100], params[100:]
                t, tags = tags[:100], tags[100:]
                m, metrics = metrics[: 1000 - len(p) - len(t)], metrics[1000 - len(p) - len(t):]
                self.client.log_batch(run_id, metrics=m, params=p, tags=t)
        written = {t: r for t, r in self._pending_round.items() if only is None or self.runs["trials"].get(t) == only}
        with self._lock:
            for trial_id, step in written.items():
                self.runs["logged_round"][trial_id] = max(step, self.runs["logged_round"].get(trial_id, 0))
        for trial_id in written:
            self._pending_round.pop(trial_id, None)
        if only is None:
            self._last_flush = time.monotonic()
        if written or self._dirty or only is None:
            # Rounds in MLflow are saved as logged at once (a restart must not log them twice); run ends
            # wait for the next periodic save (`finish_search` re-derives a lost end from Tune's records).
            self._dirty = False
            self._save_runs()

    # -- Tune hooks (driver loop: record and queue only) ------------------------------------
    def setup(self, **info: Any) -> None:
        self._submit(self.open_parent)

    def open_parent(self) -> None:
        """Create the experiment and the parent run, or reopen them on resume."""
        client = self.client
        if self.runs["experiment_id"] is None:
            experiment = client.get_experiment_by_name(self.spec.name)
            if experiment is None:
                experiment_id = client.create_experiment(self.spec.name, artifact_location=self.artifact_location)
            else:
                experiment_id = experiment.experiment_id
            with self._lock:
                self.runs["experiment_id"] = experiment_id
        if self.runs["parent_run_id"] is None:
            import yaml
            from mlflow.entities import Param

            run = client.create_run(self.runs["experiment_id"], run_name=self.experiment_dir.name, tags={
                "hpsearch.kind": "search", "hpsearch.search_name": self.experiment_dir.name,
                "hpsearch.search_dir": str(self.experiment_dir), "dataset": self.spec.dataset, "model": self.spec.model,
                "seed": str(self.spec.seed), "git_commit": git_commit(), "hpsearch_version": hpsearch_version(),
                "metric": self.spec.metric, "mode": self.spec.mode,
            })
            with self._lock:
                self.runs["parent_run_id"] = run.info.run_id
            self._save_runs()
            params = [Param(k, v) for k, v in flatten("", {k: v for k, v in self.spec.raw.items() if k != "description"}).items()]
            for start in range(0, len(params), 100):
                client.log_batch(run.info.run_id, params=params[start : start + 100])
            client.log_text(run.info.run_id, yaml.safe_dump(self.spec.raw, sort_keys=False), "spec.yaml")
        else:
            client.update_run(self.parent_run_id, status="RUNNING")
            client.set_tag(self.parent_run_id, "interrupted", "false")
            self._sync_logged_rounds()

    def _sync_logged_rounds(self) -> None:
        """On resume, trust MLflow over the saved map: a killed driver may have logged rounds it never recorded."""
        for trial_id, run_id in self.runs["trials"].items():
            history = self.client.get_metric_history(run_id, M.TRAIN_LOSS)
            if history:
                self.runs["logged_round"][trial_id] = max(self.runs["logged_round"].get(trial_id, 0), max(m.step for m in history))
        self._save_runs()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._request_child(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._request_child(trial)

    def _request_child(self, trial: Any) -> None:
        self._started.add(trial.trial_id)
        config = self.spec.full_config(dict(trial.config))
        baseline = str(all(trial.config.get(k) == v for k, v in self.spec.baseline_point().items())).lower()
        self._submit(self._child, trial.trial_id, config, baseline, ",".join(sorted(trial.config)))

    def _child(self, trial_id: str, config: dict[str, Any], baseline: str, sampled: str) -> str:
        """The child run of a trial: created once, reopened (RUNNING) when the trial restarts (writer thread)."""
        from mlflow.entities import Param

        run_id = self.runs["trials"].get(trial_id)
        if run_id is not None:
            with self._lock:
                self.runs["ended"].pop(trial_id, None)
            self._dirty = True
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.runs["experiment_id"], run_name=trial_id, tags={
            "mlflow.parentRunId": self.parent_run_id, "hpsearch.kind": "trial", "trial_id": trial_id,
            "baseline": baseline, "sampled": sampled,
        })
        run_id = run.info.run_id
        with self._lock:
            self.runs["trials"][trial_id] = run_id
        self._save_runs()  # at once: a run the map does not know would be a duplicate after a restart
        self._add(run_id, "params", [Param(k, str(v)[:PARAM_VALUE_MAX]) for k, v in sorted(config.items())])
        return run_id

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        if trial.trial_id not in self._started:
            self._request_child(trial)
        step = int(result.get(M.ROUND, 0))
        if step <= self._seen_round.get(trial.trial_id, 0):
            return  # replayed after a restart from an older checkpoint: already in MLflow
        self._seen_round[trial.trial_id] = step
        ts = int(time.time() * 1000)
        batch = []
        for key in (*M.CURVE_METRICS, M.EPOCH):
            value = result.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                batch.append(Metric(key, float(value), ts, step))
        self._submit(self._queue_metrics, trial.trial_id, step, batch)

    def _queue_metrics(self, trial_id: str, step: int, batch: list[Any]) -> None:
        self._add(self._run_of(trial_id), "metrics", batch)
        self._pending_round[trial_id] = max(step, self._pending_round.get(trial_id, 0))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._raise_writer_error()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if trial.trial_id not in self._started:
            self._request_child(trial)
        self._submit(self._end, trial.trial_id, *_outcome(last, self.total_rounds))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = _error_line(trial)
        if trial.trial_id not in self._started:
            self._request_child(trial)
        self._submit(self._end, trial.trial_id, "FAILED", {"outcome": R.FAILED, "error": message})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    def _end(self, trial_id: str, status: str, tags: dict[str, str]) -> None:
        """The run's pending params / metrics / tags in one batch, then its end status (writer thread)."""
        from mlflow.entities import RunTag

        run_id = self._run_of(trial_id)
        self._add(run_id, "tags", [RunTag(key, value[:5000]) for key, value in tags.items()])
        self._write_pending(only=run_id)
        self.client.set_terminated(run_id, status=status)
        with self._lock:
            self.runs["ended"][trial_id] = status
        self._dirty = True

    # -- end of search ----------------------------------------------------------------------
    def finish_search(self, result: Any, data: Any, *, refit: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """Summary metrics on the parent run, best model + test evaluation, then close every run."""
        from search import report

        self.close()  # everything queued is written; from here on the calls are synchronous
        self._reconcile(result.records)
        client = self.client
        parent = self.parent_run_id
        final: dict[str, Any] = {}
        summary = {f"n_{k}": float(v) for k, v in result.counts.items()}
        if result.best is not None:
            summary[f"best_{self.spec.metric}"] = result.best.best_value
            summary["best_epoch"] = float(result.best.best_epoch or 0)
            client.set_tag(parent, "best_trial_id", result.best.trial_id)
            if result.best.trial_id in self.runs["trials"]:
                client.set_tag(parent, "best_run_id", self.runs["trials"][result.best.trial_id])
        if result.baseline is not None and result.baseline.best_value is not None:
            summary[f"baseline_{self.spec.metric}"] = result.baseline.best_value
            if result.best is not None:
                summary["improvement_over_baseline"] = result.best.best_value - result.baseline.best_value
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        client.log_batch(parent, metrics=[Metric(k, float(v), ts, 0) for k, v in summary.items() if v is not None and math.isfinite(v)])
        if not result.interrupted and result.best is not None:
            try:
                final = report.final_report(result, data, tracker=self, refit=refit)
            except Exception as exc:  # noqa: BLE001 - keep the search's runs and results whatever fails here
                final = {"error": f"{type(exc).__name__}: {exc}"}
                client.set_tag(parent, "final_report_error", final["error"][:5000])
        # A trial the killed driver had started but Tune had not yet saved does not exist after resume
        # (Tune samples a new one): its child run is closed and soft-deleted so the UI shows no phantom.
        known = {r.trial_id for r in result.records}
        for trial_id in [t for t in self.runs["trials"] if t not in known]:
            run_id = self.runs["trials"].pop(trial_id)
            self.runs.setdefault("orphaned", {})[trial_id] = run_id
            client.set_tag(run_id, "orphaned", "true: started before the driver was killed, never saved by Tune")
            client.set_terminated(run_id, status="KILLED")
            client.delete_run(run_id)
        # Nothing stays RUNNING: unfinished children and the parent of an interrupted search are KILLED.
        for trial_id, run_id in self.runs["trials"].items():
            if trial_id not in self.runs["ended"]:
                client.set_tag(run_id, "interrupted", "true")
                client.set_terminated(run_id, status="KILLED")
        client.set_tag(parent, "interrupted", str(result.interrupted).lower())
        client.set_terminated(parent, status="KILLED" if result.interrupted else "FINISHED")
        self._save_runs()
        tracking = {
            "tracking_uri": self.tracking_uri, "experiment_id": self.runs["experiment_id"], "parent_run_id": parent,
            "ui_url": ui_url(self.tracking_uri, self.runs["experiment_id"]),
        }
        return tracking, final


    def _reconcile(self, records: list[Any]) -> None:
        """Make MLflow agree with Tune's records: what a killed driver had not written yet is written now.

        A trial Tune saved as ended whose run was never created, misses rounds, or was not
        closed (the driver died with those writes queued) gets its run, its missing rounds
        (from the trial's result.json) and its end status.
        """
        from mlflow.entities import Metric

        for record in records:
            if record.trial_id not in self.runs["trials"]:
                if not record.history and record.status in (R.RUNNING, R.PENDING):
                    continue  # never started: nothing to show
                baseline = str(all(record.config.get(k) == v for k, v in self.spec.baseline_point().items())).lower()
                self._child(record.trial_id, self.spec.full_config(dict(record.config)), baseline, ",".join(sorted(record.config)))
            run_id = self._run_of(record.trial_id)
            logged = self.runs["logged_round"].get(record.trial_id, 0)
            missing = [row for row in record.history if int(row.get(M.ROUND, 0)) > logged]
            metrics = []
            for row in missing:
                ts, step = int(float(row.get("timestamp", time.time())) * 1000), int(row[M.ROUND])
                for key in (*M.CURVE_METRICS, M.EPOCH):
                    value = row.get(key)
                    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                        metrics.append(Metric(key, float(value), ts, step))
            if metrics:
                self._add(run_id, "metrics", metrics)
                self._pending_round[record.trial_id] = int(missing[-1][M.ROUND])
            if record.trial_id in self.runs["ended"] or record.status in (R.RUNNING, R.PENDING):
                self._write_pending(only=run_id)
                continue
            if record.status == R.FAILED:
                status, tags = "FAILED", {"outcome": R.FAILED, "error": record.error or "trial failed"}
            else:
                status, tags = _outcome(record.history[-1] if record.history else {}, self.total_rounds)
            self._end(record.trial_id, status, tags)
        self._save_runs()


def _outcome(last: dict[str, Any], total_rounds: int) -> tuple[str, dict[str, str]]:
    """MLflow end status and tags of a trial from its last result."""
    if last.get(M.STATUS) == M.STATUS_DIVERGED:
        return "FAILED", {"outcome": R.DIVERGED, "error": "diverged: non-finite training loss"}
    if int(last.get(M.ROUND, 0)) >= total_rounds:
        return "FINISHED", {"outcome": R.COMPLETED, "pruned": "false"}
    return "KILLED", {"outcome": R.PRUNED, "pruned": "true", "stopped_at_round": str(last.get(M.ROUND, 0))}


def _error_line(trial: Any) -> str:
    path = Path(trial.path or trial.local_path or "") / "error.txt"
    if path.is_file():
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:1000]
    return str(getattr(trial, "error_message", None) or "trial failed")
