"""Record full learning curves once, for `benchmarks/simulate.py` to replay at many workers.

N configurations of one search space (config 0 is the space's baseline, the rest are drawn at
random, seeded) are each trained to `max_epochs` with hpsearch's own `trainables.train.Trainer`,
one torch thread per configuration, `--workers` processes in parallel. Every round (an epoch, or
`--report-every` training samples) records val_acc, val_loss, the round's wall seconds (training
+ val evaluation, what a trial's round costs) and the epoch reached. The curves go to one compact
JSON file (`OUT/runs/record_curves/curves_NAME.json`, OUT `--out`, default benchmarks/results:
the spec-style space, baseline and data set, the configurations, the curves rounded to 4 digits,
the machine), rewritten after every finished configuration: stop it at any time and run the
same command again, it skips the configurations already in the file (a second sitting must use
the same space, data and rounds; it refuses otherwise).

    python benchmarks/record_curves.py                      # 64 configs on the glyph data (see below)
    python benchmarks/record_curves.py --configs 96         # 32 more, the first 64 kept
    python benchmarks/record_curves.py --smoke              # digits, 4 configs, 3 epochs (seconds)

Defaults: the glyph data of `benchmarks/glyphs.py` (MNIST-format files, generated under
~/.cache/hpsearch/glyphs if absent, loaded as dataset `mnist` with 5,000 val images), a seeded
20,000-image subset of its train split, 8 epochs, a round every 10,000 samples (16 rounds: with
grace 1 and reduction factor 4, rungs at rounds 1 and 4), the two-block `cnn`. Without
glyphs.py: scikit-learn's digits, one epoch per round. The space is `SPACE`/`BASELINE` of
benchmarks/anytime.py when that file defines them, else `--space SPEC.yaml`'s, else the one below.

Run time (estimate, 2-core AMD EPYC, 1 thread per config, 2 workers): the two-block cnn trains at
about 1,300-5,000 samples/s per thread on 28x28 images depending on its width (8-16 ... 32-64,
batch norm costs ~25 % more) and evaluates at 1,500-10,000 images/s, so one configuration
(160,000 training samples + 16 x 5,000 val images) takes about 1.5-3.5 minutes and 64 (+ 2 repeats
of the baseline with other torch seeds, `--seed-repeats`) take **about an hour** (50-70 minutes)
with 2 workers. The script prints an ETA after each config.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

FORMAT = "hpsearch-curves/1"
DIGITS = 4  # decimals kept for every recorded value
RECORD_STREAM = 0x6375727665  # entropy of the configurations' random streams ("curve")

# The search space when benchmarks/anytime.py does not define one (spec-style, as in spaces/*.yaml).
DEFAULT_SPACE: dict[str, Any] = {
    "lr": {"loguniform": [1.0e-4, 3.0e-2]},
    "channels": {"choice": ["8-16", "16-32", "32-64"]},
    "hidden": {"int": [32, 256], "log": True},
    "dropout": {"uniform": [0.0, 0.5]},
    "batch_norm": {"choice": [True, False]},
    "weight_decay": {"choice": [0.0, 1.0e-4, 1.0e-3]},
    "batch_size": {"choice": [32, 64, 128]},
}
DEFAULT_BASELINE: dict[str, Any] = {  # the two-block cnn of glyphs.py's epoch timing; every training default of quickstart
    "optimizer": "adam", "lr": 0.001, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0, "batch_size": 64,
    "label_smoothing": 0.0, "schedule": "none", "step_size": 5, "gamma": 0.1, "hflip": False, "rotation": 0.0,
    "translate": 0.0, "crop_padding": 0, "channels": "16-32", "width_mult": 1.0, "kernel_size": 3, "pool": True,
    "batch_norm": False, "hidden": 64, "dropout": 0.0,
}
GLYPH_DEFAULTS = {"train_subset": 20000, "max_epochs": 8, "report_every": 10000}
DIGITS_DEFAULTS = {"train_subset": None, "max_epochs": 12, "report_every": None}
SMOKE = {"configs": 4, "max_epochs": 3, "report_every": None, "train_subset": None}

EPILOG = """commands:
  python benchmarks/record_curves.py                 # 64 configs, glyphs (20,000 train images), 8 epochs, 16 rounds: ~1 hour on 2 cores
  python benchmarks/record_curves.py --configs 128   # extends the same file (the first 64 are kept)
  python benchmarks/simulate.py benchmarks/results/runs/record_curves/curves_glyphs.json   # replay them
