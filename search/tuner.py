"""Runs a search: one `tune.Tuner` over a spec, and its ending.

    RungAwareTPE (Optuna TPE, seeded, define-by-run space with conditions, baseline enqueued first;
      search.sampler, search.space) behind a limiter (ray#52535: no burst of random start-up trials)
    the spec's scheduler (search.schedulers): ASHA with promotions by default, on the `round` counter
    function trainable with the data set shared through the object store
    CheckpointConfig: checkpoints scored by the metric; after the search each trial keeps its best and
      last ones (search.checkpoints)
    FailureConfig: a failed trial is retried from its last checkpoint
    callbacks (search.callbacks): Tune's result logger, and the observers (stopping, progress, MLflow)
    before anything runs: the data, a dry forward pass, the cluster and the storage (search.cluster)
    after `Tuner.fit`: search.finalize hands over the best model (tested once, best/), the MLflow tracker
      logs what it is given, hpsearch.json records the outcome

`run_search` starts a search and `resume_search` continues one after Ctrl-C or a killed driver
(finished trials are kept, unfinished ones restart from their last checkpoint, the sampler's state
is restored from Tune's searcher state). `run_experiment` is `run_search` with `Components`
replacing hpsearch's own (benchmarks compare samplers and schedulers through it).

Storage is a local folder or a URI (s3://, gs://, any pyarrow filesystem, see search.storage and
search.layout): with a URI, Tune writes checkpoints and results there itself and the driver writes
its own files into a local mirror that is uploaded; the embedded MLflow store stays on the
driver's machine (./hpsearch-runs/mlflow.db unless --tracking-uri).
"""
from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import logging
import posixpath
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from unittest import mock

from search import layout as L
from search import results as R
from search import rounds as B
from search import storage as S
from search.callbacks import MirrorUpload, ResultLogger, SearchHooks, restoring
from search.checkpoints import prune_checkpoints
from search.cluster import check_data_on_nodes, check_resources, check_storage_reachable, connect
from search.finalize import FinalReport, finalize
from search.schedulers import PromotionASHA, ReproducibleASHA, build_scheduler, end_pauses, load_state
from search.space import DefineByRun
from search.spec import SearchSpec, apply_override, check_model_values, load_spec, parse_spec, with_objects
from search.stopping import UserErrorStop
from search.tracking.callback import TrackingInfo
from search.warm import WarmStart, load_warm_start
from trainables.data import DataBundle
from trainables.errors import UserError
from trainables.train import dry_forward

log = logging.getLogger(__name__)

# Tune deletes nothing while a search runs: with num_to_keep set, a checkpoint that Tune's last saved
# experiment state still points to can be deleted before the next save, and a killed driver's resume
# then fails that trial ("does not exist on storage anymore"). hpsearch prunes each trial to its best
# and last checkpoints once the search has finished (see prune_checkpoints).
CHECKPOINTS_PER_TRIAL = None
MAX_FAILURES = 2  # retries of a failed trial, each from its last checkpoint
# How Ray Tune runs on the driver during `Tuner.fit` (set for that call only, see `_tune_environment`)
TUNE_ENVIRONMENT = {
    "RAY_AIR_NEW_OUTPUT": "0",  # Tune's own console tables off: search.progress reports
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # only hpsearch's JSON result logger; Tune's CSV / TensorBoard ones off
    "TUNE_PRINT_ALL_TRIAL_ERRORS": "0",  # a failed trial is one progress line; its traceback is in error.txt
    "TUNE_GLOBAL_CHECKPOINT_S": "5",  # experiment state saved often: a killed driver loses little
}


@dataclass
class SearchResult:
    """What a finished (or stopped) search produced."""

    name: str
    folder: L.SearchFolder
    spec: SearchSpec
    records: list[R.TrialRecord]
    best: R.TrialRecord | None
    baseline: R.TrialRecord | None
    interrupted: bool
    counts: dict[R.Outcome, int] = field(default_factory=dict)
    tracking: TrackingInfo | None = None  # where it is in MLflow (None: tracking off)
    final: FinalReport | None = None  # the model handed over, tested once (None: interrupted, or no trial with a result)
    final_error: str | None = None  # why there is no final report although the search finished
    storage: str = ""  # the storage root as given (a path or a URI): what --storage takes

    @property
    def experiment_dir(self) -> Path:
        """The search folder on this machine (a URI search's local mirror)."""
        return self.folder.local

    @property
    def location(self) -> str:
        """Where the search lives: its folder, or its URI."""
        return self.folder.location

    def table(self) -> Any:
        """The trials as a pandas DataFrame, best first."""
        return R.results_table(self.records, metric=self.spec.metric, mode=self.spec.mode,
                               baseline_id=self.baseline.trial_id if self.baseline else None)


