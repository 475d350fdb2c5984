"""A seeded parallel search reproduces whatever the timing (search.schedulers.virtual_clock), on real Ray Tune + Optuna + MLflow.

The same spec and seed run twice with 2 workers: the second time, trials with a wide hidden layer sleep in
every training step, so results arrive in another order. The configurations, rounds and statuses must not change.
16 trials, so TPE (10 random start-up records) proposes from what it was told; with `reproducible: false` the
same two runs differed in 9 of 16 trials' rounds or configurations when this test was written.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.schedulers import PromotionASHA, ReproducibleASHA, build_scheduler, load_state
from search.schedulers.simulator import Controller
from search.spec import load_spec
from search.tuner import run_search
from tests._search_helpers import QUICKSTART

# A user's model file: the quickstart's cnn, whose training steps sleep while FLAG exists and the
# trial's hidden layer is wide (what the sleep changes is only when results arrive).
NETS = '''
import functools
import time
from pathlib import Path

from torch import nn

from trainables.models import cnn

FLAG = Path({flag!r})


class Sleepy(nn.Module):
    def __init__(self, net, delay):
        super().__init__()
        self.net, self.delay = net, delay

    def forward(self, x):
        if self.training and self.delay:
            time.sleep(self.delay)
        return self.net(x)


@functools.wraps(cnn)
def sleepy_cnn(**kwargs):
    return Sleepy(cnn(**kwargs), 0.05 if FLAG.exists() and kwargs["hidden"] > 100 else 0.0)
'''


def _spec(folder: Path, model: str = "cnn", **budget) -> Path:
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw.update(name="repro", model=model)
    raw["budget"].update({"samples": 16, "max_epochs": 9, "grace_period": 1, "reduction_factor": 3, "max_concurrent": 2,
                          **budget})
    path = folder / "repro.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _outcome(result) -> list[tuple]:
    """What `hpsearch results` shows of each trial, in trial order: its configuration, rounds and status."""
    table = result.table().sort_values("trial")
    columns = sorted(c for c in table.columns if c.startswith("config/")) + ["rounds", "status"]
    return [tuple(row) for row in table[columns].astype(str).itertuples(index=False)]


@pytest.fixture(scope="module")
def twice(tmp_path_factory, ray_local):
    tmp = tmp_path_factory.mktemp("reproducible")
    flag = tmp / "sleep"
    nets = tmp / "nets.py"
    nets.write_text(NETS.format(flag=str(flag)))
    spec = _spec(tmp, f"{nets}:sleepy_cnn")
    first = run_search(spec, name="first", storage=str(tmp / "runs"), on_event=None)
    flag.touch()  # from here the wide trials train slower
    second = run_search(spec, name="second", storage=str(tmp / "runs"), on_event=None)
    return first, second


@pytest.mark.slow  # two full searches on real Ray (about a minute)
def test_the_same_seed_gives_the_same_search_when_some_trials_run_slower(twice):
    first, second = twice
    assert _outcome(first) == _outcome(second)
    assert first.best.config == second.best.config
    states = [load_state(r.experiment_dir) for r in twice]
    assert all(s["virtual"] for s in states)  # no time budget: the virtual schedule decided to the end
    assert [x[1:] for x in states[0]["resumed"]] == [x[1:] for x in states[1]["resumed"]]  # same rungs, ranks, sizes
    # the sleeps reordered arrivals: results that came in early waited for ones before them in virtual time
    assert states[1]["wait_seconds"] > states[0]["wait_seconds"]
    assert len({r.config["hidden"] > 100 for r in first.records}) == 2  # some trials were slowed, some not


def test_reproducible_false_decides_in_arrival_order(tmp_path):
    assert type(build_scheduler(load_spec(_spec(tmp_path, reproducible=False)), 1000)) is PromotionASHA
    assert isinstance(build_scheduler(load_spec(_spec(tmp_path)), 1000), ReproducibleASHA)


# -- the virtual schedule driven directly (no Ray runtime): search.schedulers.simulator's stand-in for Tune's controller

def _virtual_search():
    from search.sampler import AdmissionLimiter, RungAwareTPE

    scheduler = ReproducibleASHA("val_acc", "max", max_t=4, grace=1, reduction_factor=2, max_concurrent=2, samples=6)
    tpe = RungAwareTPE(lambda trial: trial.suggest_float("lr", 1e-4, 1e-1, log=True), metric="val_acc", mode="max",
                       seed=0, max_t=4, rungs=scheduler.levels)
    scheduler.attach(tpe)
    limiter, tune = AdmissionLimiter(tpe, 2, scheduler.admission), Controller(scheduler)

    def start(trial_id: str):
        assert limiter.suggest(trial_id) is not None
        return tune.add(trial_id)

    return scheduler, tpe, limiter, tune, start


def _report(tune, tpe, trial, rounds: int, acc: float) -> str:
    tpe.on_trial_result(trial.trial_id, {"round": rounds, "val_acc": acc})  # Tune tells the searcher after the scheduler
    return tune.report(trial, {"round": rounds, "val_acc": acc, "val_loss": 1 - acc, "epoch_seconds": 1.0})


@pytest.mark.parametrize("b_first", [True, False])
def test_a_result_that_comes_in_first_waits_for_the_one_before_it_in_virtual_time(b_first):
    scheduler, tpe, limiter, tune, start = _virtual_search()
    a, b = start("a"), start("b")  # both jobs end at virtual time 1; a (trial 1) comes first in that order
    assert limiter.suggest("c") is None  # two jobs on two virtual workers: nothing new yet
    if b_first:
        assert _report(tune, tpe, b, 1, 0.9) == "PAUSE"  # b waits for a: not yet in its rung
        assert scheduler.rungs[1] == {} and scheduler.virtual_clock.waits == 1
        assert _report(tune, tpe, a, 1, 0.5) == "PAUSE"  # a's end, then b's: b tops rung 1 and is given the next job
        assert scheduler.virtual_clock.to_resume == ["b"] and scheduler.choose_trial_to_run(tune) is b
    else:
        assert _report(tune, tpe, a, 1, 0.5) == "PAUSE"
        assert _report(tune, tpe, b, 1, 0.9) == "CONTINUE"  # promoted as it reported: no pause
        assert scheduler.virtual_clock.waits == 0
    # whatever the order: the same rungs, the same promotion, the same proposal for the freed worker
    assert scheduler.rungs[1] == {"a": pytest.approx(0.5, abs=1e-5), "b": pytest.approx(0.9, abs=1e-5)}
    assert scheduler.rungs.promoted[1] == ["b"]
    assert scheduler.virtual_clock.jobs == {"b": [2.0, 2], tpe.queued[0]: [2.0, 1]} and scheduler.paused_at == {"a": 1}
    assert tpe.tpe_view() == {"complete": 0, "pruned": 2}  # the sampler was told both rung results, in virtual order


def test_the_sampler_is_told_results_in_virtual_order_whichever_came_first():
    told = []
    for b_first in (True, False):
        scheduler, tpe, limiter, tune, start = _virtual_search()
        a, b = start("a"), start("b")
        for trial, acc in ([(b, 0.9), (a, 0.5)] if b_first else [(a, 0.5), (b, 0.9)]):
            _report(tune, tpe, trial, 1, acc)
        told.append(list(tpe.told))
    assert told[0] == told[1] == [("a", "pruned", 1), ("b", "pruned", 1)]  # arrival order would tell b first in the first run


def test_a_trial_tune_restarts_after_a_lost_node_keeps_its_job_and_a_final_failure_ends_it():
    scheduler, tpe, limiter, tune, start = _virtual_search()
    a = start("a")
    start("b")
    scheduler.on_trial_error(tune, a)  # no failure counted yet: Tune will restart it from its checkpoint
    assert "a" in scheduler.virtual_clock.jobs and not scheduler.virtual_clock.reported
    a.run_metadata.num_failures = 1  # past max_failures (0): the trial ends with an error
    scheduler.on_trial_error(tune, a)
    assert "a" not in scheduler.virtual_clock.jobs and tpe.trials["a"]["state"] == "failed"
    assert scheduler.virtual_clock.jobs.keys() == {"b", tpe.queued[0]}  # the freed virtual worker took a new configuration
