"""End-to-end searches on real Ray Tune + Optuna + ASHA + MLflow (no mocks), on digits.

One small search runs once per module (shared local Ray); the tests below read
what it produced: trial order, ASHA stops, MLflow runs, the registered model,
the results CSV, exports and predictions.
"""
from __future__ import annotations

import json
import math
import os
import re

import pandas as pd
import pytest
import torch

from search import results as R
from search.cli import main
from search.rounds import total_rounds
from search.tuner import run_search
from tests._search_helpers import mlflow_runs, own_cache, predict_digit_images, small_spec
from trainables import metrics as M


@pytest.fixture(scope="module")
def search(tmp_path_factory, ray_local):
    """A 6-trial, 6-epoch quickstart search run through the public API."""
    tmp = tmp_path_factory.mktemp("search")
    with own_cache(tmp / "cache"):
        return run_search(small_spec(tmp), name="s1", storage=str(tmp / "runs"), on_event=None)


def test_every_requested_trial_ran_and_baseline_was_first(search):
    spec = search.spec
    assert len(search.records) == spec.budget.samples
    first = search.records[0]
    assert first.index == 1
    assert first.config == spec.baseline_point(), "the enqueued baseline must be the first trial Optuna suggests"
    assert search.baseline is first
    # Every other trial is a sample from the space, not the baseline again.
    others = [r.config for r in search.records[1:]]
    assert all(c != spec.baseline_point() for c in others)
    for r in search.records[1:]:
        for p in spec.space:
            if p.name in r.config:
                assert p.contains(r.config[p.name]), (p.name, r.config[p.name])


def test_asha_stopped_trials_early_at_its_rungs(search):
    max_t = total_rounds(search.spec, 1079)
    pruned = [r for r in search.records if r.status == R.Outcome.PRUNED]
    completed = [r for r in search.records if r.status == R.Outcome.COMPLETED]
    assert pruned, "ASHA stopped no trial"
    assert completed, "no trial ran to the end"
    rungs = {1, 3}  # grace 1, reduction factor 3, max_t 6
    for r in pruned:
        assert r.rounds < max_t and r.rounds in rungs, (r.trial_id, r.rounds)
        assert len(r.history) == r.rounds  # one report per round
    for r in completed:
        assert r.rounds == max_t
    assert search.counts[R.Outcome.PRUNED] == len(pruned)


def test_best_is_ranked_by_best_round_and_beats_baseline(search):
    best, baseline = search.best, search.baseline
    assert best is not None and baseline is not None
    values = [row[M.VAL_ACC] for row in best.history]
    assert best.best_value == max(values)
    assert best.best_round == 1 + values.index(max(values))
    assert best.best_value >= baseline.best_value
    assert all(best.best_value >= r.best_value for r in search.records if r.best_value is not None)
    for r in search.records:  # pruned to the best-round and last checkpoints once the search finished
        kept = sorted(p.name for p in r.path.glob("checkpoint_*"))
        assert f"checkpoint_{r.best_round - 1:06d}" in kept and f"checkpoint_{r.rounds - 1:06d}" in kept and len(kept) <= 2, kept


