"""A seeded parallel search reproduces whatever the timing (search.reproducible), on real Ray Tune + Optuna + MLflow.

The same spec and seed run twice with 2 workers: the second time, trials with a wide hidden layer sleep in
every training step, so results arrive in another order. The configurations, rounds and statuses must not change.
16 trials, so TPE (10 random start-up records) proposes from what it was told; with `reproducible: false` the
same two runs differed in 9 of 16 trials' rounds or configurations when this test was written.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from search.reproducible import ReproducibleASHA
from search.schedulers import PromotionASHA, load_state
from search.spec import load_spec
from search.tuner import build_scheduler, run_search
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
