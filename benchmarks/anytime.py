"""Search quality per wall-clock budget: hpsearch against the tools a user would pick instead, at matched fidelity.

The protocol (benchmarks/README.md, "anytime", says why each rule is there):
- one workload of real scale per run (WORKLOADS: generated 28x28 digit images, 55,000 train /
  5,000 val / 10,000 test, `benchmarks/glyphs.py` with a generation seed no fix was tuned on),
  the two-block cnn, the space SPACE, the baseline BASELINE evaluated first by every method;
- every method gets the same wall time (`budget_s`, counted from the method's start: Ray's start,
  the data, hpsearch's pace measurement are inside it), 2 workers of one CPU each, the same
  `max_epochs`, and the same rounds: hpsearch runs first on each seed with `report_every: auto`,
  and every other method trains and reports on rounds of the number of samples it chose, with its
  first rung at one round and a reduction factor of 4, so rung levels are equal in training samples;
- the methods (METHODS): hpsearch as a user runs it; Ray Tune + OptunaSearch + ASHA and Optuna +
  HyperbandPruner (benchmarks/peers.py); Syne Tune's ASHA and BOHB through its local backend
  (benchmarks/peer_syne.py); random search on hpsearch's scheduler; and the ablations of hpsearch
  (ABLATIONS), one component changed each;
- all methods of one seed run back to back on one machine from one commit, Ray stopped between them;
  the seeds are declared here (SEEDS, ABLATION_SEEDS) before any of them ran: none of them, nor the
  data's generation seed, is one a fix was developed on;
- each method's handed-over model is tested once on the test split: hpsearch's own ending
  (`result.final`), the peers' best-val trial at its best round.

Raw results: one JSON per (workload, seed, method) in OUT/runs/anytime/, written as soon as the
method ends. `--summarize` (also run after every method) rebuilds OUT/anytime_summary.json and
OUT/anytime.md from every raw file: per method the median and IQR of test accuracy, the paired
median difference to hpsearch with its bootstrap 95% CI and Wilcoxon p (benchmarks/paired.py),
trial-epochs, trials per fidelity level, train share, completed hand-overs, and a plot of the
median best val over wall time.

    python benchmarks/anytime.py --seeds 11 12 [--methods main|ablations|all|NAME...] [--workload glyphs]
    python benchmarks/anytime.py --summarize
    python benchmarks/anytime.py --smoke --out /tmp/x      # tiny: checks the script runs
"""
from __future__ import annotations

import contextlib
import copy
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common as C
import glyphs

# ----------------------------------------------------------------------------------------------
# The protocol, fixed before any of these seeds ran

SEEDS = tuple(range(11, 21))  # every method
ABLATION_SEEDS = tuple(range(11, 16))  # the ablations, and the second workload
MAIN = ("hpsearch", "ray-tune", "optuna-hyperband", "syne-tune-asha", "syne-tune-bohb", "random-promotion")
ABLATIONS = ("hpsearch-asha-stop", "hpsearch-optunasearch", "hpsearch-no-finish", "hpsearch-dense-val", "hpsearch-epoch-rounds")
METHODS = MAIN + ABLATIONS
HPSEARCH = "hpsearch"
ON_HPSEARCH = (HPSEARCH, "random-promotion", *ABLATIONS)  # the methods that are a search of hpsearch's (run_experiment)
LABELS = {
    "hpsearch": "hpsearch as a user runs it: ASHA with promotions on a virtual clock, rung-aware TPE, finish phase, sparse val, auto rounds",
    "ray-tune": "Ray Tune + OptunaSearch + ASHAScheduler, reuse_actors=True",
    "optuna-hyperband": "Optuna alone: TPE + HyperbandPruner, n_jobs=2",
    "syne-tune-asha": "Syne Tune ASHA (local backend, a process per trial)",
    "syne-tune-bohb": "Syne Tune BOHB (local backend, a process per trial)",
    "random-promotion": "random search on hpsearch's scheduler (the sampler's ablation)",
    "hpsearch-asha-stop": "hpsearch with the stopping ASHA (budget.scheduler asha-stop) instead of promotions",
    "hpsearch-optunasearch": "hpsearch with Ray's OptunaSearch instead of the rung-aware TPE",
    "hpsearch-no-finish": "hpsearch without the finish phase (the scheduler ignores the deadline)",
    "hpsearch-dense-val": "hpsearch evaluating val every round (sparse val off)",
    "hpsearch-epoch-rounds": "hpsearch with rounds of one epoch (report_every: epoch) instead of auto",
}
COLOURS = {"hpsearch": "black", "ray-tune": "tab:green", "optuna-hyperband": "tab:orange", "syne-tune-asha": "tab:purple",
           "syne-tune-bohb": "tab:pink", "random-promotion": "tab:grey", "hpsearch-asha-stop": "tab:blue",
           "hpsearch-optunasearch": "tab:cyan", "hpsearch-no-finish": "tab:red", "hpsearch-dense-val": "tab:olive",
           "hpsearch-epoch-rounds": "tab:brown"}
