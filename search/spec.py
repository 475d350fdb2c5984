"""Search specs: YAML files in `spaces/` → validated, frozen `SearchSpec`.

Every mistake becomes one `UserError` line that names the file, the key and
the fix; nothing is run or written before a spec is valid. The format:

    name: quickstart                 # experiment name (MLflow experiment, results folder)
    dataset: {name: digits, ...}     # a registered data set + its options (+ normalize), or the user's
                                     #   loader: path/to/data.py:load (trainables/user_data.py)
    model: cnn                       # a registered model, torchvision.<builder> (trainables/zoo.py), or the
                                     #   user's path/to/nets.py:Class / package.module:factory
    metric: val_acc                  # val_acc (max) | val_loss (min) | val_top5 (max)
    mode: max
    seed: 0                          # sampler seed, data split seed, every trial's torch seed
    device: auto                     # auto | cpu | cuda | mps
    budget: {samples, max_epochs, grace_period, reduction_factor, max_concurrent,
             time_budget, report_every, scheduler, reproducible}
                                     # scheduler: asha (with promotions: pause at a rung, resume the
                                     #   top 1/reduction_factor; the default) | asha-stop (Ray's) | fifo
                                     # reproducible: true (default; asha: the seed gives the same search
                                     #   whatever the timing) | false (decide as results arrive: no waiting)
                                     # report_every: auto (default) | epoch | training samples per round
    resources: {cpu: 1, gpu: 0}      # per trial; gpu may be fractional (0.25 = 4 trials per GPU)
    baseline: {...}                  # every hyperparameter: the hand-tuned config, run first
    space:                           # what is searched; the rest stays at the baseline
      lr: {loguniform: [1.0e-4, 1.0e-1]}
      momentum: {uniform: [0.0, 0.99], when: {optimizer: sgd}}
      batch_size: {choice: [32, 64, 128]}
      hidden: {int: [32, 512], log: true}
"""
from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from trainables import metrics as M
from trainables.data import DATASETS, dataset_options, is_loaded_loader, resolve_loader
from trainables.errors import UserError
from trainables.models import MODELS, resolve_model
from trainables.references import canonical_reference, is_reference, object_name
from trainables.train import TRAIN_DEFAULTS, TRAIN_HPARAMS, RunSettings, split_hparams, validate_train_hparams

SCHEDULERS = ("asha", "asha-stop", "fifo")  # budget.scheduler (search.schedulers)
DISTRIBUTIONS = ("loguniform", "uniform", "int", "choice")
TOP_KEYS = {"name", "description", "dataset", "model", "metric", "mode", "seed", "device", "budget", "resources", "baseline", "space",
            "warm_start"}