@dataclass(frozen=True)
class Components:
    """What an experiment replaces in a search (`run_experiment`); None keeps hpsearch's own.

    `searcher`: a Ray Tune Searcher instead of the rung-aware TPE; `scheduler`: a Tune scheduler instead of the
    spec's; `trainable`: a training function instead of hpsearch's; `callbacks`: observers run after hpsearch's
    own (Tune callback hooks, called with keyword arguments). `build`, when given, is called once the rounds are
    resolved, with the resolved spec, the data and the search's location, and returns the Components to use
    (its `callbacks` are added to these): for a replacement that depends on the rounds `auto` chose."""

    searcher: Any = None
    scheduler: Any = None
    trainable: Any = None
    callbacks: tuple[Any, ...] = ()
    build: Callable[[SearchSpec, DataBundle, str], Components] | None = None

    def resolved(self, spec: SearchSpec, data: DataBundle, location: str) -> Components:
        """These components, or what `build` returns for the resolved spec (with both's callbacks)."""
        if self.build is None:
            return self
        built = self.build(spec, data, location)
        return replace(built, callbacks=tuple(self.callbacks) + tuple(built.callbacks), build=None)


def trial_dirname(trial: Any) -> str:
    """Short, stable trial folder names (module level: pickled with the tuner)."""
    return f"trial_{trial.trial_id}"


# ----------------------------------------------------------------------------------------------
# Building the Tuner


def tune_trainable_for(spec: SearchSpec, data: DataBundle) -> Any:
    """hpsearch's trainable for a spec: the data set shared through the object store, the spec's resources."""
    from ray import tune

    from trainables.tune_trainable import tune_trainable

    settings = replace(spec.settings(), val_rounds=B.val_rounds(spec, len(data.train)))
    with_data = tune.with_parameters(tune_trainable, data=data, settings=settings, baseline=spec.baseline)
    return tune.with_resources(with_data, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def build_tuner(spec: SearchSpec, data: DataBundle, *, name: str, storage: str, callbacks: list[Any], trainable: Any = None,
                storage_filesystem: Any = None, scheduler: Any = None, state_dir: Path | str | None = None,
                searcher: Any = None, warm: WarmStart | None = None, stop: Any = None) -> Any:
    """One `tune.Tuner` composed from TuneConfig and RunConfig (see the module docstring).

    `storage` is a local folder, or with `storage_filesystem` (a pyarrow filesystem) a path on it.
    `trainable` replaces hpsearch's training function (benchmarks use a trivial one); `scheduler`
    replaces the spec's; `state_dir` is where ASHA with promotions saves its rungs (the search folder);
    `searcher` (a Ray Tune Searcher) replaces hpsearch's rung-aware TPE (benchmarks compare Ray's OptunaSearch);
    `stop` is a Tune stopper (search.stopping's, which ends the search at a trial's user error).
    """
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter

    from search.sampler import WARM_PREFIX, AdmissionLimiter, RungAwareTPE
    from search.space import distributions as space_distributions

    n_train = len(data.train)
    rounds = B.plan(spec, n_train)
    scheduler = scheduler if scheduler is not None else build_scheduler(spec, n_train, state_dir=state_dir)
    promotions = isinstance(scheduler, PromotionASHA)
    searcher = searcher if searcher is not None else RungAwareTPE(
        DefineByRun(spec.space, spec.baseline), metric=spec.metric, mode=spec.mode, seed=spec.seed, max_t=rounds.total,
        rungs=B.rungs(spec, n_train), points_to_evaluate=[spec.baseline_point()] if spec.space else None,
    )
    if warm is not None and warm.trials:  # earlier searches' trials: told to the sampler, ranked in the rungs
        if isinstance(searcher, RungAwareTPE):
            searcher.warm(warm.trials, space_distributions(spec.space))
        if promotions:
            scheduler.warm({WARM_PREFIX + t.source: t.scores for t in warm.trials})
    if isinstance(scheduler, ReproducibleASHA) and isinstance(searcher, RungAwareTPE):
        scheduler.attach(searcher)  # it proposes configurations in the scheduler's virtual-time order
    if promotions:  # Ray's limiter would count a paused trial as in flight: the scheduler admits new trials
        search_alg = AdmissionLimiter(searcher, spec.budget.max_concurrent, scheduler.admission)
    else:
        search_alg = ConcurrencyLimiter(searcher, max_concurrent=spec.budget.max_concurrent)
    tune_config = tune.TuneConfig(
        search_alg=search_alg if spec.space else None, scheduler=scheduler, num_samples=spec.budget.samples,
        time_budget_s=spec.budget.time_budget_s, trial_dirname_creator=trial_dirname,
        max_concurrent_trials=None if spec.space else spec.budget.max_concurrent,
        reuse_actors=True,  # a trial after the first skips process start-up, imports and the data fetch
    )
    run_config = tune.RunConfig(
        name=name, storage_path=storage, storage_filesystem=storage_filesystem, callbacks=callbacks, verbose=0, stop=stop,
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=CHECKPOINTS_PER_TRIAL, checkpoint_score_attribute=spec.metric, checkpoint_score_order=spec.mode,
        ),
        failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
    )
    return tune.Tuner(trainable or tune_trainable_for(spec, data), tune_config=tune_config, run_config=run_config)


