"""ASHA with promotions, the rung-aware sampler and auto-sized rounds, driven directly (no Ray runtime).

The scheduler is the real `PromotionASHA`; Tune's controller is search.schedulers.simulator's stand-in (the few
calls the scheduler makes on it: `get_trials`, `stop_trial`, `search_alg.is_finished`), with real `ray.tune` Trial
objects. The rung system alone is tested in tests/test_rungs.py.
End-to-end searches on real Ray are in tests/test_promotions.py.
"""
from __future__ import annotations

import math
import time
from typing import Any

import pytest
import yaml
from ray.tune.experiment import Trial

from search.results import Outcome, ended_outcome, paused_trial_outcome, rung_of
from search.rounds import Speed, auto_round_samples
from search.sampler import AdmissionLimiter, RungAwareTPE
from search.schedulers import PromotionASHA, end_pauses, load_state, rung_levels
from search.schedulers.simulator import Controller
from search.space import DefineByRun
from search.spec import parse_spec
from tests._search_helpers import QUICKSTART


def _report(tune: Controller, trial: Trial, rounds: int, acc: float, seconds: float = 1.0) -> str:
    """A result of round `rounds` as the trainable reports it (val loss 1 - acc), through Tune's stand-in."""
    return tune.report(trial, {"round": rounds, "val_acc": acc, "val_loss": 1 - acc, "epoch_seconds": seconds})


def _scheduler(**kwargs: Any) -> PromotionASHA:
    options = {"max_t": 16, "grace": 1, "reduction_factor": 4, "max_concurrent": 2}
    return PromotionASHA("val_acc", "max", **{**options, **kwargs})


def test_rung_levels_are_grace_times_powers_of_the_reduction_factor_below_max_t():
    assert rung_levels(1, 4, 150) == (1, 4, 16, 64)
    assert rung_levels(2, 3, 12) == (2, 6)
    assert rung_levels(1, 4, 16) == (1, 4)
    assert rung_levels(3, 3, 3) == ()
    assert rung_of(4, (1, 4, 16)) == 2 and rung_of(0, (1, 4)) == 0


def test_the_first_trial_at_a_rung_pauses_instead_of_going_on_for_lack_of_rivals():
    scheduler = _scheduler()
    tune = Controller(scheduler)
    first = tune.add("a")
    assert _report(tune, first, 1, 0.90) == "PAUSE"
    # three more, all worse: the rung holds 4 results, floor(4/4) = 1 promotion, and it is the first trial's
    for i, acc in enumerate((0.5, 0.6, 0.7)):
        assert _report(tune, tune.add(f"b{i}"), 1, acc) == "PAUSE"
    assert scheduler.rungs.promotable(1) == ["a"]
    tune.trials[-1].set_status(Trial.TERMINATED)  # a worker is free
    assert tune.scheduler.choose_trial_to_run(tune) is first
    assert scheduler.resumed == [("a", 1, 0, 4)]
    assert scheduler.choose_trial_to_run(tune) is None  # promoted once only; the others are below the cutoff


def test_a_trial_below_its_rungs_cutoff_is_never_resumed_and_ends_pruned_at_the_end():
    scheduler = _scheduler(reduction_factor=2, max_t=4)  # rungs 1, 2
    tune = Controller(scheduler)
    trials = [tune.add(f"t{i}") for i in range(4)]
    decisions = [_report(tune, t, 1, acc) for t, acc in zip(trials, (0.1, 0.9, 0.2, 0.8))]
    # t1 arrives as the 2nd result, the top 1 of 2: it goes on at once; t3 is in the top 2 of 4 with t1
    assert decisions == ["PAUSE", "CONTINUE", "PAUSE", "CONTINUE"]
    for t in (trials[1], trials[3]):  # both trained to the end
        t.set_status(Trial.TERMINATED)
        scheduler.on_trial_complete(tune, t, {"round": 4, "val_acc": 0.95})
    tune.search_alg.finished = True
    for _ in range(3):  # nothing promotable, nothing new, a trial already at max_t: the waiting ones are stopped
        assert scheduler.choose_trial_to_run(tune) is None
    assert [t.status for t in trials] == ["TERMINATED"] * 4
    assert [r[0] for r in scheduler.resumed] == []  # t0 and t2 were never resumed
    assert ended_outcome(1, 4, scheduler.levels) == Outcome.PRUNED


