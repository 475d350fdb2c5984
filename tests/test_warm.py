"""Warm start: a search starts from an earlier one's trials (search.warm), on real Ray Tune + Optuna + ASHA + MLflow.

The earlier search runs once per module on digits; the tests warm-start others from it.
"""
from __future__ import annotations

import pytest
import yaml

from search import results as R
from search.schedulers import load_state
from search.spec import load_spec
from search.tuner import run_search
from search.warm import point_in_space, row_at_epoch
from tests._search_helpers import QUICKSTART, mlflow_runs, own_cache, small_spec
from trainables.errors import UserError


def test_an_earlier_configuration_is_kept_only_when_it_is_a_point_of_the_new_space(tmp_path):
    old = load_spec(small_spec(tmp_path, name="old"))
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["space"]["lr"] = {"loguniform": [1e-3, 1e-2]}  # narrower
    del raw["space"]["hidden"]  # no longer searched: the baseline's 64 is what trials train with
    new_path = tmp_path / "new.yaml"
    new_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    new = load_spec(new_path)
    inside = {**old.baseline_point(), "lr": 0.003, "hidden": 64}
    assert point_in_space(new, old, inside) == {k: v for k, v in inside.items() if k != "hidden"}
    assert point_in_space(new, old, {**inside, "lr": 0.02}) is None  # outside the narrower lr range
    assert point_in_space(new, old, {**inside, "hidden": 128}) is None  # trained with another value of a fixed hyperparameter


def test_a_learning_curve_is_read_at_the_new_searchs_epochs():
    history = [{"round": i, "epoch": i / 2, "val_acc": 0.1 * i} for i in range(1, 7)]  # 2 rounds per epoch, 3 epochs
    assert row_at_epoch(history, "val_acc", 1.0)["round"] == 2
    assert row_at_epoch(history, "val_acc", 3.0)["round"] == 6
    assert row_at_epoch(history, "val_acc", 4.0) is None  # it never trained that far


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, ray_local):
    tmp = tmp_path_factory.mktemp("warm")
    with own_cache(tmp / "cache"):
        result = run_search(small_spec(tmp, name="warm-a", samples=5, max_epochs=4, reduction_factor=2), name="first",
                            storage=str(tmp / "runs"), on_event=None)
    return tmp, result


@pytest.mark.slow
def test_a_warm_started_search_tells_the_sampler_and_rungs_and_links_the_earlier_search_in_mlflow(earlier, tmp_path):
    tmp, first = earlier
    spec = small_spec(tmp_path, name="warm-b", samples=3, max_epochs=4, reduction_factor=2)
    events: list[str] = []
    second = run_search(spec, name="second", storage=str(tmp / "runs"), on_event=events.append, warm_start=["first"])
    line = next(e for e in events if e.startswith("warm start: "))
    assert f"warm start: {len([r for r in first.records if r.history])} trials from first (0 dropped" in line
    assert len(second.records) == 3 and second.records[0].config == second.spec.baseline_point()
    state = R.read_state(second.experiment_dir)
    assert state["warm_start"]["sources"][0]["name"] == "first" and state["warm_start"]["trials"] >= 4
    rung_state = load_state(second.experiment_dir)
    warm_ids = [t for level in rung_state["rungs"].values() for t in level if t.startswith("warm:first/")]
    assert warm_ids  # the earlier trials rank in this search's rungs
    assert not any(t.startswith("warm:") for t in rung_state["paused_at"])  # and never wait to be resumed
    assert rung_state["virtual"] and rung_state["virtual_until_s"] is None  # the warm start kept the search reproducible
    parent = next(r for r in mlflow_runs(second.tracking.tracking_uri, "warm-b") if r.data.tags.get("hpsearch.kind") == "search")
    assert parent.data.tags["warm_start_from"] == f"first (MLflow run {first.tracking.parent_run_id})"


@pytest.mark.slow
def test_warm_starting_from_an_unknown_search_fails_before_anything_is_written(earlier, tmp_path):
    tmp, _ = earlier
    spec = small_spec(tmp_path, name="warm-c", samples=2, max_epochs=2)
    with pytest.raises(UserError, match="ghost"):
        run_search(spec, name="third", storage=str(tmp / "runs"), on_event=None, warm_start=["ghost"])
    assert not (tmp / "runs" / "third").exists()
