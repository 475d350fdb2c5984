"""Reading a search back: one row per trial, ranked by its best round (not its last).

Works on a finished, interrupted or running search folder; used by the
summary at the end of `hpsearch run`, by `hpsearch results` and by export.
"""
from __future__ import annotations

import enum
import json
import math
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from search import layout as L
from search import storage as S
from trainables import metrics as M
from trainables.errors import UserError
from trainables.files import CHECKPOINT_FILE, write_atomic


class Outcome(str, enum.Enum):
    """How a trial stands, as users see it (progress lines, MLflow tags, `hpsearch results`). A str: compares,
    hashes, prints and serialises as its value."""

    COMPLETED = "completed"  # trained to max_epochs
    PRUNED = "pruned"  # stopped at a rung by ASHA (or never promoted again)
    TIMED_OUT = "timed_out"  # cut by the clock (time budget, or the finish phase) between two rungs
    FAILED = "failed"
    DIVERGED = "diverged"  # a non-finite training loss
    RUNNING = "running"
    PAUSED = "paused"  # waiting at a rung for a promotion (ASHA with promotions, while the search runs)
    PENDING = "pending"

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:
        return str.__hash__(self.value)


def ended_outcome(rounds: int, total_rounds: int, rungs: Any = (), *, diverged: bool = False) -> str:
    """How a trial that stopped ended: completed (max_t), pruned (at a rung: stopped or never promoted
    again) or timed_out (between rungs: the clock cut it). Without rungs (an older search) every early end is pruned."""
    if diverged:
        return Outcome.DIVERGED
    if rounds >= total_rounds:
        return Outcome.COMPLETED
    if not rungs or rounds in set(rungs):
        return Outcome.PRUNED
    return Outcome.TIMED_OUT


def trial_end(trial_id: str, last_result: dict[str, Any] | None, total_rounds: int, rungs: Any,
              user_errors: dict[str, str]) -> tuple[str, str]:
    """(outcome, error line) of a trial Tune ended without an error of its own: the one place that decides it
    for the progress lines, MLflow and `hpsearch results`. A trial whose user error stopped the search (Tune
    ends it while it waits for a retry) failed, whatever its rounds say."""
    if trial_id in user_errors:
        return Outcome.FAILED, user_errors[trial_id]
    last = last_result or {}
    rounds = int(last.get(M.ROUND, 0))
    return ended_outcome(rounds, total_rounds, rungs, diverged=last.get(M.STATUS) == M.STATUS_DIVERGED), ""


def read_user_errors(experiment_dir: Path | str) -> dict[str, str]:
    """The trials a user error stopped the search on (search.stopping writes them), {} when none did."""
    path = Path(experiment_dir) / L.USER_ERRORS
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError, ValueError):
        return {}


def record_user_error(experiment_dir: Path | str, trial_id: str, message: str) -> None:
    write_atomic(Path(experiment_dir) / L.USER_ERRORS, json.dumps({**read_user_errors(experiment_dir), trial_id: message}))


def error_line(trial_dir: Path | str, limit: int = 300) -> str:
    """The last line of a trial's error.txt (Tune's traceback ends with the exception), or ''."""
    path = Path(trial_dir) / "error.txt"
    if path.is_file():
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:limit]
    return ""


def rung_of(rounds: int, rungs: Any) -> int:
    """How many rungs a trial of `rounds` rounds has met (0: stopped before the first one)."""
    return sum(1 for level in rungs if rounds >= level)


def read_state(experiment_dir: Path | str) -> dict[str, Any]:
    """The search state (`hpsearch.json`) of a search folder (a path or a URI)."""
    if S.is_uri(experiment_dir):
        text = S.read_text(S.join(str(experiment_dir), L.STATE))
        if text is None:
            raise UserError(f"{S.display(str(experiment_dir))} is not an hpsearch search folder (no {L.STATE}); see `hpsearch list`")
        return json.loads(text)
    path = Path(experiment_dir) / L.STATE
    if not path.is_file():
        raise UserError(f"{experiment_dir} is not an hpsearch search folder (no {L.STATE}); see `hpsearch list`")
    return json.loads(path.read_text())


def write_state(experiment_dir: Path | str, state: dict[str, Any]) -> None:
    text = json.dumps(state, indent=2, default=str)
    if S.is_uri(experiment_dir):
        S.write_text(S.join(str(experiment_dir), L.STATE), text)
        return
    write_atomic(Path(experiment_dir) / L.STATE, text)


