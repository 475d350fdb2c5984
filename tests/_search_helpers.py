"""Helpers for tests that run real searches: small specs and MLflow queries."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "spaces" / "quickstart.yaml"


def small_spec(tmp_path: Path, name: str = "qs-test", **budget: Any) -> Path:
    """The quickstart spec with a smaller budget, written to tmp_path."""
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["name"] = name
    raw["budget"].update({"samples": 6, "max_epochs": 6, "grace_period": 1, "reduction_factor": 3, "max_concurrent": 2})
    raw["budget"].update(budget)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def mlflow_runs(tracking_uri: str, experiment_name: str) -> list[Any]:
    """Every run (any status) of an experiment."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    assert experiment is not None, f"no MLflow experiment {experiment_name!r}"
    return client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
