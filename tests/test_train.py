"""Tests of `trainables.train` and `trainables.checkpoint` on CPU with scikit-learn's digits:
learning, determinism, divergence, lr schedules, sub-epoch rounds, checkpoint resume and the
device logic (tested on CPU: no GPU is used)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from _fixtures import SPACES, tiny_cnn_hparams

from search.spec import load_spec
from trainables import metrics as M
from trainables.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from trainables.data import Split, create_dataset
from trainables.errors import UserError
from trainables.train import (
    TRAIN_DEFAULTS,
    TRAIN_HPARAMS,
    RunSettings,
    Trainer,
    fit,
    lr_factor,
    plan_for,
    select_device,
    split_hparams,
    validate_train_hparams,
)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The quickstart data set (digits), built once for this module with its own cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HPSEARCH_CACHE", str(tmp_path_factory.mktemp("digits-cache")))
        return create_dataset("digits", val_fraction=0.2, test_fraction=0.2, seed=0)


def _cpu(**kwargs) -> RunSettings:
    return RunSettings(**{"model": "cnn", "max_epochs": 1, "device": "cpu", "loader_workers": 0, **kwargs})


def _without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if k not in (M.ROUND_SECONDS, M.TRAIN_SECONDS)} for h in history]


# ---------------------------------------------------------------------------------------------
# Learning, determinism, divergence


def test_quickstart_baseline_learns_digits():
    spec = load_spec(SPACES / "quickstart.yaml")
    data = create_dataset(spec.dataset, **spec.dataset_options)
    result = fit(spec.baseline, data, spec.settings(max_epochs=8))

    assert result.status == M.STATUS_OK
    assert [h[M.ROUND] for h in result.history] == list(range(1, 9))
    assert [h[M.EPOCH] for h in result.history] == [float(e) for e in range(1, 9)]
    assert max(h[M.VAL_ACC] for h in result.history) >= 0.9
    assert result.best_metrics[M.ROUND] == result.best_round
    assert result.best_metrics[M.VAL_ACC] == max(h[M.VAL_ACC] for h in result.history)
    assert result.history[-1][M.TRAIN_LOSS] < result.history[0][M.TRAIN_LOSS]
    # the test split is evaluated once, with the best round's weights
    assert result.test is not None and result.test["n"] == len(data.test)
    assert result.test["acc"] >= 0.85
    assert set(result.test["per_class"]) == set(data.class_names)
    assert result.test["confusion"].sum() == len(data.test)
    assert result.test["confusion"].trace() == round(result.test["acc"] * len(data.test))
    assert 0.0 <= result.test["top5"] <= 1.0 and result.test["top5"] >= result.test["acc"]


def test_same_seed_same_history(digits):
    hp = tiny_cnn_hparams(dropout=0.2, hflip=True, crop_padding=1, optimizer="sgd", lr=0.05, momentum=0.9)
    runs = [fit(hp, digits, _cpu(max_epochs=2, seed=5)) for _ in range(2)]
    assert _without_time(runs[0].history) == _without_time(runs[1].history)
    for k, v in runs[0].best_state["model"].items():
        assert torch.equal(v, runs[1].best_state["model"][k]), k
    other = fit(hp, digits, _cpu(max_epochs=2, seed=6))
    assert _without_time(other.history) != _without_time(runs[0].history)


def test_huge_lr_diverges_without_raising(digits):
    hp = tiny_cnn_hparams(optimizer="sgd", lr=1e6, momentum=0.0)
    result = fit(hp, digits, _cpu(max_epochs=3))
    assert result.status == M.STATUS_DIVERGED
    assert result.history[-1][M.STATUS] == M.STATUS_DIVERGED
    assert result.history[-1][M.VAL_LOSS] == float("inf") and result.history[-1][M.VAL_ACC] == 0.0
    assert len(result.history) < 3  # stopped at the round that diverged
    assert not math.isfinite(result.history[-1][M.TRAIN_LOSS])
    assert result.test is None  # a diverged run is not tested


def test_unlabelled_test_split_is_not_scored(digits):
    n = len(digits.test)
    data = replace(digits, test=Split(labels=np.full(n, -1, dtype=np.int64), images=digits.test.images))
    result = fit(tiny_cnn_hparams(), data, _cpu(max_epochs=1))
    assert result.status == M.STATUS_OK and result.test is None


def test_evaluate_per_class(digits):
    trainer = Trainer(tiny_cnn_hparams(), digits, _cpu())
    out = trainer.evaluate(digits.val, per_class=True)
    assert out["n"] == len(digits.val)
    cm = out["confusion"]
    assert cm.shape == (10, 10) and cm.sum() == len(digits.val)
    assert cm.sum(1).tolist() == np.bincount(digits.val.labels, minlength=10).tolist()
    assert out["acc"] == pytest.approx(cm.trace() / cm.sum())
    for i, name in enumerate(digits.class_names):
        assert out["per_class"][name] == pytest.approx(cm[i, i] / cm[i].sum())


def test_min_mode_metric_tracks_lowest_val_loss(digits):
    trainer = Trainer(tiny_cnn_hparams(), digits, _cpu(max_epochs=3, metric=M.VAL_LOSS, mode="min"))
    history = [trainer.run_round() for _ in range(3)]
    best = min(history, key=lambda h: h[M.VAL_LOSS])
    assert trainer.best_round == best[M.ROUND] and trainer.best_value == best[M.VAL_LOSS]
    assert trainer.finished


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules


def test_schedule_none_is_constant():
    assert {lr_factor("none", s, 100, 10, 3, 0.1) for s in range(0, 120, 7)} == {1.0}


def test_schedule_onecycle_warms_up_from_1_25_to_peak_1():
    total = 100
    values = [lr_factor("onecycle", s, total, 10, 3, 0.1) for s in range(total + 1)]
    assert values[0] == pytest.approx(1 / 25)
    assert max(values) == pytest.approx(1.0)
    peak = values.index(max(values))
    assert peak == 30  # 30 % warm-up
    assert all(a <= b for a, b in zip(values[:peak], values[1 : peak + 1]))  # rises
    assert all(a >= b for a, b in zip(values[peak:], values[peak + 1 :]))  # then falls
    assert values[-1] == pytest.approx(1e-4)


def test_schedule_cosine_ends_near_zero():
    total = 200
    values = [lr_factor("cosine", s, total, 10, 3, 0.1) for s in range(total + 1)]
    assert values[0] == 1.0
    assert values[total // 2] == pytest.approx(0.5)
    assert values[total - 1] < 1e-3 and values[total] == pytest.approx(0.0, abs=1e-12)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_schedule_step_decays_by_gamma_every_step_size_epochs():
    steps_per_epoch, step_size, gamma = 10, 3, 0.5
    f = lambda s: lr_factor("step", s, 1000, steps_per_epoch, step_size, gamma)  # noqa: E731
    assert f(0) == f(29) == 1.0
    assert f(30) == f(59) == 0.5
    assert f(60) == 0.25


def test_unknown_schedule():
    with pytest.raises(UserError, match="schedule must be one of"):
        lr_factor("exponential", 0, 10, 1, 1, 0.1)


def test_trainer_applies_step_schedule(digits):
    hp = tiny_cnn_hparams(schedule="step", step_size=1, gamma=0.5, lr=0.01)
    result = fit(hp, digits, _cpu(max_epochs=3))
    assert [h[M.LR] for h in result.history] == pytest.approx([0.01, 0.005, 0.0025])


# ---------------------------------------------------------------------------------------------
# Rounds smaller than an epoch


def test_report_every_gives_fractional_epochs(digits):
    n, every, epochs = len(digits.train), 300, 2
    trainer = Trainer(tiny_cnn_hparams(), digits, _cpu(max_epochs=epochs, report_every=every))
    assert trainer.total_rounds == math.ceil(epochs * n / every)
    history = []
    while not trainer.finished:
        history.append(trainer.run_round())
    assert len(history) == trainer.total_rounds
    assert [h[M.ROUND] for h in history] == list(range(1, trainer.total_rounds + 1))
    assert [h[M.EPOCH] for h in history] == [round(k * every / n, 4) for k in range(1, len(history) + 1)]
    assert history[0][M.EPOCH] < 1 and any(h[M.EPOCH] != int(h[M.EPOCH]) for h in history)
    assert trainer.samples_seen == every * len(history)


def test_short_rounds_evaluate_val_only_where_asked_and_carry_the_last_values(digits):
    n, every, epochs = len(digits.train), 300, 2
    sparse = Trainer(tiny_cnn_hparams(), digits, _cpu(max_epochs=epochs, report_every=every, val_rounds=frozenset({3})))
    dense = Trainer(tiny_cnn_hparams(), digits, _cpu(max_epochs=epochs, report_every=every))
    history, full = [], []
    while not sparse.finished:
        history.append(sparse.run_round())
        full.append(dense.run_round())
    total = sparse.total_rounds
    assert total >= 6
    crossed = {k for k in range(1, total + 1) if k * every // n > (k - 1) * every // n}  # rounds that end an epoch
    assert [h[M.VAL_ROUND] == h[M.ROUND] for h in history] == [k in {1, 3, total} | crossed for k in range(1, total + 1)]
    assert sum(not M.val_is_fresh(h) for h in history) >= 2
    last = {}
    for h, d in zip(history, full):
        if M.val_is_fresh(h):  # evaluated: the same weights, the same val values as evaluating every round
            assert h[M.VAL_ACC] == d[M.VAL_ACC] and h[M.VAL_LOSS] == d[M.VAL_LOSS]
            last = {k: h[k] for k in (M.VAL_ACC, M.VAL_LOSS, M.VAL_ROUND)}
        else:
            assert {k: h[k] for k in last} == last and h[M.TRAIN_LOSS] == d[M.TRAIN_LOSS]
            assert set(M.curve_keys(h)).isdisjoint(M.VAL_KEYS)
        evaluated = [g for g in history[: h[M.ROUND]] if M.val_is_fresh(g)]
        best = max(evaluated, key=lambda g: (g[M.VAL_ACC], -g[M.ROUND]))  # ties keep the earlier round
        assert h[M.BEST_ROUND] == best[M.ROUND]  # the best round is one that was evaluated


def test_a_rounds_training_seconds_are_its_seconds_without_the_val_pass(digits):
    """train_seconds is what benchmarks count as training (their train share): the round's time before val."""
    every = 300
    sparse = Trainer(tiny_cnn_hparams(), digits, _cpu(max_epochs=1, report_every=every, val_rounds=frozenset()))
    rounds = [sparse.run_round() for _ in range(3)]
    for h in rounds:
        assert 0 < h[M.TRAIN_SECONDS] <= h[M.ROUND_SECONDS]
    evaluated, skipped = rounds[0], rounds[1]  # the first round evaluates val, the second does not
    assert M.val_is_fresh(evaluated) and not M.val_is_fresh(skipped)
    val_seconds = evaluated[M.ROUND_SECONDS] - evaluated[M.TRAIN_SECONDS]
    assert val_seconds > skipped[M.ROUND_SECONDS] - skipped[M.TRAIN_SECONDS]


