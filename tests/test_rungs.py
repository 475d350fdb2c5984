"""The rung system and the finish policy alone: plain data in, decisions out (no Ray, no clock, no Tune).

The schedulers built on them (search.schedulers.promotion, asha_stop, virtual_clock) are driven through Tune's
stand-in in tests/test_schedulers.py and on real Ray in tests/test_promotions.py.
"""
from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from search.schedulers.finish import FINISH_EARLIEST, RESUME_SECONDS, FinishPhase, Progress
from search.schedulers.rungs import TIE_WEIGHT, Rungs, rank_score, rung_levels

PACKAGE = Path(__file__).resolve().parents[1] / "search" / "schedulers"


def _rungs(levels=(1, 4), rf: float = 4, mode: str = "max", max_t: int = 16) -> Rungs:
    return Rungs(levels, reduction_factor=rf, mode=mode, max_t=max_t)


def _filled(scores: dict[str, float], level: int = 1, **kwargs) -> Rungs:
    rungs = _rungs(**kwargs)
    for trial_id, score in scores.items():
        rungs.record(trial_id, level, score)
    return rungs


@pytest.mark.parametrize("module", ["rungs.py", "finish.py", "state.py", "decisions.py"])
def test_the_plain_parts_import_no_ray(module):
    tree = ast.parse((PACKAGE / module).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not [name for name in imported if name == "ray" or name.startswith("ray.")], imported


def test_rung_levels_round_to_the_nearest_round_or_as_asked():
    assert rung_levels(1, 4, 150) == (1, 4, 16, 64)
    assert rung_levels(4, 1.7, 40) == (4, 7, 12, 20, 33)  # 6.8, 11.56, 19.65, 33.4 rounded
    assert rung_levels(4, 1.7, 40, rounding=math.ceil) == (4, 7, 12, 20, 34)  # Ray's: the first round at or past
    assert rung_levels(1, 1.2, 4) == (1, 2, 3)  # 1.2 and 1.44 both round to 1: a level once only
    assert rung_levels(3, 3, 3) == ()


def test_rank_score_breaks_ties_by_the_loss_without_reordering_the_metric():
    tied = [rank_score({"val_acc": 0.9, "val_loss": loss}, "val_acc", "max") for loss in (0.1, 0.5, 50.0)]
    assert tied == sorted(tied, reverse=True) and 0.9 - TIE_WEIGHT < min(tied) < max(tied) < 0.9
    assert rank_score({"val_loss": 0.3, "val_acc": 0.5}, "val_loss", "min") == 0.3  # no tie-breaker for a loss
    assert rank_score({"val_acc": True}, "val_acc", "max") is None and rank_score({}, "val_acc", "max") is None
    assert math.isinf(rank_score({"val_acc": math.inf, "val_loss": 0.1}, "val_acc", "max"))


def test_a_rung_ranks_best_first_ties_by_arrival_and_a_missing_score_last():
    rungs = _filled({"a": 0.5, "b": 0.9, "c": 0.5, "d": None, "e": math.nan, "f": 0.7})
    assert rungs.ranked(1) == ["b", "f", "a", "c", "d", "e"]
    assert rungs[1]["d"] == -math.inf and rungs.rank("c", 1) == 3 and rungs.rank("zz", 1) == -1
    low = _filled({"a": 0.5, "b": 0.9, "c": None}, mode="min")
    assert low.ranked(1) == ["a", "b", "c"] and low[1]["c"] == math.inf
    rungs.record("a", 1, 0.95)  # recorded again (a restart met the rung again): new score, same place in arrival order
    assert list(rungs[1]) == ["a", "b", "c", "d", "e", "f"] and rungs.ranked(1)[0] == "a"


@pytest.mark.parametrize("n, expect", [(3, 0), (4, 1), (7, 1), (8, 2)])
def test_a_rung_of_n_results_lets_floor_n_over_rf_through(n, expect):
    rungs = _filled({f"t{i}": i / 10 for i in range(n)})
    assert len(rungs.top(1)) == expect and rungs.top(1) == rungs.ranked(1)[:expect]


def test_promotable_is_the_top_not_promoted_yet_and_a_promotion_can_be_taken_back():
    rungs = _filled({f"t{i}": i / 10 for i in range(8)})  # top 2: t7, t6
    assert rungs.promotable(1) == ["t7", "t6"]
    rungs.promote("t7", 1)
    assert rungs.promotable(1) == ["t6"] and rungs.was_promoted("t7", 1)
    rungs.unpromote("t7", 1)
    assert rungs.promotable(1) == ["t7", "t6"] and not rungs.was_promoted("t7", 1)
    rungs.promote("t7", 3)  # not a rung (a finalist cut off a rung): nothing to record
    assert rungs.promoted == {1: [], 4: []}


def test_a_promotion_goes_to_the_next_rung_or_max_t():
    rungs = _rungs(levels=(1, 4), max_t=16)
    assert [rungs.next_level(t) for t in (0, 1, 2, 4, 9)] == [1, 4, 4, 16, 16]


def test_a_trials_standing_is_its_highest_rung_up_to_the_round_it_reached():
    rungs = _filled({"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6, "e": 0.5})  # top 1 of rung 1: a
    rungs.record("e", 4, 0.99)
    assert rungs.highest_rung("e", 4) == 4 and rungs.highest_rung("e", 3) == 1 and rungs.highest_rung("x", 9) is None
    assert rungs.in_rung_top("a", 1) and not rungs.in_rung_top("b", 1)
    assert not rungs.in_rung_top("e", 1)  # at rung 1 it ranks last
    assert not rungs.in_rung_top("e", 4)  # alone at rung 4: floor(1/4) = 0 ...
    rungs.promote("e", 4)
    assert rungs.in_rung_top("e", 4)  # ... unless it was promoted out of it
    # the most advanced first, then the best score: the finish phase's order of candidates
    assert rungs.best_first([("b", 2), ("e", 5), ("a", 1), ("x", 3)]) == ["e", "a", "b"]


def test_warm_scores_rank_in_their_rungs_without_overwriting_this_searchs_results():
    rungs = _filled({"t0": 0.5})
    rungs.warm({"warm:a": {1: 0.9, 4: 0.95, 64: 0.99}, "warm:b": {1: math.nan}, "t0": {1: 0.1}})
    assert rungs[1] == {"t0": 0.5, "warm:a": 0.9} and rungs[4] == {"warm:a": 0.95}


def test_latest_is_a_rungs_last_results_in_arrival_order():
    rungs = _filled({f"t{i}": float(i) for i in range(10)})
    assert rungs.latest(1, 3) == [7.0, 8.0, 9.0] and rungs.latest(1, 0) == [float(i) for i in range(10)]


def test_bad_settings_name_the_value():
    with pytest.raises(ValueError, match="reduction_factor=1"):
        _rungs(rf=1)
    with pytest.raises(ValueError, match="mode='best'"):
        _rungs(mode="best")


# -- the finish policy ------------------------------------------------------------------------------------------


def _finish(budget: float | None = 100.0, workers: int = 2, max_t: int = 64) -> FinishPhase:
    rungs = Rungs((1, 4, 16), reduction_factor=4, mode="max", max_t=max_t)
    return FinishPhase(rungs, Progress(), time_budget_s=budget, max_concurrent=workers)


def _at(finish: FinishPhase, trial_id: str, level: int, score: float, pace: float, reached: int | None = None) -> None:
    finish.rungs.record(trial_id, level, score)
    finish.progress.add(trial_id)
    finish.progress.note(trial_id, reached or level, {"time_this_iter_s": pace})


def test_a_trials_pace_is_a_running_mean_and_a_restart_does_not_count_its_start_up():
    progress = Progress()
    progress.add("a")  # its first report also timed the start-up: the round's own seconds count
    progress.note("a", 1, {"time_this_iter_s": 9.0, "epoch_seconds": 2.0})
    progress.note("a", 2, {"time_this_iter_s": 4.0})
    assert progress.seconds["a"] == pytest.approx(0.7 * 2.0 + 0.3 * 4.0)
    progress.restart("a")
    progress.note("a", 3, {"time_this_iter_s": 30.0, "epoch_seconds": 3.0})  # resumed: it has a pace, none counts
    assert progress.seconds["a"] == pytest.approx(2.6) and progress.rounds["a"] == 3
    assert progress.need("a", 13) == pytest.approx(10 * 2.6 + RESUME_SECONDS)
    progress.end("a", completed=True)
    assert "a" not in progress.rounds and progress.completed == ["a"]


def test_the_finish_phase_is_due_when_the_best_candidate_needs_the_time_left_and_not_before_half_the_budget():
    finish = _finish()
    _at(finish, "best", 16, 0.9, pace=1.0)  # needs 48 rounds of 1 s + a restart: 53 s, x 1.25 = 66 s
    _at(finish, "fast", 1, 0.5, pace=0.1)
    assert finish.candidates() == ["best", "fast"]
    assert finish.due(FINISH_EARLIEST * 100 - 1) is None  # 51 s left < 66 s, but half the budget has not gone
    assert finish.due(30.0) is None
    why, left = finish.due(FINISH_EARLIEST * 100)
    assert left == 50.0 and "best candidate needs ~53 s" in why
    assert _finish(budget=None).due(1e9) is None


def test_further_finalists_must_finish_in_time_and_rank_in_their_rungs_top():
    finish = _finish(workers=3)
    _at(finish, "best", 16, 0.9, pace=1.0)
    for i, score in enumerate((0.8, 0.7, 0.6)):
        _at(finish, f"a{i}", 1, score, pace=0.1)
    _at(finish, "slow", 1, 0.95, pace=10.0)  # rung 1 holds 4 results: its top 1 is slow
    assert finish.start("test", left=50.0) == ["best"]  # slow needs 640 s; a0 could finish but is not in the top
    finish.rungs.record("a3", 1, 0.99)  # a fifth result at rung 1: its top 1 is a3
    finish.progress.add("a3")
    finish.progress.note("a3", 1, {"time_this_iter_s": 0.1})
    assert finish.start("test", left=50.0) == ["best", "a3"]
    assert finish.waiting({"a3": 1, "x": 1}) == ["a3"]


def test_without_a_budget_the_best_trains_to_the_end_only_if_none_got_there():
    finish = _finish(budget=None)
    _at(finish, "a", 4, 0.9, pace=1.0)
    assert finish.start("no new configurations") == ["a"]
    finish.progress.completed.append("done")
    assert finish.start("no new configurations") == []


def test_a_promotion_is_affordable_if_it_leaves_the_rungs_their_time_then_if_it_ends_before_the_deadline():
    finish = _finish()  # 100 s, 2 workers, 1 s rounds: the rungs get 2 x 50 s, a promotion a quarter of it
    _at(finish, "a", 16, 0.9, pace=1.0)
    assert finish.affordable("a", 4, elapsed=0.0) and not finish.affordable("a", 16, elapsed=0.0)  # 12 s; 48 s > 25 s
    finish.finishing = True
    assert finish.affordable("a", 4, elapsed=80.0) and not finish.affordable("a", 4, elapsed=90.0)  # 12 s of 20, of 10
    assert _finish(budget=None).affordable("a", 16, elapsed=0.0)
    assert finish.affordable("unmeasured", 16, elapsed=99.0)  # no pace yet: nothing to weigh
