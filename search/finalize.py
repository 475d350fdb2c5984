"""After a search: evaluate the best model on test once, log it to MLflow, and draw the plots.

The best trial is the one whose *best round* is best; its checkpoint from that
round (not its last) is the model that is evaluated, logged as an MLflow
PyTorch model (TorchScript: no pickled classes), registered under the spec
name, and exported. `--refit` first retrains that config on train+val for its
best epoch count.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from search import results as R
from trainables import metrics as M
from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.data import DataBundle, Split
from trainables.train import RunSettings, Trainer

BEST_DIR = R.BEST_DIR  # <search folder>/best/checkpoint.pt: the final model (refit if asked)


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


def final_report(result: Any, data: DataBundle, *, tracker: Any, refit: bool = False) -> dict[str, Any]:
    """Test evaluation, model logging/registration, plots and results CSV on the parent run."""
    import mlflow
    import torch

    spec, best = result.spec, result.best
    checkpoint_dir = R.best_checkpoint_dir(best)
    state = load_checkpoint(checkpoint_dir)
    settings = spec.settings()
    if refit:
        state = refit_state(state, data, settings, best.best_epoch or best.best_round)
    trainer = trainer_from_checkpoint(state, data, settings)
    final: dict[str, Any] = {"checkpoint": str(checkpoint_dir), "trial_id": best.trial_id, "refit": refit}
    client, parent = tracker.client, tracker.parent_run_id
    with tempfile.TemporaryDirectory(prefix="hpsearch-report-") as tmp_name:
        tmp = Path(tmp_name)
        if data.test is not None and data.test.labelled:
            test = trainer.evaluate(data.test, per_class=True)
            final["test"] = {k: test[k] for k in ("loss", "acc", "top5") if k in test}
            final["test"]["per_class"] = test["per_class"]
            metrics = {f"test_{k}": v for k, v in final["test"].items() if isinstance(v, float)}
            _log_metrics(client, parent, metrics)
            per_class = {"class": list(test["per_class"]), "test_acc": [float(v) for v in test["per_class"].values()]}
            client.log_table(parent, data=per_class, artifact_file="test_per_class.json")  # one table, not a metric per class
            (tmp / "test_metrics.json").write_text(json.dumps(final["test"], indent=2))
            client.log_artifact(parent, str(tmp / "test_metrics.json"))
            plot_confusion(test["confusion"], data.class_names, tmp / "confusion_matrix.png")
            client.log_artifact(parent, str(tmp / "confusion_matrix.png"), "plots")
        ckpt_path = save_checkpoint(state, result.experiment_dir / BEST_DIR)  # what `hpsearch export` uses
        final["checkpoint"] = str(ckpt_path)
        client.log_artifact(parent, str(ckpt_path), "best_checkpoint")
        table = result.table()
        table.to_csv(tmp / "results.csv", index=False)
        client.log_artifact(parent, str(tmp / "results.csv"))
        for name, draw in (("learning_curves.png", plot_learning_curves), ("parallel_coordinates.png", plot_parallel_coordinates),
                           ("param_importance.png", plot_importance)):
            try:
                if draw(result, tmp / name):
                    client.log_artifact(parent, str(tmp / name), "plots")
            except Exception as exc:  # noqa: BLE001 - a plot must never lose a search's results
                client.set_tag(parent, f"plot_error.{name}", f"{type(exc).__name__}: {exc}"[:500])

        # The model: TorchScript (loads without pickled classes), signature + input example, registered.
        model = trainer.model.eval().float().cpu()
        example = torch.from_numpy(_normalised_example(data, state)).float()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.14 deprecates jit; MLflow still loads it
            scripted = torch.jit.trace(model, example, check_trace=False)
        from mlflow.models import infer_signature

        with torch.no_grad():
            out = scripted(example).numpy()
        (tmp / "model_meta.json").write_text(json.dumps({
            "class_names": state["class_names"], "mean": state["mean"], "std": state["std"],
            "input_shape": [data.channels, *data.image_size], "model_name": state["model_name"],
            "model_kwargs": state["model_kwargs"], "hparams": state["hparams"], "input": "normalised float32 NCHW",
        }, indent=2, default=str))
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        with _tracking_uri(tracker.tracking_uri), mlflow.start_run(run_id=parent), warnings.catch_warnings(), _quiet("mlflow.pytorch"):
            warnings.simplefilter("ignore")  # MLflow's generic pickle caution (warned and logged) and jit deprecations: the model is TorchScript
            info = mlflow.pytorch.log_model(
                scripted, name="model", signature=infer_signature(example.numpy(), out),
                input_example=example.numpy(), registered_model_name=spec.name,
                extra_files=[str(tmp / "model_meta.json")], serialization_format="pickle",  # TorchScript: saved by torch.jit.save
            )
        final["model_uri"] = info.model_uri
        final["model_version"] = getattr(info, "registered_model_version", None)
        if final["model_version"] is not None:
            client.set_tag(parent, "registered_model", f"{spec.name}/{final['model_version']}")
    trainer.close()
    return final


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Only errors from `logger_name` while the block runs."""
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _tracking_uri(uri: str):
    """MLflow's fluent API needs a global tracking URI (it also sets $MLFLOW_TRACKING_URI): set it for
    this block only, so a later search in the same process does not inherit this one's store."""
    import mlflow

    previous_env = os.environ.get("MLFLOW_TRACKING_URI")
    previous = mlflow.get_tracking_uri() if previous_env else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        if previous_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
            mlflow.set_tracking_uri(None)
        else:
            mlflow.set_tracking_uri(previous)
            os.environ["MLFLOW_TRACKING_URI"] = previous_env


