"""The end of a search in MLflow: what `MlflowTracker.end_search` logs.

`reconcile` makes MLflow agree with Tune's records (what a killed driver had not written yet is
written now); `log_end` puts the summary and the final report (search.finalize: test metrics, best/'s
files, the TorchScript model, registered under the spec's name) on the search's parent run, soft-deletes
the runs of trials Tune never saved and closes every run. Everything here only logs what it is given.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import time
import warnings
from typing import Any, Iterator
from unittest import mock

from search import results as R
from trainables import metrics as M

log = logging.getLogger(__name__)


def reconcile(tracker: Any, records: list[Any]) -> None:
    """Make MLflow agree with Tune's records: what a killed driver had not written yet is written now.

    A trial Tune saved as ended whose run was never created, misses rounds, or was not
    closed (the driver died with those writes queued) gets its run, its missing rounds
    (from the trial's result.json) and its end status. In a search one driver ran, rounds
    reach MLflow in order, so "missing" is every round after the last one logged; after a
    resume it is every round MLflow does not hold (one query per trial): a killed driver
    can leave a gap below rounds the resumed one logged (a trial restored from a checkpoint
    newer than what reached MLflow continues after the gap).
    """
    from mlflow.entities import Metric

    from search.tracking.callback import outcome_tags

    writer, runs = tracker.writer, tracker.runs
    for record in records:
        if record.trial_id not in runs["trials"]:
            if not record.history and record.status in (R.Outcome.RUNNING, R.Outcome.PENDING):
                continue  # never started: nothing to show
            writer.child(*tracker.child_args(record.trial_id, record.config))
        run_id = writer.run_of(record.trial_id)
        if tracker.resumed:
            present = {m.step for m in tracker.client.get_metric_history(run_id, M.EPOCH)}  # finite in every round
            missing = [row for row in record.history if int(row.get(M.ROUND, 0)) not in present]
        else:
            logged = runs["logged_round"].get(record.trial_id, 0)
            missing = [row for row in record.history if int(row.get(M.ROUND, 0)) > logged]
        metrics = []
        for row in missing:
            ts, step = int(float(row.get("timestamp", time.time())) * 1000), int(row[M.ROUND])
            for key in M.curve_keys(row):
                value = row.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    metrics.append(Metric(key, float(value), ts, step))
        if metrics:
            writer.add(run_id, "metrics", metrics)
            writer.pending_round[record.trial_id] = int(missing[-1][M.ROUND])
        if record.trial_id in runs["ended"] or record.status in (R.Outcome.RUNNING, R.Outcome.PENDING):
            writer.write_pending(only=run_id)
            continue
        if record.status == R.Outcome.FAILED:
            status, tags = "FAILED", {"outcome": R.Outcome.FAILED, "error": record.error or "trial failed"}
        else:
            status, tags = outcome_tags(record.trial_id, record.history[-1] if record.history else {}, tracker.total_rounds,
                                        tracker.rungs, {})
        writer.end(record.trial_id, status, tags)
    writer.save_runs()


def log_end(tracker: Any, result: Any, report: Any, error: str | None) -> None:
    """Summary metrics and tags, the final report (or the error that prevented it), orphans, and every run closed."""
    client, parent, runs, spec = tracker.client, tracker.parent_run_id, tracker.runs, tracker.spec
    summary = {f"n_{k}": float(v) for k, v in result.counts.items()}
    if result.best is not None:
        summary[f"best_{spec.metric}"] = result.best.best_value
        summary["best_epoch"] = float(result.best.best_epoch or 0)
        client.set_tag(parent, "best_trial_id", result.best.trial_id)
        if result.best.trial_id in runs["trials"]:
            client.set_tag(parent, "best_run_id", runs["trials"][result.best.trial_id])
    if result.baseline is not None and result.baseline.best_value is not None:
        summary[f"baseline_{spec.metric}"] = result.baseline.best_value
        if result.best is not None:
            summary["improvement_over_baseline"] = result.best.best_value - result.baseline.best_value
    log_metrics(client, parent, summary)
    if error:
        client.set_tag(parent, "final_report_error", error[:5000])
    if report is not None:
        try:
            log_report(tracker, report)
        except Exception as exc:  # noqa: BLE001 - keep the search's runs and results whatever fails here
            client.set_tag(parent, "final_report_error", f"{type(exc).__name__}: {exc}"[:5000])
            log.warning("logging the final report to MLflow failed: %s: %s", type(exc).__name__, exc)
    # A trial the killed driver had started but Tune had not yet saved does not exist after resume
    # (Tune samples a new one): its child run is closed and soft-deleted so the UI shows no phantom.
    known = {r.trial_id for r in result.records}
    for trial_id in [t for t in runs["trials"] if t not in known]:
        run_id = runs["trials"].pop(trial_id)
        runs.setdefault("orphaned", {})[trial_id] = run_id
        client.set_tag(run_id, "orphaned", "true: started before the driver was killed, never saved by Tune")
        client.set_terminated(run_id, status="KILLED")
        client.delete_run(run_id)
    # Nothing stays RUNNING: unfinished children and the parent of an interrupted search are KILLED.
    for trial_id, run_id in runs["trials"].items():
        if trial_id not in runs["ended"]:
            client.set_tag(run_id, "interrupted", "true")
            client.set_terminated(run_id, status="KILLED")
    client.set_tag(parent, "interrupted", str(result.interrupted).lower())
    client.set_terminated(parent, status="KILLED" if result.interrupted else "FINISHED")
    tracker.writer.save_runs()


def log_report(tracker: Any, report: Any) -> None:
    """A `search.finalize.FinalReport` on the parent run: test metrics and per-class table, best/'s files, the
    checkpoint, and the model as TorchScript (loads without pickled classes) with signature and input example,
    registered under the spec's name (its version is written back into the report)."""
    import json
    import tempfile
    from pathlib import Path

    client, parent, spec = tracker.client, tracker.parent_run_id, tracker.spec
    if report.test is not None:
        log_metrics(client, parent, {f"test_{k}": v for k, v in report.test.as_dict().items() if isinstance(v, float)})
        client.log_table(parent, data={"class": list(report.test.per_class), "test_acc": list(report.test.per_class.values())},
                         artifact_file="test_per_class.json")  # one table, not a metric per class
    for name, path in report.files.items():
        client.log_artifact(parent, str(path), str(Path(name).parent) if "/" in name else None)
    for name, message in report.plot_errors.items():
        client.set_tag(parent, f"plot_error.{name}", message)
    client.log_artifact(parent, str(report.local_checkpoint), "best_checkpoint")
    if report.model is None:
        return
    import mlflow
    import torch
    from mlflow.models import infer_signature

    example = torch.from_numpy(report.example).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates jit; MLflow still loads it
        scripted = torch.jit.trace(report.model, example, check_trace=False)
    with torch.no_grad():
        out = scripted(example).numpy()
    with tempfile.TemporaryDirectory(prefix="hpsearch-model-") as tmp:
        meta = Path(tmp) / "model_meta.json"
        meta.write_text(json.dumps(report.meta, indent=2, default=str))
        with _fluent_run(tracker.tracking_uri, parent), warnings.catch_warnings(), _quiet("mlflow.pytorch"):
            warnings.simplefilter("ignore")  # MLflow's generic pickle caution and jit deprecations: the model is TorchScript
            info = mlflow.pytorch.log_model(
                scripted, name="model", signature=infer_signature(example.numpy(), out), input_example=example.numpy(),
                registered_model_name=spec.name, extra_files=[str(meta)],
                serialization_format="pickle",  # TorchScript: saved by torch.jit.save
            )
    report.model_uri = info.model_uri
    version = getattr(info, "registered_model_version", None)
    report.model_version = None if version is None else str(version)
    if version is not None:
        client.set_tag(parent, "registered_model", f"{spec.name}/{version}")


def log_metrics(client: Any, run_id: str, metrics: dict[str, float | None]) -> None:
    """Step-0 metrics in batches of 1,000 (MLflow's limit); non-finite and missing values are skipped."""
    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, 0) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start : start + 1000])


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only errors from `logger_name` while the block runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _fluent_run(uri: str, run_id: str) -> Iterator[None]:
    """MLflow's model logging needs its fluent API: a global tracking URI (which it also puts in
    $MLFLOW_TRACKING_URI) and an active run. Both are set for this block only, the environment restored after,
    so a later search in the same process does not inherit this one's store."""
    import mlflow

    previous = mlflow.get_tracking_uri() if "MLFLOW_TRACKING_URI" in os.environ else None
    with mock.patch.dict(os.environ, {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}):
        mlflow.set_tracking_uri(uri)
        try:
            with mlflow.start_run(run_id=run_id):
                yield
        finally:
            mlflow.set_tracking_uri(previous)  # None: back to MLflow's default