WORKLOADS: dict[str, dict[str, Any]] = {
    # 55,000 train / 5,000 val / 10,000 test: the scale of the held-out data set the issues describe
    "glyphs": {"generation_seed": 23, "train": 60_000, "test": 10_000, "max_epochs": 6, "budget_s": 300.0, "workers": 2},
    # the second workload: the same images, 6,000 of the 55,000 train images (stratified), 16 epochs of one round each
    # (auto keeps epochs up to 10,000 images): curves that cross more (benchmarks/README.md, "anytime", second workload)
    "glyphs-small": {"generation_seed": 23, "train": 60_000, "test": 10_000, "train_subset": 6_000 / 55_000, "max_epochs": 16,
                     "budget_s": 300.0, "workers": 2},
    # its first-rung rank correlation measured 0.79 (benchmarks/README.md): the same with 60 % of the training labels
    # wrong (test labels clean), where fast learners memorise the noise and slow ones overtake them: measured 0.43
    "glyphs-noisy": {"generation_seed": 23, "train": 60_000, "test": 10_000, "train_subset": 6_000 / 55_000, "max_epochs": 16,
                     "label_noise": 0.6, "budget_s": 300.0, "workers": 2},
}
SMOKE = {"generation_seed": 23, "train": 1500, "test": 300, "max_epochs": 2, "budget_s": 25.0, "workers": 2}
BASELINE = {
    "optimizer": "adam", "lr": 0.003, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "batch_size": 64,
    "label_smoothing": 0.0, "schedule": "none", "step_size": 5, "gamma": 0.1,
    "hflip": False, "rotation": 0.0, "translate": 0.0, "crop_padding": 0,
    "channels": "16-32", "width_mult": 1.0, "kernel_size": 3, "pool": True, "batch_norm": False, "hidden": 64, "dropout": 0.0,
}
SPACE = {
    "optimizer": {"choice": ["adam", "sgd"]},
    "lr": {"loguniform": [1.0e-4, 1.0e-1]},
    "momentum": {"uniform": [0.5, 0.99], "when": {"optimizer": "sgd"}},
    "batch_size": {"choice": [32, 64, 128, 256]},
    "channels": {"choice": ["8-16", "16-32", "32-64"]},
    "hidden": {"int": [16, 512], "log": True},
    "dropout": {"uniform": [0.0, 0.6]},
    "batch_norm": {"choice": [False, True]},
    "weight_decay": {"choice": [0.0, 1.0e-5, 1.0e-4, 1.0e-3]},
    "schedule": {"choice": ["none", "cosine"]},
    "hflip": {"choice": [False, True]},
}
SAMPLES = 100_000  # budget.samples: the wall time ends every search first
DEADLINE_SLACK_S = 2.0  # a result this late after the budget is Tune's reaction time; later ones do not count
RAW = "anytime"  # OUT/runs/anytime/


# ----------------------------------------------------------------------------------------------
# Specs