# ----------------------------------------------------------------------------------------------
# Running and resuming


def with_flags(
    spec: SearchSpec, *, samples: int | None = None, max_epochs: int | None = None,
    time_budget: str | float | None = None, overrides: Iterable[str] = (),
) -> SearchSpec:
    """The spec with the CLI's budget flags and `--set` overrides applied: user input, validated as the spec is."""
    items = list(overrides)
    if samples is not None:
        items.append(f"budget.samples={samples}")
    if max_epochs is not None:
        items.append(f"budget.max_epochs={max_epochs}")
        if spec.budget.grace_period > max_epochs:  # a shorter run keeps a valid ASHA grace period
            items.append(f"budget.grace_period={max_epochs}")
    if time_budget is not None:
        items.append(f"budget.time_budget={time_budget}")
    if not items:
        return spec
    raw = copy.deepcopy(spec.raw)
    for item in items:
        apply_override(raw, item, spec.path)
    return parse_spec(raw, spec.path)


def default_name(spec: SearchSpec) -> str:
    return f"{spec.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_search(
    spec: str | Path | SearchSpec, *, name: str | None = None, storage: str | None = None, address: str | None = None,
    tracking_uri: str | None = None, samples: int | None = None, max_epochs: int | None = None,
    time_budget: str | float | None = None, overrides: Iterable[str] = (), track: bool = True, refit: bool = False,
    warm_start: Iterable[str] = (), model: Any = None, dataset: Any = None, on_event: Callable[[str], None] | None = print,
) -> SearchResult:
    """Run a search from a spec file (or a `SearchSpec`) and return its summary.

    Nothing is written before the spec, the data and the cluster's resources check out. `samples`,
    `max_epochs`, `time_budget` and `overrides` (`"budget.max_concurrent=4"`) change the spec's budget;
    `track=False` turns MLflow off (the search ends the same way: search.finalize); `refit` retrains the
    best config on train+val before its test evaluation. `model` (an nn.Module class or a function
    returning one) and `dataset` (a loader function, see trainables/user_data.py) are Python objects that
    replace the spec's `model` / `dataset.name`; they travel to the Ray workers pickled by value, so a
    script's or a notebook's own classes work on a cluster. `warm_start` names earlier searches in the same
    storage whose trials the sampler and the rungs start from (search.warm; also the spec's `warm_start`).
    """
    return run_experiment(spec, Components(), name=name, storage=storage, address=address, tracking_uri=tracking_uri,
                          samples=samples, max_epochs=max_epochs, time_budget=time_budget, overrides=overrides, track=track,
                          refit=refit, warm_start=warm_start, model=model, dataset=dataset, on_event=on_event)


