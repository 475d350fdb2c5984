"""Assembles and runs the search: one `tune.Tuner` over a spec.

    RungAwareTPE (Optuna TPE, seeded, define-by-run space with conditions, baseline enqueued first;
      search.sampler, search.space) behind a limiter (ray#52535: no burst of random start-up trials)
    the spec's scheduler (search.schedulers): ASHA with promotions by default, on the `round` counter
    function trainable with the data set shared through the object store
    CheckpointConfig: checkpoints scored by the metric; after the search each trial keeps its best and
      last ones (search.checkpoints)
    FailureConfig: a failed trial is retried from its last checkpoint
    callbacks (search.callbacks): result logger, live progress, MLflow tracking (search.tracking)
    before anything runs: the data, a dry forward pass, the cluster and the storage (search.cluster)

`run_search` starts a search, `resume_search` continues one after Ctrl-C or a
killed driver: finished trials are kept, unfinished ones restart from their
last checkpoint, the sampler's state is restored from Tune's searcher state.

Storage is a local folder or a URI (s3://, gs://, any pyarrow filesystem, see search.storage).
With a URI, Tune writes checkpoints and results there itself; the driver keeps a local mirror
of the search folder for what it writes (the MLflow run map, uploaded every
MIRROR_UPLOAD_SECONDS and at the end; the best model, uploaded at the end), and the embedded
MLflow store stays on the driver's machine (./hpsearch-runs/mlflow.db unless --tracking-uri).
"""
from __future__ import annotations

import copy
import datetime as dt
import json
import logging
import os
import posixpath
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable

from search import rounds as B
from search import results as R
from search import storage as S
from search.rounds import rounds_per_epoch, rungs, total_rounds  # noqa: F401 - re-exported (CLI, tests, benchmarks)
from search.callbacks import MIRROR_UPLOAD_SECONDS, MirrorUpload, result_logger, search_callbacks  # noqa: F401 - re-exported
from search.checkpoints import prune_checkpoints
from search.cluster import (  # noqa: F401 - re-exported: these lived here before
    _auth_message,
    _is_auth_error,
    _resource_problem,
    _storage_problem,
    check_data_on_nodes,
    check_resources,
    check_storage_reachable,
    connect,
)
from search.schedulers import ReproducibleASHA
from search.schedulers import (  # noqa: F401 - re-exported: the scheduler's helpers were defined here before
    RANK_SCORE,
    PromotionASHA,
    asha_scheduler,
    asha_window,
    end_pauses,
    rank_score,
    recent_cutoff,
    rung_levels,
)
from search.schedulers import load_state as load_scheduler_state
from search.space import DefineByRun  # noqa: F401 - pickled as search.tuner.DefineByRun by searches saved before the split
from search.spec import SearchSpec, apply_override, check_model_values, load_spec, parse_spec, with_objects
from search.storage import DEFAULT_STORAGE, local_tracking_root  # noqa: F401 - re-exported
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


@dataclass
class SearchResult:
    """What a finished (or stopped) search produced."""

    name: str
    experiment_dir: Path
    spec: SearchSpec
    records: list[R.TrialRecord]
    best: R.TrialRecord | None
    baseline: R.TrialRecord | None
    interrupted: bool
    counts: dict[str, int] = field(default_factory=dict)
    tracking: dict[str, Any] = field(default_factory=dict)  # uri, experiment id, parent run id, ui url
    final: dict[str, Any] = field(default_factory=dict)  # test metrics of the best model, model version
    storage: str = ""  # the storage root as given (a path or a URI): what --storage takes
    location: str = ""  # where the search lives: experiment_dir, or its URI (experiment_dir is then its local mirror)

    def table(self):
        """The trials as a pandas DataFrame, best first."""
        return R.results_table(self.records, metric=self.spec.metric, mode=self.spec.mode,
                               baseline_id=self.baseline.trial_id if self.baseline else None)


def trial_dirname(trial: Any) -> str:
    """Short, stable trial folder names (module level: pickled with the tuner)."""
    return f"trial_{trial.trial_id}"


# ----------------------------------------------------------------------------------------------
# Building the Tuner


def _trainable(spec: SearchSpec, data: DataBundle):
    from ray import tune

    from trainables.tune_trainable import tune_trainable

    settings = replace(spec.settings(), val_rounds=B.val_rounds(spec, len(data.train)))
    with_data = tune.with_parameters(tune_trainable, data=data, settings=settings, baseline=spec.baseline)
    return tune.with_resources(with_data, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})