def make_spec(method: str, seed: int, workload: dict[str, Any], root: str, *, round_samples: int | None):
    """The validated spec of one method: hpsearch and its variants with their changed component, every other
    method on `round_samples`-sample rounds (first rung one round) read from hpsearch's run of the seed."""
    from search.spec import parse_spec

    budget: dict[str, Any] = {"samples": SAMPLES, "max_epochs": workload["max_epochs"], "grace_period": 1, "reduction_factor": 4,
                              "max_concurrent": workload["workers"], "time_budget": workload["budget_s"]}
    if method == "hpsearch-epoch-rounds":
        budget["report_every"] = "epoch"
    elif method in ON_HPSEARCH:
        budget["report_every"] = "auto"
    else:
        if round_samples is None:
            raise SystemExit(f"anytime.py: {method} needs hpsearch's rounds of this seed: run hpsearch on it first")
        if round_samples == "epoch":  # a small data set: `auto` kept one epoch per round
            budget["report_every"] = "epoch"
        else:
            budget.update(report_every=int(round_samples), auto_rounds=True)
    if method == "hpsearch-asha-stop":
        budget["scheduler"] = "asha-stop"
    raw = {
        "name": f"anytime-{method}", "description": "benchmarks/anytime.py", "seed": seed,
        "dataset": glyphs.spec_dataset(root, workload["train"]), "model": "cnn", "metric": "val_acc", "mode": "max",
        "device": "cpu", "budget": budget, "resources": {"cpu": 1, "gpu": 0}, "baseline": dict(BASELINE),
        "space": copy.deepcopy(SPACE),
    }
    if workload.get("train_subset"):
        raw["dataset"]["train_subset"] = workload["train_subset"]
    return parse_spec(raw, f"benchmarks/anytime.py:{method}")


# ----------------------------------------------------------------------------------------------
# Recording: one event per round, on the method's clock


def recorder_class() -> type:
    from peers import event_of
    from ray.tune import Callback

    class Recorder(Callback):
        """Every result as `peers.event_of` writes it, on the method's clock."""

        def __init__(self, t0: float) -> None:
            self.t0 = t0
            self.events: list[tuple] = []
            self.configs: dict[str, dict[str, Any]] = {}

        def on_trial_result(self, iteration: int = 0, trials: Any = None, trial: Any = None, result: Any = None, **info: Any) -> None:
            self.configs.setdefault(str(trial.trial_id), dict(trial.config))
            self.events.append(event_of(time.monotonic() - self.t0, str(trial.trial_id), result))

    return Recorder


# ----------------------------------------------------------------------------------------------
# hpsearch and its variants


class RandomRungAware:
    """Built on first use (imports Ray): the rung-aware sampler with Optuna's RandomSampler instead of TPE."""

    @staticmethod
    def make(spec: Any, n_train: int) -> Any:
        import optuna

        from search import rounds as B
        from search.sampler import RungAwareTPE
        from search.space import DefineByRun

        class RandomSearch(RungAwareTPE):
            def sampler(self) -> Any:
                return optuna.samplers.RandomSampler(seed=self.seed)

        return RandomSearch(DefineByRun(spec.space, spec.baseline), metric=spec.metric, mode=spec.mode, seed=spec.seed,
                            max_t=B.total_rounds(spec, n_train), rungs=B.rungs(spec, n_train),
                            points_to_evaluate=[spec.baseline_point()])


def variant_components(method: str) -> Any:
    """The `Components.build` of a variant: what it changes, built once hpsearch has resolved its rounds."""
    from search.tuner import Components

    def build(spec: Any, data: Any, location: str) -> Any:
        from ray import tune

        from search.schedulers import build_scheduler
        from trainables.tune_trainable import tune_trainable

        n_train = len(data.train)
        if method == "random-promotion":
            return Components(searcher=RandomRungAware.make(spec, n_train))
        if method == "hpsearch-optunasearch":
            from ray.tune.search.optuna import OptunaSearch

            from search.space import DefineByRun

            return Components(searcher=OptunaSearch(space=DefineByRun(spec.space, spec.baseline), metric=spec.metric, mode=spec.mode,
                                                    seed=spec.seed, points_to_evaluate=[spec.baseline_point()]))
        if method == "hpsearch-no-finish":
            scheduler = build_scheduler(spec, n_train, state_dir=location)
            scheduler.finish.time_budget_s = None  # no finish phase, promotions never held back for the deadline
            return Components(scheduler=scheduler)
        if method == "hpsearch-dense-val":
            settings = replace(spec.settings(), val_rounds=None)
            with_data = tune.with_parameters(tune_trainable, data=data, settings=settings, baseline=spec.baseline)
            return Components(trainable=tune.with_resources(with_data, {"cpu": spec.resources.cpu, "gpu": 0}))
        return Components()

    return Components(build=build)  # hpsearch itself and the variants that change nothing built here get Components()


