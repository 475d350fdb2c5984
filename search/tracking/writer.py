"""The MLflow writes of a search: one parent run, one nested run per trial, batched.

`RunWriter` owns the run map (trial id → MLflow run id, rounds logged, end statuses),
persisted as `mlflow_runs.json` beside the search so resume and retries reuse the same
runs. During a search it lives in a separate *writer process* (`writer_main`) fed by
`search.tracking.MlflowTracker`'s Tune hooks: MLflow's client is CPU-bound Python, and
as a thread of Tune's driver it competed for the GIL and became the bottleneck of
searches of short trials (benchmarks/scale.py). After the search the driver uses a
`RunWriter` directly (synchronous calls).

This module imports only MLflow and the standard library (the writer process starts
in seconds and does not load Ray or torch).
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from search import layout as L
from trainables import metrics as M
from trainables.errors import UserError
from trainables.files import write_atomic

PARAM_VALUE_MAX = 500
SYNC = "__sync__"  # command: write everything pending, reply with the run map (and exit if asked)
COMMANDS = frozenset({"open_parent", "child", "queue_metrics", "tag", "end"})  # what the driver may ask the writer process to run
WRITER_NICENESS = 10  # the writer process's CPU priority below the driver and the trials
NETWORK_FILESYSTEMS = ("nfs", "cifs", "smb", "fuse", "9p", "ceph", "glusterfs", "lustre", "gpfs", "afs")


def empty_runs() -> dict[str, Any]:
    return {"experiment_id": None, "parent_run_id": None, "trials": {}, "logged_round": {}, "ended": {}}


def load_runs(experiment_dir: Path) -> dict[str, Any]:
    """The saved run map of a search, or an empty one."""
    path = Path(experiment_dir) / L.RUNS
    return json.loads(path.read_text()) if path.is_file() else empty_runs()


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


class RunWriter:
    """Every MLflow write of one search, from one place (the store's only writer).

    Params, metrics and end tags of a run are buffered and go out in one `log_batch`
    (at most every `flush_seconds`, and when the run ends); creating a run saves the
    run map at once, so a restart never creates a duplicate.
    """

    def __init__(self, experiment_dir: Path, tracking_uri: str, artifact_location: str | None, search_info: dict[str, Any],
                 *, flush_seconds: float = 2.0, runs: dict[str, Any] | None = None) -> None:
        self.experiment_dir, self.tracking_uri, self.artifact_location = Path(experiment_dir), tracking_uri, artifact_location
        self.search_info, self.flush_seconds = search_info, flush_seconds  # name, raw spec, tags of the parent run
        self.runs = runs if runs is not None else load_runs(self.experiment_dir)
        self.lock = threading.Lock()  # guards `runs` while it is copied or saved
        self.pending: dict[str, dict[str, list[Any]]] = {}  # run id → params / metrics / tags not yet written
        self.pending_round: dict[str, int] = {}  # trial id → highest round among its pending metrics
        self.last_flush = time.monotonic()
        self.dirty = False  # `runs` changed since it was last saved
        self._client: Any = None

    def state(self) -> dict[str, Any]:
        """What a writer process needs to continue this writer (plain data)."""
        return {"experiment_dir": str(self.experiment_dir), "tracking_uri": self.tracking_uri,
                "artifact_location": self.artifact_location, "search_info": self.search_info,
                "flush_seconds": self.flush_seconds, "runs": self.runs_copy()}

    def runs_copy(self) -> dict[str, Any]:
        with self.lock:
            return json.loads(json.dumps(self.runs))

    @property
    def client(self) -> Any:
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def parent_run_id(self) -> str:
        return self.runs["parent_run_id"]

    def run_of(self, trial_id: str) -> str:
        return self.runs["trials"][trial_id]

    def save_runs(self) -> None:
        with self.lock:
            text = json.dumps(self.runs, separators=(",", ":"))
        write_atomic(self.experiment_dir / L.RUNS, text)

    # -- operations (the driver's commands) ---------------------------------------------------
    def open_parent(self) -> None:
        """Create the experiment and the parent run, or reopen them on resume."""
        client, info = self.client, self.search_info
        if self.runs["experiment_id"] is None:
            experiment = client.get_experiment_by_name(info["name"])
            if experiment is None:
                experiment_id = client.create_experiment(info["name"], artifact_location=self.artifact_location)
            else:
                experiment_id = experiment.experiment_id
            with self.lock:
                self.runs["experiment_id"] = experiment_id
        if self.runs["parent_run_id"] is None:
            import yaml
            from mlflow.entities import Param

            run = client.create_run(self.runs["experiment_id"], run_name=self.experiment_dir.name, tags={
                "hpsearch.kind": "search", "hpsearch.search_name": self.experiment_dir.name,
                "hpsearch.search_dir": str(self.experiment_dir), "git_commit": git_commit(),
                "hpsearch_version": hpsearch_version(), **info["tags"],
            })
            with self.lock:
                self.runs["parent_run_id"] = run.info.run_id
            self.save_runs()
            raw = info["raw"]
            params = [Param(k, v) for k, v in flatten("", {k: v for k, v in raw.items() if k != "description"}).items()]
            for start in range(0, len(params), 100):
                client.log_batch(run.info.run_id, params=params[start : start + 100])
            client.log_text(run.info.run_id, yaml.safe_dump(raw, sort_keys=False), "spec.yaml")
        else:
            client.update_run(self.parent_run_id, status="RUNNING")
            client.set_tag(self.parent_run_id, "interrupted", "false")
            self.sync_logged_rounds()

    def sync_logged_rounds(self) -> None:
        """On resume, trust MLflow over the saved map: a killed driver may have logged rounds it never recorded."""
        for trial_id, run_id in self.runs["trials"].items():
            history = self.client.get_metric_history(run_id, M.TRAIN_LOSS)
            if history:
                self.runs["logged_round"][trial_id] = max(self.runs["logged_round"].get(trial_id, 0), max(m.step for m in history))
        self.save_runs()

    def child(self, trial_id: str, config: dict[str, Any], baseline: str, sampled: str) -> str:
        """The child run of a trial: created once, reopened (RUNNING) when the trial restarts."""
        from mlflow.entities import Param

        run_id = self.runs["trials"].get(trial_id)
        if run_id is not None:
            with self.lock:
                self.runs["ended"].pop(trial_id, None)
            self.dirty = True
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        run = self.client.create_run(self.runs["experiment_id"], run_name=trial_id, tags={
            "mlflow.parentRunId": self.parent_run_id, "hpsearch.kind": "trial", "trial_id": trial_id,
            "baseline": baseline, "sampled": sampled,
        })
        run_id = run.info.run_id
        with self.lock:
            self.runs["trials"][trial_id] = run_id
        self.save_runs()  # at once: a run the map does not know would be a duplicate after a restart
        self.add(run_id, "params", [Param(k, str(v)[:PARAM_VALUE_MAX]) for k, v in sorted(config.items())])
        return run_id

    def queue_metrics(self, trial_id: str, step: int, batch: list[tuple[str, float, int, int]]) -> None:
        """Buffer one round's metrics (key, value, timestamp ms, step) of a trial, unless that round is logged.

        A round replayed after a trial restarts from an older checkpoint is skipped here, the one place
        that knows what is logged: on resume it also knows (`sync_logged_rounds`) the rounds a killed
        driver wrote to MLflow but never saved in the run map.
        """
        from mlflow.entities import Metric

        if step <= max(self.runs["logged_round"].get(trial_id, 0), self.pending_round.get(trial_id, 0)):
            return

        self.add(self.run_of(trial_id), "metrics", [Metric(*m) for m in batch])
        self.pending_round[trial_id] = max(step, self.pending_round.get(trial_id, 0))

    def tag(self, trial_id: str, tags: dict[str, str]) -> None:
        """Buffer tags of a trial's run (e.g. `paused` while it waits at a rung), written with its next batch."""
        from mlflow.entities import RunTag

        if trial_id in self.runs["ended"]:
            return
        self.add(self.run_of(trial_id), "tags", [RunTag(key, value[:5000]) for key, value in tags.items()])
        self.dirty = True

    def end(self, trial_id: str, status: str, tags: dict[str, str]) -> None:
        """The run's pending params / metrics / tags in one batch, then its end status."""
        from mlflow.entities import RunTag

        run_id = self.run_of(trial_id)
        self.add(run_id, "tags", [RunTag(key, value[:5000]) for key, value in tags.items()])
        self.write_pending(only=run_id)
        self.client.set_terminated(run_id, status=status)
        with self.lock:
            self.runs["ended"][trial_id] = status
        self.dirty = True

    def add(self, run_id: str, kind: str, items: list[Any]) -> None:
        self.pending.setdefault(run_id, {"params": [], "metrics": [], "tags": []})[kind].extend(items)

    def write_pending(self, only: str | None = None) -> None:
        """One `log_batch` per run with pending params, metrics and tags (split at MLflow's batch limits)."""
        for run_id in [only] if only is not None else list(self.pending):
            batch = self.pending.pop(run_id, None)
            if batch is None:
                continue
            params, metrics, tags = batch["params"], batch["metrics"], batch["tags"]
            while params or metrics or tags:
                p, params = params[:100], params[100:]
                t, tags = tags[:100], tags[100:]
                m, metrics = metrics[: 1000 - len(p) - len(t)], metrics[1000 - len(p) - len(t):]
                self.client.log_batch(run_id, metrics=m, params=p, tags=t)
        written = {t: r for t, r in self.pending_round.items() if only is None or self.runs["trials"].get(t) == only}
        with self.lock:
            for trial_id, step in written.items():
                self.runs["logged_round"][trial_id] = max(step, self.runs["logged_round"].get(trial_id, 0))
        for trial_id in written:
            self.pending_round.pop(trial_id, None)
        if only is None:
            self.last_flush = time.monotonic()
        if written or self.dirty or only is None:
            # Rounds in MLflow are saved as logged at once (a restart must not log them twice); run ends
            # wait for the next periodic save (`end_search` re-derives a lost end from Tune's records).
            self.dirty = False
            self.save_runs()

    # -- the writer process's loop --------------------------------------------------------------
    def serve(self, commands: Any, replies: Any, parent_pid: int) -> None:
        """Run the driver's queued commands; write batches every `flush_seconds`; exit with the driver."""
        error: str | None = None
        reported = False
        while True:
            wait = 1.0  # how often an idle writer checks that its driver is alive
            if self.pending or self.dirty:
                wait = min(wait, max(0.0, self.flush_seconds - (time.monotonic() - self.last_flush)))
            try:
                name, args = commands.get(timeout=wait)
            except queue.Empty:
                name, args = None, ()
            if os.getppid() != parent_pid:
                os._exit(0)  # the driver is gone: the resumed search re-derives what was queued from Tune's records
            if name == SYNC:
                token, stop = args
                error = error or _attempt(self.write_pending)
                replies.put(("synced", token, self.runs_copy(), None if reported else error))
                error, reported = None, False
                if stop:
                    return
                continue
            if name in COMMANDS:
                error = error or _attempt(getattr(self, name), *args)
            if (self.pending or self.dirty) and time.monotonic() - self.last_flush >= self.flush_seconds:
                error = error or _attempt(self.write_pending)
            if error is not None and not reported:
                replies.put(("error", error))
                reported = True


def _attempt(fn: Any, *args: Any) -> str | None:
    """Run one write; its failure as a line for the driver (raised there at its next hook or flush)."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported to the driver, never lost silently
        return f"{type(exc).__name__}: {exc}"
    return None


def writer_main(state: dict[str, Any], commands: Any, replies: Any, parent_pid: int, die_with_parent: bool) -> None:
    """Entry point of the writer process (multiprocessing, spawn)."""
    if die_with_parent:  # started from the driver's main thread: that thread's exit is the driver's exit
        try:  # Linux: die with the driver even while an MLflow call blocks
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the driver, which then flushes us
    try:  # trials and Tune's loop first: the writer catches up when they wait (the UI lags by seconds at most)
        os.nice(WRITER_NICENESS)
    except (OSError, AttributeError):
        pass
    import logging

    for noisy in ("mlflow", "alembic"):  # this process's own logging: the store's migrations are not the user's news
        logging.getLogger(noisy).setLevel(logging.WARNING)
    fast_sqlite_commits(state["tracking_uri"])
    runs = state.pop("runs")
    experiment_dir = Path(state.pop("experiment_dir"))
    RunWriter(experiment_dir, runs=runs, **state).serve(commands, replies, parent_pid)


def sqlite_file(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///PATH` tracking URI; None for any other store."""
    prefix = "sqlite:///"
    return Path(tracking_uri[len(prefix):]) if tracking_uri.startswith(prefix) else None


def check_tracking_uri(tracking_uri: str) -> None:
    """A local SQLite store must be writable: a `UserError` naming the URI now, not a writer failure mid-search."""
    db = sqlite_file(tracking_uri)
    if db is None:
        return
    folder = db.expanduser().parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        writable = os.access(folder, os.W_OK)
        reason = "not writable"
    except OSError as exc:
        writable, reason = False, exc.strerror or str(exc)
    if not writable:
        raise UserError(f"tracking URI {tracking_uri}: cannot write the SQLite store in {folder} ({reason}); "
                        "pass --tracking-uri sqlite:///<writable path>/mlflow.db or an http:// MLflow server")


def fast_sqlite_commits(tracking_uri: str) -> None:
    """WAL journal + synchronous=NORMAL on this process's connections to a local SQLite store.

    MLflow commits every call; in SQLite's default rollback journal each commit waits for
    fsync, which on a busy disk made the writer the bottleneck of short trials. WAL keeps the
    store crash-safe (a commit can only be lost on power failure, never corrupt the file) and
    lets the UI read while the search writes. Skipped on network file systems (NFS, EFS, ...),
    where SQLite's WAL is unsupported.
    """
    db = sqlite_file(tracking_uri)
    if db is None or on_network_filesystem(db):
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(connection: Any, _record: Any) -> None:
        if isinstance(connection, sqlite3.Connection):
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError:
                pass  # another process holds the file (e.g. the UI mid-read): keep its journal mode


def on_network_filesystem(path: Path, mounts_table: str | None = None) -> bool:
    """Whether `path` is on a network or FUSE mount (psutil's mount table, or `mounts_table` in
    /proc/mounts format); True when that cannot be told."""
    if mounts_table is None:
        import psutil

        try:
            mounts = [(p.mountpoint, p.fstype) for p in psutil.disk_partitions(all=True)]
        except (OSError, psutil.Error):
            return True
    else:
        mounts = [(f[1].replace("\\040", " "), f[2]) for f in (line.split() for line in mounts_table.splitlines()) if len(f) >= 3]
    target = str(path.expanduser().resolve())
    best, fstype = "", ""
    for mount_point, kind in mounts:
        inside = target == mount_point or target.startswith(mount_point.rstrip("/") + "/")
        if inside and len(mount_point) > len(best):
            best, fstype = mount_point, kind
    return not best or fstype.startswith(NETWORK_FILESYSTEMS)