def build_scheduler(spec: SearchSpec, n_train: int, *, state_dir: Path | str | None = None) -> Any:
    """The spec's trial scheduler: ASHA with promotions (asha), Ray's stopping ASHA (asha-stop) or FIFO."""
    from ray.tune.schedulers import FIFOScheduler

    rounds = B.plan(spec, n_train)
    kind = spec.budget.scheduler
    if kind == "fifo" or not spec.space:
        return FIFOScheduler()
    if kind == "asha-stop":
        return asha_scheduler(spec.metric, spec.mode, max_t=rounds.total, grace=rounds.grace,
                              reduction_factor=spec.budget.reduction_factor)
    options = dict(max_t=rounds.total, grace=rounds.grace, reduction_factor=spec.budget.reduction_factor,
                   max_concurrent=spec.budget.max_concurrent, time_budget_s=spec.budget.time_budget_s, state_dir=state_dir)
    if spec.budget.reproducible:
        return ReproducibleASHA(spec.metric, spec.mode, samples=spec.budget.samples, **options)
    return PromotionASHA(spec.metric, spec.mode, **options)


def build_tuner(spec: SearchSpec, data: DataBundle, *, name: str, storage: str, callbacks: list[Any], trainable: Any = None,
                storage_filesystem: Any = None, scheduler: Any = None, state_dir: Path | str | None = None,
                searcher: Any = None, warm: WarmStart | None = None, stop: Any = None):
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
        rungs=rungs(spec, n_train), points_to_evaluate=[spec.baseline_point()] if spec.space else None,
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
    return tune.Tuner(trainable or _trainable(spec, data), tune_config=tune_config, run_config=run_config)


# ----------------------------------------------------------------------------------------------
# Running and resuming


def with_flags(
    spec: SearchSpec, *, samples: int | None = None, max_epochs: int | None = None,
    time_budget: str | float | None = None, overrides: Iterable[str] = (),
) -> SearchSpec:
    """The spec with the CLI's budget flags and `--set` overrides applied (re-validated)."""
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
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.raw.items()}
    for item in items:
        apply_override(raw, item, spec.path)
    return parse_spec(raw, spec.path)


def default_name(spec: SearchSpec) -> str:
    return f"{spec.name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_search(
    spec: str | Path | SearchSpec, *, name: str | None = None, storage: str | None = None, address: str | None = None,
    tracking_uri: str | None = None, samples: int | None = None, max_epochs: int | None = None,
    time_budget: str | float | None = None, overrides: Iterable[str] = (), track: bool = True,
    on_event: Callable[[str], None] | None = print, refit: bool = False, searcher: Any = None,
    model: Any = None, dataset: Any = None, scheduler: Any = None, callbacks: Iterable[Any] = (), trainable: Any = None,
    warm_start: Iterable[str] = (),
) -> SearchResult:
    """Run a search from a spec file (or a `SearchSpec`) and return its summary.

    Nothing is written before the spec, the data and the cluster's resources check out.
    `model` (an nn.Module class or a function returning one) and `dataset` (a loader function, see
    trainables/user_data.py) are Python objects that replace the spec's `model` / `dataset.name`; they
    travel to the Ray workers pickled by value, so a script's or a notebook's own classes work on a cluster.
    `warm_start` names earlier searches in the same storage whose trials the sampler and the rungs start
    from (search.warm; also the spec's `warm_start`).
    Composing a search differently (benchmarks, experiments): `searcher` replaces hpsearch's sampler with
    another Ray Tune Searcher, `scheduler` the spec's trial scheduler, `trainable` hpsearch's training
    function, and `callbacks` are Tune callbacks run beside hpsearch's own (progress, MLflow).
    """
    if not isinstance(spec, SearchSpec):
        spec = load_spec(spec, model=model, dataset=dataset)
    elif model is not None or dataset is not None:
        spec = parse_spec(with_objects(copy.deepcopy(spec.raw), model=model, dataset=dataset), spec.path)
    spec = with_flags(spec, samples=samples, max_epochs=max_epochs, time_budget=time_budget, overrides=overrides)
    storage_root = S.storage_root(storage)
    name = name or default_name(spec)
    experiment = R.search_location(storage_root, name)
    if S.is_uri(storage_root):
        S.check_writable(storage_root)  # a bad URI, a missing bucket, no credentials: one line, before anything else
        if R.list_searches(storage_root).count(name) or S.list_names(experiment):
            raise UserError(f"a search named {name!r} already exists in {S.display(storage_root)}; continue it with "
                            f"`hpsearch resume {name} --storage {storage_root}` or pick another --name")
    elif Path(experiment).exists():
        raise UserError(f"a search named {name!r} already exists in {storage_root}; continue it with `hpsearch resume {name}` or pick another --name")
    data = _prepare(spec, address, storage_root, on_event)
    spec = B.resolve_report_every(spec, data, on_event=on_event)  # stored resolved: a resume keeps the same rounds
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
                               rungs=rungs(spec, len(data.train)))
        _emit(on_event, warm.summary())
        state["warm_start"] = {"sources": warm.sources, "trials": len(warm.trials), "dropped": warm.dropped, "changes": warm.changes}
        state["parent_tags"] = {"warm_start_from": ", ".join(
            f"{s['name']} (MLflow run {s['parent_run_id']})" if s["parent_run_id"] else s["name"] for s in warm.sources)}
    if S.is_uri(storage_root):
        import shutil

        shutil.rmtree(S.mirror_dir(str(experiment)), ignore_errors=True)  # a mirror left by an older search of that name
    R.write_state(experiment, state)
    return _fit(spec, data, experiment, state, restore=False, on_event=on_event, searcher=searcher, scheduler=scheduler,
                extra_callbacks=list(callbacks), trainable=trainable, warm=warm)


