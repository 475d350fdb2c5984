"""Search efficiency: hpsearch (Optuna TPE + ASHA) vs random search with full training vs TPE without pruning.

Same spec, same trials, same trainable (hpsearch's, `search.tuner.tune_trainable_for`), same
concurrency (2), same checkpointing, no MLflow (`track=False`) so only the search
strategy differs:

- hpsearch: `run_search`'s path as users run it (the rung-aware TPE, the spec's ASHA), through
  `search.tuner.run_experiment` with only a recording observer added;
- random + FIFO: Tune's default searcher (BasicVariantGenerator, seeded) over
  `tune.loguniform / uniform / lograndint / choice` built from the spec's params,
  every trial trained to `max_epochs` (FIFOScheduler): its own `tune.Tuner` (Tune's random
  search takes its space as the Tuner's `param_space`), assembled as `build_tuner` assembles one;
- TPE + FIFO: Ray's OptunaSearch (TPE, seeded) behind a ConcurrencyLimiter and a FIFOScheduler,
  every trial trained to the end: `run_experiment` with those two components.

Every method's model is handed over and tested by the step that ends a user's search
(`search.finalize`): hpsearch's and TPE + FIFO's by their search's own ending (`result.final`),
random + FIFO's by `finalize` on its Tune folder (`_common.finalize_peer`); `wall s` includes it.

All three evaluate the spec's baseline first (it is the first point of each). For
each seed the bar is the best validation accuracy any method found, minus 0.5
points; reported per method: trial-epochs (rounds summed over trials) and wall
time until some trial first reported a val accuracy at or above the bar, the
best val accuracy reached, and the test accuracy of the model the method hands
over (its best trial's checkpoint at the best round). Both are single noisy draws
(one val or test image is 0.28 points on digits), so `--retrain N` also trains the
config each method chose N more times from scratch with fresh torch seeds (the same
seeds for every method) and reports the mean: the quality of the config the search
found without the luck of one training run, and the spread over seeds (the noise
floor of a per-seed comparison). Trial-epochs are counted in
the order the driver received results. `VARIANTS` adds hpsearch runs with other
ASHA settings to a setting (the FIFO methods do not depend on them).

    python benchmarks/search_efficiency.py [--smoke] [--seeds 0 1 2] [--settings quickstart many-trials wide-space ...]
        [--only hpsearch random] [--retrain 3]

The report is rewritten after each setting, so an interrupted run keeps the settings it finished.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import _common as C

BAR_POINTS = 0.005  # 0.5 accuracy points below the best of all methods
WIDE_SPACE = {
    "optimizer": {"choice": ["adam", "sgd"]},
    "lr": {"loguniform": [1.0e-5, 1.0]},
    "momentum": {"uniform": [0.0, 0.99], "when": {"optimizer": "sgd"}},
    "batch_size": {"choice": [16, 32, 64, 128, 256]},
    "channels": {"choice": ["8-16", "16-32", "32-64"]},
    "hidden": {"int": [16, 512], "log": True},
    "dropout": {"uniform": [0.0, 0.7]},
    "weight_decay": {"choice": [0.0, 1.0e-5, 1.0e-4, 1.0e-3, 1.0e-2]},
    "label_smoothing": {"uniform": [0.0, 0.2]},
    "schedule": {"choice": ["none", "cosine"]},
}
SETTINGS = {
    # name: (description, changes to the quickstart spec)
    "quickstart": ("spaces/quickstart.yaml as is: digits, 1,079 train / 359 val images, 12 trials, max 12 epochs", {}),
    "small-train": (
        "quickstart with 3x less training data (digits, test_fraction 0.6: 359 train / 359 val), 12 trials, max 12 epochs",
        {"dataset": {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.6}},
    ),
    # A search where early stopping is meant to pay: many trials, and hpsearch's ASHA defaults, grace 1 epoch and
    # reduction factor 4 (rungs at 1 and 4 of 12 epochs; earlier runs of this benchmark, now in git history only, ran
    # reduction factor 3 here, rungs at 1, 3, 9, with 4 as a variant: 0.40x vs 0.33x of random's trial-epochs over 15
    # seed-runs; benchmarks/README.md, section "search_efficiency").
    # quickstart.yaml's 12 trials with grace 2 give ASHA two rungs (2, 6) and few results per rung, so its
    # asynchronous promotions (a trial goes on when it is in the top 1/3 of the results seen *so far* at its
    # rung) let most early trials through; with 4x the trials most of them meet a full rung.
    "many-trials": (
        "quickstart's data, model, space and max 12 epochs with 48 trials and hpsearch's ASHA defaults: grace_period 1, "
        "reduction_factor 4 (rungs at epochs 1 and 4)",
        {"budget": {"samples": 48, "grace_period": 1, "reduction_factor": 4}},
    ),
    "many-trials-small-train": (
        "`many-trials` (48 trials, grace_period 1, reduction_factor 3) on `small-train`'s data (359 train / 359 val)",
        {"budget": {"samples": 48, "grace_period": 1, "reduction_factor": 3},
         "dataset": {"name": "digits", "val_fraction": 0.2, "test_fraction": 0.6}},
    ),
    # The space of a user who does not know good ranges yet: lr over five decades (divergent at the top, too slow at
    # the bottom), batch sizes 16-256, regularisation from none to heavy, a schedule. hpsearch with its budget defaults
    # (grace 1, reduction factor 4: rungs at 1 and 4).
    "wide-space": (
        "quickstart's data and model, 48 trials, max 12 epochs, a wide space (lr 1e-5..1, batch 16-256, dropout 0-0.7, "
        "weight decay 0-1e-2, label smoothing 0-0.2, schedule none/cosine), hpsearch's ASHA defaults (grace 1, reduction factor 4)",
        {"budget": {"samples": 48, "grace_period": 1, "reduction_factor": 4}, "space": WIDE_SPACE},
    ),
}
METHODS = ("hpsearch: TPE + ASHA", "random + FIFO", "TPE + FIFO")
HPSEARCH, RANDOM = METHODS[0], METHODS[1]
ASHA_STOP = "hpsearch: TPE + stopping ASHA (asha-stop)"
# --only's names for the methods (hpsearch and random + FIFO are always run: every check compares the two).
SHORT_NAMES = {"hpsearch": HPSEARCH, "asha-stop": ASHA_STOP, "random": RANDOM, "tpe-fifo": METHODS[2]}
# Extra hpsearch runs per setting (label -> budget changes), measured beside the others in the same run.
# The FIFO methods train every trial to the end, so ASHA's settings do not change them: one run serves all.
# hpsearch's default is ASHA with promotions; `asha-stop` is Ray's stopping ASHA (the default until issue 13).
VARIANTS = {
    "many-trials": {ASHA_STOP: {"scheduler": "asha-stop"}},
    "wide-space": {ASHA_STOP: {"scheduler": "asha-stop"}},
}
RETRAIN_SEED = 10_000  # fresh torch seeds of the retrains: RETRAIN_SEED + 100 x seed + k (the search's is the seed)


def methods_for(setting: str, only: list[str] | None = None) -> tuple[str, ...]:
    """The methods a setting runs: hpsearch, its variants, then the two alternatives (those of `only`, if given)."""
    methods = (HPSEARCH, *VARIANTS.get(setting, {}), *METHODS[1:])
    if only is None:
        return methods
    chosen = {SHORT_NAMES[name] for name in only} | {HPSEARCH, RANDOM}
    return tuple(m for m in methods if m in chosen)


def add_args(parser) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--settings", nargs="+", default=["quickstart"], choices=sorted(SETTINGS))
    parser.add_argument("--only", nargs="+", choices=sorted(SHORT_NAMES), default=None,
                        help="run only these methods (hpsearch and random are always run)")
    parser.add_argument("--retrain", type=int, default=3, metavar="N",
                        help="retrain each method's chosen config N times with fresh seeds (0: skip)")


def make_spec(setting: str, seed: int, smoke: bool, method: str = HPSEARCH):
    from search.spec import parse_spec

    raw = C.quickstart_raw()
    raw["name"] = f"bench-eff-{setting}"
    for key, value in SETTINGS[setting][1].items():  # budget: only the keys named change
        raw[key] = {**raw[key], **value} if key == "budget" else value
    raw["budget"].update(VARIANTS.get(setting, {}).get(method, {}))
    raw["seed"] = seed
    if smoke:
        raw["budget"].update({"samples": 2, "max_epochs": 1, "grace_period": 1})
    return parse_spec(raw, f"benchmarks/search_efficiency.py:{setting}")


def _recorder_class():
    class Recorder(C.tune_clock_class()):
        """(seconds since the Tuner started, trial id, round, val_acc) of every result, in arrival order.

        A search observer (`search.tuner.Components.callbacks`), and a Tune callback for random + FIFO's own Tuner."""

        def __init__(self) -> None:
            super().__init__()
            self.events: list[tuple[float, str, int, float]] = []

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
            self.events.append((time.monotonic() - self.t0, trial.trial_id, int(result.get("round", 0)), float(result.get("val_acc", 0.0))))

    return Recorder