def test_without_a_time_budget_the_best_paused_trial_is_trained_to_max_t_when_nothing_else_can_run():
    scheduler = _scheduler(reduction_factor=3, max_t=9, grace=1)  # rungs 1, 3
    tune = Controller(scheduler)
    trials = [tune.add(f"t{i}") for i in range(3)]
    for t, acc in zip(trials, (0.3, 0.5, 0.4)):
        _report(tune, t, 1, acc)
    # t1 is promoted as the 2nd... floor(2/3) = 0: no; as the 3rd result, t1 is the top 1 of 3
    promoted = scheduler.choose_trial_to_run(tune)
    assert promoted is trials[1] and promoted.status == Trial.PAUSED
    promoted.set_status(Trial.RUNNING)
    assert _report(tune, promoted, 2, 0.6) == "CONTINUE"
    assert _report(tune, promoted, 3, 0.7) == "PAUSE"  # alone at rung 3
    tune.search_alg.finished = True
    assert scheduler.choose_trial_to_run(tune) is None and scheduler.finish.finishing and scheduler.finish.finalists == ["t1"]
    assert scheduler.choose_trial_to_run(tune) is promoted  # the finalist goes on
    promoted.set_status(Trial.RUNNING)
    assert _report(tune, promoted, 4, 0.72) == "CONTINUE"
    promoted.set_status(Trial.TERMINATED)
    scheduler.on_trial_complete(tune, promoted, {"round": 9, "val_acc": 0.8})
    assert scheduler.choose_trial_to_run(tune) is None
    assert [t.status for t in trials] == ["TERMINATED"] * 3  # the others were stopped where they waited


def test_a_trial_tune_saved_paused_reads_as_waiting_promoted_or_ended_from_the_saved_rungs(tmp_path):
    # Tune's saved state can say Outcome.PAUSED for a trial the scheduler has since promoted (the driver died
    # before Tune re-saved it) or stopped at the end: the reader must not call the promoted one pruned.
    scheduler = _scheduler(reduction_factor=2, max_t=4, state_dir=tmp_path)  # rungs 1, 2
    tune = Controller(scheduler)
    trials = [tune.add(f"t{i}") for i in range(3)]
    assert [_report(tune, t, 1, acc) for t, acc in zip(trials, (0.9, 0.2, 0.5))] == ["PAUSE"] * 3
    assert scheduler.choose_trial_to_run(tune) is trials[0]  # a free worker: t0, the top 1 of 3, is promoted
    state = load_state(tmp_path)
    outcome = {t.trial_id: paused_trial_outcome(t.trial_id, 1, 4, scheduler.levels, state) for t in trials}
    assert outcome == {"t0": Outcome.RUNNING, "t1": Outcome.PAUSED, "t2": Outcome.PAUSED}
    end_pauses(tmp_path)  # the budget ran out: t1 and t2 ended where they waited
    state = load_state(tmp_path)
    assert [paused_trial_outcome(t, 1, 4, scheduler.levels, state) for t in ("t0", "t1", "t2")] == [Outcome.RUNNING, Outcome.PRUNED, Outcome.PRUNED]
    assert sorted(state["stopped"]) == ["t1", "t2"]
    # a state saved before the "stopped" record existed: not waiting means ended, as before
    old = {k: v for k, v in load_state(tmp_path).items() if k != "stopped"}
    assert paused_trial_outcome("t0", 1, 4, scheduler.levels, old) == Outcome.PRUNED


