"""Helpers for tests that run real searches: small specs and MLflow queries."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "spaces" / "quickstart.yaml"


def small_spec(tmp_path: Path, name: str = "qs-test", space: dict[str, Any] | None = None, **budget: Any) -> Path:
    """The quickstart spec with a smaller budget (and `space` entries replaced), written to tmp_path."""
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["name"] = name
    raw["space"].update(space or {})
    raw["budget"].update({"samples": 6, "max_epochs": 6, "grace_period": 1, "reduction_factor": 3, "max_concurrent": 2})
    raw["budget"].update(budget)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def image_folder(root: Path, classes: int = 3, per_class: int = 24, size: int = 32) -> Path:
    """An image folder (one sub-folder per class) of PNGs written with PIL, one colour per class:
    learnable in an epoch or two."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            image[:, :, c] += 150
            Image.fromarray(image).save(root / f"class{c}" / f"{i}.png")
    return root


@contextlib.contextmanager
def own_cache(folder: Path) -> Iterator[None]:
    """$HPSEARCH_CACHE pointed at `folder` for a module-scoped search (the per-test cache fixture is function-scoped)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPSEARCH_CACHE", str(folder))
        yield


def mlflow_runs(tracking_uri: str, experiment_name: str) -> list[Any]:
    """Every run (any status) of an experiment."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no MLflow experiment {experiment_name!r}"
    return client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[str]:
    """A real S3-compatible server on 127.0.0.1 (moto's ThreadedMotoServer) holding an empty `bucket`;
    yields the query string that points a pyarrow s3:// URI at it (`endpoint_override=...&scheme=http`).
    Any credentials are accepted; processes that talk to it need some in their environment (AWS_*)."""
    import logging

    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        query = f"endpoint_override={host}:{port}&scheme=http"
        fs, _ = pyarrow.fs.FileSystem.from_uri(f"s3://{bucket}?{query}&allow_bucket_creation=true")
        fs.create_dir(bucket)
        yield query
    finally:
        server.stop()


def predict_digit_images(tmp_path: Path, model_dir: Path, data: Any, count: int) -> tuple[Any, float]:
    """`hpsearch predict` on the first `count` test images of a digits bundle, saved as `<i>_<label>.png`:
    the predictions table and the share whose class matches the file's label."""
    import pandas as pd
    from PIL import Image

    from search.cli import main

    images = tmp_path / "images"
    images.mkdir()
    for i in range(count):
        Image.fromarray(data.test.images[i, 0]).save(images / f"{i:03d}_{data.test.labels[i]}.png")
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(model_dir), str(images), "--out", str(preds)]) == 0
    table = pd.read_csv(preds)
    truth = table["file"].map(lambda f: Path(f).stem.split("_")[1])
    return table, float((table.iloc[:, 1].astype(str) == truth).mean())


def crash_once_trainable(config: dict) -> None:
    """Reports rounds 1-8 with a checkpoint each; the first attempt waits after round 3 (Tune copies its
    files to the storage meanwhile) and dies after round 5."""
    import tempfile
    import time

    from ray import tune

    start = 1
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int(Path(folder, "round").read_text()) + 1
    for round_ in range(start, 9):
        with tempfile.TemporaryDirectory() as folder:
            Path(folder, "round").write_text(str(round_))
            tune.report({"round": round_, "val_acc": round_ / 10}, checkpoint=tune.Checkpoint.from_directory(folder))
        marker = Path(config["marker"])
        if round_ == 3 and not marker.exists():
            time.sleep(config["pause_s"])
        if round_ == 5 and not marker.exists():
            marker.touch()
            raise RuntimeError("simulated crash of the worker")