def tune_space(spec):
    """The spec's params as Tune's random-search distributions (conditions dropped: an inactive value is unused)."""
    from ray import tune

    space = {}
    for p in spec.space:
        if p.kind == "choice":
            space[p.name] = tune.choice(list(p.choices))
        elif p.kind == "int":
            space[p.name] = tune.lograndint(int(p.low), int(p.high) + 1) if p.log else tune.randint(int(p.low), int(p.high) + 1)
        elif p.log:
            space[p.name] = tune.loguniform(p.low, p.high)
        else:
            space[p.name] = tune.uniform(p.low, p.high)
    return space


def random_tuner(spec, data, name: str, storage: Path, callbacks: list):
    """random + FIFO, assembled like `search.tuner.build_tuner` except the searcher and scheduler, and the
    `param_space` Tune's random search samples from (which `build_tuner` does not take)."""
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    from search.callbacks import ResultLogger
    from search.tuner import CHECKPOINTS_PER_TRIAL, MAX_FAILURES, trial_dirname, tune_trainable_for

    concurrent = spec.budget.max_concurrent
    search_alg = BasicVariantGenerator(points_to_evaluate=[spec.baseline_point()], random_state=spec.seed, max_concurrent=concurrent)
    tune_config = tune.TuneConfig(
        search_alg=search_alg, scheduler=FIFOScheduler(), num_samples=spec.budget.samples,
        trial_dirname_creator=trial_dirname, reuse_actors=True, max_concurrent_trials=concurrent,
    )
    run_config = tune.RunConfig(
        name=name, storage_path=str(storage), callbacks=[ResultLogger(), *callbacks], verbose=0,  # Tune logging as hpsearch sets it
        checkpoint_config=tune.CheckpointConfig(num_to_keep=CHECKPOINTS_PER_TRIAL, checkpoint_score_attribute=spec.metric,
                                                checkpoint_score_order=spec.mode),
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
    )
    return tune.Tuner(tune_trainable_for(spec, data), param_space=tune_space(spec), tune_config=tune_config, run_config=run_config)