def test_mlflow_has_one_parent_and_a_nested_run_per_trial(search):
    uri = search.tracking.tracking_uri
    assert uri.startswith("sqlite:///")
    assert os.environ.get("MLFLOW_TRACKING_URI") != uri, "a search must not leave its store as the process default"
    runs = mlflow_runs(uri, search.spec.name)
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert len(children) == len(search.records)
    assert {c.data.tags["trial_id"] for c in children} == {r.trial_id for r in search.records}
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert parent.data.params["model"] == "cnn" and parent.data.tags["dataset"] == "digits"
    assert math.isclose(parent.data.metrics["best_val_acc"], search.best.best_value)
    assert math.isclose(parent.data.metrics["baseline_val_acc"], search.baseline.best_value)
    assert "test_acc" in parent.data.metrics

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    by_trial = {r.trial_id: r for r in search.records}
    for child in children:
        record = by_trial[child.data.tags["trial_id"]]
        history = client.get_metric_history(child.info.run_id, M.VAL_ACC)
        assert [m.step for m in history] == list(range(1, record.rounds + 1))  # step = epoch, no duplicates
        assert [m.value for m in history] == pytest.approx([row[M.VAL_ACC] for row in record.history])
        expected = {R.Outcome.COMPLETED: "FINISHED", R.Outcome.PRUNED: "KILLED", R.Outcome.FAILED: "FAILED", R.Outcome.DIVERGED: "FAILED"}[record.status]
        assert child.info.status == expected, (record.trial_id, record.status, child.info.status)
        assert child.data.tags.get("pruned", "false") == ("true" if record.status == R.Outcome.PRUNED else "false")
        assert float(child.data.params["lr"]) == pytest.approx(search.spec.full_config(record.config)["lr"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"plots/learning_curves.png", "plots/confusion_matrix.png", "plots/parallel_coordinates.png"} <= artifacts


def test_registered_model_reproduces_logged_val_accuracy(search, monkeypatch):
    import mlflow.pytorch

    monkeypatch.setenv("MLFLOW_TRACKING_URI", search.tracking.tracking_uri)  # the search's store, as a user would

    from trainables.data import create_dataset

    version = search.final.model_version
    assert version is not None
    model = mlflow.pytorch.load_model(f"models:/{search.spec.name}/{version}")
    data = create_dataset(search.spec.dataset, **search.spec.dataset_options)
    x = torch.from_numpy(data.val.images).float() / 255.0
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    with torch.no_grad():
        pred = model((x - mean) / std).argmax(1).numpy()
    acc = float((pred == data.val.labels).mean())
    assert acc == pytest.approx(search.best.best_value, abs=1e-9)


def test_results_csv_matches_trials(search, tmp_path, capsys):
    csv = tmp_path / "results.csv"
    code = main(["results", search.name, "--storage", str(search.experiment_dir.parent), "--csv", str(csv)])
    assert code == 0
    table = pd.read_csv(csv)
    assert len(table) == len(search.records)
    assert set(table["trial_id"]) == {r.trial_id for r in search.records}
    by_id = {r.trial_id: r for r in search.records}
    for _, row in table.iterrows():
        rec = by_id[row["trial_id"]]
        assert row["status"] == rec.status and row["rounds"] == rec.rounds
        assert row["best_val_acc"] == pytest.approx(rec.best_value)
    assert list(table["best_val_acc"]) == sorted(table["best_val_acc"], reverse=True)
    assert table.loc[table["baseline"], "trial"].tolist() == [1]
    printed = capsys.readouterr().out
    assert search.best.trial_id in printed and f"wrote {len(search.records)} trials" in printed
    assert main(["list", "--storage", str(search.experiment_dir.parent)]) == 0
    assert "s1" in capsys.readouterr().out


@pytest.mark.parametrize("fmt", ["torchscript", "onnx", "state_dict"])
def test_export_and_predict_from_a_search(search, tmp_path, fmt, capsys):
    from trainables.data import create_dataset

    out = tmp_path / fmt
    assert main(["export", search.name, "--storage", str(search.experiment_dir.parent), "--format", fmt, "--out", str(out)]) == 0
    if fmt == "onnx":
        diff = re.search(r"checked with onnxruntime .* max abs diff (\S+) ", capsys.readouterr().out)
        assert diff and float(diff.group(1)) <= 1e-4
    meta = json.loads((out / "model.json").read_text())
    assert meta["class_names"] == [str(d) for d in range(10)]
    assert meta["metrics"]["test"]["acc"] == pytest.approx(search.final.test.acc)
    data = create_dataset(search.spec.dataset, **search.spec.dataset_options)
    table, acc = predict_digit_images(tmp_path, out, data, 40)
    assert len(table) == 40
    assert acc >= 0.9, table.head()


@pytest.mark.slow
def test_the_ending_is_the_same_with_tracking_off(search, ray_local, tmp_path):
    """The search owns its ending: without MLflow it still hands over a model tested once and writes best/."""
    from search.finalize import FinalReport
    from trainables.checkpoint import load_checkpoint

    untracked = run_search(small_spec(tmp_path, name="untracked", samples=2, max_epochs=2), name="u", storage=str(tmp_path / "runs"),
                           track=False, on_event=None)
    assert untracked.tracking is None and not (tmp_path / "runs" / "mlflow.db").exists()
    report = untracked.final
    assert isinstance(report, FinalReport) and report.trial_id == untracked.best.trial_id and report.model_version is None
    best = untracked.experiment_dir / "best"
    assert sorted(p.name for p in best.iterdir()) == ["checkpoint.pt", "plots", "results.csv", "test_metrics.json"]
    assert json.loads((best / "test_metrics.json").read_text())["acc"] == pytest.approx(report.test.acc)
    assert load_checkpoint(best)["round"] == untracked.best.best_round  # the best round's checkpoint, not the last
    assert load_checkpoint(best)["metrics"][untracked.spec.metric] == pytest.approx(untracked.best.best_value)
    state = json.loads((untracked.experiment_dir / "hpsearch.json").read_text())
    assert state["final"]["test"]["acc"] == pytest.approx(report.test.acc) and state["tracking"] == {}
    # the tracked search's report is the same kind of object, with its model registered
    assert isinstance(search.final, FinalReport) and search.final.model_version is not None


def test_bad_resources_fail_before_the_search(ray_local, tmp_path, capsys):
    spec_path = small_spec(tmp_path, name="gpu-test")
    storage = tmp_path / "runs"
    code = main(["run", str(spec_path), "--set", "resources.gpu=1", "--storage", str(storage)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "no GPU" in err[0] and "resources.gpu" in err[0]
    assert not storage.exists() or not any(storage.iterdir())


@pytest.mark.slow
def test_seeded_search_reproduces_its_first_configs(ray_local, tmp_path):
    """Optuna's seeded sampler decides the configs: same seed → same configs, other seed → others."""
    def configs(seed: int, name: str) -> list[dict]:
        path = small_spec(tmp_path, name=f"seed{seed}", samples=4, max_epochs=1, max_concurrent=1)
        res = run_search(path, name=name, storage=str(tmp_path / "runs"), overrides=[f"seed={seed}"], track=False, on_event=None)
        return [r.config for r in res.records]

    a, b, c = configs(3, "a"), configs(3, "b"), configs(4, "c")
    assert a == b
    assert a[0] == c[0]  # the baseline comes first whatever the seed
    assert a[1:] != c[1:]


@pytest.mark.slow
def test_a_trial_restarted_from_its_checkpoint_keeps_every_round(ray_local, tmp_path, monkeypatch):
    """Tune's own JSON logger replaces result.json with the (minutes old) storage copy when a trial restarts,
    dropping the rounds reported since; hpsearch's result logger keeps them (a node loss on a cluster did this)."""
    from ray import tune

    from search.callbacks import ResultLogger
    from tests._search_helpers import crash_once_trainable

    tuner = tune.Tuner(
        crash_once_trainable, param_space={"marker": str(tmp_path / "crashed"), "pause_s": 12},
        tune_config=tune.TuneConfig(num_samples=1),
        run_config=tune.RunConfig(name="restart", storage_path=str(tmp_path / "runs"), callbacks=[ResultLogger()], verbose=0,
                                  sync_config=tune.SyncConfig(sync_period=1),
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # ResultLogger is the only logger, as in hpsearch
    grid = tuner.fit()
    assert (tmp_path / "crashed").exists()  # the trial did crash and restart
    assert grid[0].error is None
    trial_dir = next((tmp_path / "runs" / "restart").glob("crash_once_trainable_*"))
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    assert [r[M.ROUND] for r in rows] == list(range(1, 9)), [r[M.ROUND] for r in rows]
    assert [r[M.ROUND] for r in R.read_history(trial_dir)] == list(range(1, 9))


def test_asha_breaks_accuracy_ties_by_val_loss():
    """Two trials tied on val accuracy at a rung: the one with the higher val loss is the one ASHA stops."""
    from ray.tune.experiment import Trial

    from search.schedulers import AshaStop, rank_score

    assert rank_score({"val_acc": 0.99, "val_loss": 0.2}, "val_acc", "max") > rank_score({"val_acc": 0.99, "val_loss": 0.3}, "val_acc", "max")
    # the loss never outweighs one image of accuracy, even on a huge val split or a large loss
    assert rank_score({"val_acc": 0.99001, "val_loss": 900.0}, "val_acc", "max") > rank_score({"val_acc": 0.99, "val_loss": 0.0}, "val_acc", "max")
    assert rank_score({"val_acc": 0.5, "val_loss": float("nan")}, "val_acc", "max") == 0.5
    assert rank_score({"val_loss": 0.4}, "val_loss", "min") == 0.4

    def outcomes(scheduler, results):
        trials = [Trial("__fake", trial_id=f"t{i}", stub=True) for i in range(len(results))]
        for trial in trials:
            scheduler.on_trial_add(None, trial)
        return [scheduler.on_trial_result(None, t, {"round": 1, **r}) for t, r in zip(trials, results)]

    tied = [{"val_acc": 0.98, "val_loss": 0.05}, {"val_acc": 0.98, "val_loss": 0.30}]
    ranked = outcomes(AshaStop("val_acc", "max", max_t=9, grace=1, reduction_factor=3), tied)
    assert ranked == ["CONTINUE", "STOP"]  # same accuracy, worse loss: stopped at the rung
    # unbroken ties (plain accuracy, as Ray's ASHA sees it) let the second trial through
    from ray.tune.schedulers import ASHAScheduler

    plain = outcomes(ASHAScheduler(time_attr="round", metric="val_acc", mode="max", max_t=9, grace_period=1, reduction_factor=3), tied)
    assert plain == ["CONTINUE", "CONTINUE"]
    assert AshaStop("val_acc", "max", max_t=9, grace=1, reduction_factor=3).metric == "val_acc"


def test_asha_ranks_a_trial_against_its_rungs_latest_results():
    """Once the searcher proposes better trials, a rung's old weak results stop letting mediocre new ones through."""
    from ray.tune.experiment import Trial

    from search.schedulers import AshaStop
    from search.schedulers.asha_stop import asha_window

    assert asha_window(4) == 8 and asha_window(3) == 6 and asha_window(1.5) == 3

    def last_outcome(scheduler, accuracies):
        outcomes = []
        for i, acc in enumerate(accuracies):
            trial = Trial("__fake", trial_id=f"t{i}", stub=True)
            scheduler.on_trial_add(None, trial)
            outcomes.append(scheduler.on_trial_result(None, trial, {"round": 1, "val_acc": acc, "val_loss": 1.0 - acc}))
        return outcomes[-1]

    # 12 weak early trials, then 4 strong ones; a new trial at 0.8 is in the top quarter of all 16, not of the last 8
    history = [0.5] * 12 + [0.9] * 4 + [0.8]
    assert last_outcome(AshaStop("val_acc", "max", max_t=16, grace=1, reduction_factor=4), history) == "STOP"
    assert last_outcome(AshaStop("val_acc", "max", max_t=16, grace=1, reduction_factor=4, window=0), history) == "CONTINUE"
    # it still goes on when it is in the top quarter of the recent ones
    assert last_outcome(AshaStop("val_acc", "max", max_t=16, grace=1, reduction_factor=4), history[:-1] + [0.95]) == "CONTINUE"
