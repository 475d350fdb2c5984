"""Scale: trials of a trivial trainable (`--trials`, default 1,000) through hpsearch's full path vs bare Tune + Optuna + ASHA.

All runs compose their Tuner with `search.tuner.build_tuner` on the quickstart spec (hpsearch's
rung-aware TPE, the spec's ASHA on `round`, 2 trials in flight, Tune's experiment state
saved every 5 s as `run_search` sets it), with `trainable=trivial`: three reports of
a value computed from the config, no training, no checkpoint. They differ only in
the callbacks:

- bare: none (what Tune + Optuna + ASHA cost by themselves);
- hpsearch: `run_search`'s whole path, `search.tuner.run_experiment` with
  `Components(trainable=trivial)`: its observers (user-error stop, ProgressCallback,
  MlflowTracker: parent run, one nested run per trial with its params and tags, metrics
  per round, end status; SQLite store) and its ending after Tune's loop (the results
  read back, `search.finalize`, which finds no checkpoint to hand over and leaves
  `result.final_error`, and MLflow's summary and closing runs).

Throughput = trials / the wall time of Tune's loop (from Tune's callback `setup` to its
`on_experiment_end`, noted by the same observer in every run). `--profile` runs the hpsearch path
once more under py-spy (driver and its subprocesses, 100 Hz, idle samples included) and
reports where the driver's main thread spends its time.

    python benchmarks/scale.py [--smoke] [--trials 1000] [--profile] [--profile-trials 400]

A third run, bare Tune with its default CSV + JSON + tensorboardX result loggers, shows
what plain Tune gives a user (hpsearch keeps only the JSON logger, which it reads back).
"""
from __future__ import annotations

import collections
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

TARGET_RATIO = 0.75
RUNS = {  # name: what the table calls it
    "bare-default": "bare Tune + Optuna + ASHA, Tune's default result loggers (CSV, JSON, tensorboardX)",
    "bare": "bare Tune + Optuna + ASHA, JSON result logger only (Tune as hpsearch sets it up)",
    "hpsearch": "hpsearch (+ ProgressCallback + MlflowTracker)",
    "mlflow-async": "bare + MLflow's own asynchronous logging from the driver (the design hpsearch's writer process is weighed against)",
}
TARGET_PER_HOUR = 30_000
PROFILE_TIMEOUT_S = 600  # the profiled run takes ~3 min


def add_args(parser) -> None:
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--profile", action="store_true", help="also profile the hpsearch run's driver with py-spy")
    parser.add_argument("--profile-trials", type=int, default=400)
    parser.add_argument("--only", choices=list(RUNS), help=argparse_hidden())
    parser.add_argument("--storage", help=argparse_hidden())


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def trivial(config):
    """Three reports of a smooth function of the sampled config (a stand-in for training)."""
    from ray import tune

    lr = float(config.get("lr", 1e-3))
    value = 0.95 - 0.04 * (math.log10(lr) + 2.5) ** 2 - 0.1 * abs(float(config.get("dropout", 0.0)) - 0.2)
    value += 0.01 if config.get("optimizer") == "adam" else 0.0
    for i in range(3):
        tune.report({"val_acc": value - 0.02 * (2 - i), "round": i + 1, "epoch": float(i + 1)})