def search_location(storage: str | Path, name: str) -> Path | str:
    """Where search `name` lives (or would live) under `storage`: a path, or a URI."""
    folder = L.SearchFolder.of(storage, name)
    return folder.location if folder.remote else Path(folder.location)


def find_search(storage: str | Path, name: str) -> Path | str:
    """The folder (path or URI) of search `name` under `storage`, or a `UserError` listing what is there."""
    folder = search_location(storage, name)
    found = S.is_file(S.join(folder, L.STATE)) if isinstance(folder, str) else (folder / L.STATE).is_file()
    if found:
        return folder
    if S.is_uri(storage):
        problem = S.missing_bucket(str(storage))
        if problem:
            raise UserError(problem)
    known = list_searches(storage)
    shown = S.display(str(storage)) if S.is_uri(storage) else storage
    hint = f"searches in {shown}: {', '.join(known)}" if known else f"no searches in {shown}"
    raise UserError(f"no search named {name!r} ({hint}); pass --storage if it lives elsewhere")


def list_searches(storage: str | Path) -> list[str]:
    if S.is_uri(storage):
        root = S.normalize(str(storage))
        return [n for n in S.list_names(root, dirs_only=True) if S.is_file(S.join(root, n, L.STATE))]
    root = S.local_path(str(storage))
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / L.STATE).is_file())


def _not_mirrored(relpath: str) -> bool:
    """Files of a URI search that reading it back does not download (checkpoints: on demand)."""
    first = relpath.split("/", 1)[0]
    parts = relpath.split("/")
    return (any(p.startswith("checkpoint_") for p in parts) or first in L.NOT_MIRRORED
            or parts[-1].startswith(".hpsearch-"))


def local_folder(experiment_dir: Path | str) -> Path:
    """A local folder holding a search's Tune files: the folder itself, or the refreshed mirror of a URI."""
    if not S.is_uri(experiment_dir):
        return Path(experiment_dir)
    return S.download(str(experiment_dir), S.mirror_dir(str(experiment_dir)), skip=_not_mirrored)


def fetch_file(experiment_dir: Path | str, relpath: str) -> Path | None:
    """One file of a search folder as a local path (downloaded into the mirror for a URI), or None."""
    if not S.is_uri(experiment_dir):
        path = Path(experiment_dir) / relpath
        return path if path.is_file() else None
    uri = S.join(str(experiment_dir), relpath)
    if not S.is_file(uri):
        return None
    target = S.mirror_dir(str(experiment_dir)) / relpath
    S.download(S.join(str(experiment_dir), posixpath.dirname(relpath)), target.parent,
               skip=lambda rel: rel != posixpath.basename(relpath))
    return target