def run_hpsearch(method: str, spec: Any, *, t0: float, storage: Path, name: str) -> dict[str, Any]:
    """`run_experiment` as `run_search` runs it (MLflow on), with a Recorder beside hpsearch's observers."""
    import search.tuner as T

    recorder = recorder_class()(t0)
    components = replace(variant_components(method), callbacks=(recorder,))
    result = T.run_experiment(spec, components, name=name, storage=str(storage), track=True,
                              on_event=lambda m: print(f"[{method}] {m}", flush=True))
    search_end = time.monotonic()
    final = result.final
    handed = {}
    if final is not None:
        record = next((r for r in result.records if r.trial_id == final.trial_id), None)
        handed = {"trial": final.trial_id, "config": dict(record.config) if record else {},
                  "val": record.best_value if record else None, "epoch": record.best_epoch if record else None,
                  "status": str(record.status) if record else None}
    every = result.spec.budget.report_every
    from search.schedulers import load_state

    state = load_state(result.experiment_dir) or {}
    waits = {k: state.get(k) for k in ("waits", "wait_seconds", "virtual_until_s")} if "waits" in state else None
    return {
        "virtual_clock_waits": waits,  # ReproducibleASHA: results that waited for earlier ones in virtual time
        "events": recorder.events, "configs": {**{r.trial_id: dict(r.config) for r in result.records}, **recorder.configs},
        "test_acc": C.final_test_acc(result), "test_source": "the search's own ending (result.final)",
        "handed_over": handed, "search_end": search_end, "final_error": result.final_error,
        "round_samples": None if every in (None, "epoch") else int(every),
    }


# ----------------------------------------------------------------------------------------------
# One method, one seed


def run_method(method: str, spec: Any, data: Any, *, seed: int, budget_s: float, storage: Path) -> dict[str, Any]:
    """Run one method on a machine with no Ray instance of ours; its raw outcome (events on its own clock)."""
    C.kill_own_ray()
    gc.collect()
    name = f"anytime-s{seed}-{method}"
    t0 = time.monotonic()
    try:
        if method in ON_HPSEARCH:
            out = run_hpsearch(method, spec, t0=t0, storage=storage, name=name)
        elif method == "ray-tune":
            import peers

            recorder = recorder_class()(t0)
            out = peers.run_ray_tune(spec, data, seed=seed, t0=t0, budget_s=budget_s, storage=storage, name=name, recorder=recorder)
            out.update(events=recorder.events, configs=recorder.configs)
        elif method == "optuna-hyperband":
            import peers

            out = peers.run_optuna_hyperband(spec, data, seed=seed, t0=t0, budget_s=budget_s)
        elif method.startswith("syne-tune-"):
            import peer_syne

            with _working_directory(storage):  # Syne Tune's GPU probe writes std.out into the working directory
                out = peer_syne.run_syne_tune(method, spec, seed=seed, budget_s=budget_s, t0=t0, workdir=storage / name)
            out["search_end"] = t0 + out.get("startup_seconds", 0.0) + out.get("search_seconds", 0.0)
            if "test_acc" not in out:
                out["test_acc"] = C.checkpoint_test_acc(out.get("best_state"), data, spec.settings())
                out["test_source"] = "best round's state, evaluated as search.finalize evaluates a checkpoint"
            out["handed_over"] = {k: out.get("best", {}).get(k) for k in ("trial", "config", "val", "epoch")} if out.get("best") else {}
            out.pop("best_state", None)
        else:
            raise SystemExit(f"anytime.py: unknown method {method!r}; known: {', '.join(METHODS)}")
    finally:
        C.kill_own_ray()
        gc.collect()
    out["wall_s"] = time.monotonic() - t0
    out["search_s"] = out.pop("search_end", time.monotonic()) - t0
    return out


