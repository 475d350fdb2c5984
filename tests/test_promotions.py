"""ASHA with promotions on real Ray Tune + Optuna + MLflow (no mocks): 2 workers, 8 trials on digits.

Trials pause at a rung with their checkpoint and the top 1/reduction_factor resume from it; the
rest end pruned at their rung, in the results and in MLflow.
"""
from __future__ import annotations

import json

import pytest

from search import results as R
from search.schedulers import load_state
from search.tuner import run_search
from tests._search_helpers import mlflow_runs, small_spec


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, ray_local):
    tmp = tmp_path_factory.mktemp("promotions")
    # Whether a trial waits at a rung and is resumed later, or is promoted the moment it arrives, depends on the order
    # the two workers finish in (1 run in 6 resumed nothing with the quickstart's space). The baseline (lr 3e-3, the
    # first trial) is among the first two at rung 1, where nothing is promotable below 3 results, so it waits there;
    # with sampled lrs spread down to 1e-7 hardly a sampled trial beats it after one epoch, so it ranks in rung 1's top
    # floor(8/3) = 2 and must be resumed, whatever the order.
    spec = small_spec(tmp, name="promo", space={"lr": {"loguniform": [1.0e-7, 3.0e-3]}},
                      samples=8, max_epochs=4, grace_period=1, reduction_factor=3, max_concurrent=2)
    return run_search(spec, name="p", storage=str(tmp / "runs"), on_event=None)


def _reported_rounds(record: R.TrialRecord) -> list[int]:
    """Every round Tune logged for a trial, duplicates included (read_history keeps one per round)."""
    return [json.loads(line)["round"] for line in (record.path / "result.json").read_text().splitlines() if line.strip()]


def test_a_paused_trial_resumes_from_its_checkpoint_and_its_rounds_continue(promoted):
    state = load_state(promoted.experiment_dir)
    assert state is not None and state["levels"] == [1, 3]
    assert state["resumed"], "no trial was paused and later resumed"
    baseline = next(r for r in promoted.records if r.index == 1)
    assert baseline.trial_id in [trial_id for trial_id, *_ in state["resumed"]], "the baseline was not resumed from rung 1"
    by_id = {r.trial_id: r for r in promoted.records}
    for trial_id, level, _, _ in state["resumed"]:
        record = by_id[trial_id]
        assert record.rounds > level  # it trained past the rung it waited at
        assert _reported_rounds(record) == list(range(1, record.rounds + 1))  # from the checkpoint: no round re-run
        epochs = [h["epoch"] for h in record.history]
        assert epochs == sorted(epochs) and len(set(epochs)) == len(epochs)


def test_no_trial_goes_past_a_rung_unless_it_ranked_in_the_top_third_there(promoted):
    state = load_state(promoted.experiment_dir)
    for trial_id, level, rank, size in state["resumed"]:
        assert rank < size // 3 or trial_id in state["finalists"], (trial_id, level, rank, size)
    for record in promoted.records:
        for level in state["levels"]:
            if record.rounds > level:
                assert record.trial_id in state["promoted"][str(level)] or record.trial_id in state["finalists"]
    # the first rung saw all 8 trials; floor(8/3) = 2 went on from it, not one per worker for lack of rivals
    assert len(state["rungs"]["1"]) == 8
    assert 2 <= len(state["promoted"]["1"]) <= 4
    assert sum(r.rounds >= 4 for r in promoted.records) <= 2  # max_t: rungs 1 and 3, then 4