class AsyncMlflowLogger:
    """The simpler design weighed against hpsearch's writer process: a Tune callback on the driver that logs
    with MLflow's own asynchronous logging (`log_batch(..., synchronous=False)`): a parent run, one nested run
    per trial with its params, metrics per result, its end status. Same SQLite store kind."""

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = self.client.create_experiment(experiment)
        self.parent = self.client.create_run(self.experiment_id, run_name="search").info.run_id
        self.runs: dict[str, str] = {}
        self.pending: list = []

    def _run(self, trial) -> str:
        from mlflow.entities import Param

        if trial.trial_id not in self.runs:
            run = self.client.create_run(self.experiment_id, run_name=trial.trial_id, tags={"mlflow.parentRunId": self.parent})
            self.runs[trial.trial_id] = run.info.run_id
            params = [Param(k, str(v)[:500]) for k, v in trial.config.items()]
            self.pending.append(self.client.log_batch(run.info.run_id, params=params, synchronous=False))
        return self.runs[trial.trial_id]

    # the Tune Callback hooks it needs (duck-typed, as search/callbacks.py's MirrorUpload)
    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        import time as _time

        from mlflow.entities import Metric

        step, now = int(result.get("round", 0)), int(_time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in result.items() if k in ("val_acc", "epoch")]
        self.pending.append(self.client.log_batch(self._run(trial), metrics=metrics, synchronous=False))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.client.set_terminated(self._run(trial), status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.client.set_terminated(self._run(trial), status="FAILED")

    def on_experiment_end(self, trials, **info) -> None:
        for operation in self.pending:
            operation.wait()
        self.client.set_terminated(self.parent, status="FINISHED")

    def __getattr__(self, name):  # every other Tune callback hook: nothing to do
        if name.startswith(("on_", "setup")):
            return lambda *a, **k: None
        raise AttributeError(name)

    def get_state(self):
        return None

    def set_state(self, state) -> None:
        pass


def make_spec(trials: int):
    from search.spec import parse_spec

    raw = C.quickstart_raw()
    raw["name"] = "bench-scale"
    raw["budget"].update({"samples": trials, "max_epochs": 3, "grace_period": 1, "reduction_factor": 3})
    return parse_spec(raw, "benchmarks/scale.py")


def one_run(which: str, spec, data, storage: Path) -> dict:
    """One search of `spec.budget.samples` trivial trials; returns timings and counts."""
    from search import results as R
    from search import rounds as B
    from search import tuner as T

    name = f"scale-{which}"
    experiment_dir = storage / name
    lines: list[str] = []
    clock = C.tune_clock_class()()
    callbacks: list = []
    if which == "bare":
        from ray.tune.logger import JsonLoggerCallback

        callbacks = [JsonLoggerCallback()]
    elif which == "mlflow-async":
        from ray.tune.logger import JsonLoggerCallback

        async_logger = AsyncMlflowLogger(f"sqlite:///{storage / 'async-mlflow.db'}", f"bench-scale-async-{os.getpid()}")
        callbacks = [JsonLoggerCallback(), async_logger]
    # bare-default: no callbacks, Tune adds its default CSV, JSON and tensorboardX loggers
    if which == "bare-default":
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    else:
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # as a search sets it (search.tuner.TUNE_ENVIRONMENT)
    result, ended = None, float("nan")
    try:
        with C.LoadWatch(interval=1.0) as load:
            if which == "hpsearch":  # exactly run_search's path (its JSON logger included), the trainable replaced
                result = T.run_experiment(spec, T.Components(trainable=trivial, callbacks=(clock,)), name=name, storage=str(storage),
                                          tracking_uri=f"sqlite:///{storage / 'mlflow.db'}", track=True, on_event=lines.append)
                ended = time.monotonic()
            else:
                T.build_tuner(spec, data, name=name, storage=str(storage), callbacks=[*callbacks, clock], trainable=trivial).fit()
    finally:
        os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    out = {"fit": clock.seconds(), "trials": spec.budget.samples, "finish": float("nan"), "mlflow_runs": float("nan"),
           "other_cores": load.other_cores()}
    with C.Stopwatch() as read:
        records = R.trial_records(experiment_dir, metric=spec.metric, mode=spec.mode, total_rounds=B.total_rounds(spec, len(data.train)))
    out["read_results"] = read.seconds
    out["trials"] = len(records)
    out["pruned"] = sum(r.status == R.Outcome.PRUNED for r in records)
    if result is not None:
        # the search's ending after Tune's loop: trivial trials have no checkpoint, so finalize sets result.final_error
        out["finish"] = ended - clock.t_end if clock.t_end is not None else float("nan")
        out["final_error"] = result.final_error
        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=result.tracking.tracking_uri)
        runs = client.search_runs([result.tracking.experiment_id], run_view_type=ViewType.ALL, max_results=5000)
        out["mlflow_runs"] = len(runs)
        out["mlflow_running"] = sum(r.info.status == "RUNNING" for r in runs)
        out["mlflow_killed"] = sum(r.info.status == "KILLED" for r in runs)
    if which == "mlflow-async":
        from mlflow.entities import ViewType

        runs = async_logger.client.search_runs([async_logger.experiment_id], run_view_type=ViewType.ALL, max_results=5000)
        out["mlflow_runs"] = len(runs)
        out["mlflow_running"] = sum(r.info.status == "RUNNING" for r in runs)
    out["progress_lines"] = len(lines)
    return out


