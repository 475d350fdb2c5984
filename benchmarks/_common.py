"""Shared plumbing of the benchmark scripts: arguments, machine facts, CPU-load watch, markdown output.

Every script is `python benchmarks/NAME.py [--smoke] [--out DIR]`. It prints one
markdown report and writes it to `DIR/NAME.md` (default `benchmarks/results/`), the
script's one current result; the raw files it links (per-seed reports, JSON, plots,
recorded curves) go to `DIR/runs/NAME/` (`run_dir`).
The report states the machine (cores, CPU model, RAM), the versions that
matter, the date, the command, and how busy the machine was with *other*
processes during the run (the benchmarks share a 2-core machine with other
work; a number measured under load says so).
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
QUICKSTART = REPO / "spaces" / "quickstart.yaml"

if str(REPO) not in sys.path:  # `python benchmarks/NAME.py` from anywhere, installed or not
    sys.path.insert(0, str(REPO))


def run_dir(out: str | Path, script: str) -> Path:
    """Where a script's raw files go: `OUT/runs/SCRIPT/`, beside its report `OUT/SCRIPT.md` (not created here)."""
    return Path(out) / "runs" / script


def parse_args(description: str, extra: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="a tiny version (< 60 s) that checks the script runs (CI)")
    parser.add_argument("--out", default=str(RESULTS), help="folder for NAME.md, raw files (if any) under runs/NAME/ (default: benchmarks/results)")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


# ----------------------------------------------------------------------------------------------
# Machine and versions


def cpu_model() -> str:
    """The CPU model name (/proc/cpuinfo: psutil does not report it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("torch", "torchvision", "ray", "optuna", "mlflow"):
        try:
            module = __import__(name)
            out[name] = getattr(module, "__version__", "?")
        except ImportError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    """The repository's commit (and whether files differed from it), or "unknown" outside a git clone."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if commit and dirty else (commit or "unknown")


CODE_REVISION = git_revision()  # taken when the benchmark starts: a commit made during a run does not change it


def machine_lines() -> list[str]:
    v = versions()
    return [
        f"- machine: {os.cpu_count()} cores (nproc), {cpu_model()}, {ram_gib():.1f} GiB RAM, no GPU used",
        "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items()),
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- command: `{command_line()}`",
        f"- code: commit {CODE_REVISION}",
    ]


def command_line() -> str:
    script = Path(sys.argv[0])
    try:
        script = script.resolve().relative_to(REPO)
    except ValueError:
        pass
    return " ".join(["python", str(script), *(shlex.quote(a) for a in sys.argv[1:])])


# ----------------------------------------------------------------------------------------------
# How busy the machine is with processes that are not ours


class LoadWatch:
    """Samples, every `interval` s, the CPU used by the whole machine and by this process tree.

    `other_cores` = machine busy cores − this run's busy cores (Ray workers included):
    how much CPU someone else's work took while we measured. Approximate (a process of
    ours that lives less than `interval` is missed, so it errs towards blaming others).
    """

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # (load1, machine busy cores, our busy cores)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ncpu = os.cpu_count() or 1

    def __enter__(self) -> "LoadWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        seen: dict[int, float] = {}  # pid -> CPU seconds (user + system), the most seen: a process that exits keeps its share

        def ours() -> float:
            for proc in [me, *me.children(recursive=True)]:  # local Ray's raylet and workers descend from the driver
                try:
                    times = proc.cpu_times()
                except psutil.Error:
                    continue  # exited meanwhile
                seen[proc.pid] = max(seen.get(proc.pid, 0.0), times.user + times.system)
            return sum(seen.values())

        psutil.cpu_percent(None)  # starts psutil's machine-wide interval
        ours0, t0 = ours(), time.monotonic()
        while not self._stop.wait(self.interval):
            machine = psutil.cpu_percent(None) / 100 * self._ncpu  # busy cores since the last sample
            ours1, t1 = ours(), time.monotonic()
            mine = min((ours1 - ours0) / max(t1 - t0, 1e-9), machine)
            self.samples.append((os.getloadavg()[0], machine, mine))
            ours0, t0 = ours1, t1

    def summary(self) -> str:
        if not self.samples:
            return "load: not sampled (run shorter than one interval)"
        load = [s[0] for s in self.samples]
        machine = [s[1] for s in self.samples]
        ours = [s[2] for s in self.samples]
        other = [m - o for m, o in zip(machine, ours)]
        return (
            f"load during the run: 1-min load average mean {statistics.mean(load):.2f} (max {max(load):.2f}) on "
            f"{self._ncpu} cores; CPU busy {statistics.mean(machine):.2f} cores on average, of which this benchmark "
            f"{statistics.mean(ours):.2f} and other processes {statistics.mean(other):.2f} (max {max(other):.2f})"
        )

    def other_cores(self) -> float:
        return statistics.mean(m - o for _, m, o in self.samples) if self.samples else float("nan")


