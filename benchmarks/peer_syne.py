"""Syne Tune 0.16 as a peer of the search-quality benchmark: its ASHA and BOHB baselines, run as its docs advise.

Set-up (`run_syne_tune`):

- `syne_tune.Tuner` over `syne_tune.backend.LocalBackend` with an entry-point script (`syne_entry.py`): one
  subprocess per trial, `n_workers = budget.max_concurrent` of them at a time, as Syne Tune's docs advise for
  a training script. `pass_args_as_json=True`: the config reaches the trial as JSON, so a bool choice arrives
  as a bool and a string as a string (on the command line `bool("False")` would be True). The trial trains
  with hpsearch's own `trainables.train.Trainer` (same model, data pipeline, val split and seed as every
  other method), one torch thread, and reports every round through `syne_tune.Reporter`.
- Schedulers (`syne_tune.optimizer.baselines`), both `AsynchronousSuccessiveHalving` underneath:
  `syne-tune-asha` = `ASHA` (random configurations), `syne-tune-bohb` = `BOHB` (a KDE searcher as in
  BOHB/TPE; `syne-tune-asha-bore` = `ASHABORE` is also accepted). In 0.16 this ASHA is the *stopping*
  type (a trial reaching a rung continues only if it ranks in the top 1/reduction_factor of the results
  recorded at that rung so far, else it is stopped for good; nothing is paused or promoted later; the first
  trial at a rung always continues), with one bracket. `time_attr="round"`, `max_t` = the rounds of a full
  trial (search.rounds.total_rounds), `grace_period=1` (the first rung is one round: the spec's rounds were
  sized for that, budget.auto_rounds), `reduction_factor = budget.reduction_factor`, `val_acc` maximised,
  `random_seed=seed`, the spec's baseline as the first point to evaluate (trial 0).
- BOHB in 0.16 fits its KDEs on the *last* value each trial reported, whatever its round
  (`LastValueMultiFidelitySearcher`), not per rung as in Falkner et al.; the KDE features are the
  parameters scaled linearly to [0, 1] (a log-scale range is modelled on its linear scale). Its good set is
  max(d, 15 % of the results) for d searched parameters and must hold more than d points, so it samples
  at random until about (d + 1) / 0.15 trials have results: 80 for the benchmark's 11 parameters.
- The search ends `budget_s` after the caller's `t0` (`StoppingCriterion(max_wallclock_time=...)` set to
  what is left when the tuner starts); running trials are then killed. While all workers are busy the tuner
  polls its trials every `sleep_time`: Syne Tune's default is 5 s, here SLEEP_SECONDS (1 s), as a user with
  rounds of a few seconds would set it, so a decision lags its report by at most about that (a trial ASHA
  stops trains on until then), and so does an event's time here (when the tuner saw the result, on the
  caller's `time.monotonic()` clock). Each trial is a fresh Python process that imports
  torch and Syne Tune and loads the data set before its first round: seconds per trial (`trial_startup`).
- Conditions (`when`): Syne Tune's config spaces have none, so every searched parameter is sampled always
  (the Trainer ignores what does not apply, e.g. momentum under adam); the baseline point fills such a
  parameter with the baseline's value. A choice whose values differ in type (Syne Tune wants one type per
  choice) is passed as JSON strings and decoded in the trial.
- Seeding: `random_seed` seeds the scheduler's and searcher's own generators, but 0.16 draws part of its
  random configurations from NumPy's global generator (`Domain.sample()` without a random state, once 5
  trials have results); it is seeded with `seed` for the run and restored afterwards. Trials still run
  asynchronously, so the search depends on timing as any asynchronous search does.
- The model handed over: every trial saves its state (`Trainer.state_dict()`, hpsearch's checkpoint format)
  in Syne Tune's checkpoint dir at each round that improves its val_acc, *before* reporting the round; the
  driver deletes the files no longer needed (a trial's superseded rounds; finished trials that are not the
  best), and returns the state of the best round reported before the deadline.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator

METHODS: dict[str, str] = {"syne-tune-asha": "ASHA", "syne-tune-bohb": "BOHB", "syne-tune-asha-bore": "ASHABORE"}
METRIC = "val_acc"
SPEC_FILE_KEY = "hpsearch_spec_file"  # constant entry of the config space: the JSON file holding spec.raw
ENTRY_POINT = Path(__file__).resolve().with_name("syne_entry.py")
STATE_PREFIX = "round_"  # a trial's checkpoint files: round_0003.pt, the state saved at that round

SLEEP_SECONDS = 1.0  # the tuner's poll while every worker is busy (Syne Tune's default: 5 s)


# ----------------------------------------------------------------------------------------------
# The spec's space in Syne Tune's terms (shared with syne_entry.py, which imports this module)


def _one_type(choices: tuple[Any, ...]) -> bool:
    """Whether Syne Tune's `choice` takes these values as they are (it wants one Python type)."""
    return len({type(c) for c in choices}) == 1 and type(choices[0]) in (bool, int, float, str)