def read_history(trial_dir: Path) -> list[dict[str, Any]]:
    """Every reported result of a trial (its `result.json` lines), skipping a torn last line."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    by_round: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line half-written when the driver was killed
        by_round[int(row.get(M.ROUND, len(by_round) + 1))] = row  # a round replayed after a restart counts once
    return [by_round[k] for k in sorted(by_round)]


@dataclass
class TrialRecord:
    """One trial as the search left it."""

    trial_id: str
    index: int  # 1-based creation order (Tune's experiment tag): the baseline is 1
    config: dict[str, Any]
    status: str
    rounds: int
    best_value: float | None
    best_round: int
    best_epoch: float | None
    last_value: float | None
    path: Path
    history: list[dict[str, Any]]
    error: str = ""
    remote: str = ""  # the trial folder's URI when the search lives on a URI (`path` is then its local mirror)
    rung: int = 0  # rungs met (a pruned trial stopped at its last one)
    metric: str = M.VAL_ACC  # what best_value / best_round rank by
    mode: str = "max"


def _is_better(a: float, b: float | None, mode: str) -> bool:
    return b is None or (a > b if mode == "max" else a < b)


def paused_trial_outcome(trial_id: str, rounds: int, total_rounds: int, rungs: Any, scheduler_state: dict[str, Any] | None) -> str:
    """The outcome of a trial Tune's saved state calls PAUSED, from ASHA with promotions' own record.

    Tune does not re-save a paused trial it stops at the end of a search, nor one the scheduler resumed
    shortly before the driver died: waiting at a rung -> paused; ended there -> pruned (or timed out);
    neither -> it had been promoted and was running. States saved before "stopped" existed count it ended.
    """
    if scheduler_state is None or trial_id in scheduler_state.get("paused_at", {}):
        return Outcome.PAUSED
    if "stopped" not in scheduler_state or trial_id in scheduler_state["stopped"]:
        return ended_outcome(rounds, total_rounds, rungs)
    return Outcome.RUNNING


def trial_records(experiment_dir: Path | str, *, metric: str, mode: str, total_rounds: int, rungs: Any = ()) -> list[TrialRecord]:
    """Trials of a search folder (a path, or a URI read through its local mirror) with outcome and best round, in creation order."""
    from ray.tune import ExperimentAnalysis

    remote = str(experiment_dir) if S.is_uri(experiment_dir) else ""
    experiment_dir = local_folder(experiment_dir)
    if not list(experiment_dir.glob("experiment_state-*.json")):
        return []
    analysis = ExperimentAnalysis(str(experiment_dir))
    # ASHA with promotions' own record of who waits at a rung: Tune does not re-save the state of a
    # paused trial it stops at the end of a search, so its saved status stays PAUSED.
    from search.schedulers import load_state as load_scheduler_state

    if remote:  # read on a machine that did not run it
        for name in (L.RUNGS, L.USER_ERRORS):
            if not (experiment_dir / name).is_file():
                fetch_file(remote, name)
    scheduler_state = load_scheduler_state(experiment_dir)
    user_errors = read_user_errors(experiment_dir)
    records = []
    for trial in analysis.trials:
        trial_dir = Path(trial.path or trial.local_path)
        history = read_history(trial_dir)
        best_value, best_round, best_epoch = None, 0, None
        diverged = False
        for row in history:
            if row.get(M.STATUS) == M.STATUS_DIVERGED:
                diverged = True
                continue
            value = row.get(metric)
            if isinstance(value, (int, float)) and math.isfinite(value) and _is_better(value, best_value, mode):
                best_value, best_round, best_epoch = float(value), int(row[M.ROUND]), row.get(M.EPOCH)
        rounds = int(history[-1][M.ROUND]) if history else 0
        last = history[-1].get(metric) if history else None
        error = ""
        if trial.status == "ERROR":
            status, error = Outcome.FAILED, error_line(trial_dir) or "error"
        elif diverged or trial.status == "TERMINATED":
            status, error = trial_end(trial.trial_id, history[-1] if history else None, total_rounds, rungs, user_errors)
            if diverged and status != Outcome.FAILED:  # a diverged round need not be the last one
                status = Outcome.DIVERGED
        elif trial.status == "RUNNING":
            status = Outcome.RUNNING
        elif trial.status == "PAUSED":
            status = paused_trial_outcome(trial.trial_id, rounds, total_rounds, rungs, scheduler_state)
        else:
            status = Outcome.PENDING
        tag = str(trial.experiment_tag).split("_", 1)[0]
        records.append(TrialRecord(
            trial_id=trial.trial_id, index=int(tag) if tag.isdigit() else len(records) + 1, config=dict(trial.config), status=status, rounds=rounds,
            best_value=best_value, best_round=best_round, best_epoch=best_epoch, last_value=last,
            path=trial_dir, history=history, error=error, remote=S.join(remote, trial_dir.name) if remote else "",
            rung=rung_of(rounds, rungs), metric=metric, mode=mode,
        ))
    records.sort(key=lambda r: r.index)
    return records


def best_record(records: list[TrialRecord], mode: str, *, prefer_completed: bool = False,
                top_share: float = 0.25) -> TrialRecord | None:
    """The trial whose best round is best (diverged and failed trials never win).

    `prefer_completed` (a search with a time budget, whose finish phase trains finalists to max_epochs):
    the best of the trials trained to the end, so the model handed over is fully trained and not a trial
    the clock cut at a lucky round, as long as it ranks in the `top_share` of all trials by best value;
    a finalist that turned out poor (a seed-0 benchmark run handed over val 0.57 beside a cut 0.90) is not.
    """
    eligible = [r for r in records if r.best_value is not None and r.status not in (Outcome.FAILED, Outcome.DIVERGED)]
    best = None
    for r in eligible:
        if best is None or _is_better(r.best_value, best.best_value, mode):
            best = r
    completed = [r for r in eligible if r.status == Outcome.COMPLETED]
    if prefer_completed and completed and best is not None:
        best_completed = best_record(completed, mode)
        assert best_completed is not None
        ranked = sorted((r.best_value for r in eligible), reverse=mode == "max")
        cutoff = ranked[max(1, math.ceil(top_share * len(ranked))) - 1]
        if not _is_better(cutoff, best_completed.best_value, mode):
            return best_completed
    return best


def checkpoint_names(record: TrialRecord) -> list[str]:
    """The trial's checkpoint folders that hold a checkpoint, oldest first (listed on the URI for a URI search)."""
    if record.remote:
        files = S.list_files(record.remote)
        return sorted({rel.split("/", 1)[0] for rel in files if rel.startswith("checkpoint_") and rel.endswith("/" + CHECKPOINT_FILE)})
    return sorted(c.parent.name for c in record.path.glob(f"checkpoint_*/{CHECKPOINT_FILE}"))