def run_experiment(
    spec: str | Path | SearchSpec, components: Components, *, name: str | None = None, storage: str | None = None,
    address: str | None = None, tracking_uri: str | None = None, samples: int | None = None, max_epochs: int | None = None,
    time_budget: str | float | None = None, overrides: Iterable[str] = (), track: bool = True, refit: bool = False,
    warm_start: Iterable[str] = (), model: Any = None, dataset: Any = None, on_event: Callable[[str], None] | None = print,
) -> SearchResult:
    """`run_search` (same keyword options) with `components` replacing hpsearch's sampler, scheduler, trainable,
    or adding observers: how benchmarks compare methods on the same data, budget and ending."""
    started = time.monotonic()  # a time budget counts from here: data, Ray's start and the pace measurement are in it
    if not isinstance(spec, SearchSpec):
        spec = load_spec(spec, model=model, dataset=dataset)
    elif model is not None or dataset is not None:
        spec = parse_spec(with_objects(copy.deepcopy(spec.raw), model=model, dataset=dataset), spec.path)
    spec = with_flags(spec, samples=samples, max_epochs=max_epochs, time_budget=time_budget, overrides=overrides)
    storage_root = S.storage_root(storage)
    name = name or default_name(spec)
    folder = L.SearchFolder.of(storage_root, name)
    if folder.remote:
        S.check_writable(storage_root)  # a bad URI, a missing bucket, no credentials: one line, before anything else
        if R.list_searches(storage_root).count(name) or S.list_names(folder.location):
            raise UserError(f"a search named {name!r} already exists in {S.display(storage_root)}; continue it with "
                            f"`hpsearch resume {name} --storage {storage_root}` or pick another --name")
    elif Path(folder.location).exists():
        raise UserError(f"a search named {name!r} already exists in {storage_root}; continue it with `hpsearch resume {name}` or pick another --name")
    data = _prepare(spec, address, storage_root, on_event)
    spec = B.resolve_report_every(spec, data, on_event=on_event)  # stored resolved: a resume keeps the same rounds
    spec = _budget_after_startup(spec, time.monotonic() - started, on_event)
    state = {
        "name": name, "storage": storage_root, "spec": spec.raw, "spec_path": spec.path,
        "created": dt.datetime.now().isoformat(timespec="seconds"), "tracking_uri": tracking_uri,
        "track": track, "refit": refit,
    }
    warm = None
    names = list(warm_start) or list(spec.warm_start)
    if names:  # read (and refused, if a name is unknown) before anything of this search is written
        plan = B.plan(spec, len(data.train))
        warm = load_warm_start(spec, names, storage_root, rounds_per_epoch=plan.rounds_per_epoch, max_t=plan.total,
                               rungs=B.rungs(spec, len(data.train)))
        _emit(on_event, warm.summary())
        state["warm_start"] = {"sources": warm.sources, "trials": len(warm.trials), "dropped": warm.dropped, "changes": warm.changes}
        state["parent_tags"] = {"warm_start_from": ", ".join(
            f"{s['name']} (MLflow run {s['parent_run_id']})" if s["parent_run_id"] else s["name"] for s in warm.sources)}
    if folder.remote:
        shutil.rmtree(folder.local, ignore_errors=True)  # a mirror left by an older search of that name
    R.write_state(folder.location, state)
    return _fit(spec, data, folder, state, restore=False, on_event=on_event, components=components, warm=warm)


def _budget_after_startup(spec: SearchSpec, startup_s: float, on_event: Callable[[str], None] | None) -> SearchSpec:
    """The spec with its time budget less the start-up already spent (loading and checking the data, Ray's start,
    the pace measurement), so that a `time_budget` is the wall time of the whole search as the user asked it."""
    budget = spec.budget.time_budget_s
    if budget is None:
        return spec
    left = max(1.0, budget - startup_s)
    _emit(on_event, f"time budget: {budget:.0f} s, {startup_s:.0f} s of it for start-up (data, Ray, rounds); {left:.0f} s for the trials")
    return spec.with_budget(time_budget_s=left)


def resume_search(
    name: str, *, storage: str | None = None, address: str | None = None,
    on_event: Callable[[str], None] | None = print, model: Any = None, dataset: Any = None,
) -> SearchResult:
    """Continue an interrupted search: same trials, restored sampler, same MLflow runs.

    A search started with Python objects (`run_search(model=..., dataset=...)`) is resumed with them again."""
    from ray import tune

    storage_root = S.storage_root(storage)
    folder = L.SearchFolder.at(R.find_search(storage_root, name))
    state = R.read_state(folder.location)
    raw = copy.deepcopy(state["spec"])
    if model is not None or dataset is not None:
        with_objects(raw, model=model, dataset=dataset)
    spec = parse_spec(raw, state.get("spec_path", "<spec>"))
    if not folder.tune_saved():
        raise UserError(f"search {name!r} stopped before its first trial was saved; start it again with `hpsearch run`")
    data = _prepare(spec, address, storage_root, on_event)
    if not tune.Tuner.can_restore(*folder.tune_path()):
        raise UserError(f"search {name!r} in {folder} cannot be restored by Ray Tune (experiment state missing)")
    if folder.remote:
        _mirror_down(folder)
    state["resumed"] = state.get("resumed", 0) + 1
    R.write_state(folder.location, state)
    return _fit(spec, data, folder, state, restore=True, on_event=on_event, components=Components())