def test_with_a_time_budget_the_last_part_goes_to_finalists_first():
    now = [0.0]
    scheduler = _scheduler(reduction_factor=2, max_t=8, time_budget_s=100.0, clock=lambda: now[0])
    tune = Controller(scheduler)
    a, b = tune.add("a"), tune.add("b")
    assert scheduler.admission() == "wait"  # two trials run, as many as max_concurrent
    _report(tune, a, 1, 0.5)
    assert scheduler.admission() == "yes"
    for name, acc in (("x", 0.3), ("y", 0.2)):  # two weaker configurations pause at rung 1
        assert _report(tune, tune.add(name), 1, acc) == "PAUSE"
    assert _report(tune, b, 1, 0.7) == "CONTINUE"  # top 2 of 4: goes on
    now[0] = 60.0  # 40 s left; b needs 5 more rounds of 1 s, a 7: 1.25 x 7 s < 40 s, not yet
    assert _report(tune, b, 3, 0.75) == "CONTINUE" and not scheduler.finish.finishing
    assert _report(tune, b, 3, 0.8, seconds=40.0) == "CONTINUE"  # slow rounds: 1.25 x 5 x 12.7 s > 40 s left
    assert scheduler.finish.finishing and scheduler.finish.finalists == ["b", "a"]
    assert scheduler.admission() == "wait"  # finalist a waits for a worker: no new configuration
    c = tune.add("c")  # a trial the searcher had already queued: cut at its first report, a needs the worker
    assert _report(tune, c, 1, 0.99) == "PAUSE"
    assert ended_outcome(0, 8, scheduler.levels) == Outcome.TIMED_OUT and ended_outcome(8, 8, scheduler.levels) == Outcome.COMPLETED
    b.set_status(Trial.TERMINATED)
    scheduler.on_trial_complete(tune, b, {"round": 8, "val_acc": 0.85})
    assert scheduler.choose_trial_to_run(tune) is a  # the other finalist resumes
    a.set_status(Trial.RUNNING)
    # both finalists served: the free worker goes back to ASHA's work (c, top of rung 1, is promoted)
    assert scheduler.admission() == "yes"
    assert scheduler.choose_trial_to_run(tune) is c


def test_a_further_finalist_must_rank_in_its_rungs_top_and_the_spare_worker_explores():
    """The finish phase does not train a weak configuration to the end for being fast (seed 1 of the sparse-val
    benchmark trained a rung-1 trial outside its rung's top quarter to max_t), and the worker the finalists do not
    need takes only promotions that reach their next rung before the deadline, else a new configuration."""
    now = [0.0]
    scheduler = _scheduler(max_t=64, time_budget_s=100.0, clock=lambda: now[0])
    tune = Controller(scheduler)
    best, fast = tune.add("best"), tune.add("fast")
    others = [tune.add(name) for name in "abcdefg"]
    for trial, acc in zip(others, (0.8, 0.7, 0.6, 0.55, 0.45, 0.4, 0.3)):
        assert _report(tune, trial, 1, acc, seconds=0.5) == "PAUSE"
    assert _report(tune, fast, 1, 0.5, seconds=0.1) == "PAUSE"  # 5th of 8 at rung 1: outside its top quarter
    for rounds, acc in ((1, 0.9), (4, 0.91), (16, 0.95)):
        _report(tune, best, rounds, acc, seconds=1.0)
    now[0] = 60.0  # 40 s left < 1.25 x (48 rounds of 1 s + restart): the finish phase starts
    assert scheduler.choose_trial_to_run(tune) is best and scheduler.finish.finishing
    # fast could finish (63 rounds x 0.1 s) but ranks 6th of 9 at rung 1 (top quarter: best, a): not a finalist
    assert scheduler.finish.finalists == ["best"] and not scheduler.rungs.in_rung_top("fast", up_to_round=1)
    best.set_status(Trial.RUNNING)
    assert scheduler.admission() == "yes"  # the other worker goes on with ASHA's work
    assert scheduler.rungs.promotable(1) == ["a"] and scheduler.affordable("a", 1)  # 3 rounds of 0.5 s: in time
    now[0] = 99.0  # 1 s left: a promotion of 1.5 s would be cut before its rung, a new configuration goes instead
    assert not scheduler.affordable("a", 1) and scheduler.choose_trial_to_run(tune) is None