def resume_search(
    name: str, *, storage: str | None = None, address: str | None = None,
    on_event: Callable[[str], None] | None = print, model: Any = None, dataset: Any = None,
) -> SearchResult:
    """Continue an interrupted search: same trials, restored sampler, same MLflow runs.

    A search started with Python objects (`run_search(model=..., dataset=...)`) is resumed with them again."""
    from ray import tune

    storage_root = S.storage_root(storage)
    experiment = R.find_search(storage_root, name)
    state = R.read_state(experiment)
    raw = copy.deepcopy(state["spec"])
    if model is not None or dataset is not None:
        with_objects(raw, model=model, dataset=dataset)
    spec = parse_spec(raw, state.get("spec_path", "<spec>"))
    if S.is_uri(experiment):
        names = S.list_names(str(experiment))
        saved = any(n.startswith("experiment_state-") and n.endswith(".json") for n in names) and "tuner.pkl" in names
    else:
        saved = bool(list(Path(experiment).glob("experiment_state-*.json"))) and (Path(experiment) / "tuner.pkl").is_file()
    if not saved:
        raise UserError(f"search {name!r} stopped before its first trial was saved; start it again with `hpsearch run`")
    data = _prepare(spec, address, storage_root, on_event)
    if not tune.Tuner.can_restore(*_tune_path(experiment)):
        raise UserError(f"search {name!r} in {experiment} cannot be restored by Ray Tune (experiment state missing)")
    if S.is_uri(experiment):
        _mirror_runs_down(str(experiment))
        _mirror_rungs_down(str(experiment))
    state["resumed"] = state.get("resumed", 0) + 1
    R.write_state(experiment, state)
    return _fit(spec, data, experiment, state, restore=True, on_event=on_event)


def _tune_path(experiment: Path | str) -> tuple[str, Any]:
    """(path, storage_filesystem) of a search folder as Ray Tune takes them."""
    if S.is_uri(experiment):
        return S.filesystem(str(experiment))[1], S.filesystem(str(experiment))[0]
    return str(experiment), None


def _mirror_runs_down(experiment_uri: str) -> None:
    """Resuming a URI search: the MLflow run map from the bucket, unless this machine's mirror holds
    a newer one of the same search (a killed driver's last writes may not have been uploaded)."""
    local = S.mirror_dir(experiment_uri) / R.RUNS_FILE
    text = S.read_text(S.join(experiment_uri, R.RUNS_FILE))
    if text is None:
        return
    if local.is_file():
        try:
            mine = json.loads(local.read_text())
        except json.JSONDecodeError:
            mine = {}
        if mine.get("parent_run_id") and mine.get("parent_run_id") == json.loads(text).get("parent_run_id"):
            return
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(text)


def _mirror_rungs_down(experiment_uri: str) -> None:
    """Resuming a URI search on a machine whose mirror lacks ASHA's rung state: the copy in the bucket
    (uploaded at the end of every driver run)."""
    local = S.mirror_dir(experiment_uri) / R.SCHEDULER_STATE_FILE
    if local.is_file():
        return
    text = S.read_text(S.join(experiment_uri, R.SCHEDULER_STATE_FILE))
    if text is not None:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_text(text)


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