def tpe_fifo(spec, recorder):
    """TPE + FIFO as `run_experiment`'s components: Ray's OptunaSearch over the spec's space (conditions included,
    seeded, the baseline first), which `build_tuner` puts behind a ConcurrencyLimiter, and a FIFOScheduler."""
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    from search.space import DefineByRun
    from search.tuner import Components

    searcher = OptunaSearch(space=DefineByRun(spec.space, spec.baseline), metric=spec.metric, mode=spec.mode, seed=spec.seed,
                            points_to_evaluate=[spec.baseline_point()])
    return Components(searcher=searcher, scheduler=FIFOScheduler(), callbacks=(recorder,))


def run_method(method: str, spec, data, storage: Path, name: str, retrain_seeds: list[int]) -> dict:
    import search.tuner as T
    from search import results as R

    recorder = _recorder_class()()  # it observes only
    started = time.monotonic()
    if method == RANDOM:
        random_tuner(spec, data, name, storage, [recorder]).fit()
        result = C.finalize_peer(spec, data, storage / name)
    else:
        components = T.Components(callbacks=(recorder,)) if method.startswith("hpsearch") else tpe_fifo(spec, recorder)
        result = T.run_experiment(spec, components, name=name, storage=str(storage), track=False, on_event=None)
    wall = time.monotonic() - started
    records, best = result.records, result.best
    # The test split, never seen during any search, scores the model each method hands over (its best trial's checkpoint at
    # its best val round) without the bias of the max of many noisy val accuracies, which favours whoever trained more
    # trials to the end (random + FIFO trains all 48).
    retrained = retrain(result.final.meta if result.final is not None else None, spec, data, retrain_seeds)
    return {
        "trials": len(records), "trial_epochs": sum(r.rounds for r in records), "best": best.best_value if best else float("nan"),
        "final": max((r.last_value for r in records if r.status == R.Outcome.COMPLETED and r.last_value is not None), default=float("nan")),
        "test": C.final_test_acc(result),
        "events": recorder.events, "wall": wall, "completed": sum(r.status == R.Outcome.COMPLETED for r in records),
        "configs": [r.config for r in records],
        "retrain_val": [v for v, _ in retrained], "retrain_test": [t for _, t in retrained],
    }


