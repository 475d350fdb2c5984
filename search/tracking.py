"""MLflow tracking owned by the driver: one parent run per search, one nested run per trial.

Ray's stock `MLflowLoggerCallback` logs trials flat, with no search run above
them, marks ASHA-stopped trials as finished and duplicates runs on restart
(ray#19978, optuna#5148, mlflow#4248). This Tune `Callback` instead:
- opens (or, on resume, reopens) the search's parent run and maps every trial
  id to its child run (`mlflow.parentRunId`), persisting the map beside the
  search so resume and retries reuse the same runs;
- buffers per-round metrics (`step` = round, an epoch by default) and writes
  them with `log_batch` at most every `flush_seconds`, from the driver only
  (one SQLite writer, optuna#820);
- ends each child run FINISHED (complete), KILLED + `pruned=true` (ASHA) or
  FAILED + the error (failed or diverged), and never leaves a run RUNNING when
  the search ends or is interrupted.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from search import results as R
from search.spec import SearchSpec
from trainables import metrics as M

RUNS_FILE = "mlflow_runs.json"
PARAM_VALUE_MAX = 500


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
    """Tune callback that mirrors a search into MLflow (see the module docstring)."""

    def __init__(self, spec: SearchSpec, experiment_dir: Path, tracking_uri: str, artifact_location: str | None,
                 total_rounds: int, *, flush_seconds: float = 2.0) -> None:
        self.spec, self.experiment_dir, self.tracking_uri = spec, Path(experiment_dir), tracking_uri
        self.artifact_location, self.total_rounds, self.flush_seconds = artifact_location, total_rounds, flush_seconds
        self._client: Any = None
        self._buffer: dict[str, list[Any]] = {}
        self._last_flush = time.monotonic()
        self.runs = self._load_runs()

    @classmethod
    def for_search(cls, spec: SearchSpec, experiment_dir: Path, state: dict[str, Any], total_rounds: int) -> "MlflowTracker":
        """The tracker of a search; fixes its tracking URI in `state` so resume uses the same store."""
        uri = resolve_tracking_uri(state.get("tracking_uri"), state["storage"])
        state["tracking_uri"] = uri
        artifacts = artifact_root(state["storage"]) if uri.startswith("sqlite:") else None
        return cls(spec, experiment_dir, uri, artifacts, total_rounds)

    # -- persistence ------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_buffer": {}}

    def _load_runs(self) -> dict[str, Any]:
        path = self.experiment_dir / RUNS_FILE
        if path.is_file():
            return json.loads(path.read_text())
        return {"experiment_id": None, "parent_run_id": None, "trials": {}, "logged_round": {}, "ended": {}}

    def _save_runs(self) -> None:
        self.experiment_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.experiment_dir / f".{RUNS_FILE}.tmp"
        tmp.write_text(json.dumps(self.runs, indent=1))
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

    # -- Tune hooks -------------------------------------------------------------------------
    def setup(self, **info: Any) -> None:
        self.open_parent()

    def open_parent(self) -> None:
        """Create the experiment and the parent run, or reopen them on resume."""
        client = self.client
        if self.runs["experiment_id"] is None:
            experiment = client.get_experiment_by_name(self.spec.name)
            if experiment is None:
                experiment_id = client.create_experiment(self.spec.name, artifact_location=self.artifact_location)
            else:
                experiment_id = experiment.experiment_id
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
            self.runs["parent_run_id"] = run.info.run_id
            self._save_runs()
            params = [Param(k, v) for k, v in flatten("", {k: v for k, v in self.spec.raw.items() if k != "description"}).items()]
            for start in range(0, len(params), 100):
                client.log_batch(run.info.run_id, params=params[start : start + 100])
            client.log_text(run.info.run_id, yaml.safe_dump(self.spec.raw, sort_keys=False), "spec.yaml")
        else:
            client.update_run(self.parent_run_id, status="RUNNING")
            client.set_tag(self.parent_run_id, "interrupted", "false")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._child(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._child(trial)

    def _child(self, trial: Any) -> str:
        """The child run of `trial`: created once, reopened (RUNNING) when the trial restarts."""
        from mlflow.entities import Param

        run_id = self.runs["trials"].get(trial.trial_id)
        if run_id is not None:
            self.runs["ended"].pop(trial.trial_id, None)
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        config = self.spec.full_config(dict(trial.config))
        run = self.client.create_run(self.runs["experiment_id"], run_name=trial.trial_id, tags={
            "mlflow.parentRunId": self.parent_run_id, "hpsearch.kind": "trial", "trial_id": trial.trial_id,
            "baseline": str(all(trial.config.get(k) == v for k, v in self.spec.baseline_point().items())).lower(),
            "sampled": ",".join(sorted(trial.config)),
        })
        run_id = run.info.run_id
        self.runs["trials"][trial.trial_id] = run_id
        self._save_runs()
        self.client.log_batch(run_id, params=[Param(k, str(v)[:PARAM_VALUE_MAX]) for k, v in sorted(config.items())])
        return run_id

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        from mlflow.entities import Metric

        run_id = self.runs["trials"].get(trial.trial_id) or self._child(trial)
        step = int(result.get(M.ROUND, 0))
        if step <= self.runs["logged_round"].get(trial.trial_id, 0):
            return  # replayed after a restart from an older checkpoint: already in MLflow
        ts = int(time.time() * 1000)
        batch = self._buffer.setdefault(run_id, [])
        for key in (*M.CURVE_METRICS, M.EPOCH):
            value = result.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                batch.append(Metric(key, float(value), ts, step))
        self.runs["logged_round"][trial.trial_id] = step
        if time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if self._buffer and time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered metrics, one `log_batch` per run (≤ 1000 metrics per call)."""
        for run_id, batch in list(self._buffer.items()):
            for start in range(0, len(batch), 1000):
                self.client.log_batch(run_id, metrics=batch[start : start + 1000])
        self._buffer.clear()
        self._last_flush = time.monotonic()
        self._save_runs()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        if last.get(M.STATUS) == M.STATUS_DIVERGED:
            self._end(trial, "FAILED", {"outcome": R.DIVERGED, "error": "diverged: non-finite training loss"})
        elif int(last.get(M.ROUND, 0)) >= self.total_rounds:
            self._end(trial, "FINISHED", {"outcome": R.COMPLETED, "pruned": "false"})
        else:
            self._end(trial, "KILLED", {"outcome": R.PRUNED, "pruned": "true", "stopped_at_round": str(last.get(M.ROUND, 0))})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        message = _error_line(trial)
        self._end(trial, "FAILED", {"outcome": R.FAILED, "error": message})

    def _end(self, trial: Any, status: str, tags: dict[str, str]) -> None:
        run_id = self.runs["trials"].get(trial.trial_id) or self._child(trial)
        self.flush()
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value[:5000])
        self.client.set_terminated(run_id, status=status)
        self.runs["ended"][trial.trial_id] = status
        self._save_runs()

    # -- end of search ----------------------------------------------------------------------
    def finish_search(self, result: Any, data: Any, *, refit: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
        """Summary metrics on the parent run, best model + test evaluation, then close every run."""
        from search import report

        self.flush()
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


def _error_line(trial: Any) -> str:
    path = Path(trial.path or trial.local_path or "") / "error.txt"
    if path.is_file():
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:1000]
    return str(getattr(trial, "error_message", None) or "trial failed")