def test_rungs_and_pauses_survive_a_killed_driver(tmp_path):
    scheduler = _scheduler(state_dir=tmp_path)
    tune = Controller(scheduler)
    _report(tune, tune.add("a"), 1, 0.9)
    _report(tune, tune.add("b"), 1, 0.8)
    saved = load_state(tmp_path)
    assert saved["paused_at"] == {"a": 1, "b": 1} and saved["levels"] == [1, 4]
    # a new driver: Tune restores the paused trial as PENDING; the scheduler keeps it paused
    restored = _scheduler(state_dir=tmp_path)
    trial = Trial("__fake", trial_id="a", stub=True)
    trial.update_last_result({"round": 1, "val_acc": 0.9})
    restored.on_trial_add(None, trial)
    assert trial.status == Trial.PAUSED and "a" in restored.paused_at and "a" in restored.rungs[1]
    # b's pause never reached Tune's saved state (no round 1 there): it trains round 1 again and meets the rung
    lost = Trial("__fake", trial_id="b", stub=True)
    restored.on_trial_add(None, lost)
    assert lost.status == Trial.PENDING and "b" not in restored.paused_at
    other = Trial("__fake", trial_id="new", stub=True)
    restored.on_trial_add(None, other)
    assert other.status == Trial.PENDING


def test_a_trial_the_killed_driver_ended_at_its_rung_stays_ended_after_resume(tmp_path):
    """The driver stopped a paused trial at its rung (saved in the rungs' state) and died before Tune saved that:
    Tune restores it as PENDING; the resumed scheduler ends it again instead of training it past its rung."""
    scheduler = _scheduler(state_dir=tmp_path)
    tune = Controller(scheduler)
    paused = tune.add("a")
    _report(tune, paused, 1, 0.5)
    scheduler.stop_at_rung(tune, paused)
    assert load_state(tmp_path)["stopped"] == ["a"]
    restored = _scheduler(state_dir=tmp_path)
    again = Controller(restored)
    trial = Trial("__fake", trial_id="a", stub=True)
    trial.update_last_result({"round": 1, "val_acc": 0.5})
    again.trials.append(trial)
    restored.on_trial_add(again, trial)
    assert trial.status == Trial.PAUSED and "a" not in restored.paused_at
    assert restored.choose_trial_to_run(again) is None and trial.status == Trial.TERMINATED


def test_the_scheduler_tune_unpickles_on_resume_reads_the_saved_state_and_decides_in_arrival_order(tmp_path):
    """Tune pickles the scheduler into tuner.pkl and a resumed search unpickles it: plain data (no searcher, no
    controller), the wall clock, and the killed driver's state file read at its first hook, whatever the copy held."""
    import pickle

    from search.schedulers import ReproducibleASHA

    scheduler = ReproducibleASHA("val_acc", "max", max_t=16, grace=1, reduction_factor=4, max_concurrent=2, samples=4,
                                 state_dir=tmp_path, clock=lambda: 0.0)
    scheduler.attach(RungAwareTPE(lambda trial: trial.suggest_float("lr", 1e-4, 1e-1, log=True), metric="val_acc",
                                  mode="max", seed=0, max_t=16, rungs=scheduler.levels))
    scheduler.warm({"warm:old/a": {1: 0.5}})  # saved before the search: no trial's progress in it
    pickled = pickle.dumps(scheduler)
    tune = Controller(scheduler)
    assert scheduler.admission() == "yes" and scheduler.virtual_clock.deciding  # the virtual clock proposed 2 jobs
    _report(tune, tune.add("t0"), 1, 0.9)  # the job's end at rung 1: it waits there (virtual time)
    assert load_state(tmp_path)["paused_at"] == {"t0": 1}
    copy = pickle.loads(pickled)  # a new driver
    assert copy.virtual_clock.searcher is None and copy.clock is time.monotonic and copy.rungs[1] == {"warm:old/a": 0.5}
    trial = Trial("__fake", trial_id="t0", stub=True)
    trial.update_last_result({"round": 1, "val_acc": 0.9})
    copy.on_trial_add(None, trial)
    assert copy.restored and trial.status == Trial.PAUSED and "t0" in copy.rungs[1]
    assert not copy.virtual_clock.deciding  # a resumed search decides in arrival order
    assert not load_state(tmp_path)["virtual"]


