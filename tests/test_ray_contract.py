"""What search/ relies on in Ray Tune beyond its documented calls, checked against the installed Ray.

search/ uses no private Ray attribute. pyproject.toml pins ray[tune] to the minor version tested (2.60)
because two behaviours below are Ray's implementation, not its documentation: how a restore rebuilds
the callbacks (search.callbacks.restoring) and where the JSON logger restores result.json
(search.callbacks.ResultLogger).
"""
from __future__ import annotations

import pickle

import ray

from search.callbacks import ResultLogger, SearchHooks, restoring

TESTED_RAY_MINOR = (2, 60)


def test_the_installed_ray_is_the_minor_version_search_was_tested_with():
    major, minor = (int(x) for x in ray.__version__.split(".")[:2])
    assert (major, minor) == TESTED_RAY_MINOR, (
        f"ray {ray.__version__} is installed; search/ was tested with {TESTED_RAY_MINOR[0]}.{TESTED_RAY_MINOR[1]}.x "
        "(see the other tests here); check them, then move TESTED_RAY_MINOR and the pin")


def test_a_restored_run_config_hands_its_hooks_the_resuming_drivers_observers(tmp_path):
    # Tune pickles the RunConfig (callbacks, stopper) into tuner.pkl and Tuner.restore unpickles it in the caller
    from ray import tune

    heard = []

    class Observer:
        def on_step_end(self, **info):
            heard.append(info["iteration"])

        def stop_all(self):
            return True

    hooks = SearchHooks([object()])
    saved = pickle.dumps(tune.RunConfig(name="x", storage_path=str(tmp_path), callbacks=[hooks], stop=hooks))
    with restoring([Observer()]):
        config = pickle.loads(saved)
    restored = config.callbacks[0]
    assert restored is config.stop  # one object: the callback is the stopper
    restored.on_step_end(iteration=3, trials=[])
    assert heard == [3] and restored.stop_all()
    assert pickle.loads(saved).callbacks[0].observers == []  # outside a restore nothing is attached


def test_tunes_json_logger_restores_result_files_when_a_trial_starts():
    # ResultLogger puts this driver's longer result.json back after log_trial_start's restore from storage
    import inspect

    from ray.tune.logger import JsonLoggerCallback

    assert "_restore_from_remote" in inspect.getsource(JsonLoggerCallback.log_trial_start)
    assert ResultLogger.log_trial_start is not JsonLoggerCallback.log_trial_start