def to_syne_space(space: tuple[Any, ...]) -> dict[str, Any]:
    """The spec's searched parameters (`search.spec.Param`) as a Syne Tune config space, conditions dropped."""
    from syne_tune import config_space as cs

    out: dict[str, Any] = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = cs.choice(list(p.choices) if _one_type(p.choices) else [json.dumps(c) for c in p.choices])
        elif p.kind == "int":
            out[p.name] = (cs.lograndint if p.log else cs.randint)(int(p.low), int(p.high))
        else:  # loguniform, or uniform (log: true makes it a log scale too)
            out[p.name] = (cs.loguniform if p.log else cs.uniform)(float(p.low), float(p.high))
    return out


def to_syne_value(p: Any, value: Any) -> Any:
    """A spec value of parameter `p` as the config space holds it."""
    return value if p.kind != "choice" or _one_type(p.choices) else json.dumps(value)


def from_syne(space: tuple[Any, ...], config: dict[str, Any]) -> dict[str, Any]:
    """The searched values of a Syne Tune config, as the spec's own Python values (types checked: True is not 1)."""
    out: dict[str, Any] = {}
    for p in space:
        value = config[p.name]
        if p.kind == "choice":
            if not _one_type(p.choices):
                value = json.loads(value)
            match = [c for c in p.choices if type(c) is type(value) and c == value]
            if not match:
                raise ValueError(f"{p.name}={value!r} ({type(value).__name__}) is not one of {list(p.choices)}")
            value = match[0]
        elif p.kind == "int":
            value = int(value)
        else:
            value = float(value)
        out[p.name] = value
    return out


def baseline_point(spec: Any) -> dict[str, Any]:
    """`spec.baseline_point()` plus each searched parameter inactive under the baseline, at the baseline's value
    (or its range's middle / first choice): Syne Tune samples every parameter, so its points need every one."""
    point = dict(spec.baseline_point())
    for p in spec.space:
        if p.name in point:
            continue
        value = spec.baseline.get(p.name)
        if value is None or not p.contains(value):
            if p.kind == "choice":
                value = p.choices[0]
            else:
                mid = math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2
                value = round(mid) if p.kind == "int" else mid
        point[p.name] = value
    return {p.name: to_syne_value(p, point[p.name]) for p in spec.space}


def state_file(checkpoint_dir: str | os.PathLike, round_: int) -> Path:
    """Where a trial saves its state at `round_` (one file per improving round; the driver prunes them)."""
    return Path(checkpoint_dir) / f"{STATE_PREFIX}{round_:04d}.pt"


def state_files(checkpoint_dir: str | os.PathLike) -> dict[int, Path]:
    """{round: file} of the states a trial has saved (temporary files of a write in progress excluded)."""
    folder = Path(checkpoint_dir)
    if not folder.is_dir():
        return {}
    return {int(f.stem[len(STATE_PREFIX):]): f for f in folder.glob(f"{STATE_PREFIX}[0-9]*.pt")}


# ----------------------------------------------------------------------------------------------
# The run


