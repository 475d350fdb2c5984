"""The benchmark scripts run end to end in their smoke mode (tiny sizes), writing to a temporary folder.

No timing is asserted: the numbers of a smoke run mean nothing. What is checked is that
each script (`python benchmarks/NAME.py --smoke --out DIR`) exits 0 and writes DIR/NAME.md
with the machine/version header and the rows its table must have; the committed results
in benchmarks/results/ are left alone.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]

EXPECTED_ROWS = {
    "overhead": ["| 1 | bare → trainer → hpsearch |", "| **median** |", "| trial time / bare loop time (trial 2, median of reps) |"],
    "data_pipeline": [
        f"| {shape} | {variant}"
        for shape in ("MNIST 1x28x28, tutorial C net", "CIFAR-10 3x32x32, tutorial E net")
        for variant in ("pure compute (ready batches)", "hpsearch (Trainer.run_round", "tutorial DataLoader, PIL + ToTensor, num_workers=0",
                        "tutorial DataLoader, PIL + ToTensor, num_workers=2")
    ],
    "search_efficiency": ["| 0 | hpsearch: TPE + ASHA |", "| 0 | hpsearch: TPE + ASHA, Ray's cutoff |", "| 0 | random + FIFO |", "| 0 | TPE + FIFO |",
                          "| trial-epochs to bar (not reached = ∞) |", "| best final val acc |", "| test acc of the chosen model |",
                          "| seeds where its best final val acc ≥ random's", "| seeds where its chosen model's test acc ≥ random's |",
                          "| mean over seeds: best val acc / best final val acc / test acc",
                          "| seeds where its chosen config, retrained 2x from scratch (fresh seeds), tests ≥ random's",
                          "| test acc of the chosen config retrained 2x (mean) |", "| noise floor: SD of one config's accuracy",
                          "| it − random, mean over seeds ± standard error, in points"],
    "scale": ["| bare Tune + Optuna + ASHA, Tune's default result loggers", "| bare Tune + Optuna + ASHA, JSON result logger only",
              "| hpsearch (+ ProgressCallback + MlflowTracker) |", "| hpsearch throughput / bare throughput (same Tune setup"],
    "accuracy": ["| quickstart (digits) | 0 |", "| tutorial A (image folder, 3 classes) | 0 |",
                 "| tutorial D scratch (Train/Validation/Test, 6 classes) | 0 |"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_benchmark_smoke(name, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)  # each script starts (and stops) its own local Ray
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / f"{name}.py"), "--smoke", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = (tmp_path / f"{name}.md").read_text()
    for header in ("- machine:", "- versions: python", "torch", "ray", "optuna", "mlflow", "- date:", "- command:", "- code: commit", "--smoke", "- mode: **smoke**"):
        assert header in report, header
    for row in EXPECTED_ROWS[name]:
        assert row in report, f"{row!r} missing from {name}.md:\n{report}"
    assert report in proc.stdout  # the table is printed too


ANYTIME_METHODS = ("hpsearch", "hpsearch-asha-stop", "optuna", "ray-tune")


def test_anytime_smoke(tmp_path):
    """benchmarks/anytime.py --smoke (tiny generated glyphs, 25 s of search per method; about 2 minutes in all):
    every method tried configurations and handed over a model with a test accuracy; the per-seed report, plot and
    summary are written."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HPSEARCH_CACHE": str(tmp_path / "cache")}  # the smoke data set goes there
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "anytime.py"), "--smoke", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record = json.loads((tmp_path / "anytime_seed0.json").read_text())
    assert record["smoke"] and record["seed"] == 0
    assert sorted(record["methods"]) == sorted(ANYTIME_METHODS), record.get("skipped")
    for method, outcome in record["methods"].items():
        assert outcome["configurations"] > 0, method
        assert outcome["test_acc"] is not None and 0.0 <= outcome["test_acc"] <= 1.0, method
        assert outcome["trace"] and outcome["chosen"]["config"] is not None, method
        assert 0.0 <= outcome["share_outside_top_quarter"] <= 1.0, method
    assert len(record["retrain"]["test"]) == 2
    report = (tmp_path / "anytime_seed0.md").read_text()
    for line in ("- machine:", "- code: commit", "- mode: **smoke**", "| best val acc so far at |", "| noise floor: the config hpsearch handed over",
                 *(f"| `{m}` |" for m in ANYTIME_METHODS)):
        assert line in report, line
    assert (tmp_path / "anytime_seed0.png").stat().st_size > 0
    summary = (tmp_path / "anytime_summary.md").read_text()
    assert "| hpsearch vs |" in summary and "| `ray-tune` |" in summary
