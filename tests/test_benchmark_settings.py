"""The search-efficiency benchmark's settings are valid hpsearch specs (fast: no search runs).

A full benchmark run takes tens of minutes; a setting whose spec the loader rejects would die at its
first seed. This checks each setting and its hpsearch variants parse, and that random search gets a
distribution for every searched parameter.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _search_efficiency():
    """benchmarks/search_efficiency.py as a module (benchmarks/ is not a package)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import search_efficiency
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return search_efficiency


@pytest.mark.parametrize("setting", ["quickstart", "small-train", "many-trials", "many-trials-small-train", "wide-space"])
def test_search_efficiency_settings_are_valid_specs(setting):
    """Each setting's spec (and its hpsearch variants) passes the spec loader, so a full run does not die at its setting."""
    S = _search_efficiency()
    assert setting in S.SETTINGS
    for method in S.methods_for(setting):
        spec = S.make_spec(setting, seed=3, smoke=False, method=method)
        assert spec.seed == 3 and spec.budget.samples == (12 if setting in {"quickstart", "small-train"} else 48)
        assert S.tune_space(spec).keys() == {p.name for p in spec.space}
    if setting == "wide-space":
        lr = next(p for p in spec.space if p.name == "lr")
        assert (lr.low, lr.high) == (1.0e-5, 1.0) and spec.budget.reduction_factor == 4


def test_only_keeps_hpsearch_and_random_and_pooled_sd_is_within_groups():
    """`--only` never drops the two methods every check compares; the noise floor ignores differences between configs."""
    S = _search_efficiency()
    assert S.methods_for("many-trials", ["tpe-fifo"]) == (S.HPSEARCH, S.RANDOM, "TPE + FIFO")
    assert S.methods_for("many-trials", ["random"]) == (S.HPSEARCH, S.RANDOM)
    assert S.methods_for("many-trials", ["asha-stop"]) == (S.HPSEARCH, S.ASHA_STOP, S.RANDOM)
    assert len(S.methods_for("many-trials")) == 4
    # two configs 10 points apart, each +-1 point over two seeds: the sample SD of one config, 1.41 points
    assert S.pooled_sd([[0.89, 0.91], [0.99, 1.01]]) == pytest.approx(0.01 * 2 ** 0.5)
    assert S.pooled_sd([[0.9]]) != S.pooled_sd([[0.9]])  # one run per config: no spread to measure (nan)


def test_paired_difference_is_mean_and_standard_error_in_points():
    S = _search_efficiency()
    per_seed = [{S.HPSEARCH: {"test": a}, S.RANDOM: {"test": b}} for a, b in [(0.98, 0.97), (0.97, 0.97), (0.99, 0.97)]]
    # differences 1, 0, 2 points: mean 1, SD 1, standard error 1 / sqrt(3)
    assert S.paired_difference(per_seed, S.HPSEARCH, lambda o: o["test"]) == "+1.00 ± 0.58"
    assert S.paired_difference(per_seed[:1], S.HPSEARCH, lambda o: o["test"]) == "+1.00"
