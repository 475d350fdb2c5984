"""The few private parts of Ray Tune that search/ relies on, checked against the installed Ray.

pyproject.toml pins ray[tune] to the minor version these were read in (2.60). On another Ray
these tests say which private attribute moved, before a search misbehaves.
"""
from __future__ import annotations

import ray

TESTED_RAY_MINOR = (2, 60)


def test_the_installed_ray_is_the_minor_version_search_was_tested_with():
    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    assert (major, minor) == TESTED_RAY_MINOR, (
        f"ray {ray.__version__} is installed; search/ was tested with {TESTED_RAY_MINOR[0]}.{TESTED_RAY_MINOR[1]}.x "
        "(private attributes: see the other tests here); check them, then move TESTED_RAY_MINOR and the pin")


def test_rays_asha_brackets_rank_a_rung_in_a_cutoff_method():
    # search.schedulers.asha_scheduler (asha-stop) wraps each bracket's cutoff(recorded)
    from ray.tune.schedulers import ASHAScheduler

    scheduler = ASHAScheduler(metric="val_acc", mode="max", max_t=9, grace_period=1, reduction_factor=3)
    assert scheduler._brackets and all(callable(getattr(b, "cutoff", None)) for b in scheduler._brackets)
    assert scheduler._brackets[0].cutoff({"a": 0.5, "b": 0.7, "c": 0.9}) is not None


def test_tunes_json_logger_restores_result_files_in_restore_from_remote():
    # search.tuner.result_logger overrides it so a restarted trial keeps the rounds it reported
    from ray.tune.logger import JsonLoggerCallback

    assert callable(getattr(JsonLoggerCallback, "_restore_from_remote", None))


def test_a_restored_tuner_exposes_its_run_config_through_local_tuner():
    # search.tuner._fit gives a restored search fresh callbacks through tuner._local_tuner.get_run_config()
    from ray.tune.impl.tuner_internal import TunerInternal

    assert callable(getattr(TunerInternal, "get_run_config", None))
    import inspect

    from ray import tune

    assert "_local_tuner" in inspect.getsource(tune.Tuner.__init__)
