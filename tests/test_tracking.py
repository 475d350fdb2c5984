"""The MLflow tracker's writer process, driven through Tune's callback hooks without Ray.

The hooks get plain trial objects (what Tune passes: id, config, last result, path);
MLflow is real (an SQLite file). End-to-end tracking of real searches is in test_search.py.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from _processes import alive
from _search_helpers import mlflow_runs, small_spec

from search.layout import RUNS as RUNS_FILE
from search.spec import load_spec
from search.tracking.callback import MlflowTracker
from search.tracking.writer import on_network_filesystem
from trainables.errors import UserError


def _trial(trial_id: str, config: dict, tmp_path: Path) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config=config, last_result={}, path=str(tmp_path / trial_id), local_path=None)


def _tracker(tmp_path: Path, uri: str | None = None) -> MlflowTracker:
    spec = load_spec(small_spec(tmp_path, name="tracker-test"))
    uri = uri or f"sqlite:///{tmp_path / 'mlflow.db'}"
    return MlflowTracker(spec, tmp_path / "search", uri, (tmp_path / "artifacts").as_uri(), total_rounds=3, flush_seconds=0.2)


def test_writer_process_logs_trials_and_hands_back_the_run_map(tmp_path):
    tracker = _tracker(tmp_path)
    tracker.setup()
    assert tracker._proc is not None and tracker._proc.pid != os.getpid()
    finished, pruned = _trial("t1", {"lr": 0.01}, tmp_path), _trial("t2", {"lr": 0.02}, tmp_path)
    for trial in (finished, pruned):
        tracker.on_trial_start(0, [], trial)
    for step in (1, 2, 3):
        result = {"round": step, "epoch": float(step), "val_acc": 0.5 + 0.1 * step, "train_loss": 1.0 / step}
        tracker.on_trial_result(0, [], finished, result)
        finished.last_result = result
    tracker.on_trial_result(0, [], pruned, {"round": 1, "epoch": 1.0, "val_acc": 0.2, "train_loss": 2.0})
    pruned.last_result = {"round": 1, "epoch": 1.0, "val_acc": 0.2}
    tracker.on_trial_complete(0, [], finished)
    tracker.on_trial_complete(0, [], pruned)
    tracker.close()

    assert tracker._proc is None  # stopped; the driver holds the writer's map now
    assert set(tracker.runs["trials"]) == {"t1", "t2"}
    assert tracker.runs["ended"] == {"t1": "FINISHED", "t2": "KILLED"}
    assert json.loads((tmp_path / "search" / RUNS_FILE).read_text())["trials"] == tracker.runs["trials"]
    runs = {r.info.run_name: r for r in mlflow_runs(tracker.tracking_uri, "tracker-test")}
    assert set(runs) == {"search", "t1", "t2"}
    t1, t2 = runs["t1"], runs["t2"]
    assert t1.info.status == "FINISHED" and t2.info.status == "KILLED" and t2.data.tags["pruned"] == "true"
    assert t1.data.tags["mlflow.parentRunId"] == tracker.parent_run_id and t1.data.params["lr"] == "0.01"
    history = tracker.client.get_metric_history(t1.info.run_id, "val_acc")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2, 3]
    # The writer's connections switched the local store to WAL (commits no longer wait for fsync).
    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _rows(rounds: int) -> list[dict]:
    return [{"round": r, "epoch": float(r), "val_acc": 0.5 + 0.05 * r, "train_loss": 1.0 / r, "timestamp": 1_700_000_000 + r}
            for r in range(1, rounds + 1)]


def _killed_driver(tmp_path: Path, rows: list[dict]) -> tuple[MlflowTracker, SimpleNamespace]:
    """A first driver that logged `rows` of trial t1 (all of them reached MLflow) and was then killed."""
    first = _tracker(tmp_path)
    first.setup()
    trial = _trial("t1", {"lr": 0.01}, tmp_path)
    first.on_trial_start(0, [], trial)
    for row in rows:
        first.on_trial_result(0, [], trial, row)
    first.close()
    return first, trial


def _resumed_driver(tmp_path: Path, first: MlflowTracker, trial: SimpleNamespace, rows: list[dict], total_rounds: int) -> MlflowTracker:
    """The driver of `hpsearch resume`: reads the saved run map, restores t1, which reports `rows`."""
    spec = load_spec(small_spec(tmp_path, name="tracker-test"))
    resumed = MlflowTracker(spec, tmp_path / "search", first.tracking_uri, (tmp_path / "artifacts").as_uri(),
                            total_rounds=total_rounds, flush_seconds=0.2, resumed=True)
    resumed.setup()
    resumed.on_trial_restore(0, [], trial)
    for row in rows:
        resumed.on_trial_result(0, [], trial, row)
    resumed.close()
    return resumed


@pytest.mark.slow
def test_resumed_search_fills_a_gap_a_killed_driver_left_below_later_rounds(tmp_path):
    """A killed driver logged rounds 1-3 of a trial and died with round 4 queued; the resumed
    driver restored the trial from its round-4 checkpoint and logged 5-6 live. At the end of the
    search MLflow holds rounds 1-6 once each (round 4 from the trial's result.json)."""
    from search import results as R
    from search.tracking.final import reconcile

    rows = _rows(6)
    first, trial = _killed_driver(tmp_path, rows[:3])
    resumed = _resumed_driver(tmp_path, first, trial, rows[4:], total_rounds=6)
    reconcile(resumed, [SimpleNamespace(trial_id="t1", config={"lr": 0.01}, status=R.Outcome.COMPLETED, history=rows, error="")])

    run_id = resumed.runs["trials"]["t1"]
    for key in ("val_acc", "epoch", "train_loss"):
        steps = sorted(m.step for m in resumed.client.get_metric_history(run_id, key))
        assert steps == [1, 2, 3, 4, 5, 6], (key, steps)
    assert resumed.client.get_run(run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_resumed_search_does_not_log_twice_a_round_the_killed_driver_wrote_but_never_saved(tmp_path):
    """The killed driver wrote rounds 1-3 to MLflow but its run map still says 1 (killed between
    the write and the save); the trial, restored from its round-1 checkpoint, replays 2 and 3."""
    rows = _rows(4)
    first, trial = _killed_driver(tmp_path, rows[:3])
    saved = json.loads((tmp_path / "search" / RUNS_FILE).read_text())
    assert saved["logged_round"] == {"t1": 3}
    saved["logged_round"] = {"t1": 1}
    (tmp_path / "search" / RUNS_FILE).write_text(json.dumps(saved))

    resumed = _resumed_driver(tmp_path, first, trial, rows[1:], total_rounds=4)
    steps = sorted(m.step for m in resumed.client.get_metric_history(resumed.runs["trials"]["t1"], "val_acc"))
    assert steps == [1, 2, 3, 4]


def test_unwritable_sqlite_store_is_a_user_error(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    with pytest.raises(UserError, match=r"tracking URI sqlite:///.*not-a-dir/mlflow.db: cannot write the SQLite store"):
        _tracker(tmp_path, uri=f"sqlite:///{blocker / 'mlflow.db'}")


def test_writer_failure_surfaces_on_the_driver(tmp_path):
    tracker = _tracker(tmp_path, uri="postgresql://127.0.0.1:1/no-such-db")  # not checked up front: fails in the writer
    tracker.setup()
    with pytest.raises(RuntimeError, match="MLflow tracking failed"):
        tracker.flush()
    tracker.close()


DRIVER = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from test_tracking import _tracker
tracker = _tracker(Path({tmp!r}))
tracker.setup()
tracker.flush()
print(tracker._proc.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    return bool(alive([pid]))


def test_writer_dies_with_a_killed_driver(tmp_path):
    code = DRIVER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        writer_pid = int(driver.stdout.readline())
        assert _alive(writer_pid)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(writer_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(writer_pid), "the MLflow writer outlived its driver"
    finally:
        driver.kill()


def test_network_filesystems_keep_the_default_journal():
    mounts = "/dev/vda / ext4 rw 0 0\nfs-1.efs:/ /mnt/hpsearch nfs4 rw 0 0\nserver:/x /mnt/fuse fuse.sshfs rw 0 0\n"
    assert not on_network_filesystem(Path("/home/me/hpsearch-runs/mlflow.db"), mounts)
    assert on_network_filesystem(Path("/mnt/hpsearch/mlflow.db"), mounts)
    assert on_network_filesystem(Path("/mnt/fuse/a/mlflow.db"), mounts)
    assert not on_network_filesystem(Path("/mnt/hpsearchX/mlflow.db"), mounts)  # a prefix is not a mount
    assert on_network_filesystem(Path("/x"), "")  # cannot tell: be safe
