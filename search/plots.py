"""Plots of a search (PNG, matplotlib's Agg backend): the test confusion matrix, every trial's learning
curve, and Optuna's parallel-coordinate and importance plots. `search.finalize` draws them into best/plots/."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from search import results as R
from trainables import metrics as M


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
        if r.status == R.Outcome.PRUNED:
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
    from search.space import quiet_optuna

    spec = result.spec
    if not spec.space:
        return None
    distributions = space_distributions(spec.space)
    with quiet_optuna():
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
