"""Replay recorded learning curves through hpsearch's real scheduler and sampler objects on a virtual clock.

Syne Tune's simulator backend is the model: a search at W workers is an event simulation in
which a trial's round takes the seconds it took when its curve was recorded, so a search of
hours at 128 workers replays in seconds, and many seeds can be run. What runs is the code a
search runs, driven the way Ray Tune 2.60's `TuneController` drives it:

- the scheduler: `asha` is what a user's search runs by default, `search.schedulers.ReproducibleASHA`
  (ASHA with promotions deciding on a virtual clock, so a seed gives the same search whatever the
  timing), built as `build_scheduler` builds it for `budget.reproducible: true` (samples, max_t,
  grace, reduction factor, max_concurrent = W, time_budget_s) with the replay's clock as its clock;
  `asha-arrival` is `PromotionASHA` (`reproducible: false`: decisions in the order results arrive);
  `asha-stop` is `AshaStop` (the stopping ASHA with hpsearch's tie-break and recent-results cutoff),
  `asha-stop-all` the same with the cutoff over all of a rung's results, as Ray's `ASHAScheduler`;
- the sampler: `search.sampler.RungAwareTPE` over the recorded spec's define-by-run space
  (`search.space.DefineByRun`), the baseline suggested first, seeded with the replay's seed; as
  `search.tuner.build_tuner` wires them, a ReproducibleASHA is attached to it (it then proposes the
  configurations in the scheduler's virtual-time order), behind `search.sampler.AdmissionLimiter`
  (the scheduler's `admission`) for ASHA with promotions and Ray's `ConcurrencyLimiter(max_concurrent=W)`
  for `asha-stop*`; `asha+ray-sampler` swaps in Ray's OptunaSearch (nothing to attach, so its
  ReproducibleASHA decides in arrival order, as in a real search with that sampler);
- the loop: `search.schedulers.simulator.Simulation`, Tune's loop on a virtual clock: Tune's
  SearchGenerator (`num_samples` = `--samples`, a FINISHED suggestion ends the search) asked for a
  trial while fewer than `max_pending_trials` wait (1 for a bare searcher, W behind a
  ConcurrencyLimiter); whenever a worker is free, `scheduler.choose_trial_to_run(controller)`
  first (a PAUSED trial it returns resumes from its last round, a PENDING one starts), then any
  PENDING trial; each result goes to `scheduler.on_trial_result` and, unless it says STOP,
  `searcher.on_trial_result`, then becomes the trial's `last_result`; PAUSE frees the worker; STOP,
  the curve's end or max_t end the trial through the controller's `stop_trial` (scheduler
  `on_trial_complete` / `on_trial_remove`, searcher `on_trial_complete`), as Tune does.

A trial's start and each resume cost what they cost on this machine: `--overhead auto` (the default)
takes the medians measured from benchmarks/anytime.py's raw files
(`results/runs/anytime/glyphs_seed*_hpsearch*.json`: each result's `time_this_iter_s` minus its
round's seconds). A trial's first result is a start; a later one is a resume when the trial sat idle
before it: its time since the trial's previous result exceeds its `time_this_iter_s` by more than
PAUSE_GAP_S (0.5 s; a running trial's next round starts within hundredths of a second, a paused one
waits for a free worker); every other result is reporting overhead (shown, not added). With no such
file the numbers measured on seed 11 (MEASURED_OVERHEADS) are used and a line says so; `--overhead S`,
`--start-overhead S`, `--resume-overhead S` set them. Measured this way a cost is what the trainable
spends restarting (with reuse_actors, about 0.05 s), not Tune's own latency around it.

A suggested configuration gets the learning curve of the nearest recorded configuration, the
1-nearest-neighbour surrogate of Syne Tune's blackbox repository: Euclidean distance over the
searched parameters, each numeric one scaled to [0, 1] of its range (log scale for log
parameters), a categorical mismatch or a parameter active in only one of the two counting 1
(`--distance uniform`), or each parameter's term weighted by its fANOVA importance for the
recorded final accuracies (`importance`); `auto` (the default) takes the one that predicts a
recorded configuration's final accuracy from its nearest other one better (leave-one-out; the
report shows both). With few configurations and many categorical parameters the uniform distance
is decided by the categorical matches alone. A replay can only find what the recorded
configurations reached, and its TPE learns from neighbours' curves. Trials replaying the same
curve would tie exactly at every rung, so each trial's val accuracies get a seeded offset of SD
`--noise` (auto: the baseline's spread over the torch seeds record_curves.py repeated it with),
keyed by the configuration (a search trains every trial with the spec's seed: the same
configuration, the same curve, whatever its trial id or timing).

The target is above the baseline: the baseline's final val acc is the mean over configuration 0
(the space's baseline) and its seed repeats; the default target is the `--target-quantile` (0.9) of
the recorded configurations' final val accuracies if that is above it, else the baseline's final
plus one seed-to-seed SD (SD_UNKNOWN without repeats). A `--target` at or below the baseline's final
is refused (exit 2) unless `--allow-target-below-baseline`. The report states both, and how often a
replay of the baseline alone (configuration 0's curve plus its offset) reaches the target.

Each (scheduler, W, seed) is replayed under every `--time-budget` (default `none auto`): none runs
until `--samples` configurations (default 256) are done; a budget of S virtual seconds also gives
ReproducibleASHA / PromotionASHA `time_budget_s=S`, so their finish phase runs, and stops every trial
at the deadline, as Tune's time budget does; `auto` is the wall time of AUTO_BUDGET_TRIALS (4) full
trials one after another (the median recorded full trial plus a start each), the same deadline at
every W. Measured per replay: the virtual seconds until the best val accuracy of any reported round
reaches the target (`any round`), and until a trial *trained to max_t* ends with a val accuracy at
max_t at or above it (`trained to max_t`); configurations tried by then; the model handed over when
the search ends (at the deadline with a time budget), as search.finalize picks it:
`search.results.best_record` over the trials' records, with `prefer_completed` when there is a time
budget (the best trial trained to max_t if it ranks in the top quarter, else the best of any round,
completed or not): its val acc at its best round, that round's value on its recorded curve without
the offset, and whether it was trained to max_t; the best of any round and of max_t at the end;
trials trained to max_t; trial-rounds; pauses and resumes; the virtual clock's waits (results that
came in before an earlier job's and waited for it); the replay's real seconds.

    python benchmarks/simulate.py [CURVES.json] [--workers 1 2 8 32 128] [--schedulers asha asha-stop] [--seeds 20]
        [--samples 256] [--time-budget none auto] [--grace 1] [--reduction-factor 4] [--max-t R] [--target ACC]
        [--overhead auto] [--start-overhead S] [--resume-overhead S] [--jobs 1] [--smoke] [--out DIR]

Writes OUT/simulate.md (the script's current result) and OUT/runs/simulate/simulation_NAME.json
(every replay; NAME from curves_NAME.json); OUT is `--out` (default benchmarks/results),
CURVES.json defaults to benchmarks/results/runs/record_curves/curves_glyphs.json. `--smoke`
replays synthetic curves (or the given file) at W 1 and 8, 2 seeds, 40 samples. Nearly all of a
replay's real time is RungAwareTPE's suggestions (15 ms each at 64 trials, 70-100 ms at 256); a
time-budgeted replay tries fewer configurations and costs less; `--jobs 2` runs replays in two
processes, `--samples 128` makes each about 3x cheaper.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import _common as C  # first: it puts the repository on sys.path
from ray.tune.schedulers import TrialScheduler

from search.schedulers.simulator import SearchGenerator, Simulation

SCHEDULERS = {
    "asha": "ASHA with promotions deciding on a virtual clock (ReproducibleASHA attached to RungAwareTPE: what a search "
            "runs by default)",
    "asha-arrival": "ASHA with promotions deciding in arrival order (PromotionASHA: budget.reproducible false)",
    "asha-stop": "stopping ASHA, hpsearch's recent-results cutoff (AshaStop)",
    "asha-stop-all": "stopping ASHA, Ray's cutoff over all results (AshaStop, window=0)",
    "asha+ray-sampler": "ReproducibleASHA with Ray's OptunaSearch as the sampler (the sampler ablation; as build_tuner "
                        "wires it, no RungAwareTPE is attached, so the scheduler decides in arrival order)",
}
PROMOTIONS = ("asha", "asha-arrival", "asha+ray-sampler")  # the schedulers that pause and promote
DEFAULT_SCHEDULERS = ("asha", "asha-stop")
DEFAULT_WORKERS = (1, 2, 8, 32, 128)
METRIC = "val_acc"
INF = float("inf")


# ----------------------------------------------------------------------------------------------
# The curves


@dataclass
class Curves:
    """A curves file of benchmarks/record_curves.py, ready to replay."""

    path: str
    name: str
    sha: str
    meta: dict[str, Any]
    spec: Any  # search.spec.SearchSpec of the recording (space, baseline)
    configs: list[dict[str, Any]]  # per recorded configuration: index, params, status, rounds, val_acc, val_loss, round_s, epoch
    total_rounds: int

    def final_acc(self) -> list[float]:
        return [float(c["val_acc"][-1] or 0.0) for c in self.configs]


def load_curves(path: str | Path) -> Curves:
    from search.spec import parse_spec

    path = Path(path)
    text = path.read_bytes()
    meta = json.loads(text)
    configs = sorted(meta.pop("configs"), key=lambda c: c["index"])
    if not configs:
        raise SystemExit(f"{path} holds no recorded configuration")
    spec = parse_spec(meta["spec"], str(path))
    name = path.stem[len("curves_"):] if path.stem.startswith("curves_") else path.stem
    total = int(meta.get("total_rounds") or max(c["rounds"] for c in configs))
    return Curves(str(path), name, hashlib.sha256(text).hexdigest()[:16], meta, spec, configs, total)


class Neighbours:
    """The recorded configuration nearest to a suggested one (see the module docstring).

    `weights` (parameter -> weight, default 1 each) scale each parameter's squared difference; the
    `importance` distance weights them by their fANOVA importance for the recorded final accuracies.
    """

    def __init__(self, space: tuple[Any, ...], configs: list[dict[str, Any]], weights: dict[str, float] | None = None) -> None:
        self.space = space
        self.weights = [1.0 if weights is None else float(weights.get(p.name, 0.0)) for p in space]
        self.points = [self._encode(c["params"]) for c in configs]
        self._cache: dict[str, int] = {}

    def _encode(self, params: dict[str, Any]) -> list[Any]:
        out = []
        for p in self.space:
            if p.name not in params:
                out.append(None)
            elif p.kind == "choice":
                out.append(("c", params[p.name]))
            else:
                lo, hi, x = float(p.low), float(p.high), float(params[p.name])
                if p.log:
                    lo, hi, x = math.log(lo), math.log(hi), math.log(max(x, 1e-300))
                out.append(("n", (x - lo) / (hi - lo) if hi > lo else 0.0))
        return out

    def _distance(self, a: list[Any], b: list[Any]) -> float:
        total = 0.0
        for w, x, y in zip(self.weights, a, b):
            if x is None and y is None:
                continue
            if x is None or y is None or x[0] != y[0]:
                total += w
            elif x[0] == "c":
                total += 0.0 if x[1] == y[1] else w
            else:
                total += w * (x[1] - y[1]) ** 2
        return math.sqrt(total)

    def _nearest(self, q: list[Any], exclude: int | None = None) -> int:
        best, best_d = -1, INF
        for i, p in enumerate(self.points):
            if i == exclude:
                continue
            d = self._distance(q, p)
            if d < best_d:
                best, best_d = i, d
        return best

    def nearest(self, params: dict[str, Any]) -> int:
        key = json.dumps(params, sort_keys=True, default=str)
        if key not in self._cache:
            self._cache[key] = self._nearest(self._encode(params))
        return self._cache[key]

    def leave_one_out(self, finals: list[float]) -> dict[str, float]:
        """How well the surrogate predicts a recorded configuration's final val acc from its nearest *other* one:
        mean absolute error, Spearman rank correlation, and the error of always predicting the mean."""
        predicted = [finals[self._nearest(p, exclude=i)] for i, p in enumerate(self.points)]
        mean = statistics.fmean(finals)
        return {"mae": statistics.fmean(abs(a - b) for a, b in zip(predicted, finals)),
                "spearman": _spearman(predicted, finals), "mae_of_mean": statistics.fmean(abs(mean - f) for f in finals)}


def _ranks(xs: list[float]) -> list[float]:
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    ranks = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def _spearman(a: list[float], b: list[float]) -> float:
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    try:
        return statistics.correlation(ra, rb)
    except statistics.StatisticsError:  # a constant series
        return float("nan")


def importance_weights(curves: "Curves") -> dict[str, float]:
    """fANOVA importance (Optuna's evaluator, seeded) of each searched parameter for the recorded final val acc.

    A parameter that is not in every configuration (a conditional one) gets the smallest importance found."""
    import optuna

    from search.space import DefineByRun

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    space = DefineByRun(curves.spec.space, curves.spec.baseline)
    for final, c in zip(curves.final_acc(), curves.configs):
        study.enqueue_trial(c["params"])
        trial = study.ask()
        space(trial)
        study.tell(trial, final)
    try:
        found = optuna.importance.get_param_importances(study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError) as exc:  # too few configurations, or every final the same
        print(f"note: no fANOVA importance ({exc}); the importance distance weights every parameter 1")
        return {p.name: 1.0 for p in curves.spec.space}
    floor = min(found.values()) if found else 1.0
    return {p.name: float(found.get(p.name, floor)) for p in curves.spec.space}


def choose_neighbours(curves: "Curves", distance: str) -> tuple[Neighbours, dict[str, Any]]:
    """The surrogate of `distance` (uniform | importance | auto: the one whose leave-one-out error is lower), and
    both surrogates' leave-one-out check for the report."""
    finals = curves.final_acc()
    uniform = Neighbours(curves.spec.space, curves.configs)
    weights = importance_weights(curves) if distance in ("importance", "auto") else None
    candidates = {"uniform": uniform}
    if weights is not None:
        candidates["importance"] = Neighbours(curves.spec.space, curves.configs, weights)
    checks = {name: n.leave_one_out(finals) for name, n in candidates.items()} if len(finals) > 2 else {}
    chosen = distance
    if distance == "auto":
        chosen = min(checks, key=lambda k: checks[k]["mae"]) if checks else "uniform"
    info = {"distance": chosen, "asked": distance, "leave_one_out": checks,
            "weights": {k: round(v, 4) for k, v in (weights or {}).items()}}
    return candidates[chosen], info


def seed_spread(curves: Curves) -> tuple[float, int] | None:
    """(SD of the baseline's val acc over its torch seeds, mean over rounds; how many runs) from the file's repeats."""
    repeats = curves.meta.get("repeats") or []
    base = next((c for c in curves.configs if c["index"] == 0), None)
    if not repeats or base is None:
        return None
    runs = [base, *repeats]
    rounds = min(len(r["val_acc"]) for r in runs)
    sds = [statistics.stdev(float(r["val_acc"][i] or 0.0) for r in runs) for i in range(rounds)]
    return statistics.fmean(sds), len(runs)


def resolve_noise(curves: Curves, noise: Any) -> tuple[float, str]:
    if str(noise) != "auto":
        return float(noise), "--noise"
    spread = seed_spread(curves)
    if spread is None:
        return 0.0, "auto: the file has no repeats of the baseline, so none"
    return round(spread[0], 4), f"auto: the SD of the baseline's val acc over {spread[1]} torch seeds, mean over rounds"


def quantile_of_finals(curves: Curves, quantile: float) -> float:
    """The `quantile` of the recorded configurations' final val accuracies (linear interpolation, numpy's default)."""
    finals = sorted(curves.final_acc())
    if len(finals) == 1:
        return finals[0]
    position = quantile * (len(finals) - 1)
    lo = int(math.floor(position))
    hi = min(lo + 1, len(finals) - 1)
    return round(finals[lo] + (finals[hi] - finals[lo]) * (position - lo), 4)


SD_UNKNOWN = 0.01  # the seed-to-seed SD taken when the file has no repeat of the baseline (one point of accuracy)


def baseline_final(curves: Curves) -> dict[str, Any]:
    """The space's baseline (configuration 0) at the end of its recorded runs: the mean final val acc over it and its
    seed repeats, their SD (None with a single run), the runs, and configuration 0's own final (the curve replayed)."""
    base = next((c for c in curves.configs if c["index"] == 0), None)
    if base is None:
        raise SystemExit(f"{curves.path} has no configuration 0 (the space's baseline)")
    finals = [float(r["val_acc"][-1] or 0.0) for r in (base, *(curves.meta.get("repeats") or []))]
    return {"final": round(statistics.fmean(finals), 4), "sd": round(statistics.stdev(finals), 4) if len(finals) > 1 else None,
            "runs": len(finals), "curve_final": finals[0]}


def choose_target(curves: Curves, quantile: float, target: float | None = None) -> tuple[float, dict[str, Any]]:
    """(target val acc, how it was chosen). Default: the `quantile` of the recorded final accuracies if it is above the
    baseline's final (`baseline_final`), else the baseline's final plus one seed-to-seed SD (SD_UNKNOWN without
    repeats). A given `target` is taken as it is (`check_target` refuses one at or below the baseline)."""
    base = baseline_final(curves)
    info = {"baseline": base, "quantile": quantile, "quantile_value": quantile_of_finals(curves, quantile)}
    if target is not None:
        return float(target), {**info, "rule": "--target"}
    if info["quantile_value"] > base["final"]:
        return info["quantile_value"], {**info, "rule": f"the {quantile:.0%} quantile of the recorded final val accuracies "
                                                        f"(above the baseline's final)"}
    sd = base["sd"] if base["sd"] else SD_UNKNOWN
    why = "one seed-to-seed SD" if base["sd"] else f"{SD_UNKNOWN:g} (no repeat of the baseline: its seed SD is unknown)"
    return round(base["final"] + sd, 4), {**info, "rule": f"the baseline's final + {why}: the {quantile:.0%} quantile "
                                                         f"({info['quantile_value']:.4f}) is not above it"}


def check_target(target: float, info: dict[str, Any], *, allow_below: bool) -> str | None:
    """The one-line error for a target at or below the baseline's final val acc (a search reaches it with its first
    configuration, so the time to it measures nothing), unless `allow_below`; else None."""
    base = info["baseline"]
    if allow_below or target > base["final"]:
        return None
    return (f"simulate.py: --target {target:g} is at or below the baseline's final val acc {base['final']:.4f} (mean of "
            f"its {base['runs']} recorded run(s)); pass --allow-target-below-baseline to replay it anyway")


# ----------------------------------------------------------------------------------------------
# What a trial start and a resume cost: benchmarks/anytime.py's raw files


ANYTIME_RUNS = C.run_dir(C.RESULTS, "anytime")
ANYTIME_PATTERN = "glyphs_seed*_hpsearch*.json"
PAUSE_GAP_S = 0.5  # a trial idle this long between two of its results was paused in between (module docstring)
# Used when no raw file of benchmarks/anytime.py is there: measured by `measure_overheads` on
# benchmarks/results/runs/anytime/glyphs_seed11_hpsearch.json (2026-12-04 18:48 UTC, commit 5d8aec6, 2 workers on 2
# cores, reuse_actors): 19 starts (two fresh actors 1.97 and 1.85 s, reused ones 0.03-0.09 s), 3 resumes, 31 other results.
MEASURED_OVERHEADS = {"start": 0.047, "resume": 0.05, "report": 0.011,
                      "source": "glyphs_seed11_hpsearch.json of 2026-12-04 (commit 5d8aec6): 19 starts, 3 resumes"}


def overhead_samples(events: list[list[Any]]) -> dict[str, list[float]]:
    """Seconds a result cost beyond its round (`time_this_iter_s - round_seconds`, at least 0), per kind: `start` (a
    trial's first result), `resume` (a later result after the trial sat idle: its driver-clock time since its previous
    result exceeds its `time_this_iter_s` by more than PAUSE_GAP_S; a running trial's next round starts within
    hundredths of a second, a paused one waits for a free worker), `report` (every other result). A result without
    `time_this_iter_s`, or repeating its trial's previous round, is left out."""
    out: dict[str, list[float]] = {"start": [], "resume": [], "report": []}
    previous: dict[str, list[Any]] = {}
    for event in sorted(events, key=lambda e: float(e[0])):
        t, trial, rnd, _epoch, _acc, round_s, _train_s, tis = event[:8]
        prev = previous.get(trial)
        if tis is None or (prev is not None and int(rnd) == int(prev[2])):
            continue
        previous[trial] = event
        cost = max(0.0, float(tis) - float(round_s or 0.0))
        if prev is None:
            out["start"].append(cost)
        elif int(rnd) > 1 and float(t) - float(prev[0]) - float(tis) > PAUSE_GAP_S:
            out["resume"].append(cost)
        else:
            out["report"].append(cost)
    return out


def measure_overheads(directory: str | Path = ANYTIME_RUNS, pattern: str = ANYTIME_PATTERN) -> dict[str, Any] | None:
    """Median start, resume and report costs over the hpsearch raw files (format 2) of benchmarks/anytime.py in
    `directory`, with their counts and files; None when there is no such file (or none holds a start)."""
    files = sorted(Path(directory).glob(pattern))
    samples: dict[str, list[float]] = {"start": [], "resume": [], "report": []}
    used = []
    for path in files:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            print(f"note: {path} is not readable JSON ({exc}); left out")
            continue
        if raw.get("format") != 2 or raw.get("smoke"):
            continue
        for kind, values in overhead_samples(raw.get("events") or []).items():
            samples[kind] += values
        used.append(path.name)
    if not samples["start"]:
        return None
    median = lambda xs: round(statistics.median(xs), 3) if xs else None  # noqa: E731
    info = {kind: median(values) for kind, values in samples.items()}
    info.update(counts={k: len(v) for k, v in samples.items()}, files=used,
                max={k: round(max(v), 3) if v else None for k, v in samples.items()})
    if info["resume"] is None:  # no pause seen: a resume costs what a start does
        info["resume"] = info["start"]
        info["resume_note"] = "no resume in the files: a start's cost"
    info["source"] = f"{len(used)} raw file(s) of benchmarks/anytime.py in {_display(directory)}: {', '.join(used)}"
    return info


def _display(path: str | Path) -> str:
    """A path as the report shows it: relative to the repository when inside it."""
    try:
        return Path(path).resolve().relative_to(C.REPO).as_posix()
    except ValueError:
        return str(path)


def resolve_overheads(args: argparse.Namespace) -> tuple[float, float, dict[str, Any]]:
    """(start seconds, resume seconds, where they come from): `--overhead auto` measures them (`measure_overheads`),
    falling back to MEASURED_OVERHEADS; a number sets both; `--start-overhead` / `--resume-overhead` override."""
    if str(args.overhead) == "auto":
        info = measure_overheads(args.anytime_runs)
        if info is None:
            print(f"no raw file of benchmarks/anytime.py in {_display(args.anytime_runs)} ({ANYTIME_PATTERN}): start / resume costs "
                  f"{MEASURED_OVERHEADS['start']:g} / {MEASURED_OVERHEADS['resume']:g} s as measured on "
                  f"{MEASURED_OVERHEADS['source']}")
            info = {**MEASURED_OVERHEADS, "source": "measured earlier: " + MEASURED_OVERHEADS["source"]}
    else:
        value = _seconds("--overhead", args.overhead)
        info = {"start": value, "resume": value, "source": "--overhead"}
    start, resume = float(info["start"]), float(info["resume"])
    if args.start_overhead is not None:
        start, info["source"] = _seconds("--start-overhead", args.start_overhead), info["source"] + "; --start-overhead"
    if args.resume_overhead is not None:
        resume, info["source"] = _seconds("--resume-overhead", args.resume_overhead), info["source"] + "; --resume-overhead"
    return start, resume, info


def _seconds(flag: str, value: Any) -> float:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise SystemExit(f"simulate.py: {flag} must be a number of seconds (or auto), but got {value!r}") from None
    if not seconds >= 0:
        raise SystemExit(f"simulate.py: {flag} must be >= 0 seconds, but got {value!r}")
    return seconds


AUTO_BUDGET_TRIALS = 4  # --time-budget auto: the wall time of this many full trials one after another


def full_trial_seconds(curves: Curves, max_t: int) -> float:
    """Median seconds of a recorded configuration's first `max_t` rounds (a full trial)."""
    return statistics.median(sum(float(x or 0.0) for x in c["round_s"][:max_t]) for c in curves.configs)


def resolve_budgets(values: list[str], curves: Curves, max_t: int, start_overhead: float) -> list[tuple[str, float | None]]:
    """(label, virtual seconds or None) per `--time-budget` value: none, auto (AUTO_BUDGET_TRIALS full trials, each its
    median recorded seconds plus a start, one after another: the same deadline at every W), or seconds."""
    out = []
    for value in values:
        if str(value).lower() == "none":
            out.append(("none", None))
        elif str(value).lower() == "auto":
            out.append(("auto", float(round(AUTO_BUDGET_TRIALS * (full_trial_seconds(curves, max_t) + start_overhead)))))
        else:
            try:
                seconds = float(value)
            except ValueError:
                seconds = float("nan")
            if not seconds > 0 or seconds == INF:
                raise SystemExit(f"simulate.py: --time-budget must be none, auto or seconds > 0, but got {value!r}")
            out.append((f"{seconds:g} s", seconds))
    return list(dict.fromkeys(out))


# ----------------------------------------------------------------------------------------------
# The search algorithm Tune gets


def search_algorithm(spec: Any, scheduler: Any, *, seed: int, max_t: int, workers: int, promotions: bool,
                     rays_sampler: bool = False) -> tuple[Any, Any]:
    """(the sampler, the search algorithm Tune gets) as `search.tuner.build_tuner` assembles them: a ReproducibleASHA
    is attached to the RungAwareTPE; with promotions the scheduler's `admission` decides whether a new configuration
    starts (`search.sampler.AdmissionLimiter`), otherwise Ray's `ConcurrencyLimiter(max_concurrent=W)`.
    `rays_sampler`: Ray's OptunaSearch instead of RungAwareTPE (the sampler ablation: it tells a paused trial
    nothing, a stopped one COMPLETE)."""
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from search.sampler import AdmissionLimiter, RungAwareTPE
    from search.schedulers import ReproducibleASHA
    from search.space import DefineByRun

    points = [spec.baseline_point()] if spec.space else None
    space = DefineByRun(spec.space, spec.baseline)
    if rays_sampler:
        searcher = OptunaSearch(space=space, metric=METRIC, mode="max", seed=seed, points_to_evaluate=points)
    else:
        searcher = RungAwareTPE(space, metric=METRIC, mode="max", seed=seed, max_t=max_t, rungs=tuple(scheduler.levels),
                                points_to_evaluate=points)
    if isinstance(scheduler, ReproducibleASHA) and isinstance(searcher, RungAwareTPE):
        scheduler.attach(searcher)  # build_tuner: it proposes configurations in the scheduler's virtual-time order
    if not promotions:
        return searcher, ConcurrencyLimiter(searcher, max_concurrent=workers)
    return searcher, AdmissionLimiter(searcher, workers, scheduler.admission)


# ----------------------------------------------------------------------------------------------
# One replay


@dataclass
class Settings:
    scheduler: str
    workers: int
    seed: int
    samples: int
    max_t: int
    grace: int
    reduction_factor: float
    target: float
    time_budget: float | None = None
    start_overhead: float = 0.0  # seconds a trial's first round costs on top of its recorded time
    resume_overhead: float = 0.0  # seconds a resumed trial's first round costs on top
    distance: str = "uniform"  # the surrogate's distance: uniform | importance (choose_neighbours)
    noise: float = 0.0  # SD of a per-trial offset added to every replayed val acc (seed-to-seed variation)
    budget_label: str = "none"  # how the time budget was asked for: none, auto, or its seconds


@dataclass
class SimTrial:
    params: dict[str, Any]
    curve: dict[str, Any]  # the recorded configuration it replays
    round: int = 0  # rounds done
    last_result: dict[str, Any] = field(default_factory=dict)
    offset: float = 0.0  # --noise: this trial's val acc offset
    best_value: float | None = None  # its best reported val acc (with the offset) and that round
    best_round: int = 0
    diverged: bool = False


def make_scheduler(s: Settings, clock: Callable[[], float]) -> Any:
    """The scheduler of `s.scheduler`, on the replay's virtual clock. ASHA with promotions is built as
    `search.schedulers.build_scheduler` builds it (ReproducibleASHA for `reproducible: true` with `samples`, else
    PromotionASHA; max_t, grace, reduction factor, max_concurrent = W, time_budget_s, no state folder), its clock
    then set to the replay's."""
    from search.schedulers import AshaStop, PromotionASHA, ReproducibleASHA

    if s.scheduler in PROMOTIONS:
        options = dict(max_t=s.max_t, grace=s.grace, reduction_factor=s.reduction_factor, max_concurrent=s.workers,
                       time_budget_s=s.time_budget, state_dir=None)
        if s.scheduler == "asha-arrival":
            scheduler = PromotionASHA(METRIC, "max", **options)
        else:
            scheduler = ReproducibleASHA(METRIC, "max", samples=s.samples, **options)
        scheduler.clock = clock
        return scheduler
    if s.scheduler in ("asha-stop", "asha-stop-all"):
        return AshaStop(METRIC, "max", max_t=s.max_t, grace=s.grace, reduction_factor=s.reduction_factor,
                        window=0 if s.scheduler == "asha-stop-all" else None)
    raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, but got {s.scheduler=!r}")


class Replay(Simulation):
    """One simulated search (see the module docstring): search.schedulers.simulator's loop, each trial replaying
    the curve of its nearest recorded configuration."""

    def __init__(self, curves: Curves, s: Settings, neighbours: Neighbours | None = None) -> None:
        self.curves, self.s = curves, s
        self.neighbours = neighbours or surrogate(curves, s.distance)
        self.promotions = s.scheduler in PROMOTIONS
        scheduler = make_scheduler(s, self.clock)
        if self.promotions:
            scheduler.on_decision = self._on_decision
        self.searcher, inner = search_algorithm(curves.spec, scheduler, seed=s.seed, max_t=s.max_t, workers=s.workers,
                                                promotions=self.promotions, rays_sampler=s.scheduler == "asha+ray-sampler")
        super().__init__(scheduler, SearchGenerator(inner, s.samples), workers=s.workers, time_budget=s.time_budget,
                         start_overhead=s.start_overhead, resume_overhead=s.resume_overhead)
        self.sims: dict[str, SimTrial] = {}
        self.counts.update(stop=0, trained_to_max_t=0, trial_rounds=0, re_reports=0)
        self.decisions: dict[str, int] = {}
        self.t_any = self.t_full = INF
        self.configs_at_any = self.configs_at_full = None
        self.best_any = self.best_full = -INF
        self.trace_any: list[tuple[float, float]] = []
        self.trace_full: list[tuple[float, float]] = []

    def _on_decision(self, kind: str, trial_id: str, t: int) -> None:
        self.decisions[str(kind)] = self.decisions.get(str(kind), 0) + 1

    # -- a trial's training: its curve ------------------------------------------------------------
    def created(self, trial: Any) -> None:
        curve = self.curves.configs[self.neighbours.nearest(trial.config)]
        # Keyed by the configuration, not the trial id: a search trains every trial with the spec's seed, so the same
        # configuration gives the same curve whichever trial (id, timing) runs it.
        key = json.dumps(trial.config, sort_keys=True, default=str)
        offset = random.Random(f"{self.s.seed}-{key}").gauss(0.0, self.s.noise) if self.s.noise else 0.0
        self.sims[trial.trial_id] = SimTrial(dict(trial.config), curve, offset=offset)

    def _length(self, st: SimTrial) -> int:
        return min(int(st.curve["rounds"]), self.s.max_t)

    def round_seconds(self, trial: Any) -> float:
        st = self.sims[trial.trial_id]
        return 0.0 if st.round >= self._length(st) else float(st.curve["round_s"][st.round] or 0.0)

    def returns(self, trial: Any) -> bool:
        st = self.sims[trial.trial_id]
        return st.round >= self._length(st)

    def train(self, trial: Any, *, fresh: bool, overhead: float = 0.0) -> dict[str, Any]:
        from trainables import metrics as M

        st = self.sims[trial.trial_id]
        c = st.curve
        if st.round >= self._length(st):  # resumed after its last round: the trainable says its last result again
            self.counts["re_reports"] += 1
            return dict(st.last_result)
        i = st.round
        st.round += 1
        self.counts["trial_rounds"] += 1
        acc = min(1.0, max(0.0, float(c["val_acc"][i] or 0.0) + st.offset))
        loss = c["val_loss"][i]
        diverged = c["status"] == M.STATUS_DIVERGED and st.round == int(c["rounds"])
        seen = [float(a or 0.0) + st.offset for a in c["val_acc"][: st.round]]
        seconds = float(c["round_s"][i] or 0.0)
        st.last_result = {
            M.ROUND: st.round, M.EPOCH: c["epoch"][i], METRIC: acc, M.VAL_LOSS: INF if loss is None else float(loss),
            M.ROUND_SECONDS: seconds, "time_this_iter_s": seconds + overhead,
            "training_iteration": st.round,
            M.STATUS: M.STATUS_DIVERGED if diverged else M.STATUS_OK, M.BEST_ROUND: 1 + seen.index(max(seen)),
            "trial_id": trial.trial_id, "done": False,
        }
        if st.best_value is None or acc > st.best_value:
            st.best_value, st.best_round = acc, st.round
        st.diverged = diverged
        self._measure(st, acc)
        return st.last_result

    def report(self, trial: Any, result: dict[str, Any]) -> str:
        decision = super().report(trial, result)
        if decision == TrialScheduler.STOP and self.sims[trial.trial_id].round < self.s.max_t:
            self.counts["stop"] += 1
        return decision

    def _measure(self, st: SimTrial, acc: float) -> None:
        if acc > self.best_any:
            self.best_any = acc
            self.trace_any.append((round(self.now, 2), round(acc, 4)))
        if acc >= self.s.target and self.t_any == INF:
            self.t_any, self.configs_at_any = self.now, len(self.trials)
        if st.round == self.s.max_t:
            self.counts["trained_to_max_t"] += 1
            if acc > self.best_full:
                self.best_full = acc
                self.trace_full.append((round(self.now, 2), round(acc, 4)))
            if acc >= self.s.target and self.t_full == INF:
                self.t_full, self.configs_at_full = self.now, len(self.trials)

    # -- the replay --------------------------------------------------------------------------------
    def replay(self) -> dict[str, Any]:
        started = time.perf_counter()
        self.run()
        return self.summary(time.perf_counter() - started)

    def handed_over(self) -> dict[str, Any]:
        """The model the search hands over when it ends (at the deadline with a time budget), as search.finalize picks
        it: `search.results.best_record` over the trials' records, `prefer_completed` with a time budget (the best trial
        trained to max_t if it ranks in the top quarter by best val acc, else the best of any round)."""
        from search.results import TrialRecord, best_record, ended_outcome

        records = []
        for index, trial in enumerate(self.trials, start=1):
            st = self.sims[trial.trial_id]
            if st.best_value is None:
                continue
            status = ended_outcome(st.round, self.s.max_t, tuple(self.scheduler.levels), diverged=st.diverged)
            records.append(TrialRecord(trial_id=trial.trial_id, index=index, config=st.params, status=status, rounds=st.round,
                                       best_value=st.best_value, best_round=st.best_round, best_epoch=None,
                                       last_value=st.last_result.get(METRIC), path=Path("."), history=[]))
        best = best_record(records, "max", prefer_completed=self.s.time_budget is not None)
        if best is None:
            return {"handed_val": None, "handed_recorded": None, "handed_completed": None, "handed_round": None}
        curve = self.sims[best.trial_id].curve
        recorded = float(curve["val_acc"][best.best_round - 1] or 0.0)  # its round on the recorded curve, no offset
        return {"handed_val": round(best.best_value, 4), "handed_recorded": round(recorded, 4),
                "handed_completed": best.status == "completed", "handed_round": best.best_round, "handed_trial": best.trial_id}

    def summary(self, real_seconds: float) -> dict[str, Any]:
        s = self.s
        end = self.now
        finite = lambda x: None if x in (INF, -INF) else x  # noqa: E731
        finite4 = lambda x: None if x in (INF, -INF) else round(x, 4)  # noqa: E731
        clock = getattr(self.scheduler, "virtual_clock", None)
        return {
            "scheduler": s.scheduler, "workers": s.workers, "seed": s.seed, "target": s.target, "time_budget": s.time_budget,
            "budget_label": s.budget_label,
            **self.handed_over(),
            "virtual_clock": None if clock is None else {"waits": clock.waits, "deciding_at_end": clock.deciding,
                                                         "left_after_s": clock.virtual_until_s},
            "t_any": finite(self.t_any), "t_full": finite(self.t_full),
            "configs_at_any": self.configs_at_any, "configs_at_full": self.configs_at_full,
            "configs": len(self.trials), "best_any": finite4(self.best_any), "best_full": finite4(self.best_full),
            "end_s": round(end, 2), "utilization": round(self.busy_seconds / (s.workers * end), 4) if end > 0 else None,
            "idle_while_sampling": round(self.idle_sampling_seconds / (s.workers * self.sampling_end), 4) if self.sampling_end > 0 else 0.0,
            **self.counts, "decisions": dict(self.decisions), "stuck": self.stuck, "timed_out": self.timed_out,
            "ended": self.finished(), "levels": list(self.scheduler.levels),
            "max_pending_trials": self.max_pending, "real_s": round(real_seconds, 3),
            "distinct_curves": len({self.sims[t.trial_id].curve["index"] for t in self.trials}),
            "trace_any": self.trace_any, "trace_full": self.trace_full,
        }


def replay(curves: Curves, settings: Settings) -> dict[str, Any]:
    return Replay(curves, settings).replay()

# ----------------------------------------------------------------------------------------------
# Synthetic curves (smoke mode, tests)


def synthetic_curves(path: Path, *, n: int = 24, rounds: int = 16, seed: int = 0) -> Path:
    """A curves file of `n` made-up configurations of record_curves' default space: saturating curves whose
    final accuracy depends on lr, width and dropout, some slow starters that end high (so early rungs misrank)."""
    import random

    sys.path.insert(0, str(Path(__file__).parent))
    import record_curves as RC

    rng = random.Random(seed)
    spec = RC.build_spec({"name": "digits"}, RC.DEFAULT_SPACE, RC.DEFAULT_BASELINE, max_epochs=rounds, report_every=None,
                         seed=seed, name="synthetic")
    configs = []
    for i, params in enumerate(RC.sample_configs(spec, n, seed)):
        full = spec.full_config(params)
        quality = 0.97 - 0.08 * abs(math.log10(full["lr"]) + 2.7) - 0.03 * (full["channels"] == "8-16") - 0.04 * full["dropout"] ** 2
        start = max(0.1, quality - rng.uniform(0.05, 0.5))
        tau = rng.uniform(0.8, 6.0)  # rounds to go 63 % of the way: large = a slow starter
        cost = {"8-16": 1.0, "16-32": 1.8, "32-64": 4.0}[full["channels"]] * (1.2 if full["batch_norm"] else 1.0)
        acc = [round(min(0.999, quality - (quality - start) * math.exp(-(r + 1) / tau) + rng.gauss(0, 0.004)), 4)
               for r in range(rounds)]
        configs.append({"index": i, "params": params, "status": "ok", "rounds": rounds, "val_acc": acc,
                        "val_loss": [round(max(0.01, 2.3 * (1 - a)), 4) for a in acc],
                        "round_s": [round(cost * rng.uniform(0.9, 1.1) * 10, 4) for _ in range(rounds)],
                        "epoch": [float(r + 1) for r in range(rounds)]})
    repeats = []  # the baseline "retrained" with two other seeds: its curve shifted by a seed effect
    for k in (1, 2):
        shift = rng.gauss(0, 0.005)
        acc = [round(min(0.999, a + shift + rng.gauss(0, 0.002)), 4) for a in configs[0]["val_acc"]]
        repeats.append({**configs[0], "torch_seed": seed + k, "val_acc": acc})
    payload = {"format": RC.FORMAT, "name": "synthetic", "dataset_name": "synthetic", "spec": spec.raw, "seed": seed,
               "total_rounds": rounds, "n_configs": n, "data": "synthetic curves (benchmarks/simulate.py synthetic_curves)",
               "configs": configs, "repeats": repeats}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, separators=(",", ":")))
    return path


