"""The peers of benchmarks/anytime.py that run on Ray Tune or Optuna alone, set up as their documentation advises.

Every peer trains with hpsearch's own `trainables.train.Trainer` (the same network, data pipeline, val
split and torch seeds), on rounds of the same number of training samples as hpsearch (the spec's
`report_every`, with `auto_rounds` so the first rung is one round), so rung levels are the same in
training samples for every method (benchmarks/README.md, "anytime"):

- `ray-tune`: `tune.Tuner` over a function trainable that reports every round with a checkpoint,
  `OptunaSearch(seed)` (TPE) with the baseline as `points_to_evaluate`, `ASHAScheduler(time_attr=
  training_iteration, max_t, grace_period=1, reduction_factor=4)`, `max_concurrent_trials=2`,
  `reuse_actors=True` (a finished or stopped trial's actor trains the next one: no process start),
  `time_budget_s` = what is left of the budget after Ray's start;
- `optuna-hyperband`: `optuna.create_study(sampler=TPESampler(seed), pruner=HyperbandPruner(min_resource=1,
  max_resource=max_t, reduction_factor=4))`, `trial.report`/`should_prune` every round,
  `study.optimize(n_jobs=2, timeout=...)` (two trials at a time in threads, one torch thread each, as
  Optuna's docs show a parallel study in one process); a round that ends after the deadline is dropped.

Each returns the same `MethodRun` as the hpsearch methods and the Syne Tune peer (benchmarks/peer_syne.py).
"""
from __future__ import annotations

import copy
import logging
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as C


def ray_trainable(config: dict[str, Any], data: Any = None, settings: Any = None, baseline: Any = None) -> None:
    """A plain Tune function trainable, as Ray's docs write one: train a round, report it with a checkpoint."""
    from ray import tune

    from trainables.checkpoint import save_checkpoint
    from trainables.train import Trainer

    trainer = Trainer({**baseline, **config}, data, settings)
    try:
        while not trainer.finished:
            metrics = trainer.run_round()
            with tempfile.TemporaryDirectory() as folder:
                save_checkpoint(trainer.state_dict(), folder)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        trainer.close()


def run_ray_tune(spec: Any, data: Any, *, seed: int, t0: float, budget_s: float, storage: Path, name: str,
                 recorder: Any) -> dict[str, Any]:
    """Ray Tune + OptunaSearch + ASHAScheduler on hpsearch's rounds; the best trial's best round tested by search.finalize."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search.rounds import total_rounds
    from search.space import DefineByRun

    ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    settings = spec.settings()
    searcher = OptunaSearch(space=DefineByRun(spec.space, spec.baseline), metric="val_acc", mode="max", seed=seed,
                            points_to_evaluate=[spec.baseline_point()])
    max_t = total_rounds(spec, len(data.train))
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=1,
                              reduction_factor=spec.budget.reduction_factor)
    trainable = tune.with_resources(tune.with_parameters(ray_trainable, data=data, settings=settings, baseline=spec.baseline),
                                    {"cpu": 1})
    left = budget_s - (time.monotonic() - t0)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(metric="val_acc", mode="max", search_alg=searcher, scheduler=scheduler, num_samples=-1,
                                    max_concurrent_trials=spec.budget.max_concurrent, time_budget_s=left, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(storage), callbacks=[recorder], verbose=0,
                                  checkpoint_config=tune.CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="val_acc",
                                                                          checkpoint_score_order="max")),
    )
    tuner.fit()
    search_end = time.monotonic()
    result = C.finalize_peer(spec, data, storage / name)  # the best trial's best round, tested once as a search tests it
    best = result.best
    return {
        "test_acc": C.final_test_acc(result), "test_source": "search.finalize on its Tune folder",
        "handed_over": {"trial": best.trial_id, "config": dict(best.config), "val": best.best_value,
                        "epoch": best.best_epoch} if best else {},
        "search_end": search_end,
    }


def run_optuna_hyperband(spec: Any, data: Any, *, seed: int, t0: float, budget_s: float) -> dict[str, Any]:
    """Optuna alone: TPE + HyperbandPruner on hpsearch's rounds, n_jobs=2; its best round's state tested once."""
    import optuna
    import torch

    from search.rounds import total_rounds
    from search.space import DefineByRun
    from trainables.train import Trainer

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)  # two trials in threads of this process: one core each, as Ray's trials get
    settings = spec.settings()
    max_t = total_rounds(spec, len(data.train))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_t,
                                                                      reduction_factor=int(spec.budget.reduction_factor)))
    study.enqueue_trial(spec.baseline_point())  # the baseline first, as every method
    sample = DefineByRun(spec.space, spec.baseline)
    lock = threading.Lock()
    events: list[tuple] = []
    configs: dict[str, dict[str, Any]] = {}
    best: dict[str, Any] = {"val": -math.inf, "state": None, "trial": None, "epoch": None}
    deadline = t0 + budget_s

    def objective(trial: Any) -> float:
        sample(trial)
        configs[str(trial.number)] = dict(trial.params)
        trainer = Trainer(spec.full_config(trial.params), data, settings)
        trial_best, trial_state, trial_epoch = -math.inf, None, None
        try:
            while not trainer.finished:
                metrics = trainer.run_round()
                now = time.monotonic()
                if now > deadline:  # the round ended after the wall time: it does not count
                    raise optuna.TrialPruned("stopped at the time budget")
                val = float(metrics["val_acc"])
                with lock:
                    events.append(event_of(now - t0, str(trial.number), metrics))
                if trainer.diverged:
                    break
                if val > trial_best:
                    trial_best, trial_state, trial_epoch = val, copy.deepcopy(trainer.state_dict()), metrics["epoch"]
                trial.report(val, int(metrics["round"]))
                if trial.should_prune():
                    raise optuna.TrialPruned()
            return trial_best if trial_best > -math.inf else 0.0
        finally:
            with lock:
                if trial_best > best["val"]:
                    best.update(val=trial_best, state=trial_state, trial=str(trial.number), epoch=trial_epoch)
            trainer.close()

    study.optimize(objective, n_trials=None, timeout=max(1.0, deadline - time.monotonic()), n_jobs=spec.budget.max_concurrent,
                   catch=(Exception,))
    search_end = time.monotonic()
    test = C.checkpoint_test_acc(best["state"], data, settings)  # evaluated as search.finalize evaluates a checkpoint
    return {
        "events": events, "configs": configs, "test_acc": test,
        "test_source": "best round's state, evaluated as search.finalize evaluates a checkpoint",
        "handed_over": {"trial": best["trial"], "config": configs.get(str(best["trial"]), {}), "val": best["val"],
                        "epoch": best["epoch"]} if best["state"] is not None else {},
        "search_end": search_end,
    }


def event_of(t: float, trial: str, metrics: dict[str, Any]) -> tuple:
    """(seconds since the method started, trial, round, epoch, val_acc, round seconds, training seconds, Tune's
    time_this_iter_s or None) of a result. The last minus the round's seconds is what a (re)start cost on the first
    result after it: benchmarks/simulate.py's pause/resume cost."""
    seconds = float(metrics.get("epoch_seconds", 0.0))
    tune_seconds = metrics.get("time_this_iter_s")
    return (round(t, 3), trial, int(metrics.get("round", metrics.get("training_iteration", 0))), float(metrics.get("epoch", 0.0)),
            float(metrics.get("val_acc", 0.0)), seconds, float(metrics.get("train_seconds", seconds)),
            None if tune_seconds is None else round(float(tune_seconds), 3))