def _mirror_down(folder: L.SearchFolder) -> None:
    """Resuming a URI search: the driver's files from the bucket into this machine's mirror. The MLflow run map,
    unless the mirror holds a newer one of the same search (a killed driver's last writes may not have been
    uploaded); ASHA's rung state, unless the mirror has one (it is uploaded at the end of every driver run)."""
    text = S.read_text(folder.uri(L.RUNS))
    if text is not None:
        local = folder.runs_file
        mine: dict[str, Any] = {}
        if local.is_file():
            with contextlib.suppress(json.JSONDecodeError):
                mine = json.loads(local.read_text())
        if not (mine.get("parent_run_id") and mine.get("parent_run_id") == json.loads(text).get("parent_run_id")):
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_text(text)
    if not folder.rungs_file.is_file():
        text = S.read_text(folder.uri(L.RUNGS))
        if text is not None:
            folder.rungs_file.parent.mkdir(parents=True, exist_ok=True)
            folder.rungs_file.write_text(text)


def _prepare(spec: SearchSpec, address: str | None, storage_root: str, on_event: Callable[[str], None] | None) -> DataBundle:
    """Everything checked before a search starts or resumes: the data, the cluster's resources, the storage."""
    data = spec.load_data()
    _emit(on_event, f"data: {data.summary()}")
    dry_forward(spec.baseline, data, spec.settings())  # a network that does not fit the data fails here, in one line
    check_model_values(spec, data)  # so does a searched value the network refuses
    connect(address)
    check_resources(spec)
    check_storage_reachable(storage_root)
    check_data_on_nodes(data)  # a data set streamed from files must be readable where trials run
    return data


def _emit(on_event: Callable[[str], None] | None, message: str) -> None:
    if on_event is not None:
        on_event(message)


@contextlib.contextmanager
def _tune_environment() -> Iterator[None]:
    """TUNE_ENVIRONMENT for the block only (a variable the user set keeps its value); the process's
    environment is as it was afterwards."""
    import os

    with mock.patch.dict(os.environ, {k: os.environ.get(k, v) for k, v in TUNE_ENVIRONMENT.items()}):
        yield


def _observers(spec: SearchSpec, data: DataBundle, folder: L.SearchFolder, state: dict[str, Any], stop: UserErrorStop,
               on_event: Callable[[str], None] | None, extra: Iterable[Any]) -> tuple[list[Any], Any]:
    """The driver's observers of a search, in the order they hear each hook, and its MLflow tracker (or None).

    The user-error stop first: the others' hooks for a failed trial then see whether it stops the search."""
    from search.progress import ProgressCallback

    rounds = B.total_rounds(spec, len(data.train))
    rungs = tuple(state.get("rungs", ()))
    observers: list[Any] = [stop, ProgressCallback(spec, rounds, on_event, rungs=rungs, experiment_dir=folder.local)]
    tracker = None
    if state.get("track", True):
        from search.tracking.callback import MlflowTracker

        tracker = MlflowTracker.for_search(spec, folder, state, rounds)
        observers.append(tracker)
    if folder.remote:
        observers.append(MirrorUpload(folder))
    return observers + list(extra), tracker