def retrain(chosen, spec, data, seeds: list[int]) -> list[tuple[float, float]]:
    """(val acc, test acc) of the handed-over model's config (`chosen`: its `FinalReport.meta`, or a checkpoint state:
    `model_name`, `hparams`) trained from scratch once per seed, as a trial trains it.

    Each run keeps its best-val round (as hpsearch's trials and export do) and tests it; no Tune, no checkpoint.
    """
    from dataclasses import replace

    from trainables.train import fit

    if chosen is None or data.test is None:
        return []
    scores = []
    for seed in seeds:
        settings = replace(spec.settings(), model=chosen["model_name"], seed=seed, threads=os.cpu_count() or 1)
        outcome = fit(dict(chosen["hparams"]), data, settings)
        scores.append((float(outcome.best_metrics[spec.metric]), float(outcome.test["acc"]) if outcome.test else float("nan")))
    return scores


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def paired_difference(per_seed: list[dict], method: str, measure) -> str:
    """Mean over seeds of `measure(method) - measure(random)`, ± its standard error ("±" absent for one seed)."""
    diffs = [measure(s[method]) - measure(s[RANDOM]) for s in per_seed]
    if len(diffs) < 2:
        return f"{mean(diffs) * 100:+.2f}"
    se = math.sqrt(sum((d - mean(diffs)) ** 2 for d in diffs) / (len(diffs) - 1) / len(diffs))
    return f"{mean(diffs) * 100:+.2f} ± {se * 100:.2f}"


def pooled_sd(groups) -> float:
    """Standard deviation within groups (one group = one config's retrains), pooled over groups."""
    groups = [g for g in groups if len(g) > 1]
    dof = sum(len(g) - 1 for g in groups)
    if not dof:
        return float("nan")
    return math.sqrt(sum(sum((x - mean(g)) ** 2 for x in g) for g in groups) / dof)


def retrained(o: dict) -> str:
    """'val / test' means of a method's retrains, for a table cell."""
    if not o["retrain_test"]:
        return "not run"
    return f"{mean(o['retrain_val']):.4f} / {mean(o['retrain_test']):.4f}"


def to_bar(events, bar: float) -> tuple[float, float]:
    """(trial-epochs, seconds) until the first result at or above `bar`; infinite when the search never got there."""
    for i, (t, _trial, _round, acc) in enumerate(events):
        if acc >= bar - 1e-12:
            return float(i + 1), t
    return math.inf, math.inf


def shown(value: float, digits: int = 0) -> str:
    return "not reached" if value == math.inf else C.fmt(float(value), digits)


def ratio(a: float, b: float) -> float:
    """a / b where a never-reached bar counts as infinite work (both never: undefined)."""
    if a == math.inf and b == math.inf:
        return float("nan")
    return a / b if b != math.inf else 0.0


