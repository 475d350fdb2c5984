"""The benchmark scripts run end to end in their smoke mode (tiny sizes), writing to a temporary folder.

No timing is asserted: the numbers of a smoke run mean nothing. What is checked is that
each script (`python benchmarks/NAME.py --smoke --out DIR`) exits 0 and writes DIR/NAME.md
with the machine/version header and the rows its table must have (raw files under
DIR/runs/NAME/); the committed results in benchmarks/results/ are left alone.
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
    "search_efficiency": ["| 0 | hpsearch: TPE + ASHA |", "| 0 | hpsearch: TPE + stopping ASHA (asha-stop) |", "| 0 | random + FIFO |", "| 0 | TPE + FIFO |",
                          "| trial-epochs to bar (not reached = ∞) |", "| best final val acc |", "| test acc of the chosen model |",
                          "| seeds where its best final val acc ≥ random's", "| seeds where its chosen model's test acc ≥ random's |",
                          "| mean over seeds: best val acc / best final val acc / test acc",
                          "| seeds where its chosen config, retrained 2x from scratch (fresh seeds), tests ≥ random's",
                          "| test acc of the chosen config retrained 2x (mean) |", "| noise floor: SD of one config's accuracy",
                          "| it − random, mean over seeds ± standard error, in points"],
    "scale": ["# Scale: 20 trivial trials,", "| bare Tune + Optuna + ASHA, Tune's default result loggers", "| bare Tune + Optuna + ASHA, JSON result logger only",
              "| hpsearch (+ ProgressCallback + MlflowTracker) |", "| hpsearch throughput / bare throughput (same Tune setup"],
    "eval_batch": ["| 8-16 | alone |", "| 32-64 | 2 at once |"],
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


ANYTIME_SMOKE_METHODS = ("hpsearch", "ray-tune", "optuna-hyperband", "syne-tune-asha", "random-promotion", "hpsearch-no-finish",
                         "hpsearch-dense-val")


def test_anytime_smoke(tmp_path):
    """benchmarks/anytime.py --smoke (tiny generated glyphs, 25 s per method; about 4 minutes): every method, peers
    on hpsearch's rounds, wrote its raw file with a tested hand-over and the fidelity measures; the summary JSON has
    the shape benchmarks/README.md documents and anytime.md its table."""
    pytest.importorskip("syne_tune", reason="the Syne Tune peer needs the bench extra: pip install -e '.[bench]' (.ci/run installs it)")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HPSEARCH_CACHE": str(tmp_path / "cache")}  # the smoke data set goes there
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "anytime.py"), "--smoke", "--out", str(tmp_path),
                           "--methods", *ANYTIME_SMOKE_METHODS], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = tmp_path / "runs" / "anytime"
    records = {m: json.loads((runs / f"smoke_seed11_{m}.json").read_text()) for m in ANYTIME_SMOKE_METHODS}
    hp = records["hpsearch"]
    for method, record in records.items():
        assert record["smoke"] and record["seed"] == 11 and record["method"] == method
        assert record["trials"] > 0 and record["events"], method
        assert record["test_acc"] is not None and 0.0 <= record["test_acc"] <= 1.0, method
        assert 0.0 < record["train_share"] <= 1.0 and record["trial_epochs"] > 0, method
        levels = record["levels"]
        assert levels["first_rung"] >= levels["one_epoch"] >= levels["quarter_max_t"] >= levels["max_t"] >= 0, method
        assert all(e[0] <= record["budget_s"] + 5 for e in record["events"]), method  # every result inside the budget
        assert record["handed_over"]["trial"] is not None, method
        if method not in ("hpsearch", "random-promotion", "hpsearch-no-finish", "hpsearch-dense-val"):
            assert record["round_samples"] == hp["round_samples"], method  # the peers train on hpsearch's rounds
    assert records["hpsearch"]["events"][0][1] != ""  # events name their trial
    summary = json.loads((runs / "smoke_summary.json").read_text())  # the main workload's is OUT/anytime_summary.json
    assert {"machine", "commit", "budget_s", "workers", "methods"} <= set(summary)
    assert set(summary["methods"]) == set(ANYTIME_SMOKE_METHODS)
    for method, seeds in summary["methods"].items():
        assert set(seeds) == {"11"}, method
        assert {"test_acc", "best_val", "trial_epochs", "train_share", "completed"} <= set(seeds["11"]), method
    report = (tmp_path / "anytime.md").read_text()
    for line in ("- machine:", "- mode: **smoke**", "| method | seeds | test acc, median [IQR] |", "(reference)",
                 *(f"| `{m}` | 1 |" for m in ANYTIME_SMOKE_METHODS)):
        assert line in report, line
    assert (runs / "smoke_best_val_over_time.png").stat().st_size > 0


def _fake_curves(path, n=20, rounds=16, seed=0):
    """A curves file as benchmarks/record_curves.py writes it: quickstart's space, n made-up saturating curves
    (some start slowly and end high, so the first rung misranks them), a round of 10-40 virtual seconds."""
    import json
    import math
    import random

    import yaml

    raw = yaml.safe_load((REPO / "spaces" / "quickstart.yaml").read_text())
    raw["budget"] = {**raw["budget"], "max_epochs": rounds, "grace_period": 1}
    rng = random.Random(seed)
    configs = []
    for i in range(n):
        params = {"optimizer": "adam", "lr": 10 ** rng.uniform(math.log10(3e-4), math.log10(3e-2)),
                  "batch_size": rng.choice([32, 64, 128]), "channels": rng.choice(["8-16", "16-32", "32-64"]),
                  "hidden": rng.randint(32, 256), "dropout": rng.uniform(0, 0.5), "weight_decay": rng.choice([0.0, 1e-4, 1e-3])}
        final = 0.97 - 0.1 * abs(math.log10(params["lr"]) + 2.5) - 0.05 * params["dropout"]
        start, tau = final - rng.uniform(0.1, 0.5), rng.uniform(0.8, 6.0)
        acc = [round(final - (final - start) * math.exp(-(r + 1) / tau), 4) for r in range(rounds)]
        configs.append({"index": i, "params": params, "status": "ok", "rounds": rounds, "val_acc": acc,
                        "val_loss": [round(2.3 * (1 - a), 4) for a in acc], "round_s": [round(rng.uniform(10, 40), 4)] * rounds,
                        "epoch": [float(r + 1) for r in range(rounds)]})
    path.write_text(json.dumps({"format": "hpsearch-curves/1", "name": "fake", "spec": raw, "total_rounds": rounds, "configs": configs}))
    return path


def test_simulate_replays_curves_through_both_schedulers(tmp_path):
    """benchmarks/simulate.py on a fake curves file, 1 and 8 workers, untimed and with the auto time budget: every replay
    ends; ReproducibleASHA (`asha`, the default scheduler) pauses trials and resumes some, and lets no more trials reach
    max_t than its rungs promote (Ray's stopping ASHA would); a timed replay stops at its deadline; with no raw file of
    anytime.py the measured start / resume costs are used and a line says so."""
    import json
    import math

    curves = _fake_curves(tmp_path / "curves_fake.json")
    samples, rf = 48, 4
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "simulate.py"), str(curves), "--workers", "1", "8",
                           "--seeds", "2", "--samples", str(samples), "--reduction-factor", str(rf), "--out", str(tmp_path),
                           "--anytime-runs", str(tmp_path / "no-anytime-runs")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no raw file of benchmarks/anytime.py in" in proc.stdout
    report = (tmp_path / "simulate.md").read_text()
    for row in ("| 1 | asha | none | 2 |", "| 1 | asha | auto | 2 |", "| 1 | asha-stop | none | 2 |", "| 8 | asha | auto | 2 |",
                "| 8 | asha-stop | auto | 2 |", "## The curves replayed", "- **baseline's final val acc:", "- **target: val acc",
                "## The surrogate", "- machine:", "- command:", "ReproducibleASHA"):
        assert row in report, f"{row!r} missing from simulate.md:\n{report}"
    assert "[simulation_fake.json](runs/simulate/simulation_fake.json)" in report
    data = json.loads((tmp_path / "runs" / "simulate" / "simulation_fake.json").read_text())
    runs = data["runs"]
    assert data["target"] > data["target_info"]["baseline"]["final"]
    assert len(runs) == 16
    for run in runs:
        assert run["ended"] and not run["stuck"], run
        assert run["trial_rounds"] <= samples * 16
        assert run["handed_val"] is not None
        if run["time_budget"] is None:
            assert run["configs"] == samples, run  # no time budget: the search ends after its samples
        else:
            assert run["budget_label"] == "auto" and run["end_s"] <= run["time_budget"] and run["configs"] <= samples
        if run["scheduler"] == "asha":
            assert run["pause"] > 0 and run["resume"] > 0, run
            assert run["resume"] <= run["pause"]
            assert run["virtual_clock"] is not None
            # Each rung passes about 1/rf of its trials up: ceil(48 / 4^2) = 3 reach max_t in ASHA's ideal. A rung can
            # promote more (a trial promoted early may drop out of the top quarter later: ASHA does not take a
            # promotion back), so allow twice that plus a finalist; letting every trial through (Ray's stopping
            # ASHA trained 13-24 of these 48) fails it.
            assert run["levels"] == [1, 4]
            ideal = math.ceil(samples / rf ** len(run["levels"]))
            if run["time_budget"] is None:
                assert run["trained_to_max_t"] <= 2 * ideal + 1, run
        else:
            assert run["pause"] == 0 and run["resume"] == 0
            assert run["max_pending_trials"] == run["workers"]  # Tune's rule behind a ConcurrencyLimiter
    assert math.isfinite(max(r["best_any"] for r in runs))


def test_record_curves_smoke_resumes(tmp_path):
    """benchmarks/record_curves.py --smoke writes a curves file (4 configs + a repeat of the baseline); a second
    sitting trains nothing new."""
    import json

    cmd = [sys.executable, str(REPO / "benchmarks" / "record_curves.py"), "--smoke", "--workers", "1", "--out", str(tmp_path)]
    first = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    curves = tmp_path / "runs" / "record_curves" / "curves_smoke.json"
    data = json.loads(curves.read_text())
    assert [c["index"] for c in data["configs"]] == [0, 1, 2, 3]
    assert all(len(c["val_acc"]) == c["rounds"] == data["total_rounds"] == 3 for c in data["configs"] if c["status"] == "ok")
    [repeat] = data["repeats"]  # the baseline once more with torch seed 1: the seed-to-seed spread
    assert repeat["params"] == data["configs"][0]["params"] and repeat["torch_seed"] == 1
    second = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "5 in " in second.stdout and "0 to train" in second.stdout
    again = json.loads(curves.read_text())
    assert again["configs"] == data["configs"] and again["repeats"] == data["repeats"] and len(again["sittings"]) == 2