def _log_metrics(client: Any, run_id: str, metrics: dict[str, float]) -> None:
    import time

    from mlflow.entities import Metric

    ts = int(time.time() * 1000)
    batch = [Metric(k, float(v), ts, 0) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)]
    for start in range(0, len(batch), 1000):
        client.log_batch(run_id, metrics=batch[start : start + 1000])


def _normalised_example(data: DataBundle, state: dict[str, Any]) -> np.ndarray:
    """Two normalised validation images (the model's real input) as the MLflow input example."""
    from trainables.data import decode_image

    if data.val.images is not None:
        x = data.val.images[:2].astype(np.float32) / 255.0
    else:
        x = np.stack([decode_image(f, data.image_size, data.channels) for f in (data.val.files or [])[:2]]).astype(np.float32) / 255.0
    mean = np.asarray(state["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(state["std"], np.float32).reshape(1, -1, 1, 1)
    return ((x - mean) / std).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Plots (PNG, matplotlib Agg)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, class_names: list[str], path: Path) -> bool:
    """scikit-learn's confusion-matrix plot of the test split (counts shown up to 30 classes)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _plt()
    k = len(class_names)
    size = min(max(4.0, 0.35 * k + 2), 30)
    fig, ax = plt.subplots(figsize=(size, size))
    ConfusionMatrixDisplay(cm, display_labels=class_names if k <= 30 else None).plot(
        ax=ax, cmap="Blues", include_values=k <= 30, xticks_rotation="vertical", colorbar=False)
    ax.set_title("test confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_learning_curves(result: Any, path: Path) -> bool:
    """Val metric per epoch for every trial; pruned trials end with an ×, the best is bold."""
    plt = _plt()
    metric = result.spec.metric
    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = False
    for r in result.records:
        xs = [row.get(M.EPOCH) for row in r.history if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])]
        ys = [row[metric] for row in r.history if isinstance(row.get(metric), (int, float)) and math.isfinite(row[metric])]
        if not xs:
            continue
        drawn = True
        is_best = result.best is not None and r.trial_id == result.best.trial_id
        style = {"linewidth": 2.5, "color": "black", "zorder": 3} if is_best else {"linewidth": 1, "alpha": 0.6}
        label = None
        if is_best:
            label = f"best {r.trial_id}"
        elif result.baseline is not None and r.trial_id == result.baseline.trial_id:
            label = f"baseline {r.trial_id}"
            style = {"linewidth": 2, "linestyle": "--", "color": "tab:red"}
        ax.plot(xs, ys, label=label, **style)
        if r.status == R.PRUNED:
            ax.plot(xs[-1], ys[-1], marker="x", color="grey", markersize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{result.name}: learning curves (× = stopped by ASHA)")
    if drawn:
        ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn


def plot_parallel_coordinates(result: Any, path: Path) -> bool:
    """Optuna's parallel-coordinate plot: one line per trial across its hyperparameters, coloured by its best metric."""
    study = _study(result)
    if study is None or len(study.trials) < 2:
        return False
    return _save_optuna_plot(lambda vis: vis.plot_parallel_coordinate(study, target_name=f"best {result.spec.metric}"), path)


def _save_optuna_plot(draw: Any, path: Path) -> bool:
    import optuna.visualization.matplotlib as vis

    plt = _plt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib backend experimental
        ax = draw(vis)
    figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
    figure.set_size_inches(max(8.0, figure.get_size_inches()[0]), 5.0)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return True


def _study(result: Any) -> Any:
    """An Optuna study holding each trial's searched values and best metric (for Optuna's plots and importances)."""
    import optuna

    from search.space import distributions as space_distributions

    spec = result.spec
    if not spec.space:
        return None
    distributions = space_distributions(spec.space)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if spec.mode == "max" else "minimize")
    for r in result.records:
        if r.best_value is None:
            continue
        params = {k: v for k, v in r.config.items() if k in distributions}
        study.add_trial(optuna.trial.create_trial(params=params, distributions={k: distributions[k] for k in params}, value=r.best_value))
    return study


def param_importances(result: Any) -> dict[str, float]:
    """Optuna's fANOVA-style importance of each searched hyperparameter for the best metric."""
    import optuna

    study = _study(result)
    return optuna.importance.get_param_importances(study) if study is not None else {}


def plot_importance(result: Any, path: Path) -> bool:
    """Optuna's hyperparameter-importance plot (from at least 3 trials with a result)."""
    study = _study(result)
    if study is None or len(study.trials) < 3:
        return False
    return _save_optuna_plot(lambda vis: vis.plot_param_importances(study, target_name=f"best {result.spec.metric}"), path)
