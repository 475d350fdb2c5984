"""After-search pieces that run without Ray: --refit on train+val, and train+val merging."""
from __future__ import annotations

import numpy as np

from search.finalize import merged_train_val, refit_state, trainer_from_checkpoint
from search.spec import load_spec
from tests._search_helpers import QUICKSTART
from trainables.data import create_dataset
from trainables.train import fit


def test_merged_train_val_holds_both_splits_and_keeps_test_apart():
    data = create_dataset("digits", seed=0)
    merged = merged_train_val(data)
    assert len(merged.train) == len(data.train) + len(data.val)
    assert np.array_equal(merged.train.images[: len(data.train)], data.train.images)
    assert np.array_equal(merged.train.images[len(data.train):], data.val.images)
    assert merged.test is data.test


def test_refit_retrains_the_config_on_train_and_val_for_the_best_epoch_count():
    spec = load_spec(QUICKSTART)
    data = create_dataset(spec.dataset, **spec.dataset_options)
    settings = spec.settings(max_epochs=3)
    searched = fit(spec.baseline, data, settings, evaluate_test=False)
    state = refit_state(searched.best_state, data, settings, epochs=2)
    assert state["round"] == 2
    assert state["samples_seen"] == 2 * (len(data.train) + len(data.val))
    assert state["hparams"] == searched.best_state["hparams"]
    trainer = trainer_from_checkpoint(state, data, settings)
    test = trainer.evaluate(data.test)
    assert test["acc"] > 0.5  # a real model, evaluated on the untouched test split
