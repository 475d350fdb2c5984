"""Tests of `search.spec`: the shipped specs load, and every kind of mistake becomes one
`UserError` that names the file and the problem."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from _fixtures import SPACES

from search.spec import load_spec, parse_duration
from trainables import zoo
from trainables.data import DATASETS
from trainables.errors import UserError
from trainables.models import list_models
from trainables.train import TRAIN_HPARAMS

SPEC_FILES = sorted(SPACES.glob("*.yaml"))


def _base() -> dict:
    return yaml.safe_load((SPACES / "quickstart.yaml").read_text())


def _write(tmp_path: Path, raw: dict | str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw, sort_keys=False))
    return path


def _error(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(UserError) as info:
        load_spec(path, overrides or [])
    message = str(info.value)
    assert "\n" not in message  # one line
    assert str(path) in message  # names the file
    return message


# ---------------------------------------------------------------------------------------------
# The shipped specs


def test_spaces_folder_has_the_tutorials():
    names = {p.name for p in SPEC_FILES}
    assert {"quickstart.yaml", "tutorial_a_animals.yaml", "tutorial_b_cifar10.yaml", "tutorial_c_mnist.yaml",
            "tutorial_d_dogs_scratch.yaml", "tutorial_d_dogs_transfer.yaml", "tutorial_e_cifar10.yaml",
            "tutorial_d_dogs_mobilenet.yaml"} <= names


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.name for p in SPEC_FILES])
def test_every_spec_loads(path):
    spec = load_spec(path)
    assert spec.path == str(path)
    assert spec.dataset in DATASETS.names()
    assert spec.model in list_models() or spec.model.removeprefix("torchvision.") in zoo.builders()
    assert set(TRAIN_HPARAMS) <= set(spec.baseline)
    assert spec.budget.grace_period <= spec.budget.max_epochs
    # the baseline is a point of the search space
    point = spec.baseline_point()
    for p in spec.space:
        if p.active(spec.baseline):
            assert p.contains(point[p.name]), p.name
    settings = spec.settings()
    assert settings.model == spec.model and settings.max_epochs == spec.budget.max_epochs
    assert spec.settings(max_epochs=3).max_epochs == 3
    assert spec.raw["baseline"] == spec.baseline


def test_quickstart_resolves_defaults_and_conditions():
    spec = load_spec(SPACES / "quickstart.yaml")
    assert spec.dataset_options == {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 0}
    assert spec.budget.report_every == "auto" and spec.budget.time_budget_s is None and spec.budget.scheduler == "asha"
    momentum = next(p for p in spec.space if p.name == "momentum")
    assert momentum.when == (("optimizer", ("sgd",)),)
    assert not momentum.active(spec.baseline)  # baseline uses adam
    assert "momentum" not in spec.baseline_point()
    lr = next(p for p in spec.space if p.name == "lr")
    assert lr.kind == "loguniform" and lr.log and (lr.low, lr.high) == (3.0e-4, 3.0e-2)


def test_overrides_change_values():
    spec = load_spec(SPACES / "quickstart.yaml", ["budget.samples=3", "baseline.lr=0.01"])
    assert spec.budget.samples == 3
    assert spec.baseline["lr"] == 0.01
    assert load_spec(SPACES / "quickstart.yaml").budget.samples == 12  # the file is untouched


def test_override_errors(tmp_path):
    path = SPACES / "quickstart.yaml"
    with pytest.raises(UserError, match="must look like key=value"):
        load_spec(path, ["budget.samples"])
    with pytest.raises(UserError, match="'model' in .* is not a mapping"):
        load_spec(path, ["model.name=cnn"])
    with pytest.raises(UserError, match="budget.samples must be >= 1"):
        load_spec(path, ["budget.samples=0"])


def test_missing_spec_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text,seconds", [(90, 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), (None, None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


# ---------------------------------------------------------------------------------------------
# Bad specs: one test per mistake


def test_malformed_yaml_names_the_line(tmp_path):
    text = "name: broken\nmodel: cnn\nbudget: {samples: 3\nbaseline:\n  lr: 0.1\n"
    path = _write(tmp_path, text)
    message = _error(path)
    assert "malformed YAML" in message
    assert "line 4" in message  # the flow mapping opened on line 3 is not closed before line 4


def test_not_a_mapping(tmp_path):
    assert "must be a YAML mapping" in _error(_write(tmp_path, "- just\n- a list\n"))


def _set(raw: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def _delete(raw: dict, dotted: str) -> None:
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node[part]
    del node[last]


BAD_SPECS = {
    # id: (changes {dotted key: value, or DELETE}, substrings the message must contain)
    "unknown-top-level-key": ({"epochs": 5}, ["unknown key 'epochs' in the spec"]),
    "unknown-budget-key": ({"budget.epochs": 5}, ["unknown key 'epochs' in budget"]),
    "unknown-distribution": ({"space.lr": {"normal": [0, 1]}}, ["'normal'", "space.lr"]),
    "low-greater-than-high": ({"space.dropout": {"uniform": [0.5, 0.1]}}, ["space.dropout", "low must be <= high"]),
    "loguniform-low-zero": ({"space.lr": {"loguniform": [0.0, 0.1]}}, ["space.lr", "log scale needs low > 0"]),
    "int-log-low-zero": ({"space.hidden": {"int": [0, 256], "log": True}}, ["space.hidden", "log scale needs low > 0"]),
    "empty-choice": ({"space.batch_size": {"choice": []}}, ["space.batch_size", "non-empty list"]),
    "two-distributions": ({"space.lr": {"uniform": [0.1, 0.2], "loguniform": [0.1, 0.2]}}, ["space.lr", "exactly one distribution"]),
    "space-param-not-taken": ({"space.depth": {"int": [1, 4]}}, ["space.depth", "do not take 'depth'"]),
    "baseline-param-not-taken": ({"baseline.depth": 3}, ["baseline.depth", "do not take 'depth'"]),
    "resnet-option-on-cnn": ({"baseline.freeze": "backbone"}, ["baseline.freeze", "model 'cnn'"]),
    "grace-period-above-max-epochs": ({"budget.grace_period": 20}, ["budget.grace_period (20)", "budget.max_epochs (12)"]),
    "samples-zero": ({"budget.samples": 0}, ["budget.samples must be >= 1", "got 0"]),
    "samples-wrong-type": ({"budget.samples": "many"}, ["budget.samples must be an integer", "'many'"]),
    "reduction-factor-one": ({"budget.reduction_factor": 1}, ["budget.reduction_factor must be >= 1.01"]),
    "bad-time-budget": ({"budget.time_budget": "soon"}, ["time_budget must look like", "'soon'"]),
    "baseline-outside-space": ({"baseline.lr": 0.5}, ["baseline lr=0.5 is outside space.lr", "loguniform"]),
    "baseline-choice-outside-space": ({"baseline.channels": "4-8"}, ["baseline channels='4-8' is outside space.channels"]),
    "missing-required-key": ({"model": "DELETE"}, ["missing required key 'model'"]),
    "unknown-dataset": ({"dataset.name": "imagenet"}, ["unknown dataset 'imagenet'", "digits"]),
    "fraction-above-one": ({"dataset.val_fraction": 1.5}, ["dataset.val_fraction must be a fraction in [0, 1)", "1.5"]),
    "fractions-sum-to-one": ({"dataset.val_fraction": 0.5, "dataset.test_fraction": 0.5},
                             ["dataset val_fraction=0.5 + test_fraction=0.5 = 1 leaves no training images"]),
    "unknown-dataset-option": ({"dataset.root": "/data"}, ["unknown key 'root' in dataset (digits)"]),
    "unknown-model": ({"model": "vgg16"}, ["unknown model 'vgg16'", "cnn", "resnet18"]),
    "bad-metric": ({"metric": "accuracy"}, ["metric must be one of", "'accuracy'"]),
    "bad-device": ({"device": "tpu"}, ["device must be", "'tpu'"]),
    "bad-name": ({"name": "my spec!"}, ["name must be"]),
    "when-unknown-key": ({"space.momentum": {"uniform": [0.5, 0.99], "when": {"solver": "sgd"}}}, ["space.momentum.when names 'solver'"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec(case, tmp_path):
    changes, expected = BAD_SPECS[case]
    raw = copy.deepcopy(_base())
    for key, value in changes.items():
        if value == "DELETE":
            _delete(raw, key)
        else:
            _set(raw, key, value)
    path = _write(tmp_path, raw, name=f"{case}.yaml")
    message = _error(path)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_good_base_spec_is_valid(tmp_path):
    """The bad-spec cases above start from this spec, which itself must load."""
    spec = load_spec(_write(tmp_path, _base()))
    assert spec.name == "quickstart"


@pytest.mark.parametrize("entry, message", [
    ({"optimizer": {"choice": ["adam", "rmsprop"]}}, r"space.optimizer: 'rmsprop' is refused by the training loop \(optimizer must be one of sgd, adam, adamw"),
    ({"momentum": {"uniform": [0.5, 1.5]}}, r"space.momentum: 1.5 is refused by the training loop \(momentum must be in \[0.0, 1.0\)"),
    ({"schedule": {"choice": ["none", "linear"]}}, r"space.schedule: 'linear' is refused"),
    ({"hflip": {"choice": [False, "yes"]}}, r"space.hflip: 'yes' is refused .*hflip must be true or false"),
    ({"batch_size": {"choice": [32, 0]}}, r"space.batch_size: 0 is refused .*batch_size must be >= 1"),
])
def test_every_choice_and_bound_is_checked_against_the_training_loop_at_load(tmp_path, entry, message):
    raw = _base()
    raw["space"] = {**raw["space"], **entry}
    assert re.search(message, _error(_write(tmp_path, raw))), _error(_write(tmp_path, raw))


def test_a_bad_baseline_training_value_is_refused_at_load(tmp_path):
    raw = _base()
    raw["baseline"]["gamma"] = -0.1  # not searched: only the loop's own check can catch it
    assert "baseline: gamma must be > 0, but got gamma=-0.1" in _error(_write(tmp_path, raw))


@pytest.mark.parametrize("entry, message", [
    ({"kernel_size": {"choice": [3, 4]}}, r"space.kernel_size: 4 is refused by model 'cnn' \(kernel_size must be a positive odd number"),
    ({"channels": {"choice": ["16-32", "8-16-32-64"]}}, r"space.channels: '8-16-32-64' is refused by model 'cnn' \(too many pooling blocks"),
    ({"dropout": {"uniform": [0.0, 1.0]}}, r"space.dropout: 1.0 is refused by model 'cnn' \(dropout must be in \[0, 1\)"),
])
def test_every_model_value_is_built_once_on_the_meta_device_before_any_trial(tmp_path, entry, message):
    from search.spec import check_model_values
    from trainables.data import create_dataset

    raw = _base()
    raw["space"] = {**raw["space"], **entry}
    spec = load_spec(_write(tmp_path, raw))
    data = create_dataset("digits", val_fraction=0.2, test_fraction=0.2, seed=0)  # 8x8 images: 3 pools is too many
    with pytest.raises(UserError, match=message) as info:
        check_model_values(spec, data)
    assert "\n" not in str(info.value) and str(spec.path) in str(info.value)
    check_model_values(load_spec(SPACES / "quickstart.yaml"), data)  # the shipped quickstart passes


def test_a_baseline_lists_only_what_differs_from_the_defaults(tmp_path):
    from trainables.train import TRAIN_DEFAULTS

    raw = _base()
    raw["baseline"] = {"lr": 0.003, "channels": "16-32", "hidden": 64}  # training and model defaults fill the rest
    raw["space"] = {"lr": {"loguniform": [1e-4, 1e-2]}, "conv_dropout": {"uniform": [0.0, 0.5]}}
    spec = load_spec(_write(tmp_path, raw))
    assert {k: spec.baseline[k] for k in TRAIN_DEFAULTS} == {**TRAIN_DEFAULTS, "lr": 0.003}
    assert spec.baseline["conv_dropout"] == 0.0  # searched without a baseline value: the model's own default
    assert spec.raw["baseline"] == spec.baseline  # stored complete: a resume never depends on today's defaults