def _fit(spec: SearchSpec, data: DataBundle, folder: L.SearchFolder, state: dict[str, Any], *, restore: bool,
         on_event: Callable[[str], None] | None, components: Components, warm: WarmStart | None = None) -> SearchResult:
    """Run (or restore and continue) the Tuner of a search folder, then end the search (see `_end`)."""
    from ray import tune

    state["total_rounds"] = B.total_rounds(spec, len(data.train))
    state["rungs"] = list(B.rungs(spec, len(data.train)))
    R.write_state(folder.location, state)  # a killed driver's search is read back with its rounds and rungs
    components = components.resolved(spec, data, folder.location)
    stop = UserErrorStop(folder.local)  # a user mistake inside a trial ends the search (retries would fail the same way)
    observers, tracker = _observers(spec, data, folder, state, stop, on_event, components.callbacks)
    hooks = SearchHooks(observers)
    path, filesystem = folder.tune_path()
    trainable = components.trainable or tune_trainable_for(spec, data)
    with _tune_environment():
        if restore:
            with restoring(observers):  # the restored RunConfig's SearchHooks take this driver's observers
                tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True, resume_errored=True,
                                           storage_filesystem=filesystem)
        else:
            root = posixpath.dirname(path.rstrip("/")) if folder.remote else str(folder.local.parent)
            tuner = build_tuner(spec, data, name=posixpath.basename(path.rstrip("/")), storage=root,
                                callbacks=[ResultLogger(), hooks], storage_filesystem=filesystem, state_dir=folder.location,
                                searcher=components.searcher, scheduler=components.scheduler, trainable=trainable, warm=warm,
                                stop=hooks)
        started = time.monotonic()
        interrupted = False
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
    time_out = spec.budget.time_budget_s is not None and time.monotonic() - started >= spec.budget.time_budget_s * 0.98
    return _end(spec, data, folder, state, tracker, stop, interrupted=interrupted, time_out=time_out)


def _end(spec: SearchSpec, data: DataBundle, folder: L.SearchFolder, state: dict[str, Any], tracker: Any, stop: UserErrorStop,
         *, interrupted: bool, time_out: bool) -> SearchResult:
    """The search's ending, whoever ran it: read the trials back, hand over the best model (search.finalize),
    let the tracker log it, keep each trial's best and last checkpoints, record the outcome in hpsearch.json."""
    if time_out and not interrupted:  # Tune's clock ended it: trials still waiting at a rung end there
        end_pauses(folder.local)
    records = R.trial_records(folder.location, metric=spec.metric, mode=spec.mode, total_rounds=state["total_rounds"],
                              rungs=state["rungs"])
    unfinished = [r for r in records if r.status in (R.Outcome.RUNNING, R.Outcome.PENDING, R.Outcome.PAUSED)]
    # ASHA with promotions ends a search itself once its finish phase has trained the finalists
    finished_early = bool((load_state(folder.local) or {}).get("finishing")) and not unfinished
    interrupted = interrupted or (bool(unfinished) and not time_out) or (
        len(records) < spec.budget.samples and not time_out and not finished_early)
    result = SearchResult(
        name=state["name"] if folder.remote else folder.local.name, folder=folder, spec=spec, records=records,
        best=R.best_record(records, spec.mode, prefer_completed=spec.budget.time_budget_s is not None,
                           top_share=1 / spec.budget.reduction_factor),
        baseline=find_baseline(records, spec), interrupted=interrupted,
        counts={s: sum(r.status == s for r in records) for s in R.Outcome},
        storage=state.get("storage") or str(folder.local.parent),
    )
    if not interrupted and result.best is not None:
        try:
            result.final = finalize(result, data, refit=bool(state.get("refit")))
        except Exception as exc:  # noqa: BLE001 - keep the search's runs and results whatever fails here
            result.final_error = f"{type(exc).__name__}: {exc}"
            log.warning("the final evaluation failed: %s", result.final_error)
    if tracker is not None:
        result.tracking = tracker.end_search(result, result.final, result.final_error)
    folder.upload_driver_files()  # a URI search: the MLflow run map, the rungs, the user errors
    if not interrupted:
        prune_checkpoints(records)
    state["finished"] = not interrupted
    state["final"] = result.final.to_json() if result.final is not None else {"error": result.final_error} if result.final_error else {}
    state["tracking"] = vars(result.tracking) if result.tracking is not None else {}
    R.write_state(folder.location, state)
    if stop.message is not None:  # after the state is saved: the search can be resumed once the cause is fixed
        raise UserError(f"trial {stop.trial_id} stopped the search: {stop.message}; once that is fixed, continue it "
                        f"with `hpsearch resume {result.name}`")
    return result


def find_baseline(records: list[R.TrialRecord], spec: SearchSpec) -> R.TrialRecord | None:
    """The first trial whose sampled config is the baseline's (the enqueued first point)."""
    point = spec.baseline_point()
    for r in records:
        if all(r.config.get(k) == v for k, v in point.items()):
            return r
    return None