# ---------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoint_resume_matches_uninterrupted_run(digits, tmp_path):
    hp = tiny_cnn_hparams(dropout=0.3, hflip=True, optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine")
    settings = _cpu(max_epochs=3, seed=3)
    first = Trainer(hp, digits, settings)
    first.run_round()
    path = save_checkpoint(first.state_dict(), tmp_path)  # a folder → folder/checkpoint.pt
    assert path == tmp_path / "checkpoint.pt" and path.is_file()
    uninterrupted = first.run_round()

    resumed = Trainer(hp, digits, settings)
    state = load_checkpoint(tmp_path)
    assert state["format"] == FORMAT and state["round"] == 1
    assert state["model_name"] == "cnn" and state["class_names"] == digits.class_names
    assert state["mean"] == list(digits.mean) and state["hparams"] == hp
    resumed.load_state_dict(state)
    after = resumed.run_round()

    assert _without_time([after]) == _without_time([uninterrupted])
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_checkpoint_is_loadable_with_weights_only(digits, tmp_path):
    trainer = Trainer(tiny_cnn_hparams(), digits, _cpu())
    trainer.run_round()
    path = save_checkpoint(trainer.state_dict(), tmp_path / "sub" / "best.pt")
    state = torch.load(path, map_location="cpu", weights_only=True)  # no arbitrary unpickling needed
    assert state["metrics"][M.ROUND] == 1
    assert not list(path.parent.glob(".*.tmp"))  # atomic write leaves no temp file


def test_load_checkpoint_rejects_random_bytes(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="not a readable hpsearch checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_load_checkpoint_rejects_foreign_and_missing_files(tmp_path):
    foreign = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(UserError, match="not an hpsearch checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(UserError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


# ---------------------------------------------------------------------------------------------
# Hyperparameter checks


def test_split_hparams_separates_and_validates():
    hp = tiny_cnn_hparams()
    train, model = split_hparams("cnn", hp)
    assert set(train) == set(TRAIN_HPARAMS)
    assert model == {k: v for k, v in hp.items() if k not in TRAIN_HPARAMS}
    with pytest.raises(UserError, match=r"\['depth'\]"):
        split_hparams("cnn", {**hp, "depth": 3})
    incomplete = dict(hp)
    del incomplete["gamma"]  # a training value left out takes its default (TrainHparams)
    assert split_hparams("cnn", incomplete)[0]["gamma"] == TRAIN_DEFAULTS["gamma"]


@pytest.mark.parametrize(
    "change,match",
    [
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"schedule": "cyclic"}, "schedule must be one of"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
    ],
)
def test_validate_train_hparams(change, match):
    train, _ = split_hparams("cnn", tiny_cnn_hparams(**change))
    with pytest.raises(UserError, match=match):
        validate_train_hparams(train)


# ---------------------------------------------------------------------------------------------
# Devices (the logic only; runs on CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_select_device_on_a_cpu_machine():
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    assert select_device("auto") == torch.device("mps" if mps else "cpu")
    assert select_device("cpu") == torch.device("cpu")
    with pytest.raises(UserError, match="'cuda' is not available"):
        select_device("cuda")
    with pytest.raises(UserError, match="device must be"):
        select_device("tpu")


def test_plan_for_cuda_and_cpu():
    cuda = plan_for(torch.device("cuda"), True)
    assert (cuda.amp, cuda.channels_last, cuda.resident_data) == (True, True, True)
    assert plan_for(torch.device("cuda"), False).resident_data is False  # streamed data stays on the host
    cpu = plan_for(torch.device("cpu"), True)
    assert (cpu.amp, cpu.channels_last, cpu.resident_data) == (False, False, False)