REQUIRED_TOP = ("name", "dataset", "model", "baseline")
# Every default of a spec's budget and resources, in one place (training defaults: trainables.train.TrainHparams,
# model defaults: the model's signature). A spec lists only what differs.
BUDGET_DEFAULTS: dict[str, Any] = {
    "samples": 16,  # trials in all, the baseline first
    "max_epochs": 10,  # epochs a trial may train (ASHA's max_t, in rounds: see report_every)
    "grace_period": 1,  # epochs before a trial meets its first rung
    "reduction_factor": 4,  # the top 1/4 of a rung go on; why 4: benchmarks/README.md ("reduction factor 4")
    "max_concurrent": 2,  # trials in flight
    "time_budget": None,  # wall time of the search: seconds, or "90s", "10m", "2h"; None = until `samples` are done
    "report_every": "auto",  # a round: "auto", "epoch", or a number of training samples (search.rounds)
    "scheduler": "asha",  # asha (with promotions) | asha-stop (Ray's stopping ASHA) | fifo
    "reproducible": True,  # asha: decisions on a virtual clock, so the seed gives the same search whatever the timing
    "auto_rounds": False,  # set by hpsearch when it sized the rounds itself (report_every: auto): rung 1 = one round
}
RESOURCE_DEFAULTS: dict[str, Any] = {
    "cpu": 1,  # CPUs per trial (its torch threads)
    "gpu": 0,  # GPUs per trial; a fraction shares one (0.25 = 4 trials per GPU)
}
PARAM_KEYS = set(DISTRIBUTIONS) | {"log", "when"}
DATASET_COMMON = {"name", "normalize", "train_subset"}  # every data set takes these (trainables.data.create_dataset)


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter: a distribution plus an optional condition."""

    name: str
    kind: str  # loguniform | uniform | int | choice
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    log: bool = False
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # all must hold: config[key] in values

    def active(self, config: dict[str, Any]) -> bool:
        """Whether this parameter applies under `config` (its `when` conditions hold)."""
        return all(config.get(key) in values for key, values in self.when)

    def contains(self, value: Any) -> bool:
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and int(value) != value:
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def describe(self) -> str:
        if self.kind == "choice":
            return f"choice {list(self.choices)}"
        return f"{self.kind} [{self.low}, {self.high}]" + (" log" if self.log and self.kind == "int" else "")


@dataclass(frozen=True)
class Budget:
    samples: int
    max_epochs: int
    grace_period: int
    reduction_factor: float
    max_concurrent: int
    time_budget_s: float | None
    report_every: int | None | str  # training samples per report; None = one epoch; "auto" until resolved (search.rounds)
    scheduler: str = "asha"  # asha | asha-stop | fifo (search.schedulers)
    reproducible: bool = True  # asha: search.schedulers.ReproducibleASHA (same seed, same search); false: PromotionASHA
    auto_rounds: bool = False  # the rounds were sized by `auto`: the first rung is one round


@dataclass(frozen=True)
class Resources:
    cpu: float
    gpu: float


@dataclass(frozen=True)
class SearchSpec:
    """A validated spec. `raw` is the resolved spec (defaults filled in), as logged to MLflow."""

    name: str
    path: str
    dataset: str
    dataset_options: dict[str, Any]
    model: str
    metric: str
    mode: str
    seed: int
    device: str
    budget: Budget
    resources: Resources
    baseline: dict[str, Any]
    space: tuple[Param, ...]
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    # the user's own model factory / data loader (file.py:Name or an object from Python), resolved once here
    model_factory: Any = field(default=None, compare=False, repr=False)
    dataset_loader: Any = field(default=None, compare=False, repr=False)
    warm_start: tuple[str, ...] = ()  # earlier searches (names in the same storage) whose trials start this one (search.warm)

    def settings(self, *, max_epochs: int | None = None) -> RunSettings:
        """The fixed run settings every trial of this spec shares."""
        return RunSettings(
            model=self.model, max_epochs=max_epochs or self.budget.max_epochs, seed=self.seed,
            metric=self.metric, mode=self.mode,
            report_every=None if self.budget.report_every == "auto" else self.budget.report_every,
            threads=max(1, int(self.resources.cpu)), device=self.device, model_factory=self.model_factory,
        )

    def load_data(self) -> Any:
        """The spec's data set, decoded and normalised (a `trainables.data.DataBundle`)."""
        from trainables.data import create_dataset

        return create_dataset(self.dataset, loader=self.dataset_loader, **self.dataset_options)

    def with_budget(self, **changes: Any) -> "SearchSpec":
        """The spec with budget fields replaced (already-validated values: search.rounds resolving `auto`).

        `raw` follows, so a resumed search re-reads the same budget; `report_every` is written there as the
        spec would say it (None = 'epoch')."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(Budget)}
        if unknown:
            raise ValueError(f"with_budget takes Budget fields, but got {sorted(unknown)}")
        raw_budget = dict(self.raw.get("budget") or {})
        for key, value in changes.items():
            raw_key = "time_budget" if key == "time_budget_s" else key
            raw_budget[raw_key] = "epoch" if key == "report_every" and value is None else value
        return dataclasses.replace(self, budget=dataclasses.replace(self.budget, **changes), raw={**self.raw, "budget": raw_budget})

    def baseline_point(self) -> dict[str, Any]:
        """The baseline's values of the searched parameters that are active under it."""
        return {p.name: self.baseline[p.name] for p in self.space if p.active(self.baseline)}

    def full_config(self, sampled: dict[str, Any]) -> dict[str, Any]:
        """A trial's complete hyperparameters: the baseline overridden by the sampled values."""
        return {**self.baseline, **sampled}


# ----------------------------------------------------------------------------------------------


def candidate_values(param: Param) -> list[Any]:
    """The values of a searched parameter worth checking before a search: every choice, or both bounds."""
    if param.kind == "choice":
        return list(param.choices)
    return [param.low, param.high]


