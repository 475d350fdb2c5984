"""The saved state of ASHA with promotions: what it holds, where it is, how it is read back. The one place.

The rungs, the pauses and the finish phase are saved to the search folder's `asha_rungs.state`
(search.layout.RUNGS: JSON, but not named *.json) whenever a scheduler hook changed them, so a
resumed search (Tune restores paused trials as PENDING) pauses them again instead of letting them
train past their rung. A search stored on a URI keeps the file in its local mirror on the machine
running the driver now (a resume on another machine finds its own mirror, not the first's).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.layout import SearchFolder
from trainables.files import write_atomic

if TYPE_CHECKING:
    from search.schedulers.promotion import PromotionASHA

log = logging.getLogger(__name__)

def snapshot(scheduler: PromotionASHA) -> dict[str, Any]:
    """The scheduler's state as the file holds it (JSON-ready copies): what `restore` reads back, then what the
    virtual clock reports of itself (search.schedulers.virtual_clock; read by the benchmarks and tests only)."""
    rungs, progress, finish = scheduler.rungs, scheduler.progress, scheduler.finish
    state: dict[str, Any] = {
        "rungs": {str(k): dict(v) for k, v in rungs.scores.items()},
        "promoted": {str(k): list(v) for k, v in rungs.promoted.items()},
        "paused_at": dict(scheduler.paused_at),
        "progress": dict(progress.rounds),
        "round_seconds": dict(progress.seconds),
        "completed": list(progress.completed),
        "stopped": list(scheduler.stopped),
        "resumed": [list(x) for x in scheduler.resumed],
        "finishing": finish.finishing,
        "finalists": list(finish.finalists),
        "levels": list(rungs.levels),
    }
    clock = scheduler.virtual_clock
    if clock is not None:
        state.update(virtual=clock.deciding, vnow=clock.vnow, jobs={k: list(v) for k, v in clock.jobs.items()},
                     waits=clock.waits, wait_seconds=clock.wait_seconds, virtual_until_s=clock.virtual_until_s)
    return state


def restore(scheduler: PromotionASHA, state: dict[str, Any]) -> bool:
    """Put a killed driver's saved rungs, pauses and finish phase back into `scheduler` (not the virtual clock's:
    a resumed search decides in arrival order). False if they were saved for other rungs (nothing restored)."""
    if [int(x) for x in state.get("levels", [])] != list(scheduler.rungs.levels):
        return False
    scheduler.restored = bool(state.get("progress"))  # a killed driver's trials (a warm start's own save has none)
    rungs, progress, finish = scheduler.rungs, scheduler.progress, scheduler.finish
    rungs.scores = {int(k): dict(v) for k, v in state["rungs"].items()}
    rungs.promoted = {int(k): list(v) for k, v in state["promoted"].items()}
    scheduler.paused_at = {k: int(v) for k, v in state["paused_at"].items()}
    progress.rounds = {k: int(v) for k, v in state["progress"].items()}
    progress.seconds = dict(state["round_seconds"])
    progress.completed = list(state["completed"])
    scheduler.stopped = list(state.get("stopped", []))
    scheduler.resumed = [tuple(x) for x in state.get("resumed", [])]
    finish.finishing, finish.finalists = bool(state["finishing"]), list(state["finalists"])
    return True


class StateFile:
    """The state file of the search at `location` (a path or a URI; None: nothing is saved). `load` reads it into
    the scheduler once, before the scheduler's first hook; `save` writes it after each hook that changed it."""

    def __init__(self, location: str | os.PathLike | None) -> None:
        self.location = str(location) if location else None
        self.loaded = False  # by this driver (an unpickled copy, a resumed search's, reads the file again)
        self.last: dict[str, Any] | None = None  # what this driver wrote last

    def __getstate__(self) -> dict[str, Any]:
        return {"location": self.location, "loaded": False, "last": None}

    @property
    def path(self) -> Path | None:
        """The file on this machine: in the search folder, or for a search on a URI in its local mirror."""
        return SearchFolder.at(self.location).rungs_file if self.location else None

    def save(self, scheduler: PromotionASHA) -> None:
        """Write the scheduler's state if it changed since the last write."""
        if self.location is None:
            return
        state = snapshot(scheduler)
        if state != self.last:
            write_atomic(self.path, json.dumps(state, default=float))
            self.last = state

    def load(self, scheduler: PromotionASHA) -> None:
        """Once: the state a killed driver saved, into `scheduler` (resume)."""
        if not self.loaded:
            self.loaded = True
            state = self.read()
            if state is not None:
                restore(scheduler, state)

    def read(self) -> dict[str, Any] | None:
        """The saved state, or None (none saved, or unreadable: the search then rebuilds its rungs)."""
        path = self.path
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("%s is unreadable: the resumed search rebuilds its rungs from new results", path)
            return None


def _local_file(experiment_dir: str | os.PathLike) -> Path:
    return SearchFolder.at(str(experiment_dir)).rungs_file


def load_state(experiment_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The saved rung state of a search folder, or None (another scheduler, or none saved)."""
    path = _local_file(experiment_dir)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError):
        return None


def end_pauses(experiment_dir: str | os.PathLike) -> None:
    """The search is over (its budget ran out): no trial waits at a rung any more, each ended where it was."""
    state = load_state(experiment_dir)
    if state is None or not state.get("paused_at"):
        return
    state["stopped"] = list(state.get("stopped", [])) + [t for t in state["paused_at"] if t not in state.get("stopped", [])]
    state["paused_at"] = {}
    write_atomic(_local_file(experiment_dir), json.dumps(state, default=float))

