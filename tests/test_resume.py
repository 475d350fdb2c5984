"""Killing a search's driver and resuming it, as a user would: the real CLI in its own process, so the kill is real.

The default tier's test joins the tests' shared Ray instance (`--address`), as a driver on a cluster
does, and SIGKILLs the driver once; the slow one (about 2 minutes) gives each step its own local Ray
and goes through Ctrl-C, a SIGKILL of everything and a resume to the end.
"""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from search import results as R
from search.tuner import resume_search
from tests._cli_process import CliProcess
from tests._search_helpers import mlflow_runs, small_spec


def _histories(storage: Path, name: str) -> dict[str, list[dict]]:
    folder = storage / name
    return {p.parent.name: R.read_history(p.parent) for p in folder.glob("trial_*/result.json")}


def test_a_killed_driver_is_resumed_to_the_end_with_every_trial_once(ray_local, tmp_path):
    """SIGKILL the driver (`hpsearch run`) while a trial waits at a rung; resuming finishes the search: every trial
    accounted for once, finished trials not trained again, each round logged once, nothing RUNNING in MLflow."""
    spec = small_spec(tmp_path, name="kill-test", samples=4, max_epochs=3, grace_period=1, max_concurrent=2)
    storage = tmp_path / "runs"
    address = ray_local.get_runtime_context().gcs_address
    env = {**os.environ, "HPSEARCH_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    run = CliProcess(["run", str(spec), "--name", "k", "--storage", str(storage), "--address", address], env)
    run.wait_for(1, paused=1)
    run.kill()  # the driver only: the cluster it joined stays up, its trials die with it
    state = R.read_state(storage / "k")
    before = R.trial_records(storage / "k", metric="val_acc", mode="max", total_rounds=state["total_rounds"], rungs=state["rungs"])
    done_before = {r.trial_id: r.history for r in before if r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED)}

    result = resume_search("k", storage=str(storage), on_event=None)  # what `hpsearch resume k` runs, on the same cluster
    assert not result.interrupted and result.final is not None and result.final.test.acc > 0.5
    records = R.trial_records(storage / "k", metric="val_acc", mode="max", total_rounds=state["total_rounds"], rungs=state["rungs"])
    assert len(records) == 4 and len({r.trial_id for r in records}) == 4, [(r.trial_id, r.status) for r in records]
    assert all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) for r in records), [(r.trial_id, r.status) for r in records]
    for trial_id, history in done_before.items():  # finished trials were not trained again
        now = next(r for r in records if r.trial_id == trial_id)
        assert [h["time_total_s"] for h in now.history] == [h["time_total_s"] for h in history]
    for record in records:  # a trial running at the kill goes on from its last saved checkpoint: its rounds count once
        assert [h["round"] for h in record.history] == list(range(1, record.rounds + 1)), record.trial_id
    for record in [r for r in records if r.trial_id in done_before]:  # the ended ones reported each round once
        rounds = [json.loads(line)["round"] for line in (record.path / "result.json").read_text().splitlines() if line.strip()]
        assert rounds == list(range(1, len(rounds) + 1)), (record.trial_id, rounds)
    assert (storage / "k" / "best" / "checkpoint.pt").is_file()
    runs = [r for r in mlflow_runs(f"sqlite:///{storage / 'mlflow.db'}", "kill-test") if r.info.lifecycle_stage == "active"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len([r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]) == 1  # the parent run reused
    assert sorted(r.data.tags["trial_id"] for r in runs if r.data.tags.get("hpsearch.kind") == "trial") == sorted(
        r.trial_id for r in records)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{storage / 'mlflow.db'}")
    for child in [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == sorted(set(steps)), (child.data.tags["trial_id"], steps)  # no round logged twice in MLflow


@pytest.mark.slow
def test_ctrl_c_then_sigkill_then_resume_finishes_without_duplicates(tmp_path):
    spec = small_spec(tmp_path, name="resume-test", samples=8, max_epochs=10, grace_period=2, max_concurrent=2)
    storage = tmp_path / "runs"
    env = {**os.environ, "HPSEARCH_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)

    # 1. Ctrl-C once two trials wait at a rung: exit 130, the resume command printed, nothing left RUNNING in MLflow.
    run = CliProcess(["run", str(spec), "--name", "k", "--storage", str(storage)], env)
    run.wait_for(0, paused=2)
    os.kill(run.proc.pid, signal.SIGINT)
    assert run.finish() == 130, "\n".join(run.lines[-30:])
    assert any("resume with: hpsearch resume k" in ln for ln in run.lines)
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    runs = mlflow_runs(uri, "resume-test")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    parent = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    assert len(parent) == 1 and parent[0].info.status == "KILLED" and parent[0].data.tags["interrupted"] == "true"
    parent_id = parent[0].info.run_id

    # 2. Resume, then SIGKILL the driver mid-search, with trials paused at their rungs.
    resumed = CliProcess(["resume", "k", "--storage", str(storage)], env)
    resumed.wait_for(0, paused=4)
    resumed.kill_hard()
    state = R.read_state(storage / "k")
    records = R.trial_records(storage / "k", metric="val_acc", mode="max", total_rounds=state["total_rounds"], rungs=state["rungs"])
    done_before = {r.trial_id: r.history for r in records if r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED)}
    paused_before = {r.trial_id: r.history for r in records if r.status == R.Outcome.PAUSED}
    assert paused_before, [(r.trial_id, r.status) for r in records]

    # 3. Resume to the end.
    final = CliProcess(["resume", "k", "--storage", str(storage)], env)
    assert final.finish() == 0, "\n".join(final.lines[-40:])
    records = R.trial_records(storage / "k", metric="val_acc", mode="max", total_rounds=state["total_rounds"], rungs=state["rungs"])
    assert len(records) == 8, [(r.trial_id, r.status) for r in records]
    assert all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) for r in records), [(r.trial_id, r.status) for r in records]
    assert records[0].index == 1
    for trial_id, history in done_before.items():  # finished trials were not trained again
        now = next(r for r in records if r.trial_id == trial_id)
        assert [h["round"] for h in now.history] == [h["round"] for h in history]
        assert [h["val_acc"] for h in now.history] == [h["val_acc"] for h in history]
        assert [h["time_total_s"] for h in now.history] == [h["time_total_s"] for h in history]
    for trial_id, history in paused_before.items():  # paused trials went on from their rung (or ended there), none re-run
        now = next(r for r in records if r.trial_id == trial_id)
        assert [h["val_acc"] for h in now.history[: len(history)]] == [h["val_acc"] for h in history]
        assert [h["round"] for h in now.history] == list(range(1, now.rounds + 1))
    for record in [r for r in records if r.trial_id in {**done_before, **paused_before}]:  # each round reported once
        rounds = [json.loads(line)["round"] for line in (record.path / "result.json").read_text().splitlines() if line.strip()]
        assert rounds == list(range(1, len(rounds) + 1)), (record.trial_id, rounds)

    all_runs = mlflow_runs(uri, "resume-test")
    assert not [r for r in all_runs if r.info.status == "RUNNING"]
    for orphan in [r for r in all_runs if r.info.lifecycle_stage == "deleted"]:
        # a trial started just before the kill that Tune never saved: closed and hidden, never a duplicate
        assert orphan.data.tags.get("orphaned", "").startswith("true") and orphan.info.status == "KILLED"
    runs = [r for r in all_runs if r.info.lifecycle_stage == "active"]
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert [p.info.run_id for p in parents] == [parent_id]  # the parent run was reused, not duplicated
    assert parents[0].info.status == "FINISHED"
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(r.trial_id for r in records)  # no duplicates
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
        assert steps == sorted(set(steps)), (child.data.tags["trial_id"], steps)  # no round logged twice
