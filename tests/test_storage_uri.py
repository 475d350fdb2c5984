"""Searches stored on a URI (s3://), against a real S3-compatible server (moto's ThreadedMotoServer).

No mocks of Ray, Tune or MLflow: the search runs through the CLI in its own process (its own local
Ray, whose workers inherit the fake AWS credentials from the environment, as cluster nodes would),
Tune writes checkpoints and results to the bucket, and everything is read back from there with a
fresh hpsearch cache, as from another machine. Credentials travel only in the environment.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from search import layout as L
from search import results as R
from search import storage as S
from search.cli import main
from tests._cli_process import CliProcess
from tests._search_helpers import REPO, mlflow_runs, predict_digit_images, s3_server, small_spec

SECRET = "hpsearch-test-secret-4b1e"  # a fake key: it must appear in no file of the bucket
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "hpsearch-test-key", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3():
    """A local S3 server with bucket `hps`; yields the server's `endpoint_override` query string.
    The fake credentials are in this process's environment for the module."""
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    try:
        with s3_server("hps") as query:
            yield query
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _env(tmp: Path, cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI", "HPSEARCH_STORAGE")}
    env.update(CREDENTIALS, HPSEARCH_CACHE=str(tmp / cache), PYTHONUNBUFFERED="1", PYTHONPATH=str(REPO))
    return env


def _objects(uri: str) -> dict[str, bytes]:
    fs, path = S.filesystem(uri)
    out = {}
    for rel, info in S.list_files(uri).items():
        with fs.open_input_stream(info.path) as f:
            out[rel] = f.read()
    return out


@pytest.fixture(scope="module")
def uri_search(s3, tmp_path_factory):  # about 60 s (a CLI process with its own Ray), 110 s on a loaded machine
    """A 4-trial search run by `hpsearch run --storage s3://...` in a subprocess (working dir `tmp`)."""
    tmp = tmp_path_factory.mktemp("uri-search")
    spec = small_spec(tmp, name="uri-test", samples=4, max_epochs=3, grace_period=1)
    storage = f"s3://hps/runs?{s3}"
    run = CliProcess(["run", str(spec), "--name", "u1", "--storage", storage], _env(tmp, "cache-driver"), cwd=tmp)
    code = run.finish()
    return {"code": code, "lines": run.lines, "tmp": tmp, "storage": storage, "experiment": S.join(storage, "u1")}


@pytest.mark.slow
def test_search_on_s3_writes_everything_to_the_bucket(uri_search):
    assert uri_search["code"] == 0, "\n".join(uri_search["lines"][-40:])
    objects = _objects(uri_search["experiment"])
    names = set(objects)
    assert {"hpsearch.json", "mlflow_runs.json", "tuner.pkl", "best/checkpoint.pt"} <= names, sorted(names)
    assert any(n.startswith("experiment_state-") for n in names)
    trials = {n.split("/")[0] for n in names if n.startswith("trial_")}
    assert len(trials) == 4
    for trial in trials:
        assert f"{trial}/result.json" in names
        kept = {n.split("/")[1] for n in names if n.startswith(f"{trial}/checkpoint_") and n.endswith("/checkpoint.pt")}
        assert 1 <= len(kept) <= 2, (trial, kept)  # pruned to the best and last rounds in the bucket
    assert not [n for n, data in objects.items() if SECRET.encode() in data], "a credential was written to the bucket"
    # No search folder on the driver's disk; the embedded MLflow store is ./hpsearch-runs (a bucket holds no SQLite).
    local = uri_search["tmp"] / "hpsearch-runs"
    assert (local / "mlflow.db").is_file() and not (local / "u1").exists()
    out = "\n".join(uri_search["lines"])
    assert "results: s3://hps/runs/u1?" in out and "hpsearch resume" not in out
    assert f"hpsearch export u1 --storage '{uri_search['storage']}'" in out  # quoted for the shell


@pytest.mark.slow
def test_results_mlflow_export_and_predict_read_back_from_the_bucket(uri_search, tmp_path, capsys):
    assert uri_search["code"] == 0, "\n".join(uri_search["lines"][-40:])
    storage = uri_search["storage"]
    csv = tmp_path / "results.csv"
    assert main(["results", "u1", "--storage", storage, "--csv", str(csv)]) == 0  # a fresh cache: read from the bucket
    table = pd.read_csv(csv)
    assert len(table) == 4 and set(table["status"]) <= {"completed", "pruned"}
    assert main(["list", "--storage", storage]) == 0
    assert "u1  spec=uri-test" in capsys.readouterr().out

    state = R.read_state(uri_search["experiment"])
    assert state["finished"] and state["storage"] == storage
    runs = mlflow_runs(state["tracking"]["tracking_uri"], "uri-test")
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    children = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 4
    assert state["final"]["model_version"] is not None and "test_acc" in parents[0].data.metrics

    out = tmp_path / "model"
    assert main(["export", "u1", "--storage", storage, "--format", "torchscript", "--out", str(out)]) == 0
    from trainables.data import create_dataset

    data = create_dataset("digits", val_fraction=0.2, test_fraction=0.2)
    table, acc = predict_digit_images(tmp_path, out, data, 30)
    assert acc >= 0.7, table.head()


def test_storage_helpers_on_s3(s3, tmp_path):
    """search.storage and the results helpers on a bucket, without Ray: state, listing, mirror downloads, delete."""
    root = f"s3://hps/helpers?{s3}"
    experiment = R.search_location(root, "h1")
    assert experiment == f"s3://hps/helpers/h1?{s3}"
    R.write_state(experiment, {"name": "h1", "storage": root})
    assert R.read_state(experiment)["name"] == "h1"
    assert R.find_search(root, "h1") == experiment and R.list_searches(root) == ["h1"]
    with pytest.raises(Exception, match="no search named 'h2'.*searches in s3://hps/helpers: h1"):
        R.find_search(root, "h2")
    S.write_text(S.join(experiment, "trial_a", "result.json"), '{"round": 1}\n')
    S.write_text(S.join(experiment, "trial_a", "checkpoint_000000", "checkpoint.pt"), "weights")
    S.write_text(S.join(experiment, L.BEST, "checkpoint.pt"), "best")
    local = R.local_folder(experiment)  # the mirror: Tune's files, no checkpoints, no best/
    assert (local / "trial_a" / "result.json").read_text() == '{"round": 1}\n'
    assert not (local / "trial_a" / "checkpoint_000000").exists() and not (local / L.BEST).exists()
    before = (local / "trial_a" / "result.json").stat().st_mtime_ns
    R.local_folder(experiment)  # unchanged files are not downloaded again
    assert (local / "trial_a" / "result.json").stat().st_mtime_ns == before
    best = R.fetch_file(experiment, f"{L.BEST}/checkpoint.pt")
    assert best is not None and best.read_text() == "best" and R.fetch_file(experiment, "best/none.pt") is None
    S.upload(best, S.join(experiment, "copy", "c.pt"))
    assert S.read_text(S.join(experiment, "copy", "c.pt")) == "best"
    S.delete(S.join(experiment, "trial_a"))
    assert not S.exists(S.join(experiment, "trial_a", "result.json")) and S.read_text(S.join(experiment, "nothing")) is None
    assert S.join("s3://b/p/?x=1", "n") == "s3://b/p/n?x=1" and S.display("s3://b/p?x=1") == "s3://b/p"
    assert not S.is_uri("file:///tmp/x") and S.local_path("file:///tmp/x") == Path("/tmp/x")


@pytest.mark.parametrize("storage, expected", [
    ("s3://no-such-bucket/runs?{q}", "bucket 'no-such-bucket' does not exist"),
    pytest.param("s3://hps/runs?endpoint_override=127.0.0.1:1&scheme=http", "cannot reach or write to it",
                 marks=pytest.mark.slow),  # the AWS SDK's retries: ~6 s
    ("nosuchfs://x/runs", "pyarrow cannot open this URI"),
    ("s3://hps/runs?{q}&no_such_option=1", "pyarrow cannot open this URI"),
])
def test_bad_uri_is_one_line_and_exit_2(s3, tmp_path, capsys, storage, expected):
    storage = storage.format(q=s3)
    spec = small_spec(tmp_path, name="bad-uri", samples=2, max_epochs=1)
    commands = [["run", str(spec), "--storage", storage]]
    if "127.0.0.1:1&" not in storage:  # an unreachable endpoint costs the AWS SDK's retries (~6 s) per command
        commands += [["resume", "x", "--storage", storage], ["results", "x", "--storage", storage]]
    for argv in commands:
        code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, (argv, err)
        assert len(err) == 1 and err[0].startswith("hpsearch: error: "), err
        if argv[0] == "run" or "no_such" in storage or "nosuchfs" in storage or "no-such-bucket" in storage:
            assert expected in err[0] and storage.split("?")[0] in err[0], err


@pytest.mark.slow
def test_uri_search_interrupted_then_resumed_from_another_machine(s3, tmp_path):
    """Ctrl-C a URI search, then resume it with an empty cache (no local mirror: as on another machine)."""
    spec = small_spec(tmp_path, name="uri-resume", samples=5, max_epochs=6, grace_period=2, max_concurrent=2)
    storage = f"s3://hps/resume?{s3}"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run = CliProcess(["run", str(spec), "--name", "r1", "--storage", storage, "--tracking-uri", tracking], _env(tmp_path, "cache-a"), cwd=tmp_path)
    run.wait_for(0, paused=2)
    os.kill(run.proc.pid, signal.SIGINT)
    assert run.finish() == 130, run.tail()
    assert any("resume with: hpsearch resume r1 --storage" in ln for ln in run.lines), run.tail()
    parent = [r for r in mlflow_runs(tracking, "uri-resume") if r.data.tags.get("hpsearch.kind") == "search"]
    assert len(parent) == 1 and parent[0].info.status == "KILLED"

    resumed = CliProcess(["resume", "r1", "--storage", storage], _env(tmp_path, "cache-b"), cwd=tmp_path)
    assert resumed.finish() == 0, resumed.tail()
    state = R.read_state(S.join(storage, "r1"))
    assert state["finished"] and state["resumed"] == 1
    records = R.trial_records(S.join(storage, "r1"), metric="val_acc", mode="max", total_rounds=state["total_rounds"])
    assert len(records) == 5 and all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) for r in records), [(r.trial_id, r.status) for r in records]
    runs = [r for r in mlflow_runs(tracking, "uri-resume") if r.info.lifecycle_stage == "active"]
    parents = [r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]
    assert [p.info.run_id for p in parents] == [parent[0].info.run_id] and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(r.trial_id for r in records)  # runs reused, no duplicates
    assert not [r for r in runs if r.info.status == "RUNNING"]