class Recorder:
    """A Syne Tune tuner callback (`syne_tune.tuner_callback.TunerCallback`'s hooks, without importing it here):
    the events on the caller's clock, each trial's config and start, the ASHA decisions; prunes checkpoint files.

    Module-level and plain (lists and dicts): the Tuner serialises itself with its callbacks every 10 s (dill)."""

    def __init__(self, t0: float, budget_s: float, space: tuple[Any, ...]) -> None:
        self.t0, self.budget_s, self.space = t0, budget_s, space
        self.tuner_started: float | None = None  # time.monotonic() at on_tuning_start
        self.events: list[tuple[float, str, int, float, float, float, float]] = []
        self.configs: dict[str, dict[str, Any]] = {}
        self.decisions: list[tuple[str, int, str]] = []  # (trial, round, CONTINUE | STOP)
        self.started_at: dict[str, float] = {}  # time.time() at the trial's start (workers stamp reports with time.time())
        self.first_report: dict[str, tuple[float, float]] = {}  # trial: (seconds from start to first report, its round's seconds)
        self.trial_best: dict[str, tuple[float, int]] = {}  # trial: (best val_acc seen in time, its round)
        self.best: tuple[float, str, int] | None = None  # (val, trial, round) over all trials
        self.done: set[str] = set()
        self.backend: Any = None

    # -- the hooks the Tuner calls ----------------------------------------------------------
    def on_tuning_start(self, tuner: Any) -> None:
        self.tuner_started = time.monotonic()
        self.backend = tuner.trial_backend

    def on_start_trial(self, trial: Any) -> None:
        tid = str(trial.trial_id)
        self.started_at[tid] = time.time()
        self.configs[tid] = from_syne(self.space, trial.config)

    def on_trial_result(self, trial: Any, status: str, result: dict[str, Any], decision: str) -> None:
        now = time.monotonic() - self.t0
        tid = str(trial.trial_id)
        rnd, val = int(result["round"]), float(result[METRIC])
        self.events.append((now, tid, rnd, float(result["epoch"]), val, float(result["epoch_seconds"]),
                            float(result["train_seconds"])))
        self.decisions.append((tid, rnd, decision))
        if tid not in self.first_report and tid in self.started_at:
            self.first_report[tid] = (float(result["st_worker_timestamp"]) - self.started_at[tid], float(result["epoch_seconds"]))
        if now <= self.budget_s and val > self.trial_best.get(tid, (-math.inf, 0))[0]:
            self.trial_best[tid] = (val, rnd)
            self._prune(tid, keep=rnd, below=rnd)
            if self.best is None or val > self.best[0]:
                self.best = (val, tid, rnd)
                self._sweep()
        if decision == "STOP":  # SchedulerDecision.STOP
            self._finished(tid)

    def on_trial_complete(self, trial: Any, result: dict[str, Any]) -> None:
        self._finished(str(trial.trial_id))

    def on_tuning_end(self) -> None: ...
    def on_loop_start(self) -> None: ...
    def on_loop_end(self) -> None: ...
    def on_fetch_status_results(self, trial_status_dict: Any, new_results: Any) -> None: ...
    def on_tuning_sleep(self, sleep_time: float) -> None: ...
    def on_resume_trial(self, trial: Any) -> None: ...

    # -- checkpoint files -------------------------------------------------------------------
    def _finished(self, tid: str) -> None:
        self.done.add(tid)
        self._sweep()

    def _prune(self, tid: str, *, keep: int | None, below: float = math.inf) -> None:
        """Delete the trial's state files of rounds below `below`, except round `keep`."""
        if self.backend is None:
            return
        for rnd, path in state_files(self.backend.checkpoint_trial_path(int(tid))).items():
            if rnd < below and rnd != keep:
                path.unlink(missing_ok=True)

    def _sweep(self) -> None:
        """Finished trials that are not the best can never be handed over: their states go."""
        for tid in self.done:
            if self.best is None or tid != self.best[1]:
                self._prune(tid, keep=None)

    def keep_only_best(self) -> None:
        """After the run: every state file but the best round's goes."""
        for tid in self.started_at:
            self._prune(tid, keep=self.best[2] if self.best and tid == self.best[1] else None)


@contextlib.contextmanager
def _run_environment(workdir: Path, seed: int) -> Iterator[None]:
    """What the run changes in this process, undone after it: Syne Tune's results folder (SYNETUNE_FOLDER) in
    `workdir`, OMP_NUM_THREADS=1 for the trials (what importing Syne Tune's local backend sets when unset), the
    root logger's handlers (importing Syne Tune calls logging.basicConfig()), NumPy's global generator."""
    import numpy as np

    keys = ("SYNETUNE_FOLDER", "OMP_NUM_THREADS")
    saved_env = {k: os.environ.get(k) for k in keys}
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_rng = np.random.get_state()
    os.environ["SYNETUNE_FOLDER"] = str(workdir)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(saved_rng)
        for handler in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(handler)
        root.setLevel(saved_level)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _scheduler(method: str, spec: Any, space: dict[str, Any], *, seed: int, max_t: int) -> Any:
    """The method's Syne Tune baseline, configured as the module docstring says."""
    from syne_tune.optimizer import baselines

    rf = spec.budget.reduction_factor
    return getattr(baselines, METHODS[method])(
        config_space=space, metric=METRIC, time_attr="round", max_t=max_t, do_minimize=False, random_seed=seed,
        grace_period=1, reduction_factor=int(rf) if float(rf).is_integer() else rf, points_to_evaluate=[baseline_point(spec)],
    )