def test_the_sampler_tells_optuna_a_trial_stopped_at_a_rung_as_pruned_not_complete():
    """Ray's OptunaSearch tells a 1-round trial COMPLETE with its 1-round value; TPE would rank it with full runs."""
    import yaml
    from ray.tune.search.optuna import OptunaSearch

    spec = parse_spec({**yaml.safe_load(QUICKSTART.read_text()), "name": "s"})
    space = DefineByRun(spec.space, spec.baseline)
    ours = RungAwareTPE(space, metric="val_acc", mode="max", seed=0, max_t=12, rungs=(1, 4))
    rays = OptunaSearch(space=space, metric="val_acc", mode="max", seed=0)
    for searcher in (ours, rays):
        for i, acc in enumerate((0.5, 0.97)):
            assert searcher.suggest(f"t{i}")
            searcher.on_trial_result(f"t{i}", {"round": 1, "training_iteration": 1, "val_acc": acc})
        searcher.on_trial_complete("t0", {"round": 1, "training_iteration": 1, "val_acc": 0.5})  # stopped at rung 1
        for r in range(2, 13):
            searcher.on_trial_result("t1", {"round": r, "training_iteration": r, "val_acc": 0.97 + r / 1000})
        searcher.on_trial_complete("t1", {"round": 12, "training_iteration": 12, "val_acc": 0.98})
    states = {t.number: t.state.name for t in rays._ot_study.get_trials()}
    assert states == {0: "COMPLETE", 1: "COMPLETE"}  # the 1-round trial counted as a finished one
    records = [(t.state.name, t.value, dict(t.intermediate_values)) for t in ours.study().get_trials() if t.state.name != "FAIL"]
    # t0 and t1 at rung 1, t1 at rung 4, then t1 complete with its best round; t0 never as a finished run
    assert [(state, max(curve)) for state, _, curve in records] == [("PRUNED", 1), ("PRUNED", 1), ("PRUNED", 4), ("COMPLETE", 12)]
    assert records[0][2] == {1: 0.5} and records[-1][1] == pytest.approx(0.981)
    # a paused trial is shown to TPE at each rung it reaches; promoted, it gets a record at the next rung
    ours.suggest("t2")
    ours.on_trial_result("t2", {"round": 1, "val_acc": 0.9})
    assert ours.tpe_view() == {"complete": 1, "pruned": 4}
    ours.on_trial_result("t2", {"round": 4, "val_acc": 0.95})
    assert ours.tpe_view() == {"complete": 1, "pruned": 5}
    # a sampler unpickled (Tune's tuner.pkl) rebuilds the same study from its records
    import pickle

    assert pickle.loads(pickle.dumps(ours)).tpe_view() == ours.tpe_view()


def test_the_sampler_suggests_the_baseline_first_and_the_same_sequence_for_the_same_history():
    import yaml

    spec = parse_spec({**yaml.safe_load(QUICKSTART.read_text()), "name": "s"})

    def run() -> list[dict]:
        searcher = RungAwareTPE(DefineByRun(spec.space, spec.baseline), metric="val_acc", mode="max", seed=3, max_t=12,
                                points_to_evaluate=[spec.baseline_point()])
        configs = []
        for i in range(14):
            configs.append(searcher.suggest(f"t{i}"))
            searcher.on_trial_complete(f"t{i}", {"round": 1, "val_acc": (i * 37 % 11) / 11})
        return configs

    first = run()
    assert first[0] == spec.baseline_point()
    assert first == run()
    assert len({str(c) for c in first}) == len(first)


def test_the_searcher_waits_while_max_concurrent_trials_run_or_a_finalist_needs_a_worker():
    scheduler = _scheduler()
    tune = Controller(scheduler)
    tpe = RungAwareTPE(lambda trial: trial.suggest_float("lr", 1e-4, 1e-1, log=True), metric="val_acc", mode="max",
                       seed=0, max_t=16)
    searcher = AdmissionLimiter(tpe, 2, scheduler.admission)
    assert searcher.suggest("a") is not None
    tune.add("a"), tune.add("b")
    assert searcher.suggest("c") is None  # "wait": Tune asks again later
    searcher.admission = lambda: "done"
    assert searcher.suggest("c") == RungAwareTPE.FINISHED
    assert "admission" not in searcher.get_state()  # the experiment checkpoint holds no copy of the scheduler


