"""search.results on hand-made trial folders: which checkpoint is the best one, how outcomes read."""
from __future__ import annotations

from pathlib import Path

from search import results as R


def _record(tmp_path: Path, values: list[float], *, mode: str = "max", metric: str = "val_acc") -> R.TrialRecord:
    history = [{"round": i + 1, metric: v} for i, v in enumerate(values)]
    best_round = max(range(len(values)), key=lambda i: values[i] if mode == "max" else -values[i]) + 1
    return R.TrialRecord(trial_id="t", index=1, config={}, status=R.Outcome.COMPLETED, rounds=len(values),
                         best_value=values[best_round - 1], best_round=best_round, best_epoch=None, last_value=values[-1],
                         path=tmp_path, history=history, metric=metric, mode=mode)


def test_without_the_best_rounds_checkpoint_the_best_kept_one_is_chosen_not_the_earliest(tmp_path):
    # the best round (4) has no checkpoint kept; of the kept ones (rounds 1, 3, 5) round 3 scores best
    record = _record(tmp_path, [0.50, 0.60, 0.80, 0.90, 0.70])
    names = ["checkpoint_000000", "checkpoint_000002", "checkpoint_000004"]
    assert R.best_checkpoint_name(record, names) == "checkpoint_000002"
    loss = _record(tmp_path, [0.9, 0.5, 0.2, 0.1, 0.4], mode="min", metric="val_loss")
    assert R.best_checkpoint_name(loss, names) == "checkpoint_000002"
    assert R.best_checkpoint_name(record, names + ["checkpoint_000003"]) == "checkpoint_000003"  # the best round's own


def test_the_results_table_fits_120_columns_and_names_what_it_left_out():
    import pandas as pd

    rows = []
    for i in range(5):
        rows.append({"trial": i + 1, "trial_id": f"{i:08x}_0000{i}", "status": R.Outcome.PRUNED if i else R.Outcome.COMPLETED,
                     "best_val_acc": 0.9 - i / 100, "best_epoch": 3.0, "rounds": 4, "rung": 1, "last_val_acc": 0.8,
                     "baseline": i == 0, **{f"config/param_with_a_long_name_{k}": 0.000123 * (k + 1) for k in range(12)},
                     "config/optimizer": "adam", "error": ""})
    text = R.format_results(pd.DataFrame(rows), metric="val_acc")
    lines = text.splitlines()
    assert all(len(line) <= 120 for line in lines), max(len(line) for line in lines)
    assert lines[0].split()[:6] == ["id", "status", "rounds", "best", "val_acc", "epoch"]
    assert lines[1].startswith("00000000_00000*") and "0.9000" in lines[1]  # the baseline is marked
    assert "param_with_a_long_name_0" in lines[0]
    assert lines[-1].startswith("(+ param_with_a_long_name_2") and "(10 more columns; --csv FILE writes every column)" in lines[-1]


def test_with_a_time_budget_the_fully_trained_trial_is_handed_over_only_if_it_ranks_in_the_top_share(tmp_path):
    from dataclasses import replace

    def trial(name: str, value: float, status: str) -> R.TrialRecord:
        return replace(_record(tmp_path, [value]), trial_id=name, status=status)

    cut = [trial(f"cut{i}", 0.80 + 0.01 * i, R.Outcome.TIMED_OUT if i == 9 else R.Outcome.PRUNED) for i in range(10)]  # best: cut9, 0.89
    good = trial("good", 0.88, R.Outcome.COMPLETED)  # second of 11: in the top quarter
    poor = trial("poor", 0.57, R.Outcome.COMPLETED)  # last of 11 (the seed-0 benchmark's finalist)
    assert R.best_record(cut + [good], "max", prefer_completed=True).trial_id == "good"
    assert R.best_record(cut + [poor], "max", prefer_completed=True).trial_id == "cut9"
    assert R.best_record(cut + [good], "max").trial_id == "cut9"  # without a time budget: simply the best
    assert R.best_record(cut + [good, poor], "max", prefer_completed=True, top_share=0.05).trial_id == "cut9"