def _check_training_values(path: str, baseline: dict[str, Any], space: list[Param]) -> None:
    """The baseline's and every choice's / bound's training values, as the training loop checks them."""
    train = {k: baseline[k] for k in TRAIN_HPARAMS if k in baseline}
    if len(train) < len(TRAIN_HPARAMS):
        return  # split_hparams already named what is missing
    try:
        validate_train_hparams(train)
    except UserError as exc:
        raise _err(path, f"baseline: {exc}") from None
    for param in space:
        if param.name not in TRAIN_HPARAMS:
            continue
        for value in candidate_values(param):
            try:
                validate_train_hparams({**train, param.name: value})
            except UserError as exc:
                raise _err(path, f"space.{param.name}: {value!r} is refused by the training loop ({exc}); "
                                 f"remove it from space.{param.name}") from None


def check_model_values(spec: SearchSpec, data: Any) -> None:
    """Build the network for every choice / bound of each searched model hyperparameter (on PyTorch's meta
    device: no memory, no compute) and run it on a batch of the data's shape: a value the model refuses is
    one line before any trial. Skipped for a model that cannot be built on the meta device at all."""
    import torch

    from trainables.models import create_model
    from trainables.train import split_hparams

    shape = {"num_classes": data.num_classes, "in_channels": data.channels, "image_size": list(data.image_size)}

    def build(config: dict[str, Any]) -> None:
        _, model_hp = split_hparams(spec.model, config, spec.model_factory)
        with torch.device("meta"):
            model = create_model(spec.model, factory=spec.model_factory, **shape, **model_hp)
            model.eval()(torch.empty(2, data.channels, *data.image_size))

    try:
        build(spec.baseline)
    except Exception:  # noqa: BLE001 - the baseline's real build on the CPU (dry_forward) is the check then
        return
    for param in spec.space:
        if param.name in TRAIN_HPARAMS:
            continue
        for value in candidate_values(param):
            try:
                build({**spec.baseline, param.name: value})
            except Exception as exc:  # noqa: BLE001 - whatever the model raises is the user's to see, in one line
                text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
                raise UserError(f"{spec.path}: space.{param.name}: {value!r} is refused by model {spec.model!r} "
                                f"({text}); remove it from space.{param.name}") from None


def load_spec(path: str | Path, overrides: Iterable[str] = (), *, model: Any = None, dataset: Any = None) -> SearchSpec:
    """Read, override (`key.sub=value`) and validate a spec file; `model` / `dataset` are Python objects
    (an nn.Module class or factory, a loader function) that replace the file's `model` / `dataset.name`."""
    path = Path(path)
    if not path.is_file():
        hint = ""
        spaces = Path("spaces")
        if spaces.is_dir():
            hint = f" (specs here: {', '.join(sorted(p.name for p in spaces.glob('*.yaml')))})"
        raise UserError(f"spec file {path} does not exist{hint}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise UserError(f"{path}: malformed YAML at {where}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: a spec must be a YAML mapping (name:, dataset:, model: ...), but got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item, path)
    with_objects(raw, model=model, dataset=dataset)
    return parse_spec(raw, str(path))


def with_objects(raw: dict[str, Any], *, model: Any = None, dataset: Any = None) -> dict[str, Any]:
    """Put Python objects into a raw spec (in place): they are registered under `python:module.Name`.
    The options of the spec's data set that the loader does not take are dropped (they were the replaced set's)."""
    if model is not None:
        raw["model"] = object_name(model)
        resolve_model(raw["model"], model)
    if dataset is not None:  # the spec's data set options go on only where the loader takes them
        ds = raw.get("dataset")
        name = object_name(dataset)
        accepted, open_options = dataset_options(name, resolve_loader(name, dataset))
        options = {k: v for k, v in (dict(ds) if isinstance(ds, dict) else {}).items()
                   if open_options or k in accepted | DATASET_COMMON}
        raw["dataset"] = {**options, "name": name}
    return raw


def apply_override(raw: dict[str, Any], item: str, path: str | Path = "<spec>") -> None:
    """Apply one `--set a.b=value` (value parsed as YAML) to the raw spec dict, in place."""
    if "=" not in item:
        raise UserError(f"--set {item!r} must look like key=value, e.g. budget.samples=8 or baseline.lr=0.01")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part, {}), dict):
            raise UserError(f"--set {item!r}: {part!r} in {path} is not a mapping")
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _err(path: str, message: str) -> UserError:
    return UserError(f"{path}: {message}")