@pytest.mark.slow
def test_auto_rounds_measure_the_baseline_on_the_workers_as_many_at_a_time_as_trials_run(ray_local):
    """Trials beside each other and Ray's processes can train slower than one alone: the pace that sizes a round is
    measured by `max_concurrent` Ray tasks at once (real Ray, a 12,570-image data set)."""
    from dataclasses import replace

    import numpy as np

    from search.rounds import measure_parallel_speed, resolve_report_every
    from trainables.data import Split, create_dataset

    digits = create_dataset("digits", val_fraction=0.2, test_fraction=0.0)
    tiled = replace(digits, train=Split(labels=np.tile(digits.train.labels, 9), images=np.tile(digits.train.images, (9, 1, 1, 1))))
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["budget"].update({"time_budget": "10m", "max_concurrent": 2, "report_every": "auto"})
    spec = parse_spec(raw)
    speed = measure_parallel_speed(spec, tiled, parallel=2, batches=5)
    assert speed.samples_per_second > 0 and speed.eval_seconds > 0
    said: list[str] = []
    resolved = resolve_report_every(spec, tiled, on_event=said.append)
    assert resolved.budget.report_every != "auto" and len(said) == 1
    assert "samples/s 2 at a time on the workers" in said[0], said


@pytest.mark.parametrize("budget, expect", [("30m", (30, 70)), ("10m", (10, 70))])  # 10m: rounds floored at 4x the val pass
def test_auto_rounds_let_the_first_rung_see_dozens_of_configurations(budget, expect):
    """55,000 train images at ~2,200 samples/s (a 25 s epoch), 30 epochs, 2 workers, reduction factor 4."""
    import yaml

    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["budget"].update({"time_budget": budget, "max_epochs": 30, "reduction_factor": 4, "max_concurrent": 2})
    spec = parse_spec(raw)
    speed = Speed(samples_per_second=2200.0, eval_seconds=1.0)
    samples = auto_round_samples(spec, 55_000, speed)
    assert samples is not None and samples < 55_000
    round_seconds = samples / speed.samples_per_second + speed.eval_seconds
    full = 30 * 55_000 / speed.samples_per_second
    levels = math.log(full / round_seconds, 4)
    budget_s = spec.budget.time_budget_s
    exploring = max(0.3 * budget_s * 2, (budget_s - full) * 2)  # the finish phase trains 2 finalists for ~a full trial
    configs = exploring / (round_seconds * (levels + 1))
    assert expect[0] <= configs <= expect[1], (samples, round_seconds, configs)
    assert round_seconds >= 4 * speed.eval_seconds  # a round is never mostly evaluation
    # a long budget: whole epochs (the first rung still sees dozens); without one: rounds of ~30 s
    raw["budget"]["time_budget"] = "2h"
    assert auto_round_samples(parse_spec(raw), 55_000, speed) is None
    raw["budget"]["time_budget"] = None
    assert auto_round_samples(parse_spec(raw), 110_000, speed) == pytest.approx(29 * 2200, rel=0.01)
    assert auto_round_samples(parse_spec(raw), 55_000, speed) is None  # an epoch is shorter than 30 s
    assert auto_round_samples(parse_spec(raw), 20_000, Speed(samples_per_second=5000.0, eval_seconds=0.1)) is None


def test_warm_start_results_rank_in_the_rungs_and_are_never_resumed():
    scheduler = _scheduler(reduction_factor=2, max_t=4)  # rungs 1, 2
    scheduler.warm({"warm:old/a": {1: 0.9, 2: 0.93}, "warm:old/b": {1: 0.2}})
    tune = Controller(scheduler)
    first = tune.add("t0")
    # the first trial of this search meets a rung that already holds two results: 0.5 is not in the top 1 of 3
    assert _report(tune, first, 1, 0.5) == "PAUSE"
    better = tune.add("t1")
    assert _report(tune, better, 1, 0.95) == "CONTINUE"  # top 2 of 4 (with warm:old/a), promoted at once
    tune.search_alg.finished = True
    better.set_status(Trial.TERMINATED)
    scheduler.on_trial_complete(tune, better, {"round": 4, "val_acc": 0.96})
    for _ in range(3):
        chosen = scheduler.choose_trial_to_run(tune)
        assert chosen is None or not chosen.trial_id.startswith("warm:")
    assert all(not r[0].startswith("warm:") for r in scheduler.resumed)