def _fit(spec: SearchSpec, data: DataBundle, experiment: Path | str, state: dict[str, Any], *, restore: bool, on_event,
         searcher: Any = None, scheduler: Any = None, extra_callbacks: list[Any] | None = None, trainable: Any = None,
         warm: WarmStart | None = None) -> SearchResult:
    """Run (or restore and continue) the Tuner of a search folder; `experiment` is a path or a URI."""
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own console tables off: progress.py reports
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the JSON logger is added in search_callbacks
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # a failed trial is one progress line; its traceback is in error.txt
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")  # experiment state saved often: a killed driver loses little
    remote = str(experiment) if S.is_uri(experiment) else ""
    experiment_dir = S.mirror_dir(remote) if remote else Path(experiment)  # where the driver writes its own files
    state["total_rounds"] = total_rounds(spec, len(data.train))
    state["rungs"] = list(rungs(spec, len(data.train)))
    from search.stopping import UserErrorStop

    stop = UserErrorStop(experiment_dir)  # a user mistake inside a trial ends the search (retries would fail the same way)
    # first: the others' hooks for a failed trial then see whether its user error stops the search
    callbacks = [stop] + search_callbacks(spec, data, experiment_dir, state, on_event) + list(extra_callbacks or [])
    path, filesystem = _tune_path(experiment)
    if restore:
        tuner = tune.Tuner.restore(path, trainable=trainable or _trainable(spec, data), resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=filesystem)
        run_config = tuner._local_tuner.get_run_config()
        run_config.callbacks, run_config.stop = callbacks, stop  # fresh ones, not the pickled ones
    else:
        root = posixpath.dirname(path.rstrip("/")) if remote else str(experiment_dir.parent)
        tuner = build_tuner(spec, data, name=posixpath.basename(path.rstrip("/")), storage=root, callbacks=callbacks,
                            storage_filesystem=filesystem, state_dir=remote or experiment_dir, searcher=searcher,
                            scheduler=scheduler, trainable=trainable, warm=warm, stop=stop)
    started = time.monotonic()
    interrupted = False
    try:
        tuner.fit()
    except KeyboardInterrupt:
        interrupted = True
    time_out = spec.budget.time_budget_s is not None and time.monotonic() - started >= spec.budget.time_budget_s * 0.98
    if time_out and not interrupted:  # Tune's clock ended it: trials still waiting at a rung end there
        end_pauses(experiment_dir)
    records = R.trial_records(experiment, metric=spec.metric, mode=spec.mode, total_rounds=state["total_rounds"],
                              rungs=state["rungs"])
    unfinished = [r for r in records if r.status in (R.RUNNING, R.PENDING, R.PAUSED)]
    # ASHA with promotions ends a search itself once its finish phase has trained the finalists
    finished_early = bool((load_scheduler_state(experiment_dir) or {}).get("finishing")) and not unfinished
    interrupted = interrupted or (bool(unfinished) and not time_out) or (
        len(records) < spec.budget.samples and not time_out and not finished_early)
    baseline = _find_baseline(records, spec)
    counts = {s: sum(r.status == s for r in records) for s in R.OUTCOMES}
    result = SearchResult(
        name=experiment_dir.name if not remote else state["name"], experiment_dir=experiment_dir, spec=spec, records=records,
        best=R.best_record(records, spec.mode, prefer_completed=spec.budget.time_budget_s is not None,
                           top_share=1 / spec.budget.reduction_factor), baseline=baseline, interrupted=interrupted, counts=counts,
        storage=state.get("storage") or str(experiment_dir.parent), location=remote or str(experiment_dir),
    )
    tracker = next((c for c in callbacks if hasattr(c, "finish_search")), None)
    if tracker is not None:
        result.tracking, result.final = tracker.finish_search(result, data, refit=bool(state.get("refit")))
    if remote:  # what the driver wrote locally goes up to the search's URI
        if (experiment_dir / R.BEST_DIR).is_dir():
            S.upload(experiment_dir / R.BEST_DIR, S.join(remote, R.BEST_DIR))
            result.final["checkpoint"] = S.join(remote, R.BEST_DIR, "checkpoint.pt")
        for name in (R.RUNS_FILE, R.SCHEDULER_STATE_FILE, R.USER_ERRORS_FILE):
            if (experiment_dir / name).is_file():
                S.upload(experiment_dir / name, S.join(remote, name))
    if not interrupted:
        prune_checkpoints(records)
    state["finished"] = not interrupted
    state["final"] = json.loads(json.dumps(result.final, default=str))
    state["tracking"] = result.tracking
    R.write_state(experiment, state)
    if stop.message is not None:  # after the state is saved: the search can be resumed once the cause is fixed
        raise UserError(f"trial {stop.trial_id} stopped the search: {stop.message}; once that is fixed, continue it "
                        f"with `hpsearch resume {result.name}`")
    return result


def _find_baseline(records: list[R.TrialRecord], spec: SearchSpec) -> R.TrialRecord | None:
    """The first trial whose sampled config is the baseline's (the enqueued first point)."""
    point = spec.baseline_point()
    for r in records:
        if all(r.config.get(k) == v for k, v in point.items()):
            return r
    return None
