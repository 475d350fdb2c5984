"""Reading a search back: one row per trial, ranked by its best round (not its last).

Works on a finished, interrupted or running search folder; used by the
summary at the end of `hpsearch run`, by `hpsearch results` and by export.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from trainables import metrics as M
from trainables.errors import UserError

STATE_FILE = "hpsearch.json"  # the search's own state beside Ray's experiment_state-*.json

# Trial outcomes as users see them.
COMPLETED, PRUNED, FAILED, DIVERGED, RUNNING, PENDING = "completed", "pruned", "failed", "diverged", "running", "pending"


def read_state(experiment_dir: Path) -> dict[str, Any]:
    """The search state (`hpsearch.json`) of a search folder."""
    path = experiment_dir / STATE_FILE
    if not path.is_file():
        raise UserError(f"{experiment_dir} is not an hpsearch search folder (no {STATE_FILE}); see `hpsearch list`")
    return json.loads(path.read_text())


def write_state(experiment_dir: Path, state: dict[str, Any]) -> None:
    experiment_dir.mkdir(parents=True, exist_ok=True)
    tmp = experiment_dir / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(experiment_dir / STATE_FILE)


def find_search(storage: str | Path, name: str) -> Path:
    """The folder of search `name` under `storage`, or a `UserError` listing what is there."""
    folder = Path(storage).expanduser().resolve() / name
    if (folder / STATE_FILE).is_file():
        return folder
    known = list_searches(storage)
    hint = f"searches in {storage}: {', '.join(known)}" if known else f"no searches in {storage}"
    raise UserError(f"no search named {name!r} ({hint}); pass --storage if it lives elsewhere")


def list_searches(storage: str | Path) -> list[str]:
    root = Path(storage).expanduser()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file())


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


def _is_better(a: float, b: float | None, mode: str) -> bool:
    return b is None or (a > b if mode == "max" else a < b)


def trial_records(experiment_dir: Path, *, metric: str, mode: str, total_rounds: int) -> list[TrialRecord]:
    """Trials of a search folder with outcome and best round, in creation order."""
    from ray.tune import ExperimentAnalysis

    if not list(experiment_dir.glob("experiment_state-*.json")):
        return []
    analysis = ExperimentAnalysis(str(experiment_dir))
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
            status = FAILED
            error = _first_error_line(trial_dir)
        elif diverged:
            status = DIVERGED
        elif trial.status == "TERMINATED":
            status = COMPLETED if rounds >= total_rounds else PRUNED
        elif trial.status == "RUNNING":
            status = RUNNING
        else:
            status = PENDING
        tag = str(trial.experiment_tag).split("_", 1)[0]
        records.append(TrialRecord(
            trial_id=trial.trial_id, index=int(tag) if tag.isdigit() else len(records) + 1, config=dict(trial.config), status=status, rounds=rounds,
            best_value=best_value, best_round=best_round, best_epoch=best_epoch, last_value=last,
            path=trial_dir, history=history, error=error,
        ))
    records.sort(key=lambda r: r.index)
    return records


def _first_error_line(trial_dir: Path) -> str:
    for name in ("error.txt", "error.pkl"):
        path = trial_dir / name
        if path.is_file() and name.endswith(".txt"):
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
            return lines[-1][:300] if lines else "error"
    return "error"


def best_record(records: list[TrialRecord], mode: str) -> TrialRecord | None:
    """The trial whose best round is best (diverged and failed trials never win)."""
    best = None
    for r in records:
        if r.best_value is not None and r.status not in (FAILED, DIVERGED) and (best is None or _is_better(r.best_value, best.best_value, mode)):
            best = r
    return best


def best_checkpoint_dir(record: TrialRecord) -> Path:
    """The checkpoint folder of a trial's best round (kept by the scored CheckpointConfig)."""
    folder = record.path / f"checkpoint_{record.best_round - 1:06d}"
    if (folder / "checkpoint.pt").is_file():
        return folder
    # Fall back: the kept checkpoint whose round's metric is best.
    candidates = sorted(record.path.glob("checkpoint_*/checkpoint.pt"))
    if not candidates:
        raise UserError(f"trial {record.trial_id} has no checkpoint in {record.path}")
    by_round = {int(c.parent.name.split("_")[1]) + 1: c.parent for c in candidates}
    scored = [(row, by_round[int(row[M.ROUND])]) for row in record.history if int(row.get(M.ROUND, -1)) in by_round]
    return scored[0][1] if scored else candidates[-1].parent


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
            f"last_{metric}": r.last_value,
            "baseline": r.trial_id == baseline_id,
            **{f"config/{k}": v for k, v in sorted(r.config.items())},
            "error": r.error,
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    return frame.sort_values(f"best_{metric}", ascending=(mode == "min"), na_position="last", kind="stable").reset_index(drop=True)