def _check_keys(path: str, where: str, given: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise _err(path, f"unknown key {unknown[0]!r} in {where}; allowed: {', '.join(sorted(allowed))}")


def _number(path: str, where: str, value: Any, *, integer: bool = False, minimum: float | None = None) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer and int(value) != value:
        ok = False
    if not ok:
        kind = "an integer" if integer else "a number"
        raise _err(path, f"{where} must be {kind}, but got {value!r}")
    if minimum is not None and value < minimum:
        raise _err(path, f"{where} must be >= {minimum}, but got {value}")
    return int(value) if integer else float(value)


def parse_duration(text: Any, path: str = "<spec>") -> float | None:
    """Seconds from 90, "90s", "10m", "1.5h" or None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*", str(text))
        if not m:
            raise _err(path, f"time_budget must look like 600, 90s, 10m or 2h, but got {text!r}")
        seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if seconds <= 0:
        raise _err(path, f"time_budget must be > 0, but got {text!r}")
    return seconds


def _parse_param(path: str, name: str, entry: Any) -> Param:
    where = f"space.{name}"
    if not isinstance(entry, dict):
        raise _err(path, f"{where} must be a mapping like {{loguniform: [1.0e-4, 1.0e-1]}}, but got {entry!r}")
    _check_keys(path, where, entry, PARAM_KEYS)
    kinds = [k for k in DISTRIBUTIONS if k in entry]
    if len(kinds) != 1:
        raise _err(path, f"{where} needs exactly one distribution of {', '.join(DISTRIBUTIONS)}, but got {sorted(entry)}")
    kind, args = kinds[0], entry[kinds[0]]
    when = _parse_when(path, where, entry.get("when"))
    log = entry.get("log", False)
    if not isinstance(log, bool):
        raise _err(path, f"{where}.log must be true or false, but got {log!r}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise _err(path, f"{where}: choice needs a non-empty list of values, but got {args!r}")
        for v in args:
            if not (v is None or isinstance(v, (bool, int, float, str))):
                raise _err(path, f"{where}: choice values must be numbers, strings or booleans (write lists as '16-32-64'), but got {v!r}")
        return Param(name, kind, choices=tuple(args), when=when)
    if not isinstance(args, list) or len(args) != 2:
        raise _err(path, f"{where}: {kind} needs [low, high], but got {args!r}")
    low = _number(path, f"{where} low", args[0], integer=kind == "int")
    high = _number(path, f"{where} high", args[1], integer=kind == "int")
    if low > high:
        raise _err(path, f"{where}: low must be <= high, but got low={args[0]} > high={args[1]}")
    if (kind == "loguniform" or log) and low <= 0:
        raise _err(path, f"{where}: a log scale needs low > 0, but got low={args[0]}")
    return Param(name, kind, low=low, high=high, log=log or kind == "loguniform", when=when)


def _parse_when(path: str, where: str, when: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if when is None:
        return ()
    if not isinstance(when, dict) or not when:
        raise _err(path, f"{where}.when must be a mapping like {{optimizer: sgd}}, but got {when!r}")
    return tuple((str(k), tuple(v) if isinstance(v, list) else (v,)) for k, v in when.items())


def _section(path: str, raw: dict[str, Any], key: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """An optional mapping section (budget, resources) with its defaults filled in."""
    given = raw.get(key) or {}
    if not isinstance(given, dict):
        raise _err(path, f"{key} must be a mapping with keys {', '.join(defaults)}, but got {given!r}")
    _check_keys(path, key, given, set(defaults))
    return {**defaults, **given}


def parse_spec(raw: dict[str, Any], path: str = "<spec>") -> SearchSpec:
    """Validate a raw spec mapping (see the module docstring); `path` names it in errors."""
    _check_keys(path, "the spec", raw, TOP_KEYS)
    for key in REQUIRED_TOP:
        if key not in raw:
            raise _err(path, f"missing required key {key!r}")
    name = raw["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise _err(path, f"name must be letters, digits, '-', '_' or '.', but got {name!r}")

    # data set ------------------------------------------------------------------------------
    ds = raw["dataset"]
    if isinstance(ds, str):
        ds = {"name": ds}
    if not isinstance(ds, dict) or "name" not in ds:
        raise _err(path, f"dataset must be a mapping with a name (one of {', '.join(DATASETS.names())}), but got {raw['dataset']!r}")
    base_dir = Path(path).parent if path and not path.startswith("<") and ":" not in path else None
    ds = dict(ds)
    if is_reference(ds["name"]):  # the user's loader: file.py:load / package.module:load
        try:
            if not is_loaded_loader(ds["name"]):
                ds["name"] = canonical_reference(ds["name"], base_dir=base_dir, kind="dataset")
            resolve_loader(ds["name"])
        except UserError as exc:
            raise _err(path, str(exc)) from None
    elif ds["name"] not in DATASETS.names():
        raise _err(path, f"unknown dataset {ds['name']!r}; choose one of: {', '.join(DATASETS.names())}, "
                         "or name your own loader as path/to/file.py:function")
    accepted, open_options = dataset_options(ds["name"])
    if not open_options:
        _check_keys(path, f"dataset ({ds['name']})", ds, accepted | DATASET_COMMON)
    seed = _number(path, "seed", raw.get("seed", 0), integer=True, minimum=0)
    options = {k: v for k, v in ds.items() if k != "name"}
    fractions = {k: v for k, v in options.items() if k.endswith("_fraction")}
    for key, value in fractions.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise _err(path, f"dataset.{key} must be a fraction in [0, 1), but got {value!r}")
    if sum(fractions.values()) >= 1:
        raise _err(path, f"dataset {' + '.join(f'{k}={v}' for k, v in fractions.items())} = {sum(fractions.values()):g} "
                         "leaves no training images; make the fractions sum to less than 1")
    subset = options.get("train_subset", 1.0)
    if isinstance(subset, bool) or not isinstance(subset, (int, float)) or not 0 < subset <= 1:
        raise _err(path, f"dataset.train_subset must be a fraction in (0, 1] of the training images, but got {subset!r}")
    if "seed" in accepted:
        options.setdefault("seed", seed)

    # model, metric ------------------------------------------------------------------------
    model = raw["model"]
    if not isinstance(model, str):
        raise _err(path, f"model must be a name, torchvision.<builder> or path/to/file.py:Class, but got {model!r}")
    try:
        source = resolve_model(model, base_dir=base_dir)
    except UserError as exc:
        choices = f"; registered models: {', '.join(MODELS.names())}, torchvision.<builder>, or path/to/file.py:Class"
        raise _err(path, str(exc) + ("" if is_reference(model) or model.startswith("torchvision.") else choices)) from None
    model = source.name
    metric = raw.get("metric", M.VAL_ACC)
    if metric not in M.SELECTABLE:
        raise _err(path, f"metric must be one of {', '.join(M.SELECTABLE)}, but got {metric!r}")
    mode = raw.get("mode", M.SELECTABLE[metric])
    if mode not in ("max", "min"):
        raise _err(path, f"mode must be max or min, but got {mode!r}")
    device = raw.get("device", "auto")
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise _err(path, f"device must be auto, cpu, cuda or mps, but got {device!r}")

    # budget, resources --------------------------------------------------------------------
    b = _section(path, raw, "budget", BUDGET_DEFAULTS)
    report_every = b["report_every"]
    if report_every not in ("epoch", "auto"):
        report_every = _number(path, "budget.report_every ('auto', 'epoch' or a number of training samples)", report_every, integer=True, minimum=1)
    if b["scheduler"] not in SCHEDULERS:
        raise _err(path, f"budget.scheduler must be one of {', '.join(SCHEDULERS)}, but got {b['scheduler']!r}")
    for key in ("auto_rounds", "reproducible"):
        if not isinstance(b[key], bool):
            raise _err(path, f"budget.{key} must be true or false, but got {b[key]!r}")
    budget = Budget(
        samples=_number(path, "budget.samples", b["samples"], integer=True, minimum=1),
        max_epochs=_number(path, "budget.max_epochs", b["max_epochs"], integer=True, minimum=1),
        grace_period=_number(path, "budget.grace_period", b["grace_period"], integer=True, minimum=1),
        reduction_factor=_number(path, "budget.reduction_factor", b["reduction_factor"], minimum=1.01),
        max_concurrent=_number(path, "budget.max_concurrent", b["max_concurrent"], integer=True, minimum=1),
        time_budget_s=parse_duration(b["time_budget"], path),
        report_every=None if report_every == "epoch" else report_every,
        scheduler=b["scheduler"], reproducible=b["reproducible"], auto_rounds=b["auto_rounds"],
    )
    if budget.grace_period > budget.max_epochs:
        raise _err(path, f"budget.grace_period ({budget.grace_period}) must be <= budget.max_epochs ({budget.max_epochs})")
    r = _section(path, raw, "resources", RESOURCE_DEFAULTS)
    resources = Resources(cpu=_number(path, "resources.cpu", r["cpu"], minimum=0.01), gpu=_number(path, "resources.gpu", r["gpu"], minimum=0))
    if resources.gpu > 1 and resources.gpu != int(resources.gpu):
        raise _err(path, f"resources.gpu above 1 must be a whole number, but got {resources.gpu}")

    # baseline and space -------------------------------------------------------------------
    baseline = raw["baseline"]
    if not isinstance(baseline, dict):
        raise _err(path, f"baseline must be a mapping of hyperparameter: value (what differs from the defaults), but got {baseline!r}")
    hp_names = set(TRAIN_HPARAMS) | set(source.hparams)
    given = dict(baseline)
    baseline = {**TRAIN_DEFAULTS, **given}  # a baseline lists only what differs from the defaults (TrainHparams)
    for key in given:
        if key not in hp_names and not source.open_kwargs:
            raise _err(path, f"baseline.{key}: model {model!r} and the training loop do not take {key!r}; they take: {', '.join(sorted(hp_names))}")
    try:
        split_hparams(model, baseline, source.factory if source.kind == "user" else None)
    except UserError as exc:
        raise _err(path, f"baseline: {exc}") from None
    sraw = raw.get("space") or {}
    if not isinstance(sraw, dict):
        raise _err(path, f"space must be a mapping of hyperparameter: distribution, but got {sraw!r}")
    space = []
    if source.open_kwargs:  # a factory with **kwargs takes any key: what is searched or set is passed on
        hp_names |= set(sraw) | set(baseline)
    for pname, entry in sraw.items():
        if pname not in hp_names:
            raise _err(path, f"space.{pname}: model {model!r} and the training loop do not take {pname!r}; they take: {', '.join(sorted(hp_names))}")
        space.append(_parse_param(path, pname, entry))
    names = {p.name for p in space}
    for p in space:
        for key, _ in p.when:
            if key not in hp_names:
                raise _err(path, f"space.{p.name}.when names {key!r}, which is not a hyperparameter")
            if key == p.name:
                raise _err(path, f"space.{p.name}.when cannot depend on itself")
        if not p.active(baseline):
            continue
        if p.name not in baseline:
            has_default, default = source.default(p.name)
            if not has_default:
                raise _err(path, f"space.{p.name} has no baseline value and model {model!r} no default for it; "
                                 f"add baseline.{p.name} (the search starts from the baseline)")
            baseline[p.name] = default
        if not p.contains(baseline[p.name]):
            raise _err(path, f"baseline {p.name}={baseline[p.name]!r} is outside space.{p.name} ({p.describe()}); widen the space or fix the baseline")
    _check_training_values(path, baseline, space)
    order = [p.name for p in space]
    for p in space:  # a condition on a searched parameter must refer to one sampled before it
        for key, _ in p.when:
            if key in names and order.index(key) > order.index(p.name):
                raise _err(path, f"space.{p.name}.when refers to {key!r}, which is listed after it; list {key!r} first")

    warm_start = raw.get("warm_start") or []
    warm_start = [warm_start] if isinstance(warm_start, str) else warm_start
    if not isinstance(warm_start, list) or not all(isinstance(n, str) and n for n in warm_start):
        raise _err(path, f"warm_start must be a list of earlier search names, but got {raw.get('warm_start')!r}")
    resolved = {
        "name": name, "description": raw.get("description", ""), "dataset": {"name": ds["name"], **options},
        "model": model, "metric": metric, "mode": mode, "seed": seed, "device": device,
        "budget": b, "resources": r, "baseline": dict(baseline), "space": sraw,
        **({"warm_start": list(warm_start)} if warm_start else {}),
    }
    return SearchSpec(
        name=name, path=path, dataset=ds["name"], dataset_options=options, model=model, metric=metric, mode=mode,
        seed=seed, device=device, budget=budget, resources=resources, baseline=dict(baseline), space=tuple(space),
        description=str(raw.get("description", "")), raw=resolved,
        model_factory=source.factory if source.kind == "user" else None,
        dataset_loader=resolve_loader(ds["name"]) if is_reference(ds["name"]) else None, warm_start=tuple(warm_start),
    )
