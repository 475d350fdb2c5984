"""Paired statistics over seeds: how benchmarks/anytime.py compares two methods run on the same seeds.

Each seed runs every method back to back on one machine, so a seed is a block: the comparison is
on the per-seed differences (method A minus method B), never on two unpaired means. Reported:
the median difference, a percentile-bootstrap 95% confidence interval of that median (resampling
seeds with replacement, BOOTSTRAP_RESAMPLES times, a fixed generator so the table is rebuilt
identically), and the two-sided Wilcoxon signed-rank p-value (scipy's exact distribution for
small samples; zero differences dropped, as Wilcoxon's test does). Why these: the difference of
two searches' test accuracies is heavy-tailed (a search that hands over a bad trial loses
points at once), so a mean and a t interval would be carried by one seed.
"""
from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Iterable, Sequence

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20261203  # fixed: the same raw files give the same interval


@dataclass(frozen=True)
class Paired:
    """A - B over the seeds both have: the differences, their median, its bootstrap 95% CI, Wilcoxon's p."""

    seeds: tuple[str, ...]
    diffs: tuple[float, ...]
    median: float
    ci_low: float
    ci_high: float
    p: float

    @property
    def n(self) -> int:
        return len(self.diffs)

    def text(self, scale: float = 100.0, unit: str = "pt") -> str:
        """'+0.42 pt [-0.10, +0.90], p 0.23 (n 10)'."""
        if not self.diffs:
            return "-"
        return (f"{self.median * scale:+.2f} {unit} [{self.ci_low * scale:+.2f}, {self.ci_high * scale:+.2f}], "
                f"p {self.p:.3g} (n {self.n})")


def bootstrap_median_ci(diffs: Sequence[float], *, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                        level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the median of `diffs` (nan, nan for no data; the value twice for one)."""
    values = [float(d) for d in diffs]
    if not values:
        return float("nan"), float("nan")
    if len(values) == 1:
        return values[0], values[0]
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1.0 - level) / 2
    low = medians[int(math.floor(tail * (resamples - 1)))]
    high = medians[int(math.ceil((1 - tail) * (resamples - 1)))]
    return low, high


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p of `diffs` (1.0 when every difference is zero, nan for none)."""
    values = [float(d) for d in diffs]
    if not values:
        return float("nan")
    if all(v == 0 for v in values):
        return 1.0
    from scipy.stats import wilcoxon

    return float(wilcoxon(values, zero_method="wilcox", alternative="two-sided").pvalue)


def paired(a: dict[str, float], b: dict[str, float]) -> Paired:
    """A - B on the seeds (keys) where both have a finite value."""
    seeds = tuple(sorted((s for s in a if s in b and _finite(a[s]) and _finite(b[s])), key=_seed_order))
    diffs = tuple(float(a[s]) - float(b[s]) for s in seeds)
    if not diffs:
        return Paired(seeds, diffs, float("nan"), float("nan"), float("nan"), float("nan"))
    low, high = bootstrap_median_ci(diffs)
    return Paired(seeds, diffs, statistics.median(diffs), low, high, wilcoxon_p(diffs))


def median_iqr(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) of the finite values (nan x3 for none)."""
    finite = sorted(float(v) for v in values if _finite(v))
    if not finite:
        return float("nan"), float("nan"), float("nan")
    if len(finite) == 1:
        return finite[0], finite[0], finite[0]
    q1, q2, q3 = statistics.quantiles(finite, n=4, method="inclusive")
    return q2, q1, q3


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _seed_order(seed: str) -> tuple[int, str]:
    return (int(seed), seed) if str(seed).isdigit() else (1 << 30, str(seed))
