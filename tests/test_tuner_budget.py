"""search.tuner: a time budget is the wall time of the whole search, start-up included, and `Components.build`
replaces components once the rounds are resolved (how benchmarks build a variant on `auto`'s rounds)."""
from __future__ import annotations

import copy

import yaml

from search.spec import parse_spec
from search.tuner import Components, _budget_after_startup
from tests._search_helpers import QUICKSTART


def _spec(time_budget):
    raw = copy.deepcopy(yaml.safe_load(QUICKSTART.read_text()))
    raw["budget"]["time_budget"] = time_budget
    return parse_spec(raw, "test")


def test_start_up_is_taken_out_of_the_time_budget_and_said_in_one_line():
    said = []
    spec = _budget_after_startup(_spec("60s"), 12.4, said.append)
    assert spec.budget.time_budget_s == 60 - 12.4
    assert spec.raw["budget"]["time_budget"] == 60 - 12.4  # a resume reads the same
    assert said == ["time budget: 60 s, 12 s of it for start-up (data, Ray, rounds); 48 s for the trials"]


def test_a_start_up_longer_than_the_budget_leaves_a_second_and_no_budget_is_left_alone():
    assert _budget_after_startup(_spec("10s"), 30.0, None).budget.time_budget_s == 1.0
    untimed = _spec(None)
    assert _budget_after_startup(untimed, 30.0, None) is untimed


def test_components_build_is_called_with_the_resolved_spec_and_keeps_both_callbacks():
    seen = []
    scheduler = object()

    def build(spec, data, location):
        seen.append((spec, data, location))
        return Components(scheduler=scheduler, callbacks=("built",))

    mine = Components(callbacks=("observer",), build=build)
    resolved = mine.resolved("SPEC", "DATA", "/searches/x")
    assert seen == [("SPEC", "DATA", "/searches/x")]
    assert resolved.scheduler is scheduler and resolved.callbacks == ("observer", "built") and resolved.build is None
    plain = Components(callbacks=("observer",))
    assert plain.resolved("SPEC", "DATA", "/x") is plain