def test_the_sampler_is_told_warm_trials_and_still_suggests_the_baseline_first():
    spec = parse_spec({**yaml.safe_load(QUICKSTART.read_text()), "name": "s"})
    from search.space import distributions
    from search.warm import WarmTrial

    searcher = RungAwareTPE(DefineByRun(spec.space, spec.baseline), metric="val_acc", mode="max", seed=0, max_t=12,
                            rungs=(2, 6), points_to_evaluate=[spec.baseline_point()])
    point = dict(spec.baseline_point())
    warm = [WarmTrial(source="old/a", params={**point, "lr": 0.01}, curve={2: 0.8, 6: 0.9, 12: 0.95}, scores={2: 0.8, 6: 0.9}, complete=True),
            WarmTrial(source="old/b", params={**point, "lr": 0.0005}, curve={2: 0.3}, scores={2: 0.3}, complete=False)]
    searcher.warm(warm, distributions(spec.space))
    assert searcher.tpe_view() == {"complete": 1, "pruned": 3}  # a: pruned at 2 and 6, complete; b: pruned at 2
    assert searcher.suggest("t1") == spec.baseline_point()  # the baseline is still this search's first trial
    searcher.warm(warm, distributions(spec.space))  # told once only
    assert searcher.tpe_view() == {"complete": 1, "pruned": 3}


def test_before_the_finish_phase_a_promotion_that_would_eat_the_rungs_time_waits_for_it():
    """Rungs 1, 4, 16 below max_t 64; 100 s budget, 2 workers, 1 s rounds: the rungs get 2 x 50 s, and a
    promotion may take a quarter of that (25 s). 16 -> 64 (48 s) waits; the finish phase takes it there."""
    now = [0.0]
    scheduler = _scheduler(max_t=64, time_budget_s=100.0, clock=lambda: now[0])
    tune = Controller(scheduler)
    trials = [tune.add(name) for name in "abcd"]
    assert [_report(tune, t, 16, acc, seconds=1.0) for t, acc in zip(trials, (0.9, 0.5, 0.6, 0.7))] == ["PAUSE"] * 4
    assert scheduler.rungs.promotable(16) == ["a"]  # in its rung's top quarter ...
    assert not scheduler.affordable("a", 16) and scheduler.affordable("a", 4)  # ... but 48 s > 25 s; 12 s would do
    assert scheduler.choose_trial_to_run(tune) is None  # so no worker goes to it: new configurations first
    now[0] = 60.0  # 40 s left < 1.25 x (48 rounds + restart): the finish phase trains it to the end
    assert scheduler.choose_trial_to_run(tune) is trials[0] and scheduler.finish.finalists[0] == "a"
    # the same promotion is ASHA's with a budget that holds ten such trials, or with none
    for budget in (1000.0, None):
        other = _scheduler(max_t=64, time_budget_s=budget, clock=lambda: 0.0)
        other_tune = Controller(other)
        for t, acc in zip([other_tune.add(name) for name in "abcd"], (0.9, 0.5, 0.6, 0.7)):
            _report(other_tune, t, 16, acc, seconds=1.0)
        assert other.affordable("a", 16) and other.choose_trial_to_run(other_tune).trial_id == "a"


