"""Running a search on an existing Ray cluster (`--address`), with token authentication on.

The decisions taken before a search starts (is the storage reachable from every node, did the
connection fail on the auth token) are pure functions, unit-tested here with `ray.nodes()`-like
dicts. The rest is proven on a REAL two-node cluster started with `ray start` on this machine
(marker `cluster`): a head node and a second node, one CPU each, told apart by the custom
resources `head_node` / `worker_node`, every process (nodes and drivers) given
RAY_AUTH_MODE=token and the same RAY_AUTH_TOKEN. Searches run in CLI subprocesses so the pytest
process never joins this cluster (the `ray_local` fixture may hold another, in-process, Ray).

    pytest -m cluster tests/test_cluster.py      # about 5-6 minutes on 2 cores
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from search import results as R
from search.cluster import auth_message, check_storage_reachable, connect, is_auth_error, storage_problem
from tests._cli_process import CliProcess
from tests._processes import alive, process_table
from tests._search_helpers import mlflow_runs, s3_server, small_spec
from trainables.errors import UserError

RAY = Path(sys.executable).with_name("ray")
# Fake credentials for the local S3 server of the URI-storage test: every node and driver gets them from
# its environment at start, as real nodes get theirs (instance profile or AWS_* variables).
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "hpsearch-cluster-key", "AWS_SECRET_ACCESS_KEY": "hpsearch-cluster-secret",
                  "AWS_DEFAULT_REGION": "us-east-1"}
HEAD, WORKER = "head_node", "worker_node"  # custom resources that tell the two nodes apart


# ----------------------------------------------------------------------------------------------
# Unit tests (default suite): the storage decision and the auth error, without a cluster


def _node(host: str, alive: bool = True, **resources: float) -> dict[str, Any]:
    return {"NodeID": f"{host}-{len(resources)}", "Alive": alive, "NodeManagerAddress": host,
            "Resources": {"CPU": 1.0, **resources}}


def test_local_path_is_fine_on_one_host_even_with_several_nodes():
    nodes = [_node("10.0.0.1", head_node=1), _node("10.0.0.1", worker_node=1)]
    assert storage_problem("/data/runs", nodes) is None
    assert storage_problem("/data/runs", []) is None


def test_local_path_is_refused_on_two_hosts_with_a_one_line_reason():
    problem = storage_problem("/home/me/hpsearch-runs", [_node("10.0.0.1"), _node("10.0.0.2")])
    assert problem is not None and "\n" not in problem
    assert "/home/me/hpsearch-runs" in problem and "2 hosts" in problem and "10.0.0.2" in problem
    assert "s3://" in problem and "mount" in problem and "HPSEARCH_SHARED_STORAGE=1" in problem


def test_a_file_uri_is_a_node_local_path_like_any_other():
    # storage.is_uri says file:// is local; the multi-host check agrees (it once took any "://" as shared)
    problem = storage_problem("file:///home/me/runs", [_node("10.0.0.1"), _node("10.0.0.2")])
    assert problem is not None and "file:///home/me/runs" in problem and "2 hosts" in problem


def test_dead_nodes_do_not_count_as_hosts():
    assert storage_problem("/runs", [_node("10.0.0.1"), _node("10.0.0.2", alive=False)]) is None


def test_uri_or_shared_path_is_fine_on_many_hosts():
    nodes = [_node("10.0.0.1"), _node("10.0.0.2"), _node("10.0.0.3")]
    assert storage_problem("s3://bucket/hpsearch", nodes) is None
    assert storage_problem("gs://bucket/runs", nodes) is None
    assert storage_problem("/mnt/nfs/runs", nodes, shared=True) is None


def test_check_storage_reachable_reads_hpsearch_shared_storage(monkeypatch):
    nodes = [_node("10.0.0.1"), _node("10.0.0.2")]
    monkeypatch.delenv("HPSEARCH_SHARED_STORAGE", raising=False)
    with pytest.raises(UserError, match="node-local path"):
        check_storage_reachable("/runs", nodes)
    monkeypatch.setenv("HPSEARCH_SHARED_STORAGE", "0")
    with pytest.raises(UserError):
        check_storage_reachable("/runs", nodes)
    monkeypatch.setenv("HPSEARCH_SHARED_STORAGE", "1")
    check_storage_reachable("/runs", nodes)
    monkeypatch.delenv("HPSEARCH_SHARED_STORAGE")
    check_storage_reachable("s3://bucket/runs", nodes)


def _ray_connection_failure() -> ConnectionError:
    """What `ray.init(address=...)` raises in Ray 2.60 when the cluster refuses the token."""
    try:
        try:
            raise RuntimeError("Failed to connect to GCS. Last connection error: Traceback (most recent call last):\n"
                               "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: "
                               "Authentication token is missing or incorrect")
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as exc:
        return exc


def test_auth_failures_are_told_apart_from_unreachable_clusters():
    from ray.exceptions import AuthenticationError

    assert is_auth_error(_ray_connection_failure())
    assert is_auth_error(AuthenticationError("Token authentication is enabled but no authentication token was found"))
    assert not is_auth_error(ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379"))


def test_auth_message_says_what_is_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    message = auth_message("10.0.0.1:6379")
    assert "\n" not in message and "10.0.0.1:6379" in message
    assert "not set here: RAY_AUTH_MODE=token, RAY_AUTH_TOKEN" in message
    assert "~/.ray/auth_token" in message and "ray get-auth-token" in message
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", "not-the-clusters")
    assert "the token in RAY_AUTH_TOKEN is not the cluster's" in auth_message("10.0.0.1:6379")


def test_connect_turns_an_auth_failure_into_one_user_error(monkeypatch):
    import ray

    def refused(**kwargs):
        raise _ray_connection_failure()

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: refused())
    with pytest.raises(UserError, match="cannot authenticate to the Ray cluster at 10.0.0.1:6379"):
        connect("10.0.0.1:6379")
    monkeypatch.setattr(ray, "init", lambda address=None, **kw: (_ for _ in ()).throw(ConnectionError("no route")))
    with pytest.raises(UserError, match="cannot reach a Ray cluster"):
        connect("10.0.0.1:6379")


# ----------------------------------------------------------------------------------------------
# Processes of the cluster (psutil's process table: tests/_processes.py)


def _with_descendants(roots: set[int], table: dict[int, tuple[int, str]]) -> set[int]:
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier and pid not in found}
        found |= frontier
    return found


def _marked(marker: str, table: dict[int, tuple[int, str]]) -> set[int]:
    """Processes whose command line names `marker` (the cluster's own --temp-dir), with their children."""
    return _with_descendants({pid for pid, (_, cmd) in table.items() if marker in cmd}, table)


def _kill(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------------------------
# The cluster fixture


@dataclass
class RayCluster:
    root: Path  # also Ray's --temp-dir parent: every process of this cluster names it
    address: str
    env: dict[str, str]  # RAY_AUTH_MODE=token, RAY_AUTH_TOKEN, a private HOME: for every process
    token: str
    node_ids: dict[str, str] = field(default_factory=dict)  # head_node / worker_node -> Ray node id (hex)
    worker_pids: set[int] = field(default_factory=set)  # processes `ray start` of the second node left running
    # A folder only the head node (and drivers) can see: the second node runs in its own mount namespace
    # with an empty tmpfs over it, as a machine without that disk would. None where `unshare` is refused.
    head_only: Path | None = None

    @property
    def temp_dir(self) -> Path:
        return self.root / "ray"

    def processes(self) -> set[int]:
        return _marked(str(self.temp_dir), process_table()) - {os.getpid()}

    def raylet(self, resource: str) -> int | None:
        """The raylet of the node holding custom `resource` (from its --static_resource_list)."""
        for pid, (_, cmd) in process_table().items():
            args = cmd.split()
            if not args or not args[0].endswith("/raylet") or str(self.temp_dir) not in cmd:
                continue
            listed = next((a.split("=", 1)[1].split(",") for a in args if a.startswith("--static_resource_list=")), [])
            if resource in listed[0::2]:
                return pid
        return None

    def raylet_node_id(self, resource: str) -> str:
        pid = self.raylet(resource)
        assert pid is not None, f"no raylet with resource {resource}"
        cmd = process_table()[pid][1]
        return next(arg.split("=", 1)[1] for arg in cmd.split() if arg.startswith("--node_id="))

    def ray(self, *args: str, timeout: float = 180) -> str:
        proc = subprocess.run([str(RAY), *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"ray {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    def nodes(self) -> list[dict[str, Any]]:
        """Alive nodes as a driver with the token sees them (queried from a subprocess)."""
        code = ("import json, logging, ray; ray.init(address=%r, logging_level=logging.WARNING, log_to_driver=False); "
                "print('NODES=' + json.dumps([{'id': n['NodeID'], 'host': n['NodeManagerAddress'], 'resources': n['Resources']} "
                "for n in ray.nodes() if n['Alive']]))") % self.address
        proc = subprocess.run([sys.executable, "-c", code], env=self.env, capture_output=True, text=True, timeout=180)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("NODES=")), None)
        assert line is not None, f"cannot list the cluster's nodes:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        return json.loads(line[len("NODES="):])

    def node_by_resource(self) -> dict[str, str]:
        """head_node / worker_node -> node id, mapped through each node's custom resource."""
        out = {}
        for node in self.nodes():
            for resource in (HEAD, WORKER):
                if node["resources"].get(resource):
                    out[resource] = node["id"]
        return out

    def kill_worker_node(self) -> set[int]:
        """SIGKILL the second node: its raylet, the workers and agents under it, its log monitor."""
        table = process_table()
        raylet = self.raylet(WORKER)
        assert raylet is not None and raylet in self.worker_pids, "the second node's raylet is not running"
        victims = _with_descendants(alive(self.worker_pids), table) - {os.getpid()}
        _kill(victims, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while alive(victims) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(victims), f"still alive after SIGKILL: {alive(victims)}"
        return victims

    def cli(self, args: list[str], tmp_path: Path, **extra_env: str) -> CliProcess:
        env = {**self.env, "HPSEARCH_CACHE": str(tmp_path / "cache"), **extra_env}
        return CliProcess(args, env)


def _start_cluster(root: Path) -> RayCluster:
    home = root / "home"
    home.mkdir(parents=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k not in ("HPSEARCH_STORAGE", "MLFLOW_TRACKING_URI")}
    base.update({"HOME": str(home), "PYTHONUNBUFFERED": "1", "RAY_USAGE_STATS_ENABLED": "0",
                 "HPSEARCH_CACHE": str(root / "cache"), **S3_CREDENTIALS})
    base.pop("HPSEARCH_SHARED_STORAGE", None)
    # The token: generated by Ray's own CLI into the private HOME (~/.ray/auth_token), then given to
    # every process explicitly as RAY_AUTH_TOKEN, as a user joining nodes from other machines would.
    gen = subprocess.run([str(RAY), "get-auth-token", "--generate"], env=base, capture_output=True, text=True, timeout=120)
    assert gen.returncode == 0, gen.stderr
    token = gen.stdout.strip().splitlines()[-1]
    assert (home / ".ray" / "auth_token").read_text().strip() == token
    env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    port = _free_port()
    cluster = RayCluster(root=root, address=f"127.0.0.1:{port}", env=env, token=token)
    common = ["--num-cpus=1", "--num-gpus=0", f"--temp-dir={cluster.temp_dir}", "--disable-usage-stats",
              "--object-store-memory=150000000"]
    cluster.ray("start", "--head", f"--port={port}", f"--resources={json.dumps({HEAD: 1})}", "--include-dashboard=false",
                f"--dashboard-port={_free_port()}", *common)
    head_side = cluster.processes()
    worker_start = [str(RAY), "start", f"--address={cluster.address}", f"--resources={json.dumps({WORKER: 1})}", *common]
    head_only = root / "head-only"
    head_only.mkdir()
    hidden = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
              'mount -t tmpfs hpsearch-hidden "$0" && exec "$@"', str(head_only), *worker_start]
    can_hide = bool(shutil.which("unshare")) and subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode == 0
    proc = subprocess.run(hidden if can_hide else worker_start, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"starting the second node failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    cluster.head_only = head_only if can_hide else None
    table = process_table()
    # What the second `ray start` left running, minus anything the head's processes spawned meanwhile.
    cluster.worker_pids = _marked(str(cluster.temp_dir), table) - _with_descendants(head_side, table)
    deadline = time.monotonic() + 60
    while True:
        cluster.node_ids = cluster.node_by_resource()
        if len(cluster.node_ids) == 2 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert set(cluster.node_ids) == {HEAD, WORKER}, f"the second node did not join: {cluster.node_ids}"
    # The node ids Ray reports match the raylets seen in /proc (so a node can be killed by its id).
    assert cluster.raylet_node_id(HEAD) == cluster.node_ids[HEAD]
    assert cluster.raylet_node_id(WORKER) == cluster.node_ids[WORKER]
    assert cluster.raylet(WORKER) in cluster.worker_pids and cluster.raylet(HEAD) not in cluster.worker_pids
    return cluster


def _stop_cluster(root: Path) -> None:
    """Stop only this cluster's processes (found by its --temp-dir), never another local Ray (no `ray stop`)."""
    marker = str(root / "ray")
    own = {os.getpid(), os.getppid()}
    pids = _marked(marker, process_table()) - own
    _kill(pids, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.3)
    _kill(alive(pids) | (_marked(marker, process_table()) - own), signal.SIGKILL)
    time.sleep(1)
    left = _marked(marker, process_table()) - own
    assert not alive(left), f"cluster processes left running: {left}"


@pytest.fixture(scope="module")
def ray_cluster():
    """A head node and a second node started with `ray start`, token auth on; stopped at the end."""
    root = Path(tempfile.mkdtemp(prefix="hpsc-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    started = time.monotonic()
    try:
        cluster = _start_cluster(root)
        print(f"\ncluster {cluster.address} up in {time.monotonic() - started:.0f} s: {cluster.node_ids}")
        yield cluster
    finally:
        _stop_cluster(root)
        if not os.environ.get("HPSEARCH_KEEP_CLUSTER_LOGS"):
            shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# Driving the CLI


def _histories(experiment_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """trial id -> its result rows (deduplicated by round), read from result.json."""
    out = {}
    for path in experiment_dir.glob("trial_*/result.json"):
        rows = R.read_history(path.parent)
        if rows:
            out[rows[-1].get("trial_id", path.parent.name.split("_", 1)[1])] = rows
    return out


def _live_histories(cluster: RayCluster, experiment_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Like `_histories`, but from the driver's staging folder on the head node, written at every
    result (the storage copy is synced with Tune's experiment snapshots, seconds behind)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for staging in cluster.temp_dir.glob(f"session_*/artifacts/*/{experiment_dir.name}/driver_artifacts"):
        out.update(_histories(staging))
    return out or _histories(experiment_dir)


def _raw_rows(trial_dir: Path) -> list[dict[str, Any]]:
    rows = []
    for line in (trial_dir / "result.json").read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def _records(experiment_dir: Path) -> list[R.TrialRecord]:
    state = R.read_state(experiment_dir)
    return R.trial_records(experiment_dir, metric="val_acc", mode="max", total_rounds=state["total_rounds"])


def _summary(records: list[R.TrialRecord]) -> list[tuple[str, str, int]]:
    return [(r.trial_id, r.status, r.rounds) for r in records]


def _key(history: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(h["round"], h["val_acc"], h["node_id"], h["time_total_s"]) for h in history]


# ----------------------------------------------------------------------------------------------
# On the cluster


@pytest.mark.cluster
def test_a_driver_without_the_token_is_refused_in_one_line(ray_cluster, tmp_path):
    spec = small_spec(tmp_path, name="auth-test", samples=2, max_epochs=1)
    fast = {"RAY_gcs_server_port_wait_time_s": "2"}  # Ray's own connect retries: 2 s instead of 20
    wrong = ray_cluster.cli(["run", str(spec), "--storage", str(tmp_path / "a"), "--address", ray_cluster.address],
                            tmp_path, RAY_AUTH_TOKEN="0" * 64, **fast)
    no_token_env = {**ray_cluster.env, "HOME": str(tmp_path), "HPSEARCH_CACHE": str(tmp_path / "cache"), **fast}
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        no_token_env.pop(var)
    missing = CliProcess(["run", str(spec), "--storage", str(tmp_path / "b"), "--address", ray_cluster.address], no_token_env)
    for cli, why in ((wrong, "(the token in RAY_AUTH_TOKEN is not the cluster's)"),
                     (missing, "(not set here: RAY_AUTH_MODE=token, RAY_AUTH_TOKEN)")):
        assert cli.finish(timeout=180) == 2, cli.tail()
        errors = [ln for ln in cli.lines if ln.startswith("hpsearch: error:")]
        assert len(errors) == 1, cli.tail()
        assert f"cannot authenticate to the Ray cluster at {ray_cluster.address} {why}" in errors[0]
        assert "RAY_AUTH_TOKEN" in errors[0] and "~/.ray/auth_token" in errors[0]
        assert not any("Traceback" in ln for ln in cli.lines), cli.tail()
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())  # nothing written before the refusal


@pytest.mark.cluster
def test_trials_spread_over_both_nodes(ray_cluster, tmp_path):
    spec = small_spec(tmp_path, name="spread-test", samples=4, max_epochs=3, grace_period=1)
    storage = tmp_path / "runs"
    # RAY_ADDRESS instead of --address; a local path on a one-host cluster needs no HPSEARCH_SHARED_STORAGE.
    run = ray_cluster.cli(["run", str(spec), "--name", "spread", "--storage", str(storage)], tmp_path,
                          RAY_ADDRESS=ray_cluster.address)
    assert run.finish() == 0, run.tail()
    records = _records(storage / "spread")
    assert len(records) == 4 and all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) for r in records), _summary(records)
    by_node = ray_cluster.node_by_resource()  # node ids by custom resource, as a driver sees them
    assert by_node == ray_cluster.node_ids
    ran_on = {r.trial_id: {h["node_id"] for h in r.history} for r in records}
    # No failure: a trial changes node only where ASHA with promotions paused it at a rung and resumed it later
    # (on whichever node was free), never between two rounds it trained in one go.
    rungs = set(R.read_state(storage / "spread")["rungs"])
    for r in records:
        moves = [prev["round"] for prev, h in zip(r.history, r.history[1:]) if prev["node_id"] != h["node_id"]]
        assert set(moves) <= rungs, (r.trial_id, moves, rungs)
    used = set().union(*ran_on.values())
    assert used == {by_node[HEAD], by_node[WORKER]}, (ran_on, by_node)


@pytest.mark.cluster
def test_uri_storage_on_two_nodes_needs_no_shared_path(ray_cluster, tmp_path, monkeypatch):
    """Checkpoints on s3:// (a real local S3 server): no HPSEARCH_SHARED_STORAGE, trials on both nodes.
    (On hosts that share no disk a node-local path is refused instead: see the unit tests above.)"""
    from search import storage as S

    for key, value in S3_CREDENTIALS.items():  # this process reads the bucket back
        monkeypatch.setenv(key, value)
    spec = small_spec(tmp_path, name="uri-cluster-test", samples=4, max_epochs=3, grace_period=1)
    with s3_server("hpc") as query:
        storage = f"s3://hpc/runs?{query}"
        assert storage_problem(storage, [_node("10.0.0.1"), _node("10.0.0.2")]) is None
        assert "HPSEARCH_SHARED_STORAGE" not in ray_cluster.env
        run = ray_cluster.cli(["run", str(spec), "--name", "uc", "--storage", storage, "--address", ray_cluster.address,
                               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], tmp_path)
        assert run.finish() == 0, run.tail()
        experiment = S.join(storage, "uc")
        state = R.read_state(experiment)
        records = R.trial_records(experiment, metric="val_acc", mode="max", total_rounds=state["total_rounds"])
        assert len(records) == 4 and all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) for r in records), _summary(records)
        used = {h["node_id"] for r in records for h in r.history}
        assert used == set(ray_cluster.node_ids.values()), (used, ray_cluster.node_ids)
        files = S.list_files(experiment)
        for r in records:  # every trial's results and checkpoints are in the bucket, whichever node ran it
            assert f"trial_{r.trial_id}/result.json" in files
            assert any(f.startswith(f"trial_{r.trial_id}/checkpoint_") for f in files), r.trial_id
        assert "best/checkpoint.pt" in files and state["final"].get("test")


@pytest.mark.cluster
def test_driver_killed_then_resumed_on_the_cluster(ray_cluster, tmp_path):
    spec = small_spec(tmp_path, name="driver-kill-test", samples=6, max_epochs=12, grace_period=1)
    storage = tmp_path / "runs"
    experiment = storage / "dk"
    run = ray_cluster.cli(["run", str(spec), "--name", "dk", "--storage", str(storage), "--address", ray_cluster.address], tmp_path)
    try:
        run.wait_for(0, paused=3)  # ASHA with promotions: killed with trials waiting at their rungs
        run.kill()  # the driver only: the nodes keep running
        ended = run.ended()
    finally:
        run.kill()
    assert run.proc.returncode == -signal.SIGKILL
    assert len(ended) < 6, "the search ended before the driver could be killed"
    saved = _histories(experiment)  # what the killed driver had saved (Tune saves every few seconds)
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    parents = [r for r in mlflow_runs(uri, "driver-kill-test") if r.data.tags.get("hpsearch.kind") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"  # the killed driver could not close it
    parent_id = parents[0].info.run_id
    assert set(ray_cluster.node_by_resource()) >= {HEAD}  # the cluster outlived its driver

    resumed = ray_cluster.cli(["resume", "dk", "--storage", str(storage), "--address", ray_cluster.address], tmp_path)
    assert resumed.finish() == 0, resumed.tail()
    records = _records(experiment)
    assert len(records) == 6, _summary(records)
    assert all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) for r in records), _summary(records)
    by_id = {r.trial_id: r for r in records}
    for record in records:
        assert [int(h["round"]) for h in record.history] == list(range(1, record.rounds + 1)), record.trial_id
    # A trial the killed driver started after Tune's last save of the experiment does not exist for
    # the resumed search (Tune samples another in its place); its MLflow run is closed and hidden below.
    lost = {t for t in {*saved, *ended} if t not in by_id}
    print(f"\ndriver kill: {len(ended)} trials had ended, {len(saved)} had results in storage, "
          f"{len(lost)} started after the last save; after resume: {_summary(records)}")
    for trial_id, rounds in ended.items():
        if trial_id in by_id:  # what had ended is still there: not lost, not shortened
            assert by_id[trial_id].rounds >= rounds, (trial_id, rounds, _summary(records))
    for trial_id, history in saved.items():
        # Rounds in storage at the kill are unchanged; the few the killed driver ran after its last
        # save are trained again from the last saved checkpoint, with the same numbers (seeded RNG state).
        if trial_id in by_id:
            now = {int(h["round"]): h["val_acc"] for h in by_id[trial_id].history}
            assert {int(h["round"]): h["val_acc"] for h in history}.items() <= now.items(), trial_id

    all_runs = mlflow_runs(uri, "driver-kill-test")
    assert not [r.info.run_id for r in all_runs if r.info.status == "RUNNING"]
    orphans = [r for r in all_runs if r.info.lifecycle_stage == "deleted"]
    for orphan in orphans:
        assert orphan.data.tags.get("orphaned", "").startswith("true") and orphan.info.status == "KILLED"
    assert lost <= {r.data.tags.get("trial_id") for r in orphans}  # their child runs are closed and hidden
    active = [r for r in all_runs if r.info.lifecycle_stage == "active"]
    parents = [r for r in active if r.data.tags.get("hpsearch.kind") == "search"]
    assert [p.info.run_id for p in parents] == [parent_id]  # the parent run was reused
    assert parents[0].info.status == "FINISHED"
    children = [r for r in active if r.data.tags.get("hpsearch.kind") == "trial"]
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(by_id)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for child in children:  # a round trained again is not logged twice (in any order: the resumed driver's
        # reconciliation can write a round the killed driver had queued after later live rounds; the UI plots by step)
        history = client.get_metric_history(child.info.run_id, "val_acc")
        steps = [m.step for m in history]
        where = (child.data.tags["trial_id"], [(m.step, m.timestamp) for m in history], _summary(records))
        assert len(steps) == len(set(steps)), where
        # ...and none is lost: MLflow holds every round Tune recorded for the trial
        assert sorted(steps) == list(range(1, by_id[child.data.tags["trial_id"]].rounds + 1)), where


DRIVER_WITH_A_FILE_THAT_DISAPPEARS = """
import json, os, sys
from search.spec import load_spec
from search.tuner import run_search

spec_path, nets, storage, address = sys.argv[1:5]
spec = load_spec(spec_path)  # imports nets.py on the driver
os.remove(nets)  # from here on no process on any node can import the file
result = run_search(spec, name="own-net", storage=storage, address=address, on_event=print)
print("RESULT " + json.dumps({"statuses": [r.status for r in result.records], "best": result.best.best_value}))
"""


@pytest.mark.cluster
def test_a_user_model_file_only_the_driver_has_is_searched_on_both_nodes(ray_cluster, tmp_path):
    import yaml

    from tests._search_helpers import QUICKSTART
    from trainables.train import TRAIN_HPARAMS

    nets = tmp_path / "own" / "nets.py"
    nets.parent.mkdir()
    nets.write_text(  # each training step sleeps 50 ms: a trial outlasts a worker's start, so the second runs beside it
        "import time\n\nfrom torch import nn\n\n\n"
        "class OwnNet(nn.Module):\n"
        "    def __init__(self, num_classes, in_channels, width=8):\n"
        "        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),\n"
        "                                 nn.Flatten(), nn.Linear(4 * width, num_classes))\n\n"
        "    def forward(self, x):\n"
        "        if self.training:\n"
        "            time.sleep(0.05)\n"
        "        return self.net(x)\n"
    )
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw.update(name="own-net-test", model=f"{nets}:OwnNet",
               baseline={**{k: v for k, v in raw["baseline"].items() if k in TRAIN_HPARAMS}, "width": 8},
               space={"lr": {"loguniform": [1e-3, 1e-2]}, "width": {"choice": [4, 8, 16]}})
    # fifo: two trials at a time from the start, so each node (1 CPU) trains one; the file's transport is what is tested
    raw["budget"].update(samples=4, max_epochs=2, grace_period=1, reduction_factor=2, max_concurrent=2, scheduler="fifo")
    spec = tmp_path / "own.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    storage = tmp_path / "runs"
    env = {**ray_cluster.env, "HPSEARCH_CACHE": str(tmp_path / "cache")}
    driver = subprocess.run([sys.executable, "-c", DRIVER_WITH_A_FILE_THAT_DISAPPEARS, str(spec), str(nets), str(storage),
                             ray_cluster.address], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    output = driver.stdout + driver.stderr
    assert driver.returncode == 0, output[-3000:]
    assert not nets.exists()
    result = json.loads(next(ln for ln in driver.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    assert len(result["statuses"]) == 4 and set(result["statuses"]) <= {R.Outcome.COMPLETED, R.Outcome.PRUNED}, result
    records = _records(storage / "own-net")
    used = {h["node_id"] for r in records for h in r.history}
    assert used == set(ray_cluster.node_ids.values()), (used, ray_cluster.node_ids)  # both nodes trained OwnNet


@pytest.mark.cluster
def test_an_image_folder_the_second_node_cannot_read_is_refused_before_any_trial(ray_cluster, tmp_path):
    """Streamed from files (max_in_memory_mb: 0) from a folder the second node does not have: one line
    naming that node and the fix, exit 2, nothing written (without the check, every trial placed there
    fails on its first pass)."""
    import yaml

    from tests._search_helpers import QUICKSTART, image_folder

    if ray_cluster.head_only is None:
        pytest.skip("`unshare --mount` is not permitted here: no folder can be hidden from the second node")
    folder = image_folder(ray_cluster.head_only / tmp_path.name / "colours", per_class=8, size=16)
    raw = yaml.safe_load(QUICKSTART.read_text())
    raw["name"] = "unreadable-test"
    raw["dataset"] = {"name": "imagefolder", "root": str(folder), "image_size": 16, "val_fraction": 0.25,
                      "test_fraction": 0.0, "max_in_memory_mb": 0}
    raw["budget"].update(samples=2, max_epochs=1, grace_period=1)
    spec = tmp_path / "unreadable.yaml"
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    storage = tmp_path / "runs"
    run = ray_cluster.cli(["run", str(spec), "--name", "ur", "--storage", str(storage), "--address", ray_cluster.address],
                          tmp_path)
    assert run.finish(timeout=300) == 2, run.tail()
    errors = [ln for ln in run.lines if ln.startswith("hpsearch: error:")]
    assert len(errors) == 1, run.tail()
    assert f"{ray_cluster.node_ids[WORKER][:8]}) cannot read the train images streamed from files" in errors[0], errors[0]
    assert str(folder) in errors[0] and "a shared mount" in errors[0] and "dataset.max_in_memory_mb" in errors[0]
    assert not any("Traceback" in ln for ln in run.lines), run.tail()
    assert not (storage / "ur").exists()  # refused before the search wrote anything


@pytest.mark.cluster
def test_second_node_killed_mid_search(ray_cluster, tmp_path):
    """Last in this file: it leaves the cluster with the head node only."""
    # Ray's stopping ASHA: the kill below waits for a trial that has ended and one running past its rung
    spec = small_spec(tmp_path, name="node-kill-test", samples=6, max_epochs=20, grace_period=1, scheduler="asha-stop")
    storage = tmp_path / "runs"
    experiment = storage / "nk"
    head, worker = ray_cluster.node_ids[HEAD], ray_cluster.node_ids[WORKER]
    run = ray_cluster.cli(["run", str(spec), "--name", "nk", "--storage", str(storage), "--address", ray_cluster.address], tmp_path)
    try:
        # Kill when a trial has ended and the trial on the second node has passed ASHA's rung at
        # round 3 (so it is not about to be stopped) but is far from its last round.
        deadline = time.monotonic() + 300
        while True:
            assert run.proc.poll() is None, "search ended before the node could be killed:\n" + run.tail()
            assert time.monotonic() < deadline, run.tail()
            ended = run.ended()
            live_on_worker = [t for t, h in _live_histories(ray_cluster, experiment).items()
                              if t not in ended and h[-1]["node_id"] == worker and 4 <= h[-1]["round"] <= 14]
            if ended and live_on_worker:
                break
            time.sleep(0.05)
        killed_at = time.time()
        ray_cluster.kill_worker_node()
        time.sleep(0.5)
        ended = run.ended()  # trials that ended before the kill, with their rounds
        before = _live_histories(ray_cluster, experiment)
        interrupted = {t for t, h in before.items() if t not in ended and h[-1]["node_id"] == worker}
        assert interrupted >= set(live_on_worker), (interrupted, live_on_worker)
        code = run.finish()
    finally:
        run.kill()
    assert code == 0, run.tail()
    assert ray_cluster.raylet(WORKER) is None
    # Ray saw the node die: its GCS marks a node dead after missed health checks (tens of seconds),
    # which may come after a short search has already ended.
    deadline = time.monotonic() + 120
    alive_nodes = set(ray_cluster.node_by_resource())
    while alive_nodes != {HEAD} and time.monotonic() < deadline:
        time.sleep(2)
        alive_nodes = set(ray_cluster.node_by_resource())
    assert alive_nodes == {HEAD}

    records = _records(experiment)
    assert len(records) == 6, _summary(records)
    assert all(r.status in (R.Outcome.COMPLETED, R.Outcome.PRUNED) for r in records), _summary(records)
    by_id = {r.trial_id: r for r in records}
    for trial_id, rounds in ended.items():  # nothing that had ended was lost, shortened or trained again
        assert by_id[trial_id].rounds == rounds, (trial_id, rounds, _summary(records))
        assert _key(by_id[trial_id].history) == _key(before[trial_id]), trial_id
    for trial_id in interrupted:
        history = by_id[trial_id].history
        nodes = [h["node_id"] for h in history]
        rounds = [int(h["round"]) for h in history]
        assert rounds == list(range(1, len(rounds) + 1)), (trial_id, rounds)
        assert set(nodes) == {worker, head}, (trial_id, nodes)
        switch = nodes.index(head)
        assert all(n == head for n in nodes[switch:]), (trial_id, nodes)  # moved once, to the surviving node
        # Restarted from its last checkpoint: the rounds go on from there, they do not start again at 1.
        last_on_worker = int(before[trial_id][-1]["round"])
        assert 1 < rounds[switch] <= last_on_worker + 1, (trial_id, rounds[switch], last_on_worker)
        raw = _raw_rows(by_id[trial_id].path)
        assert min(int(r["round"]) for r in raw if r["node_id"] == head) == rounds[switch], (trial_id, raw)
        assert [h["val_acc"] for h in history[:switch]] == [h["val_acc"] for h in before[trial_id][:switch]]
        print(f"\nnode kill: trial {trial_id} ran rounds 1-{switch} on the second node, "
              f"{switch + 1}-{len(rounds)} on the head after the kill ({by_id[trial_id].status})")
    for record in records:  # after the kill, only the head node trained
        late = [h for h in record.history if h.get("timestamp", 0) > killed_at + 2]
        assert all(h["node_id"] == head for h in late), (record.trial_id, [(h["round"], h["node_id"]) for h in late])

    uri = f"sqlite:///{storage / 'mlflow.db'}"
    runs = [r for r in mlflow_runs(uri, "node-kill-test") if r.info.lifecycle_stage == "active"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    children = [r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]
    assert sorted(c.data.tags["trial_id"] for c in children) == sorted(by_id)  # a retried trial keeps its one run
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    for child in children:
        if child.data.tags["trial_id"] in interrupted:
            steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")]
            assert steps == list(range(1, len(steps) + 1)), (child.data.tags["trial_id"], steps)
