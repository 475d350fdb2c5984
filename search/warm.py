"""Warm start: the trials of earlier searches, given to a new search's sampler and rungs without re-running them.

`hpsearch run SPEC --warm-start NAME [NAME ...]` (or the spec's `warm_start: [NAME, ...]`) reads each
earlier search of the same storage. A trial of it is kept when its configuration is a point of the new
search: every hyperparameter the new space searches (where active) has a value inside it, and every
other one equals the new baseline; the others are dropped and counted. A kept trial's learning curve is
read in epochs (its rows' `epoch`) and placed at the new search's rounds (its rungs and max_t): the
sampler (search.sampler.RungAwareTPE) gets it as pruned at each rung it reached and complete if it
reached max_epochs; ASHA with promotions gets its score in each rung it reached, so a new trial is
promoted only when it beats what the earlier search saw there (a warm trial itself is never resumed).
What changed between the searches (data set, its options, model) is named in the summary.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from search import layout as L
from search import results as R
from search.schedulers import rank_score
from search.spec import SearchSpec, parse_spec
from trainables import metrics as M
from trainables.errors import UserError

EPOCH_TOLERANCE = 0.02  # a round counts as reached when the earlier trial trained to within 2 % of its epochs


@dataclass
class WarmTrial:
    """One earlier trial in the new search's terms: its searched values and its metric at the new rounds."""

    source: str  # "search/trial id"
    params: dict[str, Any]
    curve: dict[int, float]  # new round -> value of the metric there
    scores: dict[int, float]  # new rung -> what ASHA ranks there (the metric, ties broken by the val loss)
    complete: bool  # reached the new search's max_t


@dataclass
class WarmStart:
    """What earlier searches give a new one."""

    trials: list[WarmTrial] = field(default_factory=list)
    dropped: int = 0  # trials whose configuration is outside the new search
    sources: list[dict[str, Any]] = field(default_factory=list)  # name, trials, parent MLflow run
    changes: list[str] = field(default_factory=list)  # what differs from the earlier searches (data, model)

    def summary(self) -> str:
        names = ", ".join(s["name"] for s in self.sources)
        line = f"warm start: {len(self.trials)} trials from {names} ({self.dropped} dropped: outside this search's space)"
        return line + (f"; changed since: {'; '.join(self.changes)}" if self.changes else "")


def row_at_epoch(history: list[dict[str, Any]], metric: str, epoch: float) -> dict[str, Any] | None:
    """The last row trained up to `epoch` (within the tolerance), if the trial got that far."""
    reached = [row for row in history if isinstance(row.get(metric), (int, float)) and isinstance(row.get("epoch"), (int, float))
               and M.val_is_fresh(row)]
    if not reached or max(row["epoch"] for row in reached) < epoch * (1 - EPOCH_TOLERANCE):
        return None
    upto = [row for row in reached if row["epoch"] <= epoch * (1 + EPOCH_TOLERANCE) + 1e-9]
    return upto[-1] if upto else None


def point_in_space(spec: SearchSpec, old_spec: SearchSpec, config: dict[str, Any]) -> dict[str, Any] | None:
    """The earlier trial's searched values in the new space, or None when it is not a point of it."""
    old_full = {**old_spec.baseline, **config}
    new_point = {**spec.baseline}
    searched = {p.name for p in spec.space}
    for key, value in old_full.items():  # what the new search does not search must be what it trains with
        if key not in searched and key in spec.baseline and spec.baseline[key] != value:
            return None
    params = {}
    for param in spec.space:
        if not param.active({**new_point, **params}):
            continue
        if param.name not in old_full or not param.contains(old_full[param.name]):
            return None
        params[param.name] = old_full[param.name]
    return params


def _changes(spec: SearchSpec, old_spec: SearchSpec, name: str) -> list[str]:
    out = []
    if old_spec.dataset != spec.dataset:
        out.append(f"data set {old_spec.dataset} -> {spec.dataset} ({name})")
    options = sorted(set(old_spec.dataset_options) | set(spec.dataset_options))
    diff = [f"{k} {old_spec.dataset_options.get(k)!r} -> {spec.dataset_options.get(k)!r}" for k in options
            if old_spec.dataset_options.get(k) != spec.dataset_options.get(k)]
    if diff:
        out.append(f"data options {', '.join(diff)} ({name})")
    if old_spec.model != spec.model:
        out.append(f"model {old_spec.model} -> {spec.model} ({name})")
    if old_spec.metric != spec.metric:
        out.append(f"metric {old_spec.metric} -> {spec.metric} ({name}): its values are not used")
    return out


def load_warm_start(spec: SearchSpec, names: list[str] | tuple[str, ...], storage: str, *, rounds_per_epoch: float,
                    max_t: int, rungs: tuple[int, ...]) -> WarmStart:
    """The trials of searches `names` (in `storage`) placed at this search's rounds; an unknown name is a `UserError`."""
    import json

    warm = WarmStart()
    for name in names:
        folder = R.find_search(storage, name)  # unknown: one line naming the storage
        state = R.read_state(folder)
        try:
            old_spec = parse_spec(state["spec"], state.get("spec_path", "<spec>"))
        except UserError as exc:
            raise UserError(f"warm start from {name!r}: its spec no longer loads ({exc})") from None
        records = R.trial_records(folder, metric=old_spec.metric, mode=old_spec.mode, total_rounds=state.get("total_rounds", 0),
                                  rungs=state.get("rungs", ()))
        runs_file = R.fetch_file(folder, L.RUNS)
        parent = json.loads(runs_file.read_text()).get("parent_run_id") if runs_file is not None else None
        kept = 0
        for record in records:
            params = point_in_space(spec, old_spec, record.config) if old_spec.metric == spec.metric else None
            if params is None or not record.history:
                warm.dropped += params is None
                continue
            rows = {level: row for level in sorted({*rungs, max_t})
                    if (row := row_at_epoch(record.history, spec.metric, level / rounds_per_epoch)) is not None}
            if not rows:
                continue
            warm.trials.append(WarmTrial(
                source=f"{name}/{record.trial_id}", params=params, curve={lv: float(r[spec.metric]) for lv, r in rows.items()},
                scores={lv: rank_score(r, spec.metric, spec.mode) for lv, r in rows.items() if lv in rungs},
                complete=max_t in rows))
            kept += 1
        warm.sources.append({"name": name, "trials": kept, "parent_run_id": parent})
        warm.changes += _changes(spec, old_spec, name)
    return warm