@pytest.mark.parametrize("scheduler, rf, expect", [
    ("asha", 4, {4, 16}),  # PromotionASHA's rungs (grace 4 rounds, max_t 40)
    ("asha-stop", 2.5, {4, 10, 25}),  # Ray's ASHA records the first round at or past 4 x 2.5^k = 4, 10, 25
    ("asha-stop", 1.7, {4, 7, 12, 20, 33, 34}),  # 4 x 1.7^k = 6.8, 11.56, 19.65, 33.4: rounded (ours), ceiled (Ray's)
    ("fifo", 4, set()),  # no rungs: val at each epoch's end, the first and the last round only
])
def test_val_rounds_are_the_rungs_as_each_scheduler_counts_them(scheduler, rf, expect):
    from search.rounds import plan, val_rounds

    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["budget"].update({"scheduler": scheduler, "max_epochs": 10, "grace_period": 1, "reduction_factor": rf,
                          "report_every": 2500})
    spec = parse_spec(raw)
    assert plan(spec, 10_000).total == 40 and plan(spec, 10_000).grace == 4
    assert val_rounds(spec, 10_000) == frozenset(expect)
    raw["budget"]["report_every"] = "epoch"
    assert val_rounds(parse_spec(raw), 10_000) is None  # every round ends an epoch


def test_the_sampler_records_only_val_values_measured_in_their_own_round():
    spec = parse_spec({**yaml.safe_load(QUICKSTART.read_text()), "name": "s"})
    ours = RungAwareTPE(DefineByRun(spec.space, spec.baseline), metric="val_acc", mode="max", seed=0, max_t=12, rungs=(1, 4))
    assert ours.suggest("t0")
    ours.on_trial_result("t0", {"round": 1, "val_round": 1, "val_acc": 0.5})
    ours.on_trial_result("t0", {"round": 2, "val_round": 1, "val_acc": 0.5})  # carried from round 1
    ours.on_trial_result("t0", {"round": 3, "val_round": 3, "val_acc": 0.6})
    ours.on_trial_complete("t0", {"round": 4, "val_round": 3, "val_acc": 0.6}, error=False)
    assert ours.trials["t0"]["curve"] == {1: 0.5, 3: 0.6}
    told = [dict(t.intermediate_values) for t in ours.study().get_trials()]
    assert told[-1] == {1: 0.5, 3: 0.6}  # pruned at round 3, the last one that measured val


@pytest.mark.parametrize("metric, mode, rf", [("val_acc", "max", 3), ("val_loss", "min", 2.5)])
def test_asha_stop_over_all_results_decides_as_rays_asha(metric, mode, rf):
    """AshaStop with window 0 (a rung's cutoff over all its results) is Ray's ASHAScheduler on the same rungs:
    the same decision for every result of 30 interleaved trials (ties included), without Ray's private brackets."""
    import random

    from ray.tune.schedulers import ASHAScheduler

    from search.schedulers import AshaStop

    rng = random.Random(0)
    ours = AshaStop(metric, mode, max_t=20, grace=1, reduction_factor=rf, window=0)
    rays = ASHAScheduler(time_attr="round", metric=metric, mode=mode, max_t=20, grace_period=1, reduction_factor=rf)
    trials, live, decisions = [Trial("__fake", trial_id=f"t{i:02d}", stub=True) for i in range(30)], [], []
    rounds: dict[str, int] = {}
    while trials or live:
        if trials and (not live or rng.random() < 0.3):
            live.append(trials.pop(0))
            for scheduler in (ours, rays):
                scheduler.on_trial_add(None, live[-1])
        trial = rng.choice(live)
        rounds[trial.trial_id] = rounds.get(trial.trial_id, 0) + 1
        result = {"round": rounds[trial.trial_id], metric: round(rng.uniform(0.2, 0.9), 1)}  # coarse: many ties
        pair = [scheduler.on_trial_result(None, trial, dict(result)) for scheduler in (ours, rays)]
        decisions.append((*pair, rounds[trial.trial_id]))
        if "STOP" in pair:
            live.remove(trial)
            for scheduler in (ours, rays):
                scheduler.on_trial_complete(None, trial, dict(result))
    assert all(a == b for a, b, _ in decisions), [i for i, (a, b, _) in enumerate(decisions) if a != b]
    at_rungs = sum(a == "STOP" and t < 20 for a, _, t in decisions)
    assert 10 < at_rungs < 30, at_rungs  # the rungs stopped most trials, and some reached max_t (stopped there)
