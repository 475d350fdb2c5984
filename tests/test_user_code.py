"""The user's own network and data: a file outside the project, Python objects, a torchvision model.

Real Ray Tune + Optuna + ASHA + MLflow searches (shared local Ray), a few trials each on digits or a
generated image folder; then export and predict. The error cases need no Ray: they fail before any trial.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from search import results as R
from search.cli import main
from search.spec import load_spec
from search.tuner import run_search
from tests._search_helpers import QUICKSTART, image_folder, predict_digit_images
from trainables.errors import UserError
from trainables.train import TRAIN_HPARAMS

NETS = '''
import torch
from torch import nn


class ConvNet(nn.Module):
    """A user's network: its keyword arguments are the hyperparameters."""

    def __init__(self, num_classes, in_channels, width=8, p=0.0):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(p), nn.Linear(4 * width, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


def thousand_logits(in_channels):
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(1000))


NOT_A_FACTORY = 3
'''

DATA = '''
import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


class Digits:
    """A torch-style Dataset of PIL images (what a user's data code often returns)."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return Image.fromarray(self.images[i]), int(self.labels[i])


def load(val_every=5, seed=0):
    raw = load_digits()
    images = np.clip(raw.images * 16, 0, 255).astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = order[::val_every], np.setdiff1d(order, order[::val_every])
    test = train[:200]
    return {"train": Digits(images[train], raw.target[train]), "val": Digits(images[val], raw.target[val]),
            "test": Digits(images[test], raw.target[test]), "classes": [str(d) for d in range(10)]}
'''


def _train_baseline() -> dict:
    raw = yaml.safe_load(QUICKSTART.read_text())
    return {k: v for k, v in raw["baseline"].items() if k in TRAIN_HPARAMS}


def _spec(folder: Path, name: str, *, model: str, dataset: dict | None = None, baseline: dict | None = None,
          space: dict | None = None, samples: int = 3, max_epochs: int = 2) -> Path:
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw.update(name=name, model=model, baseline={**_train_baseline(), **(baseline or {})}, space=space or {"lr": {"loguniform": [1e-3, 1e-2]}})
    if dataset is not None:
        raw["dataset"] = dataset
    raw["budget"].update(samples=samples, max_epochs=max_epochs, grace_period=1, reduction_factor=2, max_concurrent=2)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("user-code")  # outside the project: nothing of it is importable by name
    (folder / "nets.py").write_text(NETS)
    (folder / "data.py").write_text(DATA)
    return folder


@pytest.mark.slow
def test_a_user_model_file_outside_the_project_is_searched_exported_to_onnx_and_predicts(user_files, tmp_path, ray_local):
    spec = _spec(tmp_path, "user-net", model=f"{user_files}/nets.py:ConvNet", baseline={"width": 8, "p": 0.0},
                 space={"lr": {"loguniform": [1e-3, 1e-2]}, "width": {"choice": [4, 8, 16]}, "p": {"uniform": [0.0, 0.3]}})
    result = run_search(spec, name="un", storage=str(tmp_path / "runs"), on_event=None)
    assert len(result.records) == 3 and result.records[0].config["width"] == 8
    assert all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) and r.rounds >= 1 for r in result.records), [(r.status, r.rounds) for r in result.records]
    assert {r.config["width"] for r in result.records} <= {4, 8, 16}
    out = tmp_path / "onnx"
    assert main(["export", "un", "--storage", str(tmp_path / "runs"), "--format", "onnx", "--out", str(out)]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["model_name"] == f"{user_files / 'nets.py'}:ConvNet" and info["rebuild"]["kind"] == "user"
    assert info["rebuild"]["sha256"] and info["rebuild"]["file"] == str(user_files / "nets.py")
    assert "width" in info["architecture"] and "lr" not in info["architecture"]
    from trainables.data import create_dataset

    data = create_dataset("digits", val_fraction=0.2, test_fraction=0.2, seed=0)
    table, accuracy = predict_digit_images(tmp_path, out, data, 40)
    assert len(table) == 40 and accuracy > 0.3  # trained (chance is 0.1)


@pytest.mark.slow
def test_python_objects_from_a_script_or_notebook_are_searched_without_any_file(tmp_path, ray_local):
    import torch
    from torch import nn

    class TinyNet(nn.Module):  # defined here, inside a function: no worker can import it by name
        def __init__(self, num_classes: int, hidden: int = 16):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    def arrays():  # (images, labels) arrays, float 0-1, grey (N, H, W)
        from sklearn.datasets import load_digits

        raw = load_digits()
        images = (raw.images / 16.0).astype(np.float32)
        return {"train": (images[:1200], raw.target[:1200]), "val": (images[1200:1500], raw.target[1200:1500]),
                "test": (images[1500:], raw.target[1500:]), "classes": [str(d) for d in range(10)]}

    spec = _spec(tmp_path, "py-objects", model="placeholder", baseline={"hidden": 16},
                 space={"lr": {"loguniform": [1e-3, 1e-2]}, "hidden": {"choice": [8, 16, 32]}})
    result = run_search(spec, name="po", storage=str(tmp_path / "runs"), on_event=None, model=TinyNet, dataset=arrays)
    assert result.spec.model.startswith("python:") and result.spec.model.endswith("TinyNet")
    assert len(result.records) == 3 and all(r.rounds >= 1 for r in result.records)
    assert result.final.test.acc > 0.3, result.final


@pytest.mark.slow
def test_a_user_data_factory_returning_datasets_is_searched_end_to_end(user_files, tmp_path, ray_local):
    spec = _spec(tmp_path, "user-data", model="cnn", dataset={"name": f"{user_files}/data.py:load", "val_every": 4},
                 baseline={k: v for k, v in yaml.safe_load(QUICKSTART.read_text())["baseline"].items() if k not in TRAIN_HPARAMS})
    loaded = load_spec(spec)
    assert loaded.dataset == f"{user_files / 'data.py'}:load" and loaded.dataset_options["val_every"] == 4
    data = loaded.load_data()
    assert (len(data.train), len(data.val), len(data.test)) == (1797 - 450, 450, 200)
    assert data.train.images.dtype == np.uint8 and data.channels == 1 and data.image_size == (8, 8)
    result = run_search(spec, name="ud", storage=str(tmp_path / "runs"), on_event=None)
    assert len(result.records) == 3 and result.best is not None and result.best.best_value > 0.5
    assert result.final.test.acc > 0.5, result.final


@pytest.mark.slow
def test_torchvision_mobilenet_v3_small_is_searched_on_an_image_folder_exported_and_predicted(tmp_path, ray_local):
    folder = image_folder(tmp_path / "colours")
    spec = _spec(tmp_path, "mnv3", model="torchvision.mobilenet_v3_small", samples=2, max_epochs=2,
                 dataset={"name": "imagefolder", "root": str(folder), "image_size": 32, "val_fraction": 0.25, "test_fraction": 0.15},
                 baseline={"pretrained": False, "dropout": 0.2, "batch_size": 16},
                 space={"lr": {"loguniform": [1e-3, 1e-2]}, "dropout": {"uniform": [0.0, 0.3]}})
    result = run_search(spec, name="mn", storage=str(tmp_path / "runs"), on_event=None)
    assert len(result.records) == 2 and all(r.rounds >= 1 for r in result.records)
    out = tmp_path / "ts"
    assert main(["export", "mn", "--storage", str(tmp_path / "runs"), "--format", "torchscript", "--out", str(out)]) == 0
    info = json.loads((out / "model.json").read_text())
    assert info["rebuild"]["kind"] == "torchvision" and info["architecture"]["pretrained"] is False
    preds = tmp_path / "preds.csv"
    assert main(["predict", str(out), str(folder / "class1"), "--out", str(preds)]) == 0
    import pandas as pd

    assert len(pd.read_csv(preds)) == 24


# -- bad input: one line, exit 2, before any trial ------------------------------------------------


@pytest.mark.parametrize("model, message", [
    ("{files}/missing.py:Net", r"file .*missing\.py not found"),
    ("{files}/nets.py:Resnet", r"has no 'Resnet'; it defines: ConvNet, thousand_logits"),
    ("{files}/nets.py:NOT_A_FACTORY", r"is a int, not an nn.Module class"),
    ("torchvision.fcn_resnet50", r"not a classification model"),
    ("no_such_package.nets:Net", r"module 'no_such_package.nets' cannot be imported"),
])
def test_a_model_reference_that_cannot_work_is_one_line_naming_it(user_files, tmp_path, model, message):
    spec = _spec(tmp_path, "bad-model", model=model.format(files=user_files))
    with pytest.raises(UserError, match=message):
        load_spec(spec)


def test_a_searched_key_the_users_constructor_does_not_take_is_refused_at_load(user_files, tmp_path):
    spec = _spec(tmp_path, "bad-key", model=f"{user_files}/nets.py:ConvNet", baseline={"width": 8},
                 space={"depth": {"int": [1, 4]}})
    with pytest.raises(UserError, match=r"space.depth: model .*ConvNet.* do not take 'depth'; they take: .*width"):
        load_spec(spec)


def test_a_network_without_one_logit_per_class_fails_before_any_trial_with_exit_2(user_files, tmp_path, capsys):
    spec = _spec(tmp_path, "thousand", model=f"{user_files}/nets.py:thousand_logits", space={})
    code = main(["run", str(spec), "--name", "t", "--storage", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2
    assert "returns (2, 1000); it must return one logit per class, (2, 10)" in err and "Traceback" not in err
    assert not (tmp_path / "runs" / "t").exists()  # nothing written, no trial started