def checks(hp: str, per_seed: list[dict], spec, setting: str) -> tuple[str, list]:
    """The target table of one hpsearch method vs random + FIFO, and its row of the summary."""
    n = len(per_seed)
    ratio_total = C.median(s[hp]["trial_epochs"] / s[RANDOM]["trial_epochs"] for s in per_seed)
    ratio_bar = C.median(ratio(s[hp]["epochs_to_bar"], s[RANDOM]["epochs_to_bar"]) for s in per_seed)
    reached = sum(s[hp]["epochs_to_bar"] != math.inf for s in per_seed)
    as_high = sum(s[hp]["best"] >= s[RANDOM]["best"] for s in per_seed)
    within = sum(s[hp]["best"] >= s[RANDOM]["best"] - BAR_POINTS for s in per_seed)
    final_as_high = sum(s[hp]["final"] >= s[RANDOM]["final"] for s in per_seed)
    test_as_high = sum(s[hp]["test"] >= s[RANDOM]["test"] for s in per_seed)
    test_gap = C.median(s[hp]["test"] - s[RANDOM]["test"] for s in per_seed)
    mean_val = [mean(s[m]["best"] for s in per_seed) for m in (hp, RANDOM)]
    mean_test = [mean(s[m]["test"] for s in per_seed) for m in (hp, RANDOM)]
    mean_final = [mean(s[m]["final"] for s in per_seed) for m in (hp, RANDOM)]
    retrain_rows = []
    if all(s[hp]["retrain_test"] and s[RANDOM]["retrain_test"] for s in per_seed):
        k = len(per_seed[0][hp]["retrain_test"])
        re_test = [(mean(s[hp]["retrain_test"]), mean(s[RANDOM]["retrain_test"])) for s in per_seed]
        re_val = [(mean(s[hp]["retrain_val"]), mean(s[RANDOM]["retrain_val"])) for s in per_seed]
        re_as_high = sum(a >= b for a, b in re_test)
        re_gap = [a - b for a, b in re_test]
        sd_test = pooled_sd(s[m]["retrain_test"] for s in per_seed for m in (hp, RANDOM))
        sd_val = pooled_sd(s[m]["retrain_val"] for s in per_seed for m in (hp, RANDOM))
        n_val, n_test = per_seed[0]["data_sizes"]
        retrain_rows = [
            [f"seeds where its chosen config, retrained {k}x from scratch (fresh seeds), tests ≥ random's (mean of the {k})",
             f"{re_as_high} of {n}", f"all ({'met' if re_as_high == n else '**missed**'}; median difference {C.median(re_gap) * 100:+.2f} pt, "
             f"mean {mean(re_gap) * 100:+.2f} pt)"],
            ["mean over seeds of the retrained chosen config: val acc / test acc (it vs random)",
             f"{mean(a for a, _ in re_val):.4f} vs {mean(b for _, b in re_val):.4f} / {mean(a for a, _ in re_test):.4f} vs {mean(b for _, b in re_test):.4f}",
             f"≥ random's: val {'met' if mean(a for a, _ in re_val) >= mean(b for _, b in re_val) else '**missed**'}, "
             f"test {'met' if mean(a for a, _ in re_test) >= mean(b for _, b in re_test) else '**missed**'}"],
            ["noise floor: SD of one config's accuracy over fresh seeds (pooled over the chosen configs): val / test",
             f"{sd_val * 100:.2f} / {sd_test * 100:.2f} pt", f"(one val / test image: {100 / max(n_val, 1):.2f} / {100 / max(n_test, 1):.2f} pt)"],
        ]
    table = C.md_table([f"check ({hp} vs random + FIFO)", "measured", "target"], [
        ["trial-epochs, whole search (median ratio)", f"{ratio_total:.2f}", f"≤ 0.33 ({'met' if ratio_total <= 1 / 3 else '**missed**'})"],
        ["trial-epochs to the bar (median of per-seed ratios; a search that never reached it counts as ∞)",
         f"{ratio_bar:.2f}", f"≤ 0.33 ({'met' if ratio_bar <= 1 / 3 else '**missed**'})"],
        ["seeds where it reached the bar", f"{reached} of {n}", "all"],
        ["seeds where its best val acc ≥ random's (max over every trial's rounds)", f"{as_high} of {n}",
         f"all ({'met' if as_high == n else '**missed**'}; within 0.5 pt: {within} of {n})"],
        ["seeds where its best final val acc ≥ random's (a trial's val acc after its last epoch, over trials trained to the end)",
         f"{final_as_high} of {n}", f"all ({'met' if final_as_high == n else '**missed**'})"],
        ["seeds where its chosen model's test acc ≥ random's", f"{test_as_high} of {n}",
         f"all ({'met' if test_as_high == n else '**missed**'}; median difference {test_gap * 100:+.2f} pt)"],
        ["mean over seeds: best val acc / best final val acc / test acc of the chosen model (it vs random)",
         f"{mean_val[0]:.4f} vs {mean_val[1]:.4f} / {mean_final[0]:.4f} vs {mean_final[1]:.4f} / {mean_test[0]:.4f} vs {mean_test[1]:.4f}",
         f"≥ random's: val {'met' if mean_val[0] >= mean_val[1] else '**missed**'}, final val {'met' if mean_final[0] >= mean_final[1] else '**missed**'}, "
         f"test {'met' if mean_test[0] >= mean_test[1] else '**missed**'}"],
        *retrain_rows,
        ["it − random, mean over seeds ± standard error, in points: best val / best final val / test acc"
         + (" / retrained test acc" if retrain_rows else ""),
         " / ".join(paired_difference(per_seed, hp, m) for m in (
             lambda o: o["best"], lambda o: o["final"], lambda o: o["test"], *([lambda o: mean(o["retrain_test"])] if retrain_rows else []))),
         "a difference within about 2 standard errors of 0 is not one these seeds can tell apart"],
    ])
    verdict = [f"`{setting}`", hp, spec.budget.samples, spec.budget.max_epochs,
               f"{spec.budget.grace_period} / {spec.budget.reduction_factor:g}" if hp == HPSEARCH else "see method",
               f"{ratio_total:.2f}", f"{ratio_bar:.2f}", f"{reached} of {n}", f"{as_high} of {n}", f"{final_as_high} of {n}", f"{test_as_high} of {n}"]
    return table, verdict


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], add_args)
    if args.smoke:
        args.seeds, args.settings, args.retrain = [0], ["many-trials"], 2  # the setting with an hpsearch variant
    C.quiet_ray_env()
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # as run_search sets it: every method logs result.json only
    from search.cluster import connect
    from trainables.data import create_dataset

    intro = (
        "Every method: the same spec and seed (sampler seed, data split, torch seed), the baseline as first trial, 2 trials "
        "in flight (one per core), `reuse_actors`, a checkpoint per epoch, Tune's JSON result logger only (as hpsearch sets "
        "Tune up), no MLflow. A round is one epoch here, so "
        "trial-epochs = rounds summed over trials. `seconds to bar` counts from the Tuner's start. Random search samples "
        "SGD momentum for every trial (unused unless the optimizer is SGD), since Tune's random search has no conditions. "
        "The ASHA settings (grace period, reduction factor) only change hpsearch's run: the two FIFO methods train every "
        "trial to max_epochs whatever they are. hpsearch's ASHA (with promotions, the default since issue 13) pauses a trial at a rung and resumes "
        "the top 1/reduction_factor; the variant `asha-stop` is Ray's stopping ASHA (hpsearch's scheduler before), which ranks a "
        "trial against the rung's latest 2 x reduction_factor results. `its test acc`: the accuracy on the test split (never seen by any search) of "
        "the model the method hands over, its best trial's checkpoint at its best val round, tested once by `search.finalize` as a "
        "user's search tests it; unlike the best val acc, a max "
        "over every round of every trial, it does not favour the method that trains more trials to the end. `best final val acc`: "
        "the best val accuracy a trial ends with (after its last epoch), over the trials trained to max_epochs."
    )

    def report(sections: list[str], load, quiet: bool) -> None:
        summary = C.md_table(["setting", "method", "trials", "max epochs", "ASHA grace / reduction factor",
                              "trial-epochs vs random + FIFO (median ratio; target ≤ 0.33)", "trial-epochs to bar vs random (median ratio)",
                              "seeds it reached the bar", "seeds its best val ≥ random's", "seeds its best final val ≥ random's",
                              "seeds its test acc ≥ random's"], verdicts)
        sections = [f"Summary over seeds {', '.join(map(str, args.seeds))} (details per setting below):", summary, *sections]
        title = "Search efficiency: TPE + ASHA (hpsearch) vs random search vs TPE without pruning"
        if quiet:  # the report so far, rewritten after each setting
            with contextlib.redirect_stdout(io.StringIO()):
                C.write_report("search_efficiency", title, [intro, *sections], args.out, smoke=args.smoke, load=load)
        else:
            C.write_report("search_efficiency", title, [intro, *sections], args.out, smoke=args.smoke, load=load)

    storage = Path(tempfile.mkdtemp(prefix="hpsearch-bench-eff-"))
    sections = []
    verdicts = []
    try:
        with C.LoadWatch() as load:
            connect(None)
            for setting in args.settings:
                methods = methods_for(setting, args.only)
                rows = []
                per_seed = []
                for seed in args.seeds:
                    spec = make_spec(setting, seed, args.smoke)
                    data = create_dataset(spec.dataset, **spec.dataset_options)
                    out = {}
                    retrain_seeds = [RETRAIN_SEED + 100 * seed + k for k in range(args.retrain)]
                    order = methods if seed % 2 == 0 else tuple(reversed(methods))
                    for method in order:
                        method_spec = make_spec(setting, seed, args.smoke, method)
                        out[method] = run_method(method, method_spec, data, storage, f"{setting}-s{seed}-{methods.index(method)}", retrain_seeds)
                        print(f"{setting} seed {seed}: {method}: {out[method]['trial_epochs']} trial-epochs, best val {out[method]['best']:.4f}, "
                              f"test {out[method]['test']:.4f}, retrained test {mean(out[method]['retrain_test']):.4f}, "
                              f"{out[method]['wall']:.0f} s", flush=True)
                    bar = max(o["best"] for o in out.values()) - BAR_POINTS
                    for method in methods:
                        o = out[method]
                        o["epochs_to_bar"], o["seconds_to_bar"] = to_bar(o["events"], bar)
                        rows.append([str(seed), method, o["trials"], o["completed"], o["trial_epochs"], f"{o['best']:.4f}", f"{o['final']:.4f}", f"{o['test']:.4f}",
                                     retrained(o), f"{bar:.4f}", shown(o["epochs_to_bar"]), shown(o["seconds_to_bar"], 2), o["wall"]])
                    per_seed.append({**out, "data_sizes": (len(data.val), len(data.test) if data.test is not None else 0)})
                table = C.md_table(["seed", "method", "trials", "ran to the end", "trial-epochs", "best val acc", "best final val acc", "its test acc",
                                    f"its config retrained {args.retrain}x: val / test (mean)", "bar (best of all − 0.5 pt)", "trial-epochs to bar", "seconds to bar", "wall s"], rows)
                agg = C.md_table(["median over seeds", *methods], [
                    ["trial-epochs (total)", *(C.median(s[m]["trial_epochs"] for s in per_seed) for m in methods)],
                    ["trial-epochs to bar (not reached = ∞)", *(shown(C.median(s[m]["epochs_to_bar"] for s in per_seed)) for m in methods)],
                    ["seconds to bar (not reached = ∞)", *(shown(C.median(s[m]["seconds_to_bar"] for s in per_seed), 1) for m in methods)],
                    ["seeds that reached the bar", *(f"{sum(s[m]['epochs_to_bar'] != math.inf for s in per_seed)} of {len(per_seed)}" for m in methods)],
                    ["best val acc", *(f"{C.median(s[m]['best'] for s in per_seed):.4f}" for m in methods)],
                    ["best final val acc", *(f"{C.median(s[m]['final'] for s in per_seed):.4f}" for m in methods)],
                    ["test acc of the chosen model", *(f"{C.median(s[m]['test'] for s in per_seed):.4f}" for m in methods)],
                    [f"test acc of the chosen config retrained {args.retrain}x (mean)",
                     *(f"{C.median(mean(s[m]['retrain_test']) for s in per_seed):.4f}" for m in methods)],
                    ["wall s (whole search)", *(C.median(s[m]["wall"] for s in per_seed) for m in methods)],
                ])
                sections += [f"## Setting `{setting}`: {SETTINGS[setting][0]}", table, agg]
                for hp in [m for m in methods if m.startswith("hpsearch")]:
                    check, verdict = checks(hp, per_seed, spec, setting)
                    sections.append(check)
                    verdicts.append(verdict)
                if setting != args.settings[-1]:
                    report(sections, load, quiet=True)
    finally:
        C.kill_own_ray()
        shutil.rmtree(storage, ignore_errors=True)
    report(sections, load, quiet=False)


if __name__ == "__main__":
    main()