def profile(args, storage: Path) -> str:
    """Run the hpsearch path under py-spy and summarise the driver's main thread."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        return "Profile: py-spy is not installed in this environment (`pip install py-spy`); skipped."
    raw = storage / "profile.txt"
    cmd = [str(py_spy), "record", "--rate", "100", "--idle", "--threads", "--subprocesses", "--format", "raw", "--output", str(raw), "--",
           sys.executable, __file__, "--only", "hpsearch", "--trials", str(args.profile_trials), "--storage", str(storage / "prof")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = proc.communicate(timeout=PROFILE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # py-spy --subprocesses can wait forever on a Ray worker it left stopped; Ctrl-C makes it write what it has.
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    if not raw.exists():
        return f"Profile: py-spy failed ({proc.returncode}): {stderr.strip()[-500:]}"
    return summarise_profile(raw, args.profile_trials)


CATEGORIES = (  # first match wins, checked on every frame of a stack
    ("hpsearch MLflow tracking on the Tune loop (search/tracking/)", ("search/tracking/",)),
    ("hpsearch progress (search/progress.py)", ("search/progress.py",)),
    ("Optuna TPE sampling (optuna/)", ("optuna/",)),
    ("ASHA scheduler", ("async_hyperband.py",)),
    ("Tune's result loggers (json / csv / tensorboardX files)", ("ray/tune/logger/", "tensorboardX/")),
    ("Tune experiment-state / searcher checkpointing", ("save_to_dir", "experiment_state", "sync_up_experiment_state")),
    ("waiting for trial actors (ray.wait / futures)", ("wait (ray/_private/worker.py", "RayEventManager.wait", "_raylet")),
    ("Tune controller, other", ("ray/tune/", "ray/air/")),
    ("other", ("",)),
)
WRITER_PARTS = (  # where the MLflow writer process spends its time
    ("create_run (child run + tags)", "RunWriter.child ("),
    ("log_batch (params + metrics + end tags)", "RunWriter.write_pending ("),
    ("set_terminated", "RunWriter.end ("),
    ("experiment + parent run (new SQLite file: schema migrations)", "RunWriter.open_parent ("),
    ("mlflow_runs.json saves", "RunWriter.save_runs ("),
)


def _stacks(raw: Path):
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            yield stack.split(";"), int(count)


def summarise_profile(raw: Path, trials: int) -> str:
    """py-spy raw (collapsed) stacks → the driver's Tune loop (main thread) by category, and the MLflow writer process."""
    main: collections.Counter = collections.Counter()
    main_total = 0
    writer: collections.Counter = collections.Counter()
    writer_total = writer_busy = 0
    for frames, n in _stacks(raw):
        processes = [f for f in frames if f.startswith("process ")]  # --subprocesses: the process chain comes first
        frames = frames[len(processes):]
        if not frames:
            continue
        thread = frames[0]
        if len(processes) <= 1 and thread.endswith("MainThread") and any("Tuner.fit (" in f for f in frames):
            main_total += n
            for label, needles in CATEGORIES:
                if any(any(nd in f for nd in needles) for f in frames[1:]):
                    main[label] += n
                    break
        elif any("writer_main (" in f for f in frames):
            writer_total += n
            if not any("RunWriter." in f and "RunWriter.serve (" not in f for f in frames):
                continue  # waiting for work
            writer_busy += n
            for label, needle in WRITER_PARTS:
                if any(needle in f for f in frames):
                    writer[label] += n
                    break
            else:
                writer["other"] += n
    if not main_total:
        return "Profile: no samples of the driver's Tune loop."
    rows = [[label, f"{100 * main[label] / main_total:.1f} %", f"{main[label] / 100:.1f} s"] for label, _ in CATEGORIES if main[label]]
    out = [
        f"### Profile of the hpsearch run's driver (py-spy, 100 Hz, idle included, {trials} trials)",
        f"Tune's loop (the driver's main thread inside `Tuner.fit`, {main_total / 100:.0f} s), by what its stack holds "
        "(first match in this order):",
        C.md_table(["category", "share", "≈ seconds"], rows),
    ]
    if writer_total:
        wrows = [[label, f"{writer[label] / 100:.1f} s", f"{1000 * writer[label] / 100 / trials:.1f} ms"]
                 for label in [*(w[0] for w in WRITER_PARTS), "other"] if writer[label]]
        out += [
            f"The MLflow writer process (search/tracking/writer.py) was busy {writer_busy / 100:.1f} s of {writer_total / 100:.0f} s "
            f"({1000 * writer_busy / 100 / trials:.0f} ms per trial, on its own interpreter: not competing with Tune's loop for the GIL):",
            C.md_table(["MLflow work", "seconds", "per trial"], wrows),
        ]
    return "\n\n".join(out)


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], add_args)
    if args.smoke:
        args.trials = 20
        args.profile_trials = 20
    C.quiet_ray_env()
    from search.cluster import connect
    from trainables.data import create_dataset

    spec = make_spec(args.trials)
    data = create_dataset(spec.dataset, **spec.dataset_options)  # only its size is used (ASHA's max_t)
    if args.only:  # a child run (under py-spy): one path, no report
        storage = Path(args.storage)
        connect(None)
        try:
            print(one_run(args.only, spec, data, storage))
        finally:
            C.kill_own_ray()
        return
    storage = Path(tempfile.mkdtemp(prefix="hpsearch-bench-scale-"))
    results = {}
    profile_text = ""
    try:
        with C.LoadWatch() as load:
            with C.Stopwatch() as start:
                connect(None)
            for which in RUNS:
                results[which] = one_run(which, spec, data, storage)
                r = results[which]
                print(f"{which}: {r['trials']} trials in {r['fit']:.1f} s = {3600 * r['trials'] / r['fit']:,.0f} trials/hour", flush=True)
            C.kill_own_ray()
            if args.profile:
                profile_text = profile(args, storage)
    finally:
        C.kill_own_ray()
        shutil.rmtree(storage, ignore_errors=True)
    hp = results["hpsearch"]
    per_hour = {k: 3600 * v["trials"] / v["fit"] for k, v in results.items()}
    ms = {k: 1000 * v["fit"] / v["trials"] for k, v in results.items()}
    rows = []
    for key, label in RUNS.items():
        r = results[key]
        rows.append([label, r["trials"], r["pruned"], r["fit"], per_hour[key], ms[key],
                     ms[key] - ms["bare"] if key in ("hpsearch", "mlflow-async") else "-", r["read_results"],
                     r["finish"] if key == "hpsearch" else "-", f"{r['other_cores']:.2f}"])
    table = C.md_table(["run", "trials", "pruned by ASHA", "Tune's loop s", "trials/hour", "ms per trial", "hpsearch bookkeeping ms/trial",
                        "reading results s", "the search's ending s (after Tune's loop)", "other processes' CPU during the run (cores)"], rows)
    ratio = per_hour["hpsearch"] / per_hour["bare"]
    ratio_default = per_hour["hpsearch"] / per_hour["bare-default"]
    target = C.md_table(["check", "measured", "target"], [
        ["hpsearch throughput / bare throughput (same Tune setup: JSON logger only)", f"{ratio:.2f}",
         f"≥ {TARGET_RATIO} ({'met' if ratio >= TARGET_RATIO else '**missed**'})"],
        ["hpsearch throughput / bare throughput with Tune's default loggers (what plain Tune gives a user)", f"{ratio_default:.2f}",
         f"≥ {TARGET_RATIO} ({'met' if ratio_default >= TARGET_RATIO else '**missed**'})"],
        ["hpsearch trials/hour", f"{per_hour['hpsearch']:,.0f}", f"≥ {TARGET_PER_HOUR:,} ({'met' if per_hour['hpsearch'] >= TARGET_PER_HOUR else '**missed**'})"],
        ["MLflow runs after the search (1 parent + 1 per trial) / still RUNNING",
         f"{hp.get('mlflow_runs')} / {hp.get('mlflow_running')}", f"{hp['trials'] + 1} / 0"],
        ["hpsearch's MLflow writer process vs MLflow's own asynchronous logging from the driver (throughput ratio; "
         "the simpler design, asynchronous logging, is to be kept unless the writer is > 5 % faster)",
         f"{per_hour['hpsearch'] / per_hour['mlflow-async']:.2f}x",
         "> 1.05x: the writer process earns its complexity" if per_hour["hpsearch"] / per_hour["mlflow-async"] > 1.05
         else "<= 1.05x: the simpler design should replace it"],
    ])
    setup = (
        f"{args.trials} trials per run, each three `tune.report` calls (rounds 1-3, ASHA grace 1, reduction factor 3, "
        "max_t 3); the quickstart space (8 parameters, one conditional) sampled by Optuna TPE (seeded); 2 trials in flight "
        "(2 cores); `reuse_actors=True`; MLflow in an SQLite file (a new file: its schema is created during the run). Ray "
        f"started once for all runs (start-up {start.seconds:.1f} s, not counted); the runs go in the table's order. Other "
        "processes' CPU differs between runs (last column): compare rows with that in mind. The hpsearch run ends as a "
        "search ends (`the search's ending`: results read back, `search.finalize`, MLflow's summary): trivial trials save no "
        f"checkpoint, so there is no model to hand over (its final error: {hp.get('final_error') or 'none'})."
    )
    C.write_report("scale", f"Scale: {args.trials:,} trivial trials, hpsearch's full path vs bare Tune + Optuna + ASHA",
                   [setup, table, target, profile_text], args.out, smoke=args.smoke, load=load)


if __name__ == "__main__":
    main()