def run_syne_tune(method: str, spec: Any, *, seed: int, budget_s: float, t0: float, workdir: Path) -> dict[str, Any]:
    """Run one Syne Tune search on `spec` until `budget_s` seconds after `t0` (the caller's `time.monotonic()`).

    Returns `events` [(seconds since t0, trial, round, epoch, val_acc, round seconds, train seconds)] in arrival
    order, `configs` {trial: searched values}, `best` {trial, config, val, round, epoch} over the rounds reported
    before the deadline, `best_state` (that round's `Trainer.state_dict()`, or None), `search_seconds` (the
    tuner's run), `startup_seconds` (t0 to the tuner's start); besides, `decisions` [(trial, round, CONTINUE |
    STOP)] and `trial_startup` {trial: (seconds from its start to its first report, that round's seconds)}."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, but got {method!r}")
    if spec.metric != METRIC or spec.mode != "max":
        raise ValueError(f"the Syne Tune peer searches val_acc (max), but the spec says {spec.metric} ({spec.mode})")
    workdir = Path(workdir).resolve()
    if " " in str(workdir):
        raise ValueError(f"workdir {workdir} has a space: LocalBackend splits the trial's command line on spaces")
    workdir.mkdir(parents=True, exist_ok=True)
    spec_file = workdir / "spec.json"
    spec_file.write_text(json.dumps(spec.raw, indent=1))

    from search.rounds import total_rounds
    from trainables.checkpoint import load_checkpoint

    data = spec.load_data()  # only its size: the rounds of a full trial
    max_t = total_rounds(spec, len(data.train))
    del data

    with _run_environment(workdir, seed):
        from syne_tune import StoppingCriterion, Tuner
        from syne_tune.backend import LocalBackend
        from syne_tune.results_callback import StoreResultsCallback
        from syne_tune.tuner_logger import TunerLogger

        space = {**to_syne_space(spec.space), SPEC_FILE_KEY: str(spec_file)}
        scheduler = _scheduler(method, spec, space, seed=seed, max_t=max_t)
        backend = LocalBackend(entry_point=str(ENTRY_POINT), pass_args_as_json=True)
        recorder = Recorder(t0, budget_s, spec.space)
        stop = StoppingCriterion(max_wallclock_time=budget_s)
        tuner = Tuner(trial_backend=backend, scheduler=scheduler, stop_criterion=stop, n_workers=spec.budget.max_concurrent,
                      tuner_name=f"{method}-seed{seed}", callbacks=[StoreResultsCallback(), recorder], sleep_time=SLEEP_SECONDS,
                      output_logger=TunerLogger(use_colors=False, use_emojis=False))
        started = time.monotonic()
        stop.max_wallclock_time = max(0.0, budget_s - (started - t0))  # the deadline is t0 + budget_s
        tuner.run()
        search_seconds = time.monotonic() - started

    best: dict[str, Any] = {}
    best_state = None
    if recorder.best is not None:
        val, tid, rnd = recorder.best
        epoch = next(e[3] for e in recorder.events if e[1] == tid and e[2] == rnd)
        best = {"trial": tid, "config": recorder.configs.get(tid, {}), "val": val, "round": rnd, "epoch": epoch}
        path = state_files(backend.checkpoint_trial_path(int(tid))).get(rnd)
        if path is not None:
            best_state = load_checkpoint(path)
            best_state.pop("format", None)  # hpsearch's file marker: the rest is Trainer.state_dict()
    recorder.keep_only_best()
    return {
        "events": list(recorder.events), "configs": dict(recorder.configs), "best": best, "best_state": best_state,
        "search_seconds": search_seconds,
        "startup_seconds": (recorder.tuner_started or started) - t0,
        "decisions": list(recorder.decisions), "trial_startup": dict(recorder.first_report),
        "tuner_path": str(tuner.tuner_path),
    }