# ----------------------------------------------------------------------------------------------
# Many replays, and the report


def _run_one(job: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    path, settings = job
    logging.getLogger("search.schedulers").setLevel(logging.WARNING)
    return replay(_curves_cached(path), Settings(**settings))


_CURVES: dict[str, Curves] = {}
_SURROGATES: dict[tuple[str, str], Neighbours] = {}


def surrogate(curves: Curves, distance: str) -> Neighbours:
    """The nearest-neighbour surrogate of `distance` for `curves`, built once per process."""
    key = (curves.path, distance)
    if key not in _SURROGATES:
        weights = importance_weights(curves) if distance == "importance" else None
        _SURROGATES[key] = Neighbours(curves.spec.space, curves.configs, weights)
    return _SURROGATES[key]


def _curves_cached(path: str) -> Curves:
    if path not in _CURVES:
        _CURVES[path] = load_curves(path)
    return _CURVES[path]


def run_all(curves: Curves, settings: list[Settings], jobs: int, on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    work = [(curves.path, vars(s)) for s in settings]
    _CURVES[curves.path] = curves
    out = []
    if jobs <= 1:
        for job in work:
            out.append(_run_one(job))
            if on_done:
                on_done(out[-1])
        return out
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        for result in pool.map(_run_one, work):
            out.append(result)
            if on_done:
                on_done(result)
    return out


def _median_time(values: list[float | None]) -> float:
    """Median with not-reached = infinity (so a median is finite only when most seeds reached the target)."""
    return statistics.median([INF if v is None else v for v in values]) if values else float("nan")


def _fmt_s(seconds: float) -> str:
    if seconds is None or seconds != seconds:
        return "-"
    if seconds == INF:
        return "∞"
    if seconds >= 3600:
        return f"{seconds / 3600:.2f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    budget_of = lambda r: (r.get("budget_label") or "none", r.get("time_budget"))  # noqa: E731
    keys = sorted({(r["workers"], r["scheduler"], budget_of(r)) for r in runs},
                  key=lambda k: (k[0], list(SCHEDULERS).index(k[1]), -1.0 if k[2][1] is None else k[2][1]))
    for workers, scheduler, budget in keys:
        rs = [r for r in runs if r["workers"] == workers and r["scheduler"] == scheduler and budget_of(r) == budget]
        med = lambda key: C.median([float(r[key]) for r in rs if r.get(key) is not None])  # noqa: E731
        rows.append({
            "workers": workers, "scheduler": scheduler, "budget": budget[0], "time_budget": budget[1], "seeds": len(rs),
            "t_any": _median_time([r["t_any"] for r in rs]), "reached_any": sum(r["t_any"] is not None for r in rs) / len(rs),
            "t_full": _median_time([r["t_full"] for r in rs]), "reached_full": sum(r["t_full"] is not None for r in rs) / len(rs),
            "configs_at_any": med("configs_at_any"), "configs": med("configs"), "trained_to_max_t": med("trained_to_max_t"),
            "trial_rounds": med("trial_rounds"), "best_any": med("best_any"), "best_full": med("best_full"),
            "end_s": med("end_s"), "utilization": med("utilization"), "pause": med("pause"), "resume": med("resume"),
            "stuck": sum(bool(r["stuck"]) for r in rs), "real_s": med("real_s"), "distinct_curves": med("distinct_curves"),
            "idle_while_sampling": med("idle_while_sampling"),
            "handed_val": med("handed_val"), "handed_recorded": med("handed_recorded"),
            "handed_completed": sum(bool(r.get("handed_completed")) for r in rs) / len(rs),
            "vc_waits": med_or_none([r["virtual_clock"]["waits"] for r in rs if r.get("virtual_clock")]),
        })
    return rows


def med_or_none(values: list[float]) -> float | None:
    return C.median(values) if values else None


def curves_section(curves: Curves, target: float, target_info: dict[str, Any], noise: float) -> str:
    m = curves.meta
    finals = sorted(curves.final_acc())
    bests = sorted(max(float(a or 0.0) for a in c["val_acc"]) for c in curves.configs)
    full_s = sorted(sum(float(x or 0.0) for x in c["round_s"]) for c in curves.configs)
    round_s = [float(x or 0.0) for c in curves.configs for x in c["round_s"]]
    diverged = sum(c["status"] != "ok" for c in curves.configs)
    q = lambda xs, f: xs[min(len(xs) - 1, int(round(f * (len(xs) - 1))))]  # noqa: E731
    sittings = m.get("sittings") or []
    machine = (sittings[0].get("machine") or {}) if sittings else {}
    recorded = ", ".join(f"{s.get('date')} ({s.get('workers')} workers, {s.get('trained')} configs, "
                         f"{(s.get('wall_s') or 0) / 60:.0f} min)" for s in sittings) or "not recorded (synthetic)"
    lines = [
        "## The curves replayed",
        "",
        f"- file: `{curves.path}` (sha256 {curves.sha}), {len(curves.configs)} configurations"
        + (f" of {m.get('n_configs')}" if m.get("n_configs") and m.get("n_configs") != len(curves.configs) else "")
        + f", {curves.total_rounds} rounds each ({m.get('max_epochs', '?')} epochs, a round = "
        + (f"{m['report_every']} training samples" if m.get("report_every") else "one epoch") + ")",
        f"- data: {m.get('data', '?')}; train subset {m.get('n_train', '?')}, val {m.get('n_val', '?')}; space from {m.get('space_source', '?')}",
        f"- recorded: {recorded}" + (f" on {machine.get('cores')} cores, {machine.get('cpu')}, code {machine.get('code')}" if machine else ""),
        f"- final val acc over the configurations: min {finals[0]:.4f}, median {quantile_of_finals(curves, 0.5):.4f}, 90th "
        f"percentile {quantile_of_finals(curves, 0.9):.4f}, max {finals[-1]:.4f}; best val acc of any round: median {q(bests, 0.5):.4f}, max {bests[-1]:.4f}; "
        f"{diverged} diverged",
        f"- seconds per round: median {C.median(round_s):.2f}; a configuration trained to the end: median {q(full_s, 0.5):.0f} s, "
        f"max {full_s[-1]:.0f} s; all of them, one after the other: {sum(full_s) / 60:.1f} min",
        _baseline_line(target, target_info, noise),
        f"- **target: val acc {target:.4f}**: {target_info['rule']}",
    ]
    return "\n".join(lines)


def _baseline_line(target: float, info: dict[str, Any], noise: float) -> str:
    """The baseline's final val acc, and how often its replay (configuration 0's curve plus a trial's offset) alone
    ends at or above the target."""
    base = info["baseline"]
    runs = (f"mean of configuration 0 and its {base['runs'] - 1} seed repeat(s), SD {base['sd']:.4f}"
            if base["runs"] > 1 else "configuration 0, no seed repeat")
    line = f"- **baseline's final val acc: {base['final']:.4f}** ({runs})"
    if noise > 0:
        p = 1.0 - statistics.NormalDist(base["curve_final"], noise).cdf(target)
        line += (f"; a replay of the baseline (the first trial of every search) replays configuration 0's curve, final "
                 f"{base['curve_final']:.4f}, plus an offset of SD {noise:g}: it ends at or above the target in {p:.0%} "
                 f"of replays")
    elif base["curve_final"] >= target:
        line += f"; a replay of the baseline replays configuration 0's curve, whose final {base['curve_final']:.4f} reaches the target"
    return line


def surrogate_section(info: dict[str, Any], rows: list[dict[str, Any]], samples: int) -> str:
    checks = info["leave_one_out"]
    lines = ["## The surrogate", "",
             f"A suggested configuration replays its nearest recorded configuration's curve; distance **{info['distance']}**"
             + (f" (asked: {info['asked']}, the one with the lower leave-one-out error)" if info["asked"] == "auto" else "") + "."]
    if checks:
        lines.append("Leave-one-out check: each recorded configuration's final val acc predicted by its nearest *other* "
                     "recorded configuration (mean absolute error; Spearman rank correlation; the error of predicting the mean):")
        lines.append("")
        lines.append(C.md_table(["distance", "MAE", "Spearman", "MAE of the mean"],
                                [[k, C.fmt(v["mae"], 4), C.fmt(v["spearman"], 2), C.fmt(v["mae_of_mean"], 4)] for k, v in checks.items()]))
    if info.get("weights"):
        lines.append("")
        lines.append("fANOVA importance weights: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(info["weights"].items(), key=lambda kv: -kv[1])))
    lines.append("")
    lines.append(f"Noise: each trial's replayed val accuracies get a seeded offset of SD {info['noise']:g} ({info['noise_source']}).")
    distinct = C.median([r["distinct_curves"] for r in rows])
    lines.append("")
    lines.append(f"Distinct recorded curves a replay of {samples} configurations used: median {C.fmt(distinct, 0)} "
                 f"(per row in the JSON). Without noise, trials that replay the same curve tie exactly at every rung "
                 f"(Ray's ASHA lets a trial equal to the cutoff through); the noise offsets them as a retraining with "
                 f"another seed would.")
    return "\n".join(lines)


def report_sections(rows: list[dict[str, Any]], args: argparse.Namespace, curves: Curves, target: float,
                    surrogate_info: dict[str, Any]) -> list[str]:
    fewest = min(x["workers"] for x in rows)
    base = {(r["scheduler"], r["budget"]): r["t_any"] for r in rows if r["workers"] == fewest}
    table = C.md_table(
        ["workers", "scheduler", "time budget", "seeds", "median time to target (any round)", "reached",
         "speed-up vs fewest workers", "median time to target (trained to max_t)", "reached",
         "handed over: val acc (its recorded curve, no offset)", "handed over trained to max_t",
         "configs tried by target (median)", "configs tried", "trained to max_t", "trial-rounds",
         "best val acc at end (any round / trained to max_t)", "virtual end", "worker use", "pauses / resumes",
         "virtual-clock waits", "real s per replay"],
        [[r["workers"], r["scheduler"], r["budget"], r["seeds"], _fmt_s(r["t_any"]), f"{r['reached_any']:.0%}",
          (f"{base[(r['scheduler'], r['budget'])] / r['t_any']:.1f}x"
           if r["t_any"] not in (INF, 0) and base.get((r["scheduler"], r["budget"])) not in (None, INF) else "-"),
          _fmt_s(r["t_full"]), f"{r['reached_full']:.0%}",
          f"{C.fmt(r['handed_val'], 4)} ({C.fmt(r['handed_recorded'], 4)})", f"{r['handed_completed']:.0%}",
          C.fmt(r["configs_at_any"], 0), C.fmt(r["configs"], 0),
          C.fmt(r["trained_to_max_t"], 0), C.fmt(r["trial_rounds"], 0), f"{C.fmt(r['best_any'], 4)} / {C.fmt(r['best_full'], 4)}",
          _fmt_s(r["end_s"]), C.fmt(r["utilization"], 2), f"{C.fmt(r['pause'], 0)} / {C.fmt(r['resume'], 0)}"
          + (f" ({r['stuck']} stuck)" if r["stuck"] else ""), C.fmt(r["vc_waits"], 0), C.fmt(r["real_s"], 1)] for r in rows])
    budgets = "; ".join("none (until the configurations are done)" if label == "none" else
                        f"{label}: {seconds:.0f} virtual seconds" + (f" ({AUTO_BUDGET_TRIALS} full trials of the median "
                        f"recorded {full_trial_seconds(curves, args.max_t):.0f} s + a start, one after another)"
                        if label == "auto" else "") for label, seconds in args.budgets)
    o = args.overhead_info
    measured = (f" (medians of {o['counts']['start']} starts, {o['counts']['resume']} resumes, {o['counts']['report']} other "
                f"results; other results cost {o['report']:g} s, not added)" if "counts" in o else "")
    settings = (f"Budget per replay: {args.samples} configurations, and the time budgets {budgets}. ASHA grace {args.grace} "
                f"round(s), reduction factor {args.reduction_factor:g}, max_t {args.max_t} rounds; a trial start costs "
                f"{args.start_overhead:g} s and a resume {args.resume_overhead:g} s on top of the recorded round "
                f"({o['source']}{measured}); noise SD {args.noise:g}; seeds 0-{args.seeds - 1} (RungAwareTPE's seed). "
                f"Medians over seeds; a time is the median with seeds that never reached the target counted as ∞. The "
                f"model handed over is the one search.finalize would pick when the search ends (with a time budget: at the "
                f"deadline, preferring a trial trained to max_t). Schedulers: "
                + "; ".join(f"`{k}` = {SCHEDULERS[k]}" for k in args.schedulers) + ".")
    return [curves_section(curves, target, args.target_info, args.noise),
            surrogate_section(surrogate_info, rows, args.samples), "## Replays\n\n" + settings, table]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__[__doc__.index("    python benchmarks/simulate.py"):])
    p.add_argument("curves", nargs="?", default=None,
                   help="a curves_NAME.json of record_curves.py (default benchmarks/results/runs/record_curves/curves_glyphs.json)")
    p.add_argument("--smoke", action="store_true", help="synthetic curves (unless a file is given), W 1 and 8, 2 seeds, 40 samples")
    p.add_argument("--out", default=str(C.RESULTS),
                   help="results folder: the report is OUT/simulate.md, every replay OUT/runs/simulate/simulation_NAME.json "
                        "(default benchmarks/results)")
    p.add_argument("--name", default=None, help="the replays' file name (default: simulation_NAME, NAME of curves_NAME.json)")
    p.add_argument("--workers", type=int, nargs="+", default=None, help=f"worker counts (default {' '.join(map(str, DEFAULT_WORKERS))})")
    p.add_argument("--schedulers", nargs="+", choices=list(SCHEDULERS), default=list(DEFAULT_SCHEDULERS),
                   help=f"default {' '.join(DEFAULT_SCHEDULERS)}; " + "; ".join(f"{k}: {v}" for k, v in SCHEDULERS.items()))
    p.add_argument("--seeds", type=int, default=20, help="replays per (scheduler, workers, budget): seeds 0..N-1 (default 20)")
    p.add_argument("--samples", type=int, default=256, help="configurations per search (Tune's num_samples; default 256)")
    p.add_argument("--time-budget", nargs="+", default=["none", "auto"],
                   help="time budgets replayed side by side: none, auto (the wall time of "
                        f"{AUTO_BUDGET_TRIALS} full trials one after another), or virtual seconds (default: none auto)")
    p.add_argument("--grace", type=int, default=1, help="ASHA grace period in rounds (default 1)")
    p.add_argument("--reduction-factor", type=float, default=4.0, help="ASHA reduction factor (default 4)")
    p.add_argument("--max-t", type=int, default=None, help="rounds of a full trial (default: the curves' length)")
    p.add_argument("--target", type=float, default=None,
                   help="val accuracy to reach (default: --target-quantile of the recorded final accuracies if above the "
                        "baseline's final, else the baseline's final + one seed SD); refused at or below the baseline's final")
    p.add_argument("--allow-target-below-baseline", action="store_true", help="accept a --target at or below the baseline's final")
    p.add_argument("--target-quantile", type=float, default=0.9)
    p.add_argument("--overhead", default="auto",
                   help="seconds a trial start and a resume cost: auto (the default: medians measured from "
                        f"benchmarks/anytime.py's raw files {ANYTIME_PATTERN}) or a number for both")
    p.add_argument("--start-overhead", default=None, help="seconds a trial start costs (overrides --overhead)")
    p.add_argument("--resume-overhead", default=None, help="seconds a resume costs (overrides --overhead)")
    p.add_argument("--anytime-runs", default=str(ANYTIME_RUNS),
                   help=f"where --overhead auto reads benchmarks/anytime.py's raw files (default {_display(ANYTIME_RUNS)})")
    p.add_argument("--distance", choices=["auto", "uniform", "importance"], default="auto",
                   help="the nearest-neighbour surrogate's distance: every parameter weighted 1 (uniform), by its fANOVA "
                        "importance for the recorded final accuracies (importance), or whichever predicts the recorded "
                        "configurations better, leave-one-out (auto, the default)")
    p.add_argument("--noise", default="auto",
                   help="SD of a per-trial offset added to its replayed val accuracies (seed-to-seed variation): a number, "
                        "or auto (the default): the SD of the baseline's val acc over its recorded torch seeds (the "
                        "file's repeats), mean over rounds; 0 when the file has no repeats")
    p.add_argument("--jobs", type=int, default=1, help="replays in parallel processes (default 1)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.curves is None:
        if args.smoke:
            import tempfile

            args.curves = str(synthetic_curves(Path(tempfile.mkdtemp(prefix="hpsearch-sim-")) / "curves_synthetic.json"))
        else:
            args.curves = str(C.run_dir(C.RESULTS, "record_curves") / "curves_glyphs.json")
    if args.smoke:
        args.workers = args.workers or [1, 8]
        args.seeds = min(args.seeds, 2)
        args.samples = min(args.samples, 40)
    args.workers = args.workers or list(DEFAULT_WORKERS)
    curves = load_curves(args.curves)
    args.max_t = args.max_t or curves.total_rounds
    if args.max_t > curves.total_rounds:
        raise SystemExit(f"--max-t {args.max_t} is longer than the curves ({curves.total_rounds} rounds)")
    target, args.target_info = choose_target(curves, args.target_quantile, args.target)
    refused = check_target(target, args.target_info, allow_below=args.allow_target_below_baseline)
    if refused:
        print(refused, file=sys.stderr)
        sys.exit(2)
    args.start_overhead, args.resume_overhead, args.overhead_info = resolve_overheads(args)
    args.budgets = resolve_budgets(args.time_budget, curves, args.max_t, args.start_overhead)
    neighbours, surrogate_info = choose_neighbours(curves, args.distance)
    args.noise, noise_source = resolve_noise(curves, args.noise)
    surrogate_info["noise"], surrogate_info["noise_source"] = args.noise, noise_source
    _SURROGATES[(curves.path, surrogate_info["distance"])] = neighbours
    name = args.name or f"simulation_{curves.name}" + ("_smoke" if args.smoke and not args.name else "")
    settings = [Settings(scheduler=sch, workers=w, seed=seed, samples=args.samples, max_t=args.max_t, grace=args.grace,
                         reduction_factor=args.reduction_factor, target=target, time_budget=seconds,
                         start_overhead=args.start_overhead, resume_overhead=args.resume_overhead,
                         distance=surrogate_info["distance"], noise=args.noise, budget_label=label)
                for w in args.workers for sch in args.schedulers for label, seconds in args.budgets for seed in range(args.seeds)]
    base = args.target_info["baseline"]
    print(f"{len(settings)} replays of {curves.path} ({len(curves.configs)} configurations, {curves.total_rounds} rounds), "
          f"target val acc {target:.4f} (baseline's final {base['final']:.4f}), start / resume cost "
          f"{args.start_overhead:g} / {args.resume_overhead:g} s, time budgets "
          + ", ".join(label if seconds is None else f"{label} = {seconds:g} s" for label, seconds in args.budgets), flush=True)

    def progress(r: dict[str, Any]) -> None:
        print(f"  {r['scheduler']:13s} W={r['workers']:<4d} budget {r['budget_label']:>6s} seed {r['seed']:<3d} "
              f"target {_fmt_s(r['t_any'] if r['t_any'] is not None else INF):>9s} "
              f"(max_t: {_fmt_s(r['t_full'] if r['t_full'] is not None else INF):>9s}) configs {r['configs']:4d} "
              f"to max_t {r['trained_to_max_t']:3d} pauses {r['pause']:4d} resumes {r['resume']:4d} handed over "
              f"{C.fmt(r['handed_val'], 4)}{' (max_t)' if r['handed_completed'] else ''} "
              f"{'STUCK ' if r['stuck'] else ''}real {r['real_s']:.1f} s", flush=True)

    with C.LoadWatch() as load:
        runs = run_all(curves, settings, args.jobs, progress)
    rows = summarize(runs)
    json_path = C.run_dir(args.out, "simulate") / f"{name}.json"
    sections = [*report_sections(rows, args, curves, target, surrogate_info),
                f"Every replay: [{json_path.name}]({json_path.relative_to(args.out).as_posix()})."]
    C.write_report("simulate", "Scale by simulation: recorded curves replayed through hpsearch's schedulers and sampler",
                   sections, args.out, smoke=args.smoke, load=load)
    payload = {"curves": {"path": curves.path, "sha256": curves.sha, "configs": len(curves.configs), "rounds": curves.total_rounds},
               "target": target, "target_info": args.target_info, "overheads": args.overhead_info, "surrogate": surrogate_info,
               "args": {k: v for k, v in vars(args).items()}, "command": C.command_line(), "code": C.CODE_REVISION,
               "rows": [{k: (None if v == INF else v) for k, v in r.items()} for r in rows], "runs": runs}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, default=str) + "\n")
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