"""


# ----------------------------------------------------------------------------------------------
# What is recorded: the spec, the data set, the configurations


def _anytime_space() -> tuple[dict[str, Any], dict[str, Any], str] | None:
    """SPACE and BASELINE of benchmarks/anytime.py, when it exists and defines them."""
    path = Path(__file__).with_name("anytime.py")
    if not path.is_file():
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("_anytime_for_curves", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except Exception as exc:  # noqa: BLE001 - someone's work in progress must not stop a recording
        print(f"note: benchmarks/anytime.py did not import ({type(exc).__name__}: {exc}); using the default space")
        return None
    space, baseline = getattr(module, "SPACE", None), getattr(module, "BASELINE", None)
    if not isinstance(space, dict):
        return None
    return dict(space), {**DEFAULT_BASELINE, **(baseline or {})}, "benchmarks/anytime.py"


def choose_space(space_file: str | None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(space, baseline, where they came from): --space FILE, else anytime.py's, else DEFAULT_SPACE."""
    if space_file:
        import yaml

        raw = yaml.safe_load(Path(space_file).read_text())
        return dict(raw["space"]), {**DEFAULT_BASELINE, **raw.get("baseline", {})}, str(space_file)
    found = _anytime_space()
    if found is not None:
        return found
    return dict(DEFAULT_SPACE), dict(DEFAULT_BASELINE), "benchmarks/record_curves.py DEFAULT_SPACE"


def _glyphs_module() -> Any:
    if not Path(__file__).with_name("glyphs.py").is_file():
        return None
    import glyphs  # noqa: PLC0415 - benchmarks/ is on sys.path (the script's folder)

    return glyphs


def default_dataset(smoke: bool) -> tuple[dict[str, Any], str]:
    """The data set mapping (spec style) and a short name: glyphs when benchmarks/glyphs.py exists, else digits."""
    glyphs = None if smoke else _glyphs_module()
    if glyphs is None:
        return {"name": "digits"}, "digits"
    root = glyphs.default_root()
    manifest = glyphs.generate(root)  # reuses matching files; generates them (once) otherwise
    return dict(glyphs.spec_dataset(manifest["root"])), "glyphs"


def build_spec(dataset: dict[str, Any], space: dict[str, Any], baseline: dict[str, Any], *, max_epochs: int,
               report_every: int | None, seed: int, name: str) -> Any:
    """A validated spec (search.spec) holding what the curves are of: data, model, space, baseline, rounds."""
    from search.spec import parse_spec

    raw = {
        "name": f"curves-{name}", "dataset": dict(dataset), "model": "cnn", "metric": "val_acc", "mode": "max", "seed": seed,
        "device": "cpu",
        "budget": {"max_epochs": max_epochs, "grace_period": 1, "report_every": report_every or "epoch"},
        "resources": {"cpu": 1, "gpu": 0}, "baseline": dict(baseline), "space": dict(space),
    }
    return parse_spec(raw, "benchmarks/record_curves.py")


def sample_configs(spec: Any, n: int, seed: int, *, baseline_first: bool = True) -> list[dict[str, Any]]:
    """n configurations: the baseline's searched values first, then random ones; config i depends only on (seed, i)."""
    import numpy as np
    import optuna

    from search.space import DefineByRun

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = DefineByRun(spec.space, spec.baseline)
    out = []
    for i in range(n):
        if i == 0 and baseline_first:
            out.append(spec.baseline_point())
            continue
        # a seed of its own per (seed, i): a replay's TPE (seeded 0, 1, 2, ...) must not redraw these exact points
        stream = int(np.random.SeedSequence([RECORD_STREAM, seed, i]).generate_state(1)[0])
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=stream))
        trial = study.ask()
        space(trial)
        out.append(dict(trial.params))
    return out


def subset_indices(labels: Any, size: int | None, seed: int) -> Any:
    """A stratified, seeded subset of `size` indices of `labels` (all of them when size is None or too large)."""
    import numpy as np

    from trainables.data import stratified_split

    if size is None or size >= len(labels):
        return np.arange(len(labels))
    chosen, _ = stratified_split(labels, [size / len(labels)], seed)
    return np.sort(chosen)