@contextlib.contextmanager
def _working_directory(folder: Path) -> Any:
    """The block runs in `folder` (contextlib.chdir is Python 3.11+)."""
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def measures(out: dict[str, Any], *, budget_s: float, workers: int, n_train: int, max_epochs: int,
             first_rung_epochs: float) -> dict[str, Any]:
    """The numbers the unit of a round cannot inflate, from a method's events (a round seen twice counts once)."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for event in sorted(out["events"], key=lambda e: e[0]):
        key = (str(event[1]), int(event[2]))
        if key in seen or event[0] > budget_s + DEADLINE_SLACK_S:
            continue
        seen.add(key)
        kept.append(event)
    trials: dict[str, dict[str, Any]] = {}
    for t, trial, rnd, epoch, val, seconds, train_s, *_ in kept:
        row = trials.setdefault(str(trial), {"rounds": 0, "epochs": 0.0, "best_val": -math.inf, "seconds": 0.0, "train_seconds": 0.0})
        row["rounds"] += 1
        row["epochs"] = max(row["epochs"], float(epoch))
        row["best_val"] = max(row["best_val"], float(val))
        row["seconds"] += float(seconds)
        row["train_seconds"] += float(train_s)
    epochs = [r["epochs"] for r in trials.values()]
    eps = 1e-3
    levels = {"first_rung": first_rung_epochs, "one_epoch": 1.0, "quarter_max_t": max_epochs / 4, "max_t": float(max_epochs)}
    best, trace = -math.inf, []
    for t, _trial, _rnd, _epoch, val, *_ in kept:
        if val > best:
            best = val
            trace.append([round(t, 2), val])
    handed = out.get("handed_over") or {}
    handed_epochs = trials.get(str(handed.get("trial")), {}).get("epochs", 0.0)
    train_seconds = sum(r["train_seconds"] for r in trials.values())
    configs = {json.dumps(out["configs"].get(t, {}), sort_keys=True, default=str) for t in trials}
    return {
        "test_acc": out.get("test_acc"), "best_val": best if kept else None,
        "trial_epochs": round(sum(epochs), 3), "train_seconds": round(train_seconds, 1),
        "train_share": round(train_seconds / (workers * budget_s), 4),
        "completed": bool(handed) and handed_epochs >= max_epochs - eps,
        "handed_over_epochs": handed_epochs,
        "trials": len(trials), "configurations": len(configs),
        "levels": {name: sum(e >= level - eps for e in epochs) for name, level in levels.items()},
        "level_epochs": levels,
        "trace": trace,
    }


def raw_path(out: Path, workload: str, seed: int, method: str) -> Path:
    return C.run_dir(out, RAW) / f"{workload}_seed{seed}_{method}.json"


def run_seed(workload_name: str, workload: dict[str, Any], seed: int, methods: list[str], root: str, out: Path, *, smoke: bool) -> list[Path]:
    """Every method of `methods` on one seed, hpsearch first (its rounds are every other method's), the rest in a
    seed-rotated order; one raw JSON per method, written as it ends."""
    from trainables.data import create_dataset

    written = []
    hp_file = raw_path(out, workload_name, seed, HPSEARCH)
    order = [m for m in methods if m != HPSEARCH]
    k = seed % len(order) if order else 0
    order = order[k:] + order[:k]
    if HPSEARCH in methods:
        order = [HPSEARCH, *order]
    storage = Path(tempfile.mkdtemp(prefix="hpsearch-bench-anytime-"))
    try:
        for method in order:
            round_samples = None
            if hp_file.is_file():
                round_samples = json.loads(hp_file.read_text()).get("round_samples") or "epoch"
            spec = make_spec(method, seed, workload, root, round_samples=round_samples)
            data = create_dataset(spec.dataset, **spec.dataset_options)
            n_train = len(data.train)
            print(f"== {workload_name} seed {seed}: {method} ({workload['budget_s']:g} s)", flush=True)
            raw = run_method(method, spec, data, seed=seed, budget_s=workload["budget_s"], storage=storage)
            own_rounds = raw.get("round_samples") or (round_samples if isinstance(round_samples, int) else None)
            first_rung = 1.0 if method == "hpsearch-epoch-rounds" else (own_rounds or n_train) / n_train
            m = measures(raw, budget_s=workload["budget_s"], workers=workload["workers"], n_train=n_train,
                         max_epochs=workload["max_epochs"], first_rung_epochs=first_rung)
            record = {
                "benchmark": "anytime", "format": 2, "workload": workload_name, "seed": seed, "method": method,
                "label": LABELS[method], "budget_s": workload["budget_s"], "workers": workload["workers"],
                "max_epochs": workload["max_epochs"], "round_samples": own_rounds, "n_train": n_train,
                "smoke": smoke, "machine": C.cpu_model(), "cores": os.cpu_count(), "commit": C.CODE_REVISION,
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "versions": C.versions(),
                "command": C.command_line(), "data": {"summary": data.summary(), "generation_seed": workload["generation_seed"]},
                **m, "handed_over": raw.get("handed_over"), "test_source": raw.get("test_source"),
                "wall_s": round(raw["wall_s"], 1), "search_s": round(raw["search_s"], 1),
                "final_error": raw.get("final_error"), "virtual_clock_waits": raw.get("virtual_clock_waits"),
                "events": raw["events"], "configs": raw["configs"],
            }
            path = raw_path(out, workload_name, seed, method)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(_json_safe(record), indent=None, default=str))
            written.append(path)
            print(f"== {workload_name} seed {seed}: {method}: test {C.fmt(m['test_acc'], 4)}, best val {C.fmt(m['best_val'], 4)}, "
                  f"{m['trials']} trials, {m['trial_epochs']:.1f} trial-epochs, train share {m['train_share']:.2f}, "
                  f"completed {m['completed']}, levels {m['levels']}; wrote {path}", flush=True)
            del data
            gc.collect()
    finally:
        C.kill_own_ray()
        shutil.rmtree(storage, ignore_errors=True)
    return written


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def add_args(parser: Any) -> None:
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help=f"seeds to run (declared: {SEEDS[0]}-{SEEDS[-1]})")
    parser.add_argument("--methods", nargs="+", default=["main"],
                        help="main (hpsearch and the peers), ablations (hpsearch and its variants), all, or method names")
    parser.add_argument("--workload", default="glyphs", choices=sorted(WORKLOADS))
    parser.add_argument("--summarize", action="store_true", help="only rebuild the summary from the raw files")


def selected(methods: list[str]) -> list[str]:
    chosen: list[str] = []
    for item in methods:
        group = {"main": MAIN, "ablations": (HPSEARCH, *ABLATIONS), "all": METHODS}.get(item, (item,))
        for m in group:
            if m not in METHODS:
                raise SystemExit(f"anytime.py: unknown method {m!r}; known: main, ablations, all, {', '.join(METHODS)}")
            if m not in chosen:
                chosen.append(m)
    return chosen


def main() -> None:
    import anytime_summary

    args = C.parse_args(__doc__.splitlines()[0], add_args)
    out = Path(args.out)
    if args.summarize:
        print(f"wrote {anytime_summary.summarize(out)}")
        return
    C.quiet_ray_env()
    methods = selected(args.methods)
    if args.smoke:
        workload_name, workload = "smoke", dict(SMOKE)
        seeds = args.seeds or [SEEDS[0]]
    else:
        workload_name, workload = args.workload, WORKLOADS[args.workload]
        seeds = args.seeds or list(SEEDS)
        undeclared = [s for s in seeds if s not in SEEDS]
        if undeclared:
            raise SystemExit(f"anytime.py: seeds {undeclared} were not declared before the runs (SEEDS {SEEDS[0]}-{SEEDS[-1]})")
    root = str(glyphs.default_root().parent / f"glyphs-{workload['train']}-s{workload['generation_seed']}")
    manifest = glyphs.generate(root, seed=workload["generation_seed"], n_train=workload["train"], n_test=workload["test"])
    if workload.get("label_noise"):
        manifest = glyphs.with_label_noise(manifest, workload["label_noise"], seed=workload["generation_seed"])
    print(f"data: glyphs under {manifest['root']} ({'reused' if manifest['reused'] else 'generated'}), sha {glyphs.data_sha(manifest)}",
          flush=True)
    for seed in seeds:
        run_seed(workload_name, workload, seed, methods, manifest["root"], out, smoke=args.smoke)
        print(f"summary: {anytime_summary.summarize(out)}", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
