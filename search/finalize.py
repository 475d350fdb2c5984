"""The end of a search, owned by the search: the model handed over, tested once, written to best/.

After `Tuner.fit`, `finalize` takes the trial the search hands over (the best by its *best round*,
search.results.best_record), loads that round's checkpoint (not the trial's last), optionally retrains
its config on train+val (`--refit`), evaluates the test split once, writes `best/` (the checkpoint
`hpsearch export` reads, the test metrics, the results table, the plots) and returns a typed
`FinalReport`. Whether MLflow tracking is on or off, a search ends the same way: the MLflow callback
only logs the report it is given (search.tracking.callback). Benchmarks call `finalize` too, so the
test accuracy they compare is the one a user gets.
"""
from __future__ import annotations

import json
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from search import layout as L
from search import plots
from search import results as R
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.data import DataBundle, Split
from trainables.train import RunSettings, Trainer


@dataclass(frozen=True)
class TestMetrics:
    """The handed-over model on the test split, evaluated once."""

    loss: float
    acc: float
    top5: float | None
    per_class: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"loss": self.loss, "acc": self.acc}
        if self.top5 is not None:
            out["top5"] = self.top5
        out["per_class"] = dict(self.per_class)
        return out


@dataclass
class FinalReport:
    """What the end of a search produced (saved in hpsearch.json as `final`, logged to MLflow by the tracker).

    `model` and `example` are the handed-over network (eval mode, CPU) and two normalised val images:
    in memory only, for MLflow's model logging. `model_uri` / `model_version` are filled in by the
    tracker when it registers the model."""

    trial_id: str
    checkpoint: str  # best/checkpoint.pt where the search lives (a local path, or its URI)
    local_checkpoint: Path  # the same file on this machine (a URI search's mirror)
    refit: bool
    test: TestMetrics | None
    files: dict[str, Path]  # what best/ holds besides the checkpoint: name -> local file (test metrics, results, plots)
    plot_errors: dict[str, str] = field(default_factory=dict)  # a plot that failed: its name -> the error (the search is kept)
    meta: dict[str, Any] = field(default_factory=dict)  # class names, normalisation, input shape, model and hparams
    model: Any = field(default=None, repr=False, compare=False)
    example: np.ndarray | None = field(default=None, repr=False, compare=False)
    model_uri: str | None = None
    model_version: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain data for hpsearch.json (what `hpsearch list` and `export` read back)."""
        return {"trial_id": self.trial_id, "checkpoint": self.checkpoint, "refit": self.refit,
                "local_checkpoint": str(self.local_checkpoint),
                "test": self.test.as_dict() if self.test else None, "files": {k: str(v) for k, v in self.files.items()},
                "plot_errors": dict(self.plot_errors), "model_uri": self.model_uri, "model_version": self.model_version}


def finalize(result: Any, data: DataBundle, *, refit: bool = False) -> FinalReport:
    """Hand over `result.best`: its best round's checkpoint (refit on train+val if asked), tested once, in best/.

    `result` is a finished `search.tuner.SearchResult` with a best trial."""
    spec, best = result.spec, result.best
    if best is None:
        raise ValueError("finalize needs a search with a best trial, but got result.best=None")
    folder = L.SearchFolder.at(result.location)
    state = load_checkpoint(R.best_checkpoint_dir(best))
    settings = spec.settings()
    if refit:
        state = refit_state(state, data, settings, best.best_epoch or best.best_round)
    trainer = trainer_from_checkpoint(state, data, settings)
    try:
        best_dir = folder.best_dir
        plots_dir = best_dir / L.BEST_PLOTS
        plots_dir.mkdir(parents=True, exist_ok=True)
        local_checkpoint = save_checkpoint(state, best_dir)  # best/checkpoint.pt: what `hpsearch export` uses
        files: dict[str, Path] = {}
        plot_errors: dict[str, str] = {}
        test = None
        if data.test is not None and data.test.labelled:
            evaluated = trainer.evaluate(data.test, per_class=True)
            test = TestMetrics(loss=float(evaluated["loss"]), acc=float(evaluated["acc"]),
                               top5=float(evaluated["top5"]) if "top5" in evaluated else None,
                               per_class={str(k): float(v) for k, v in evaluated["per_class"].items()})
            files[L.BEST_TEST_METRICS] = best_dir / L.BEST_TEST_METRICS
            files[L.BEST_TEST_METRICS].write_text(json.dumps(test.as_dict(), indent=2))
            _draw(files, plot_errors, plots_dir, "confusion_matrix.png",
                  lambda path: plots.plot_confusion(evaluated["confusion"], data.class_names, path))
        files[L.BEST_RESULTS] = best_dir / L.BEST_RESULTS
        result.table().to_csv(files[L.BEST_RESULTS], index=False)
        for name, draw in (("learning_curves.png", plots.plot_learning_curves),
                           ("parallel_coordinates.png", plots.plot_parallel_coordinates),
                           ("param_importance.png", plots.plot_importance)):
            _draw(files, plot_errors, plots_dir, name, lambda path, draw=draw: draw(result, path))
        meta = {"class_names": state["class_names"], "mean": state["mean"], "std": state["std"],
                "input_shape": [data.channels, *data.image_size], "model_name": state["model_name"],
                "model_kwargs": state["model_kwargs"], "hparams": state["hparams"], "input": "normalised float32 NCHW"}
        return FinalReport(trial_id=best.trial_id, checkpoint=folder.uri(L.BEST, L.BEST_CHECKPOINT),
                           local_checkpoint=local_checkpoint, refit=refit, test=test,
                           files=files, plot_errors=plot_errors, meta=meta, model=trainer.model.eval().float().cpu(),
                           example=normalised_example(data, state))
    finally:
        trainer.close()


def _draw(files: dict[str, Path], errors: dict[str, str], folder: Path, name: str, draw: Any) -> None:
    """One plot into `folder`; a plot that fails is named in `errors`, never losing a search's results."""
    path = folder / name
    try:
        if draw(path):
            files[f"{L.BEST_PLOTS}/{name}"] = path
    except Exception as exc:  # noqa: BLE001 - a plot must never lose a search's results
        errors[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500]