def load_data(spec: Any, train_subset: int | None, val_subset: int | None) -> Any:
    from dataclasses import replace

    from trainables.data import create_dataset

    data = create_dataset(spec.dataset, **spec.dataset_options)
    train = data.train.subset(subset_indices(data.train.labels, train_subset, spec.seed))
    val = data.val.subset(subset_indices(data.val.labels, val_subset, spec.seed))
    # normalisation stays that of the full train split (what a search on this data set uses)
    return replace(data, train=train, val=val)


# ----------------------------------------------------------------------------------------------
# Worker processes: one data set per process, one configuration per task


_WORKER: dict[str, Any] = {}


def _init_worker(raw_spec: dict[str, Any], train_subset: int | None, val_subset: int | None) -> None:
    import torch

    from search.spec import parse_spec

    torch.set_num_threads(1)
    spec = parse_spec(raw_spec, "benchmarks/record_curves.py")
    _WORKER.update(spec=spec, data=load_data(spec, train_subset, val_subset))


def _r(value: Any) -> Any:
    value = float(value)
    return round(value, DIGITS) if math.isfinite(value) else None


def train_config(index: int, params: dict[str, Any], torch_seed: int | None = None) -> dict[str, Any]:
    """Train one configuration to max_epochs (or divergence) and return its curve; `torch_seed` replaces the
    spec's seed for the weights, dropout and batch order (a repeat of the baseline), not for the data split."""
    from dataclasses import replace

    from trainables import metrics as M
    from trainables.train import Trainer

    spec, data = _WORKER["spec"], _WORKER["data"]
    settings = spec.settings() if torch_seed is None else replace(spec.settings(), seed=int(torch_seed))
    started = time.perf_counter()
    trainer = Trainer(spec.full_config(params), data, settings)
    setup = time.perf_counter() - started
    curve: dict[str, list[Any]] = {"val_acc": [], "val_loss": [], "round_s": [], "epoch": []}
    try:
        while not trainer.finished:
            m = trainer.run_round()
            curve["val_acc"].append(_r(m[M.VAL_ACC]))
            curve["val_loss"].append(_r(m[M.VAL_LOSS]))
            curve["round_s"].append(_r(m[M.ROUND_SECONDS]))
            curve["epoch"].append(_r(m[M.EPOCH]))
    finally:
        trainer.close()
    return {"index": index, "params": params, "torch_seed": settings.seed,
            "status": M.STATUS_DIVERGED if trainer.diverged else M.STATUS_OK,
            "rounds": len(curve["val_acc"]), "setup_s": _r(setup), "wall_s": _r(time.perf_counter() - started), **curve}


# ----------------------------------------------------------------------------------------------
# The file


def _header(spec: Any, args: argparse.Namespace, data: Any, source: str, dataset_name: str) -> dict[str, Any]:
    from search import rounds as B

    rounds = B.plan(spec, len(data.train))
    return {
        "format": FORMAT, "name": args.name, "dataset_name": dataset_name,
        "spec": spec.raw, "space_source": source, "seed": args.seed, "baseline_first": not args.no_baseline,
        "train_subset": args.train_subset, "val_subset": args.val_subset, "n_train": len(data.train), "n_val": len(data.val),
        "data": data.summary(), "rounds_per_epoch": rounds.rounds_per_epoch, "total_rounds": rounds.total,
        "max_epochs": spec.budget.max_epochs, "report_every": spec.budget.report_every,
        "threads_per_config": 1,
    }


SAME_KEYS = ("spec", "seed", "baseline_first", "train_subset", "val_subset", "n_train", "n_val", "total_rounds")


def _curve_relevant(spec: Any) -> Any:
    """The spec minus the budget keys a recorded curve does not depend on (the scheduler's, and any default
    added to the spec format since the file was started, e.g. budget.reproducible)."""
    if not isinstance(spec, dict):
        return spec
    budget = spec.get("budget") or {}
    return {**spec, "budget": {k: budget.get(k) for k in ("max_epochs", "report_every")}}


