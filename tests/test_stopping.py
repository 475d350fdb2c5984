"""A user mistake found inside a trial ends the search in one line instead of being retried; a data
set streamed from files that a node cannot read is refused before any trial (search.stopping,
search.cluster.check_data_on_nodes). The two-node case runs in tests/test_cluster.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from search import layout as L
from search import results as R
from search.cluster import check_data_on_nodes
from search.stopping import user_error_of
from search.tuner import Components, run_experiment
from tests._search_helpers import QUICKSTART, image_folder
from trainables.data import DataBundle, Split
from trainables.errors import UserError


def test_the_user_error_is_found_behind_rays_wrapping():
    inner = UserError("none of the 8 images of this pass could be read on node n1")

    class Wrapped(Exception):  # how a RayTaskError carries the trial's exception
        def __init__(self, cause: BaseException) -> None:
            super().__init__("task failed")
            self.cause = cause

    assert user_error_of(Wrapped(inner)) is inner
    try:
        try:
            raise inner
        except UserError as exc:
            raise RuntimeError("trainable failed") from exc
    except RuntimeError as outer:
        assert user_error_of(outer) is inner
    assert user_error_of(RuntimeError("a crash")) is None and user_error_of(None) is None


def _streamed_bundle(files: list[str]) -> DataBundle:
    labels = np.zeros(len(files), dtype=np.int64)
    in_memory = Split(labels=np.zeros(2, dtype=np.int64), images=np.zeros((2, 3, 8, 8), dtype=np.uint8))
    return DataBundle(name="imagefolder", train=Split(labels=labels, files=files), val=in_memory, test=None,
                      class_names=["a"], channels=3, image_size=(8, 8))


def test_files_a_node_cannot_read_are_refused_in_one_line_naming_the_node_and_the_fix(tmp_path, ray_local):
    present = tmp_path / "a.png"
    present.write_bytes(b"x")
    node = next(n for n in ray_local.nodes() if n["Alive"])
    # the local node listed twice: not "the driver's own node only", so each entry gets its probe task
    check_data_on_nodes(_streamed_bundle([str(present)] * 3), nodes=[node, node])  # readable: no error
    missing = [str(present), str(tmp_path / "gone" / "b.png"), str(tmp_path / "gone" / "c.png")]
    with pytest.raises(UserError) as info:
        check_data_on_nodes(_streamed_bundle(missing), nodes=[node, node])
    message = str(info.value)
    assert "\n" not in message
    assert f"({node['NodeManagerAddress']}, {node['NodeID'][:8]}) cannot read the train images" in message
    assert "2 of 3 checked" in message and "gone/b.png" in message
    assert "a shared mount" in message and "dataset.max_in_memory_mb: 1 or more" in message


def test_in_memory_data_needs_no_check(ray_local):
    bundle = _streamed_bundle(["/nowhere/x.png"])
    bundle.train = Split(labels=np.zeros(1, dtype=np.int64), images=np.zeros((1, 3, 8, 8), dtype=np.uint8))
    check_data_on_nodes(bundle, nodes=[{"Alive": True, "NodeID": "f" * 56}] * 2)  # would fail if it probed a node


def _remove_folder(folder: Path):
    """An observer that deletes the image folder once the search has checked it, before any trial
    starts: every trial then finds its files gone, as on a node that lacks them."""

    class RemoveFolder:
        def setup(self, **info) -> None:
            shutil.rmtree(folder)

    return RemoveFolder()


def test_a_trial_that_cannot_read_its_data_stops_the_search_at_once_in_one_line(tmp_path, ray_local, capfd):
    folder = image_folder(tmp_path / "colours", per_class=12, size=16)
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["name"] = "unreadable"
    raw["dataset"] = {"name": "imagefolder", "root": str(folder), "image_size": 16, "val_fraction": 0.25,
                      "test_fraction": 0.0, "max_in_memory_mb": 0}  # streamed from the files
    raw["budget"].update(samples=4, max_epochs=2, grace_period=1, max_concurrent=1)
    spec = tmp_path / "unreadable.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    storage = tmp_path / "runs"
    said: list[str] = []
    with pytest.raises(UserError) as info:
        run_experiment(spec, Components(callbacks=(_remove_folder(folder),)), name="ur", storage=str(storage), on_event=said.append)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in capfd.readouterr().err  # the trial's traceback is in error.txt only
    assert "stopped the search: none of the" in message and "could be read on node" in message, message
    assert "`hpsearch resume ur`" in message
    experiment = storage / "ur"
    errors = list(experiment.glob("trial_*/error.txt"))
    assert len(errors) == 1, errors  # one trial failed; no other one started after it
    assert errors[0].read_text().count("Failure #") == 1  # and it was not retried (FailureConfig allows 2 retries)
    state = json.loads((experiment / L.STATE).read_text())
    assert state["finished"] is False  # saved as an unfinished search: resumable once the data is back
    records = R.trial_records(experiment, metric="val_acc", mode="max", total_rounds=state["total_rounds"], rungs=state["rungs"])
    failed = [r for r in records if r.status == R.Outcome.FAILED]
    assert len(failed) == 1 and "could be read on node" in failed[0].error, [(r.status, r.error) for r in records]
    # the progress line and MLflow say the same as `hpsearch results` (one decision: results.trial_end)
    trial_id = failed[0].trial_id
    lines = [line for line in said if trial_id in line and "] start " not in line]
    assert lines and all(f"] failed {trial_id}: none of the" in line for line in lines), "\n".join(said)  # not "retry"
    from mlflow.tracking import MlflowClient

    run = next(r for r in MlflowClient(tracking_uri=state["tracking"]["tracking_uri"]).search_runs([state["tracking"]["experiment_id"]])
               if r.data.tags.get("trial_id") == trial_id)
    assert (run.info.status, run.data.tags["outcome"]) == ("FAILED", R.Outcome.FAILED), (run.info.status, run.data.tags)
    assert "could be read on node" in run.data.tags["error"]


def test_a_trial_a_user_error_stopped_is_failed_whatever_its_rounds_say(tmp_path):
    """One decision for the progress lines, MLflow and `hpsearch results`: results.trial_end."""
    R.record_user_error(tmp_path, "t1", "none of the 3 files could be read on node 10.0.0.2")
    R.record_user_error(tmp_path, "t2", "a second one")  # kept beside the first, not over it
    errors = R.read_user_errors(tmp_path)
    assert set(errors) == {"t1", "t2"}
    last = {"round": 3, "status": "ok"}  # between rungs 1 and 4: the clock would have cut it
    assert R.trial_end("t1", last, 16, (1, 4), errors) == (R.Outcome.FAILED, "none of the 3 files could be read on node 10.0.0.2")
    assert R.trial_end("t3", last, 16, (1, 4), errors) == (R.Outcome.TIMED_OUT, "")
    assert R.trial_end("t3", {"round": 4}, 16, (1, 4), errors) == (R.Outcome.PRUNED, "")
    assert R.trial_end("t3", None, 16, (1, 4), {}) == (R.Outcome.TIMED_OUT, "")
    (tmp_path / L.USER_ERRORS).write_text("{not json")
    assert R.read_user_errors(tmp_path) == {}  # a torn file reads as none, never as a crash
