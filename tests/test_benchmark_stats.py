"""benchmarks/paired.py and benchmarks/anytime_summary.py: the statistics and the summary the search-quality
benchmark reports, on made-up raw files (no search is run)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import paired as P  # noqa: E402


def test_wilcoxon_p_of_ten_positive_differences_is_the_exact_two_sided_value():
    # every one of 10 differences positive, distinct ranks: p = 2 / 2**10
    assert P.wilcoxon_p([0.001 * k for k in range(1, 11)]) == pytest.approx(2 / 1024)
    assert P.wilcoxon_p([0.0, 0.0]) == 1.0


def test_the_bootstrap_interval_of_the_median_holds_the_median_and_is_reproducible():
    diffs = [0.004, -0.002, 0.010, 0.003, 0.001, 0.006, -0.004, 0.002, 0.008, 0.000]
    low, high = P.bootstrap_median_ci(diffs)
    assert min(diffs) <= low <= sorted(diffs)[4] <= sorted(diffs)[5] <= high <= max(diffs)
    assert (low, high) == P.bootstrap_median_ci(diffs)  # a fixed generator: the table rebuilds identically
    assert P.bootstrap_median_ci([0.01]) == (0.01, 0.01)


def test_paired_uses_only_the_seeds_both_methods_have_and_skips_missing_values():
    a = {"11": 0.92, "12": 0.93, "13": 0.91, "14": float("nan")}
    b = {"11": 0.91, "12": 0.91, "14": 0.90, "15": 0.80}
    result = P.paired(a, b)
    assert result.seeds == ("11", "12")
    assert result.diffs == pytest.approx((0.01, 0.02))
    assert result.median == pytest.approx(0.015)
    assert "+1.50 pt" in result.text() and "(n 2)" in result.text()


def test_median_iqr():
    assert P.median_iqr([1.0, 2.0, 3.0, 4.0, 5.0]) == (3.0, 2.0, 4.0)
    assert P.median_iqr([]) != P.median_iqr([])  # nan


def _raw(method: str, seed: int, test: float, completed: bool = True) -> dict:
    return {"benchmark": "anytime", "format": 2, "workload": "glyphs", "seed": seed, "method": method, "budget_s": 300.0, "workers": 2,
            "max_epochs": 6, "machine": "cpu-x", "commit": "abc1234", "smoke": False, "data": {"summary": "made up"},
            "test_acc": test, "best_val": test + 0.002, "trial_epochs": 20.0, "train_share": 0.8, "completed": completed,
            "levels": {"first_rung": 40, "one_epoch": 8, "quarter_max_t": 6, "max_t": 2}, "trials": 40, "handed_over_epochs": 6.0,
            "trace": [[10.0, 0.5], [200.0, test]], "events": [[10.0, "t1", 1, 0.1, 0.5, 2.0, 1.8]], "configs": {}}


def test_the_summary_json_has_one_entry_per_method_and_seed_and_the_table_pairs_seeds(tmp_path):
    import anytime_summary

    runs = tmp_path / "runs" / "anytime"
    runs.mkdir(parents=True)
    for seed, (ours, theirs) in zip(range(11, 16), [(0.92, 0.91), (0.93, 0.92), (0.91, 0.915), (0.94, 0.92), (0.92, 0.91)]):
        (runs / f"glyphs_seed{seed}_hpsearch.json").write_text(json.dumps(_raw("hpsearch", seed, ours)))
        (runs / f"glyphs_seed{seed}_ray-tune.json").write_text(json.dumps(_raw("ray-tune", seed, theirs, completed=seed != 12)))
    (runs / "not_a_result.json").write_text("{")
    report = anytime_summary.summarize(tmp_path).read_text()
    summary = json.loads((tmp_path / "anytime_summary.json").read_text())
    assert summary["machine"] == "cpu-x" and summary["commit"] == "abc1234" and summary["budget_s"] == 300.0 and summary["workers"] == 2
    assert list(summary["methods"]) == ["hpsearch", "ray-tune"]
    assert sorted(summary["methods"]["ray-tune"]) == ["11", "12", "13", "14", "15"]
    entry = summary["methods"]["ray-tune"]["12"]
    assert entry["test_acc"] == 0.92 and entry["completed"] is False and "machine" not in entry
    # hpsearch - ray-tune per seed: +1.0, +1.0, -0.5, +2.0, +1.0 pt -> median +1.00
    row = next(line for line in report.splitlines() if line.startswith("| `ray-tune` |"))
    assert "+1.00 pt [" in row and "(n 5)" in row and "| 4/5 |" in row
    assert "| `hpsearch` | 5 | 0.9200 [0.9200, 0.9300] | (reference) |" in report
