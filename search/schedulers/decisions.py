"""What ASHA with promotions tells: a decision about a trial (`on_decision`), and whether a new configuration may start
(`admission`, asked by search.sampler.AdmissionLimiter). Both are strings too, so "paused" == Decision.PAUSED."""
from __future__ import annotations

import enum


class Decision(str, enum.Enum):
    """What happened to a trial at a round: `on_decision(decision, trial_id, round)`."""

    PAUSED = "paused"  # it waits at its rung
    PROMOTED = "promoted"  # it goes on past its rung (at once, or resumed)
    FINALIST = "finalist"  # it trains to max_t in the finish phase
    STOPPED = "stopped"  # it ended where it waited: the search had no more work for it
    CUT = "cut"  # it paused off a rung: its worker went to a finalist

    def __str__(self) -> str:
        return self.value


class Admission(str, enum.Enum):
    """May the searcher start a new configuration now."""

    YES = "yes"
    WAIT = "wait"

    def __str__(self) -> str:
        return self.value