# ----------------------------------------------------------------------------------------------
# Markdown


def fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # nan
            return "-"
        return f"{value:,.{digits}f}"
    return str(value)


def md_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |")
    return "\n".join(lines)


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def write_report(name: str, title: str, sections: Sequence[str], out_dir: str | Path, *, smoke: bool, load: LoadWatch | None) -> Path:
    """Print the report and write it to `out_dir/NAME.md`."""
    header = [f"# {title}", "", *machine_lines()]
    if smoke:
        header.append("- mode: **smoke** (tiny sizes: checks the script runs; the numbers mean nothing)")
    if load is not None:
        header.append(f"- {load.summary()}")
    text = "\n".join(header) + "\n\n" + "\n\n".join(s.strip() for s in sections) + "\n"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")
    return path


class Stopwatch:
    def __enter__(self) -> "Stopwatch":
        self.start = time.perf_counter()
        self.seconds = float("nan")
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.start


def quiet_ray_env() -> None:
    """Part of the environment a search runs Tune in (`search.tuner.TUNE_ENVIRONMENT`: Tune's console tables off,
    experiment state every 5 s), for the peers that run Tune without hpsearch."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def quickstart_raw() -> dict[str, Any]:
    """The quickstart spec as a raw mapping, to be changed and validated with `search.spec.parse_spec`."""
    import yaml

    return yaml.safe_load(QUICKSTART.read_text())


# ----------------------------------------------------------------------------------------------
# Tune's loop, timed; the model a method hands over, tested as a search tests it


@functools.cache
def tune_clock_class() -> type:
    """A Tune callback that notes when Tune's loop starts (`setup`) and ends (`on_experiment_end`).

    It serves as a `search.tuner.Components` observer (hooks called with keyword arguments) and in a
    `RunConfig`'s callbacks (a bare Tune run); benchmark recorders subclass it. Built on first use: importing
    this module does not import Ray."""
    from ray.tune import Callback

    class TuneClock(Callback):
        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.t_end: float | None = None

        def setup(self, **info: Any) -> None:
            self.t0 = time.monotonic()
            self.t_end = None

        def on_experiment_end(self, **info: Any) -> None:
            self.t_end = time.monotonic()

        def seconds(self) -> float:
            """From Tune's start to the end of its experiment (now, if it has not ended)."""
            return (self.t_end or time.monotonic()) - self.t0

    return TuneClock


def final_test_acc(result: Any) -> float:
    """The test accuracy of the model a search handed over (`result.final`, search.finalize); nan without one."""
    final = getattr(result, "final", None)
    return float(final.test.acc) if final is not None and final.test is not None else float("nan")


def finalize_peer(spec: Any, data: Any, experiment_dir: str | Path) -> Any:
    """A peer's Tune experiment folder ended as a search ends: its trials read back (search.results), the one whose
    best round is best handed over and tested once by `search.finalize.finalize` (its best round's checkpoint,
    best/ written). Returns a `search.tuner.SearchResult` whose `final` is that report (None: no trial reported)."""
    from search import layout as L
    from search import results as R
    from search import rounds as B
    from search.finalize import finalize
    from search.tuner import SearchResult, find_baseline

    folder = L.SearchFolder.at(str(experiment_dir))
    records = R.trial_records(folder.location, metric=spec.metric, mode=spec.mode, total_rounds=B.total_rounds(spec, len(data.train)))
    result = SearchResult(name=folder.name, folder=folder, spec=spec, records=records, best=R.best_record(records, spec.mode),
                          baseline=find_baseline(records, spec), interrupted=False,
                          counts={s: sum(r.status == s for r in records) for s in R.Outcome}, storage=str(folder.local.parent))
    if result.best is not None:
        result.final = finalize(result, data)
    return result


def checkpoint_test_acc(state: dict[str, Any] | None, data: Any, settings: Any) -> float:
    """Test accuracy of a checkpoint state evaluated as `search.finalize.finalize` evaluates the model it hands over
    (`trainer_from_checkpoint`, `Trainer.evaluate` on the test split), for a peer with no search folder to finalize
    (Optuna alone keeps its best checkpoint in memory); nan without a state or a labelled test split."""
    from search.finalize import trainer_from_checkpoint

    if state is None or data.test is None or not data.test.labelled:
        return float("nan")
    trainer = trainer_from_checkpoint(state, data, settings)
    try:
        return float(trainer.evaluate(data.test)["acc"])
    finally:
        trainer.close()


def kill_own_ray() -> None:
    """Shut down the Ray instance this process started (never anyone else's)."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