def test_trials_never_promoted_again_end_pruned_at_their_rung_everywhere(promoted):
    statuses = {r.trial_id: r.status for r in promoted.records}
    assert set(statuses.values()) <= {R.Outcome.COMPLETED, R.Outcome.PRUNED}, statuses
    assert list(statuses.values()).count(R.Outcome.PRUNED) >= 4
    assert not promoted.interrupted
    table = promoted.table()
    assert {"rung", "status"} <= set(table.columns)
    assert set(table.loc[table["status"] == R.Outcome.PRUNED, "rounds"]) <= {1, 3}
    runs = mlflow_runs(promoted.tracking.tracking_uri, "promo")
    children = {r.data.tags["trial_id"]: r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"}
    assert sorted(children) == sorted(statuses)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    # while a trial waited at a rung its run was tagged paused=true (with the round); every end clears it
    assert any("paused_at_round" in run.data.tags for run in children.values())
    for trial_id, status in statuses.items():
        run = children[trial_id]
        assert run.data.tags.get("paused") == "false"
        if status == R.Outcome.PRUNED:
            assert run.info.status == "KILLED" and run.data.tags["pruned"] == "true"
            assert run.data.tags["stopped_at_rung"] in ("1", "2")
        else:
            assert run.info.status == "FINISHED"


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory, ray_local):
    """A 60-second search that could run 2000 trials: the clock, not the samples, ends it (200 were used up in ~55 s)."""
    tmp = tmp_path_factory.mktemp("budgeted")
    spec = small_spec(tmp, name="budget", samples=2000, max_epochs=20, grace_period=1, reduction_factor=4,
                      max_concurrent=2, time_budget="60s")
    return run_search(spec, name="b", storage=str(tmp / "runs"), on_event=None)


@pytest.mark.slow
def test_a_time_budget_ends_with_a_fully_trained_model_and_no_trial_left_running(budgeted):
    statuses = [r.status for r in budgeted.records]
    assert set(statuses) <= {R.Outcome.COMPLETED, R.Outcome.PRUNED, R.Outcome.TIMED_OUT}, statuses
    assert budgeted.best is not None and budgeted.best.status == R.Outcome.COMPLETED  # the finish phase trained it out
    completed = [r for r in budgeted.records if r.status == R.Outcome.COMPLETED]
    assert budgeted.best.best_value == max(r.best_value for r in completed)  # the best fully trained one is handed over
    assert budgeted.best.rounds == 20
    assert not budgeted.interrupted and budgeted.final.test
    state = load_state(budgeted.experiment_dir)
    assert state["finishing"] and state["finalists"]
    runs = mlflow_runs(budgeted.tracking.tracking_uri, "budget")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = {r.data.tags["trial_id"]: r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"}
    for record in budgeted.records:
        tags = children[record.trial_id].data.tags
        assert tags["outcome"] == record.status
        if record.status == R.Outcome.TIMED_OUT:
            assert tags["timed_out"] == "true" and tags["pruned"] == "false"


@pytest.mark.slow
def test_rounds_shorter_than_an_epoch_evaluate_val_at_rungs_and_epoch_ends_only(tmp_path, ray_local):
    from mlflow.tracking import MlflowClient

    from trainables import metrics as M

    # digits has 1079 train images: rounds of 270 are a quarter epoch, the rung is round 4 (grace 1 epoch), max_t 12
    spec = small_spec(tmp_path, name="sparse-val", samples=4, max_epochs=3, grace_period=1, reduction_factor=3,
                      max_concurrent=2, report_every=270)
    result = run_search(spec, name="sv", storage=str(tmp_path / "runs"), on_event=None)
    state = load_state(result.experiment_dir)
    assert state is not None and state["levels"] == [4]
    client = MlflowClient(tracking_uri=result.tracking.tracking_uri)
    runs = {r.data.tags["trial_id"]: r for r in mlflow_runs(result.tracking.tracking_uri, "sparse-val")
            if r.data.tags.get("hpsearch.kind") == "trial"}
    stale = 0
    for record in result.records:
        evaluated = [h[M.ROUND] for h in record.history if M.val_is_fresh(h)]
        rounds = [h[M.ROUND] for h in record.history]
        assert rounds == list(range(1, record.rounds + 1))
        # the first round, the rung, each epoch's end (rounds 4, 8, 12) and the last round measured val
        assert evaluated == [k for k in rounds if k in (1, 4, 8, 12) or k == record.rounds], (record.trial_id, evaluated)
        stale += len(rounds) - len(evaluated)
        assert record.best_round in evaluated
        run_id = runs[record.trial_id].info.run_id
        assert [m.step for m in client.get_metric_history(run_id, M.VAL_ACC)] == evaluated  # no carried values in MLflow
        assert [m.step for m in client.get_metric_history(run_id, M.TRAIN_LOSS)] == rounds
    assert stale > 0
