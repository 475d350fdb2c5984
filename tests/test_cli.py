"""The command line as a user meets it: one-line errors, exit codes, nothing written on bad input."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.cli import main
from tests._search_helpers import QUICKSTART
from trainables.checkpoint import load_checkpoint

BAD_SPECS = {
    # case: (edit of the quickstart spec, words the error must contain)
    "unknown-distribution": (lambda r: r["space"].update(lr={"normal": [0, 1]}), ["space.lr", "loguniform"]),
    "low-above-high": (lambda r: r["space"].update(dropout={"uniform": [0.5, 0.1]}), ["space.dropout", "low must be <= high"]),
    "loguniform-low-not-positive": (lambda r: r["space"].update(lr={"loguniform": [0.0, 0.1]}), ["space.lr", "low > 0"]),
    "empty-choice": (lambda r: r["space"].update(batch_size={"choice": []}), ["space.batch_size", "non-empty"]),
    "hparam-model-does-not-take": (lambda r: r["space"].update(depth={"int": [1, 3]}), ["space.depth", "do not take 'depth'"]),
    "grace-above-max-epochs": (lambda r: r["budget"].update(grace_period=20, max_epochs=5), ["grace_period", "max_epochs"]),
    "samples-below-one": (lambda r: r["budget"].update(samples=0), ["budget.samples", ">= 1"]),
    "train-subset-above-one": (lambda r: r["dataset"].update(train_subset=1.5), ["dataset.train_subset", "(0, 1]", "1.5"]),
    "reproducible-not-a-bool": (lambda r: r["budget"].update(reproducible="yes"), ["budget.reproducible", "true or false", "'yes'"]),
    "baseline-outside-space": (lambda r: r["baseline"].update(lr=0.5), ["baseline lr=0.5", "outside space.lr"]),
    "unknown-key": (lambda r: r.update(epochs=3), ["unknown key 'epochs'"]),
    "unknown-dataset": (lambda r: r["dataset"].update(name="imagenet"), ["unknown dataset 'imagenet'", "digits"]),
}


def _write(tmp_path: Path, edit) -> Path:
    raw = yaml.safe_load(QUICKSTART.read_text())
    edit(raw)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_is_one_line_exit_2_and_writes_nothing(case, tmp_path, capsys):
    edit, words = BAD_SPECS[case]
    spec = _write(tmp_path, edit)
    storage = tmp_path / "runs"
    code = main(["run", str(spec), "--storage", str(storage)])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("hpsearch: error: ")
    assert str(spec) in lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    assert not storage.exists()


def test_malformed_yaml_names_its_line(tmp_path, capsys):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: x\ndataset: digits\nmodel: cnn\nbaseline: {lr: 0.1\nspace: {}\n")
    assert main(["run", str(spec), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "malformed YAML at line" in err and str(spec) in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_missing_spec_and_missing_folder(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    spec = _write(tmp_path, lambda r: r.update(dataset={"name": "imagefolder", "root": str(tmp_path / "photos")}))
    assert main(["run", str(spec), "--storage", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "image folder" in err and "photos" in err and "does not exist" in err
    assert not (tmp_path / "runs").exists()


def test_unknown_search_names_what_exists(tmp_path, capsys):
    assert main(["resume", "ghost", "--storage", str(tmp_path)]) == 2
    assert "no search named 'ghost'" in capsys.readouterr().err
    assert main(["results", "ghost", "--storage", str(tmp_path)]) == 2
    assert main(["export", "ghost", "--storage", str(tmp_path), "--out", str(tmp_path / "m")]) == 2


def test_train_quickstart_prints_epochs_tests_once_and_writes_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "ckpt" / "checkpoint.pt"
    assert main(["train", str(QUICKSTART), "--epochs", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    epoch_lines = [ln for ln in printed.splitlines() if ln.startswith("epoch")]
    assert len(epoch_lines) == 4
    assert printed.count("test (evaluated once") == 1
    state = load_checkpoint(out)
    assert state["model_name"] == "cnn" and state["class_names"] == [str(d) for d in range(10)]
    assert len(state["mean"]) == 1 and state["test"]["acc"] > 0.5


def test_train_divergence_is_a_clear_error(tmp_path, capsys):
    code = main(["train", str(QUICKSTART), "--epochs", "2", "--set", "baseline.optimizer=sgd", "--set", "baseline.lr=1.0e+6",
                 "--set", "space.lr={loguniform: [1.0e-4, 1.0e+7]}", "--out", str(tmp_path / "c.pt")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and "diverged" in err[0] and "lr" in err[0]
    assert not (tmp_path / "c.pt").exists()


def test_bad_override_syntax(capsys):
    assert main(["train", str(QUICKSTART), "--set", "baseline.lr"]) == 2
    assert "key=value" in capsys.readouterr().err


def test_a_data_warning_prints_as_one_hpsearch_line_without_pythons_source_line(tmp_path, capsys):
    import warnings

    from PIL import Image

    from search.cli import one_line_warnings
    from trainables.data import create_dataset
    from trainables.errors import DataWarning

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / c / f"{i}.png")
    (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    one_line_warnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_dataset("imagefolder", root=str(tmp_path), image_size=8, val_fraction=0.25, test_fraction=0.0)
    assert [w.category for w in caught] == [DataWarning]
    w = caught[0]
    text = warnings.formatwarning(w.message, w.category, w.filename, w.lineno, None)
    assert text == f"hpsearch: warning: {w.message}\n" and "skipped 1 unreadable" in text


def test_models_lists_the_registered_ones_and_every_torchvision_builder(capsys):
    from trainables import zoo

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("cnn ") and "\nresnet18 " in out
    assert all(f"torchvision.{b} " in out for b in zoo.builders())
    assert "torchvision.vit_b_16" in out and "takes 224 px" in out and "torchvision.alexnet" in out and "min 63 px" in out
