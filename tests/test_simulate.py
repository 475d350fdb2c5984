"""benchmarks/simulate.py and search/schedulers/simulator.py: the default scheduler replayed, the measured start and
resume costs, the target rule, and the loop's hooks (no Ray runtime; each test runs in about a second or less).

The end-to-end run of the script (subprocess, report, JSON) is tests/test_benchmarks_smoke.py's simulate test.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import Searcher

from search.schedulers import PromotionASHA, ReproducibleASHA, build_scheduler
from search.schedulers.simulator import Controller, SearchGenerator, Simulation

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import simulate as S  # noqa: E402  (benchmarks/ is not a package)


@pytest.fixture(scope="module")
def curves(tmp_path_factory):
    return S.load_curves(S.synthetic_curves(tmp_path_factory.mktemp("curves") / "curves_synthetic.json"))


def _settings(scheduler: str, **changes) -> S.Settings:
    options = dict(scheduler=scheduler, workers=4, seed=3, samples=24, max_t=16, grace=1, reduction_factor=4.0, target=0.95,
                   noise=0.003, start_overhead=0.05, resume_overhead=0.05)
    return S.Settings(**{**options, **changes})


class _Jittered(S.Replay):
    """The same replay with every round 0.3-3x as long (seeded per trial and round): other timing, same results."""

    def round_seconds(self, trial):
        jitter = random.Random(f"{trial.trial_id}-{self.sims[trial.trial_id].round}").uniform(0.3, 3.0)
        return super().round_seconds(trial) * jitter


def _search(replay: S.Replay) -> tuple[list[tuple[int, int]], dict]:
    """(per trial in creation order: the recorded curve it replays and the rounds it trained; the summary)."""
    summary = replay.replay()
    return [(replay.sims[t.trial_id].curve["index"], replay.sims[t.trial_id].round) for t in replay.trials], summary


# -- the default scheduler ------------------------------------------------------------------------


def test_asha_replays_reproducible_asha_built_as_build_scheduler_builds_it(curves):
    """`asha` is ReproducibleASHA as build_scheduler makes it for `reproducible: true` (on the replay's clock, attached
    to the RungAwareTPE as build_tuner does); `asha-arrival` is PromotionASHA (`reproducible: false`)."""
    for name, reproducible in (("asha", True), ("asha-arrival", False)):
        s = _settings(name, workers=8, samples=40, time_budget=500.0)
        replay = S.Replay(curves, s)
        spec = curves.spec.with_budget(samples=40, max_concurrent=8, time_budget_s=500.0, reduction_factor=4.0,
                                       scheduler="asha", reproducible=reproducible)
        built = build_scheduler(spec, 1000)
        ours = replay.scheduler
        assert type(ours) is type(built) is (ReproducibleASHA if reproducible else PromotionASHA)
        for attr in ("levels", "max_t", "grace", "reduction_factor", "max_concurrent", "time_budget_s", "time_attr", "metric"):
            assert getattr(ours, attr) == getattr(built, attr), attr
        assert ours.state_dir is None and ours.clock == replay.clock
        if reproducible:
            assert ours.virtual_clock.samples == built.virtual_clock.samples == 40
            assert ours.virtual_clock.searcher is replay.searcher and replay.searcher.deferred
        else:
            assert ours.virtual_clock is None and not replay.searcher.deferred


def test_a_reproducible_asha_replay_is_the_same_search_twice_and_whatever_the_round_times(curves):
    first, again, jittered = (_search(cls(curves, _settings("asha"))) for cls in (S.Replay, S.Replay, _Jittered))
    drop = lambda summary: {k: v for k, v in summary.items() if k != "real_s"}  # noqa: E731
    assert first[0] == again[0] and drop(first[1]) == drop(again[1])  # the same seed: the same replay
    assert first[1]["pause"] > 0 and first[1]["resume"] > 0 and first[1]["virtual_clock"]["waits"] > 0
    assert jittered[0] == first[0]  # other round times: the same configurations, each trained as far
    assert jittered[1]["handed_val"] == first[1]["handed_val"] and jittered[1]["end_s"] != first[1]["end_s"]
    arrival, arrival_jittered = (_search(cls(curves, _settings("asha-arrival"))) for cls in (S.Replay, _Jittered))
    assert arrival[0] != arrival_jittered[0]  # in arrival order the timing changes the search (so the check has teeth)


def test_a_time_budget_ends_at_the_deadline_and_hands_over_as_finalize_picks(curves):
    summary = S.Replay(curves, _settings("asha", samples=60, time_budget=600.0)).replay()
    assert summary["timed_out"] and summary["end_s"] == 600.0 and summary["ended"]
    assert summary["decisions"].get("finalist", 0) >= 1  # the finish phase ran
    assert summary["virtual_clock"]["deciding_at_end"] is False  # ... and the virtual clock left for it
    assert summary["handed_val"] is not None and isinstance(summary["handed_completed"], bool)


# -- what a start and a resume cost ---------------------------------------------------------------


def _raw(directory: Path, name: str, events: list, **extra) -> Path:
    path = directory / name
    path.write_text(json.dumps({"benchmark": "anytime", "format": 2, "method": "hpsearch", "events": events, **extra}))
    return path


def test_the_overhead_reader_separates_starts_resumes_and_reports(tmp_path):
    # [t, trial, round, epoch, val_acc, round_seconds, train_seconds, time_this_iter_s]
    events = [
        [12.0, "a", 1, 0.5, 0.5, 10.0, 9.0, 12.0],  # a starts: 2 s on top of its round
        [17.02, "a", 2, 1.0, 0.6, 5.0, 4.5, 5.01],  # runs on: 0.01 s
        [50.0, "a", 3, 1.5, 0.7, 5.0, 4.5, 5.3],  # idle 27.7 s before it (paused): a resume costing 0.3 s
        [50.1, "a", 3, 1.5, 0.7, 5.0, 4.5, 0.1],  # the same round again: left out
        [55.32, "a", 4, 2.0, 0.7, 5.0, 4.5, 5.02],  # runs on
        [20.0, "b", 1, 0.5, 0.4, 8.0, 7.0, 8.1],  # b starts in a reused actor: 0.1 s
        [25.0, "b", 2, 1.0, 0.4, 5.0, 4.5, None],  # no time_this_iter_s (a peer's result): left out
    ]
    samples = S.overhead_samples(events)
    assert samples["start"] == pytest.approx([2.0, 0.1])
    assert samples["resume"] == pytest.approx([0.3])
    assert samples["report"] == pytest.approx([0.01, 0.02], abs=1e-9)
    _raw(tmp_path, "glyphs_seed1_hpsearch.json", events)
    _raw(tmp_path, "glyphs_seed2_hpsearch-no-finish.json", [[3.0, "c", 1, 0.5, 0.5, 2.0, 2.0, 2.5]])
    _raw(tmp_path, "glyphs_seed3_hpsearch.json", [[3.0, "d", 1, 0.5, 0.5, 2.0, 2.0, 9.0]], smoke=True)  # smoke: left out
    _raw(tmp_path, "glyphs_seed1_ray-tune.json", [[3.0, "e", 1, 0.5, 0.5, 2.0, 2.0, 9.0]])  # not hpsearch: left out
    info = S.measure_overheads(tmp_path)
    assert info["start"] == pytest.approx(0.5) and info["resume"] == pytest.approx(0.3)  # medians of [2, 0.1, 0.5], [0.3]
    assert info["counts"] == {"start": 3, "resume": 1, "report": 2}
    assert info["files"] == ["glyphs_seed1_hpsearch.json", "glyphs_seed2_hpsearch-no-finish.json"]


def test_overheads_fall_back_to_the_measured_numbers_and_flags_override_them(tmp_path, capsys):
    args = S.parse_args(["--anytime-runs", str(tmp_path)])
    start, resume, info = S.resolve_overheads(args)
    assert (start, resume) == (S.MEASURED_OVERHEADS["start"], S.MEASURED_OVERHEADS["resume"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("no raw file of benchmarks/anytime.py in")
    _raw(tmp_path, "glyphs_seed1_hpsearch.json", [[12.0, "a", 1, 0.5, 0.5, 10.0, 9.0, 12.0]])
    start, resume, info = S.resolve_overheads(args)
    assert (start, resume) == (2.0, 2.0) and "resume_note" in info  # no resume seen: a start's cost
    args = S.parse_args(["--anytime-runs", str(tmp_path), "--resume-overhead", "0.7"])
    assert S.resolve_overheads(args)[:2] == (2.0, 0.7)
    args = S.parse_args(["--overhead", "1.5", "--start-overhead", "0"])
    assert S.resolve_overheads(args)[:2] == (0.0, 1.5)
    with pytest.raises(SystemExit, match="--resume-overhead must be >= 0 seconds, but got '-1'"):
        S.resolve_overheads(S.parse_args(["--overhead", "1", "--resume-overhead", "-1"]))


def test_the_simulation_charges_a_start_and_a_resume_their_own_cost():
    class PauseOnce(FIFOScheduler):
        def on_trial_result(self, controller, trial, result):
            return self.PAUSE if result["round"] == 1 else self.CONTINUE

        def choose_trial_to_run(self, controller):
            return next((t for t in controller.get_trials() if t.status in (Trial.PAUSED, Trial.PENDING)), None)

    class One(Searcher):
        def suggest(self, trial_id):
            return {"x": 1}

        def on_trial_complete(self, trial_id, result=None, error=False):
            pass

    class Sim(Simulation):
        seen: list = []

        def round_seconds(self, trial):
            return 10.0

        def train(self, trial, *, fresh, overhead=0.0):
            rounds = len([r for r in self.seen if r[0] == trial.trial_id]) + 1
            self.seen.append((trial.trial_id, rounds, self.now, fresh, overhead))
            return {"round": rounds, "time_this_iter_s": 10.0 + overhead}

        def returns(self, trial):
            return len(self.seen) >= 3

    sim = Sim(PauseOnce(), SearchGenerator(One(), 1), workers=1, start_overhead=2.0, resume_overhead=0.5)
    sim.run()
    assert [(r, at, fresh, cost) for _, r, at, fresh, cost in sim.seen] == [
        (1, 12.0, True, 2.0), (2, 22.5, True, 0.5), (3, 32.5, False, 0.0)]
    assert sim.counts["pause"] == sim.counts["resume"] == 1 and sim.busy_seconds == pytest.approx(32.5) and sim.finished()
    assert sim.trials[0].last_result["round"] == 3  # Tune's last_result: the last result reported
    with pytest.raises(ValueError, match="resume_overhead=-1"):
        Sim(PauseOnce(), SearchGenerator(One(), 1), workers=1, resume_overhead=-1)


def test_the_controller_sets_last_result_after_the_scheduler_and_completes_a_stopped_trial_with_it():
    heard = []

    class Stop(FIFOScheduler):
        def on_trial_result(self, controller, trial, result):
            heard.append(("result", dict(trial.last_result).get("round")))
            return self.STOP if result["round"] == 2 else self.CONTINUE

        def on_trial_complete(self, controller, trial, result):
            heard.append(("complete", result["round"], trial.last_result["round"]))

    tune = Controller(Stop())
    trial = tune.add("t1")
    tune.report(trial, {"round": 1})
    tune.report(trial, {"round": 2})
    assert heard == [("result", None), ("result", 1), ("complete", 2, 2)] and trial.status == Trial.TERMINATED


# -- the target -----------------------------------------------------------------------------------


def _curves_with(tmp_path: Path, finals: list[float], repeats: list[float] | None, name: str) -> S.Curves:
    """The synthetic curves file with configuration i ending at finals[i] (and the baseline's repeats at `repeats`)."""
    data = json.loads(S.synthetic_curves(tmp_path / f"curves_{name}.json", n=len(finals)).read_text())
    for config, final in zip(data["configs"], finals):
        config["val_acc"][-1] = final
    data["repeats"] = [{**data["configs"][0], "val_acc": [*data["configs"][0]["val_acc"][:-1], r]} for r in repeats or []]
    path = tmp_path / f"curves_{name}.json"
    path.write_text(json.dumps(data))
    return S.load_curves(path)


def test_the_default_target_is_above_the_baseline(tmp_path):
    spread = [0.5 + 0.02 * i for i in range(11)]  # 0.50 .. 0.70; the 90% quantile is 0.68
    low = _curves_with(tmp_path, [0.60, *spread[1:]], [0.62, 0.58], "low")  # baseline 0.60 +- 0.02
    target, info = S.choose_target(low, 0.9)
    assert target == pytest.approx(0.68) and info["baseline"]["final"] == pytest.approx(0.60) and "quantile" in info["rule"]
    high = _curves_with(tmp_path, [0.70, *spread[1:]], [0.72, 0.68], "high")  # the baseline is the best: 0.70 +- 0.02
    target, info = S.choose_target(high, 0.9)
    assert info["baseline"]["sd"] == pytest.approx(0.02) and target == pytest.approx(0.72)
    assert "baseline's final + one seed-to-seed SD" in info["rule"]
    alone = _curves_with(tmp_path, [0.70, *spread[1:]], None, "alone")  # no repeat: the SD is unknown
    target, info = S.choose_target(alone, 0.9)
    assert target == pytest.approx(0.70 + S.SD_UNKNOWN) and info["baseline"]["sd"] is None
    for curves in (low, high, alone):  # whichever rule: above the baseline's final
        assert S.choose_target(curves, 0.9)[0] > S.baseline_final(curves)["final"]


def test_a_target_at_or_below_the_baseline_is_refused_unless_allowed(tmp_path, capsys):
    curves = _curves_with(tmp_path, [0.60 + 0.01 * (i % 3) for i in range(6)], [0.62, 0.58], "refuse")
    target, info = S.choose_target(curves, 0.9, 0.60)
    assert "--target 0.6 is at or below the baseline's final val acc 0.6000" in S.check_target(target, info, allow_below=False)
    assert S.check_target(target, info, allow_below=True) is None
    assert S.check_target(0.6001, info, allow_below=False) is None
    with pytest.raises(SystemExit) as exit_:
        S.main([curves.path, "--target", "0.55", "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-target-below-baseline" in err[0]
    assert not (tmp_path / "out").exists()  # refused before any replay


def test_time_budgets_resolve(curves):
    full = S.full_trial_seconds(curves, 16)
    assert S.resolve_budgets(["none", "auto", "600", "auto"], curves, 16, 1.0) == [
        ("none", None), ("auto", float(round(S.AUTO_BUDGET_TRIALS * (full + 1.0)))), ("600 s", 600.0)]
    for bad in ("soon", "0", "-5"):
        with pytest.raises(SystemExit, match=f"--time-budget must be none, auto or seconds > 0, but got '{bad}'"):
            S.resolve_budgets([bad], curves, 16, 0.0)