def trainer_from_checkpoint(state: dict[str, Any], data: DataBundle, settings: RunSettings) -> Trainer:
    """A Trainer on `data` whose model holds the checkpoint's weights."""
    from trainables.models import resolve_model

    # the weights come from the checkpoint: never look for ImageNet files
    hparams = {**dict(state["hparams"]), **resolve_model(state["model_name"], settings.model_factory).rebuild_options()}
    trainer = Trainer(hparams, data, replace(settings, model=state["model_name"]))
    trainer.model.load_state_dict(state["model"])
    return trainer


def merged_train_val(data: DataBundle) -> DataBundle:
    """train+val as the training split (for --refit); val stays as a (no longer held-out) monitor."""
    t, v = data.train, data.val
    if t.images is not None and v.images is not None:
        train = Split(labels=np.concatenate([t.labels, v.labels]), images=np.concatenate([t.images, v.images]))
    else:
        train = Split(labels=np.concatenate([t.labels, v.labels]), files=list(t.files or []) + list(v.files or []))
    return replace(data, train=train)


def refit_state(state: dict[str, Any], data: DataBundle, settings: RunSettings, epochs: float) -> dict[str, Any]:
    """Retrain the checkpoint's config from scratch on train+val for `epochs` epochs."""
    hparams = dict(state["hparams"])
    refit_settings = replace(settings, model=state["model_name"], max_epochs=max(1, int(round(epochs))), report_every=None)
    trainer = Trainer(hparams, merged_train_val(data), refit_settings)
    while not trainer.finished:
        trainer.run_round()
    return trainer.state_dict()


def normalised_example(data: DataBundle, state: dict[str, Any]) -> np.ndarray:
    """Two normalised validation images (the model's real input) as the MLflow input example."""
    from trainables.data import decode_image

    if data.val.images is not None:
        x = data.val.images[:2].astype(np.float32) / 255.0
    else:
        x = np.stack([decode_image(f, data.image_size, data.channels) for f in (data.val.files or [])[:2]]).astype(np.float32) / 255.0
    mean = np.asarray(state["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(state["std"], np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)