def best_checkpoint_name(record: TrialRecord, names: list[str]) -> str:
    """Which of `names` (checkpoint folders) holds the trial's best round."""
    want = f"checkpoint_{record.best_round - 1:06d}"
    if want in names:
        return want
    # Fall back: the kept checkpoint whose round's metric is best.
    if not names:
        raise UserError(f"trial {record.trial_id} has no checkpoint in {record.remote and S.display(record.remote) or record.path}")
    by_round = {int(n.split("_")[1]) + 1: n for n in names}
    best_name, best_value = names[-1], None
    for row in record.history:
        value = row.get(record.metric)
        if int(row.get(M.ROUND, -1)) in by_round and isinstance(value, (int, float)) and math.isfinite(value) \
                and _is_better(float(value), best_value, record.mode):
            best_name, best_value = by_round[int(row[M.ROUND])], float(value)
    return best_name


def best_checkpoint_dir(record: TrialRecord) -> Path:
    """The checkpoint folder of a trial's best round (kept by the scored CheckpointConfig), local
    (downloaded into the mirror when the search lives on a URI)."""
    folder = record.path / f"checkpoint_{record.best_round - 1:06d}"
    if not record.remote and (folder / CHECKPOINT_FILE).is_file():
        return folder
    name = best_checkpoint_name(record, checkpoint_names(record))
    if record.remote:
        S.download(S.join(record.remote, name), record.path / name)
    return record.path / name


def results_table(records: list[TrialRecord], *, metric: str, mode: str, baseline_id: str | None) -> pd.DataFrame:
    """A pandas table of trials sorted by their best value of `metric` (best first)."""
    rows = []
    for r in records:
        rows.append({
            "trial": r.index,
            "trial_id": r.trial_id,
            "status": r.status,
            f"best_{metric}": r.best_value,
            "best_epoch": r.best_epoch,
            "rounds": r.rounds,
            "rung": r.rung,
            f"last_{metric}": r.last_value,
            "baseline": r.trial_id == baseline_id,
            **{f"config/{k}": v for k, v in sorted(r.config.items())},
            "error": r.error,
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(f"best_{metric}", ascending=(mode == "min"), na_position="last", kind="stable").reset_index(drop=True)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4g}"
    return str(value)


def format_results(table: pd.DataFrame, *, metric: str, width: int = 120) -> str:
    """The results table as text at most `width` columns wide: id (* = baseline), status, rounds, best
    metric, best epoch, then as many searched values as fit; the rest are named in a last line."""
    if table.empty:
        return "no trials yet"
    columns = {"id": [f"{t}{'*' if b else ''}" for t, b in zip(table["trial_id"], table["baseline"], strict=True)],
               "status": list(table["status"]), "rounds": [str(int(v)) for v in table["rounds"]],
               f"best {metric}": [f"{v:.4f}" if isinstance(v, float) and math.isfinite(v) else "-" for v in table[f"best_{metric}"]],
               "epoch": [f"{v:.1f}" if isinstance(v, (int, float)) and math.isfinite(v) else "-" for v in table["best_epoch"]]}
    searched = [c for c in table.columns if c.startswith("config/")]
    left_out = []
    used = sum(max(len(k), *(len(x) for x in v)) + 2 for k, v in columns.items())
    for column in searched:
        cells = [_cell(v) for v in table[column]]
        name = column.removeprefix("config/")
        need = max(len(name), *(len(x) for x in cells)) + 2
        if used + need > width:
            left_out.append(name)
            continue
        columns[name], used = cells, used + need
    widths = {k: max(len(k), *(len(x) for x in v)) for k, v in columns.items()}
    lines = ["  ".join(k.ljust(widths[k]) for k in columns).rstrip()]
    for i in range(len(table)):
        lines.append("  ".join(columns[k][i].ljust(widths[k]) for k in columns).rstrip())
    if left_out:
        tail = f" ({len(left_out)} more columns; --csv FILE writes every column)"
        names = ", ".join(left_out)
        if len(names) + len(tail) + 3 > width:
            names = names[: width - len(tail) - 6].rsplit(",", 1)[0] + ", ..."
        lines.append(f"(+ {names}){tail}")
    return "\n".join(lines)