def load_existing(path: Path, header: dict[str, Any], configs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The file of an earlier sitting, checked against this one (same spec, data, rounds, configurations)."""
    if not path.is_file():
        return None
    old = json.loads(path.read_text())
    if old.get("format") != FORMAT:
        raise SystemExit(f"{path}: not a {FORMAT} file (format {old.get('format')!r}); pick another --name or --output")
    for key in SAME_KEYS:
        was, now = (_curve_relevant(old.get(key)), _curve_relevant(header.get(key))) if key == "spec" else (old.get(key), header.get(key))
        if json.dumps(was, sort_keys=True, default=str) != json.dumps(now, sort_keys=True, default=str):
            raise SystemExit(f"{path} was recorded with another {key} ({old.get(key)!r} vs now {header.get(key)!r}); "
                             "use the same options to continue it, or another --name")
    for rec in old["configs"]:
        i = rec["index"]
        if i < len(configs) and json.dumps(rec["params"], sort_keys=True) != json.dumps(configs[i], sort_keys=True):
            raise SystemExit(f"{path}: config {i} was {rec['params']} but this sitting samples {configs[i]}; same --seed and space?")
    return old


def write_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def machine() -> dict[str, Any]:
    return {"cores": os.cpu_count(), "cpu": C.cpu_model(), "ram_gib": round(C.ram_gib(), 1), "versions": C.versions(),
            "code": C.CODE_REVISION}


# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=EPILOG + "\n" + __doc__.split("\n\n")[-1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="digits, 4 configs, 3 epochs (seconds): checks the script runs")
    p.add_argument("--name", default=None,
                   help="the curves file is OUT/runs/record_curves/curves_NAME.json (default: the data set's name; smoke: smoke)")
    p.add_argument("--out", default=str(C.RESULTS), help="results folder: the curves go to OUT/runs/record_curves/ (default benchmarks/results)")
    p.add_argument("--configs", type=int, default=64, help="configurations in all, the baseline first (default 64)")
    p.add_argument("--no-baseline", action="store_true", help="config 0 random too, not the space's baseline")
    p.add_argument("--seed", type=int, default=0, help="configurations, subsets, data split and torch seed (default 0)")
    p.add_argument("--workers", type=int, default=2, help="configurations trained in parallel, one process and torch thread each (default 2)")
    p.add_argument("--dataset", default=None,
                   help="a spec-style dataset mapping as YAML/JSON, e.g. '{name: mnist, root: ~/data, download: false}' "
                        "(default: glyphs if benchmarks/glyphs.py exists, else digits)")
    p.add_argument("--space", default=None, metavar="SPEC.yaml", help="take space and baseline from this spec")
    p.add_argument("--train-subset", type=int, default=-1, help="train images used (a stratified subset; default 20000 on glyphs, all otherwise; 0 = all)")
    p.add_argument("--val-subset", type=int, default=0, help="val images used (default 0 = all)")
    p.add_argument("--max-epochs", type=int, default=None, help="epochs per configuration (default 8 on glyphs, 12 otherwise)")
    p.add_argument("--report-every", default=None, help="training samples per round, or 'epoch' (default 10000 on glyphs, epoch otherwise)")
    p.add_argument("--seed-repeats", type=int, default=2,
                   help="train the baseline (config 0) this many more times with torch seeds seed+1, seed+2, ...: the "
                        "seed-to-seed spread simulate.py's --noise auto uses (default 2; smoke 1)")
    p.add_argument("--limit", type=int, default=None, help="train at most this many new configurations in this sitting")
    args = p.parse_args(argv)
    return args


def resolve(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    """Fill the data-set-dependent defaults of `args`; returns (dataset mapping, data set name)."""
    if args.dataset:
        import yaml

        dataset = yaml.safe_load(args.dataset)
        if isinstance(dataset, str):
            dataset = {"name": dataset}
        dataset_name = str(dataset["name"])
    else:
        dataset, dataset_name = default_dataset(args.smoke)
    defaults = GLYPH_DEFAULTS if dataset_name == "glyphs" else DIGITS_DEFAULTS
    if args.smoke:
        defaults = SMOKE
        args.configs = SMOKE["configs"]
        args.seed_repeats = min(args.seed_repeats, 1)
    if args.train_subset == -1:
        args.train_subset = defaults["train_subset"]
    args.train_subset = args.train_subset or None
    args.val_subset = args.val_subset or None
    if args.max_epochs is None:
        args.max_epochs = defaults["max_epochs"]
    if args.report_every is None:
        args.report_every = defaults["report_every"]
    elif str(args.report_every) == "epoch":
        args.report_every = None
    else:
        args.report_every = int(args.report_every)
    args.name = args.name or ("smoke" if args.smoke else dataset_name)
    return dataset, dataset_name


def main(argv: list[str] | None = None) -> None:
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from multiprocessing import get_context

    args = parse_args(argv)
    dataset, dataset_name = resolve(args)
    space, baseline, source = choose_space(args.space)
    spec = build_spec(dataset, space, baseline, max_epochs=args.max_epochs, report_every=args.report_every, seed=args.seed,
                      name=args.name)
    data = load_data(spec, args.train_subset, args.val_subset)
    header = _header(spec, args, data, source, dataset_name)
    del data
    configs = sample_configs(spec, args.configs, args.seed, baseline_first=not args.no_baseline)
    path = C.run_dir(args.out, "record_curves") / f"curves_{args.name}.json"
    old = load_existing(path, header, configs)
    records = {rec["index"]: rec for rec in (old or {}).get("configs", [])}
    repeats = {rec["torch_seed"]: rec for rec in (old or {}).get("repeats", [])}
    repeat_seeds = [args.seed + 1 + k for k in range(args.seed_repeats)] if not args.no_baseline else []
    # config 0 (the baseline) and its repeats first, so that a partial file already tells the seed-to-seed spread
    todo = [("config", i) for i in range(min(1, len(configs))) if i not in records]
    todo += [("repeat", s) for s in repeat_seeds if s not in repeats]
    todo += [("config", i) for i in range(1, len(configs)) if i not in records]
    if args.limit is not None:
        todo = todo[: args.limit]
    print(f"{header['data']}; train subset {header['n_train']}, val {header['n_val']}; {header['total_rounds']} rounds "
          f"of {args.report_every or 'one epoch'} samples ({args.max_epochs} epochs); space from {source}")
    print(f"{len(configs)} configurations + {len(repeat_seeds)} repeats of the baseline: {len(records) + len(repeats)} in {path} "
          f"already, {len(todo)} to train with {args.workers} workers")
    sitting = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": C.command_line(),
               "workers": args.workers, "machine": machine(), "trained": 0}
    payload = {**header, **{k: v for k, v in (old or {}).items() if k in ("sittings", "created")}}
    payload.setdefault("created", sitting["date"])
    payload["sittings"] = [*payload.get("sittings", []), sitting]
    payload["n_configs"] = len(configs)

    def save() -> None:
        payload["configs"] = [records[i] for i in sorted(records)]
        payload["repeats"] = [repeats[s] for s in sorted(repeats)]
        write_atomic(path, payload)

    started = time.perf_counter()
    with C.LoadWatch(interval=5.0) as load:
        if todo:
            pool = ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=get_context("spawn"),
                                       initializer=_init_worker, initargs=(spec.raw, args.train_subset, args.val_subset))
            try:
                jobs = {pool.submit(train_config, key if kind == "config" else 0, configs[key if kind == "config" else 0],
                                    None if kind == "config" else key): kind for kind, key in todo}
                pending = set(jobs)
                done_here = 0
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        rec = future.result()
                        if jobs[future] == "config":
                            records[rec["index"]] = rec
                        else:
                            repeats[rec["torch_seed"]] = rec
                        done_here += 1
                        elapsed = time.perf_counter() - started
                        eta = elapsed / done_here * (len(todo) - done_here)
                        sitting.update(trained=done_here, wall_s=round(elapsed, 1), load=load.summary())
                        save()
                        what = f"config {rec['index']:3d}" if jobs[future] == "config" else f"baseline, torch seed {rec['torch_seed']}"
                        print(f"{what} {rec['status']:8s} final val_acc {rec['val_acc'][-1]} best "
                              f"{max(a for a in rec['val_acc'] if a is not None)} in {rec['wall_s']:.0f} s "
                              f"({done_here}/{len(todo)}, {elapsed / 60:.1f} min, ETA {eta / 60:.0f} min) {rec['params']}", flush=True)
            except KeyboardInterrupt:
                print(f"interrupted: {len(records)} configurations and {len(repeats)} repeats are in {path}; "
                      "run the same command to continue")
                pool.shutdown(wait=False, cancel_futures=True)
                raise SystemExit(130)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        sitting.update(wall_s=round(time.perf_counter() - started, 1), load=load.summary())
    save()
    finals = sorted(rec["val_acc"][-1] or 0.0 for rec in records.values())
    print(f"wrote {path}: {len(records)} of {len(configs)} configurations; final val_acc min {finals[0]}, "
          f"median {finals[len(finals) // 2]}, max {finals[-1]}; this sitting {sitting['wall_s'] / 60:.1f} min")


if __name__ == "__main__":
    sys.exit(main())
