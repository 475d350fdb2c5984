"""Connecting to Ray and checking the cluster before a search: token authentication, per-trial
resources no node can give, a node-local storage path on a cluster spanning several hosts.

Each refusal is one `UserError` line saying what the cluster has and what to change.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterable

from search import storage as S
from search.spec import SearchSpec
from trainables.errors import UserError


def connect(address: str | None = None, *, quiet: bool = True) -> None:
    """Start or join Ray once per process: local by default, or `address` (auto, HOST:PORT, ray://).

    A cluster with token authentication (Ray's default) refuses a process without its token:
    that is reported as one line saying how to pass the token, not as Ray's retry log.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": not quiet}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is an auth or connection failure
        if is_auth_error(exc):
            raise UserError(auth_message(address)) from None
        if isinstance(exc, ConnectionError):
            raise UserError(f"cannot reach a Ray cluster at {address!r} ({exc}); start one with `ray start --head` or drop --address") from None
        raise


_AUTH_MARKERS = ("InvalidAuthToken", "AuthenticationError", "Unauthenticated", "authentication token")


def is_auth_error(exc: BaseException) -> bool:
    """Whether `ray.init` failed on token authentication.

    Ray 2.60 raises `ray.exceptions.AuthenticationError` when token mode is on but no token is
    found; a missing or wrong token sent to the cluster surfaces as `ConnectionError("Failed to
    connect to Ray cluster at ...")` whose cause's text holds the GCS client's
    `AuthenticationError(... InvalidAuthToken ...)` (checked against a real `ray start` cluster).
    """
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:  # an older Ray without token authentication
        AuthenticationError = ()  # type: ignore[assignment]  # noqa: N806
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AuthenticationError) or any(m in str(current) for m in _AUTH_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


def auth_message(address: str | None) -> str:
    missing = [] if os.environ.get("RAY_AUTH_MODE", "").lower() == "token" else ["RAY_AUTH_MODE=token"]
    if os.environ.get("RAY_AUTH_TOKEN"):
        source = "RAY_AUTH_TOKEN"
    elif os.environ.get("RAY_AUTH_TOKEN_PATH"):
        source = os.environ["RAY_AUTH_TOKEN_PATH"]
    elif (Path.home() / ".ray" / "auth_token").is_file():
        source = "~/.ray/auth_token"
    else:
        source = None
        missing.append("RAY_AUTH_TOKEN")
    why = f"not set here: {', '.join(missing)}" if missing else f"the token in {source} is not the cluster's"
    return (
        f"cannot authenticate to the Ray cluster at {address or 'auto'} ({why}); "
        "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node prints it) "
        "or copy the head node's ~/.ray/auth_token to this machine"
    )


def _alive(nodes: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [n for n in nodes if n.get("Alive", n.get("alive", False))]


def resource_problem(want: Any, nodes: Iterable[dict[str, Any]], spec_path: str = "<spec>") -> str | None:
    """Why no alive node can run one trial of `want` (cpu, gpu), or None; `nodes` as `ray.nodes()` lists them."""
    alive = [n.get("Resources", {}) for n in _alive(nodes)]
    cpu = max((n.get("CPU", 0) for n in alive), default=0)
    gpu = max((n.get("GPU", 0) for n in alive), default=0)
    if want.gpu > 0 and gpu == 0:
        return (f"{spec_path}: resources.gpu={want.gpu:g} but the Ray cluster has no GPU (largest node: {cpu:g} CPU); "
                "set resources.gpu: 0 (--set resources.gpu=0) or join a GPU node")
    if want.gpu > gpu:
        return f"{spec_path}: resources.gpu={want.gpu:g} but the largest node has {gpu:g} GPU(s); lower resources.gpu"
    if want.cpu > cpu:
        return f"{spec_path}: resources.cpu={want.cpu:g} but the largest node has {cpu:g} CPU(s); lower resources.cpu"
    if not any(n.get("CPU", 0) >= want.cpu and n.get("GPU", 0) >= want.gpu for n in alive):
        return (f"{spec_path}: no single node has resources.cpu={want.cpu:g} and resources.gpu={want.gpu:g} together "
                f"(a trial runs on one node); lower resources.cpu to at most the CPUs of a GPU node")
    return None


def check_resources(spec: SearchSpec, nodes: list[dict[str, Any]] | None = None) -> None:
    """Refuse a spec whose per-trial resources no node can give (it would stay PENDING forever)."""
    if nodes is None:
        import ray

        nodes = ray.nodes()
    problem = resource_problem(spec.resources, nodes, spec.path)
    if problem:
        raise UserError(problem)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def storage_problem(storage: str, nodes: Iterable[dict[str, Any]], *, shared: bool = False) -> str | None:
    """Why `storage` cannot hold the checkpoints of a search on the cluster of `nodes`, or None.

    A URI (s3://, gs://, ...) is reachable from every node; a path is fine on one host (every node
    sees the same disk) or when `shared` says every host mounts it (HPSEARCH_SHARED_STORAGE=1).
    A path on a cluster spanning several hosts would leave each trial's checkpoints on the node
    that wrote them: a trial moved to another node after a failure could not restore.
    """
    if S.is_uri(storage) or shared:  # file:///path is a node-local path like any other
        return None
    hosts = sorted({str(n.get("NodeManagerAddress") or n.get("node_ip") or "?") for n in _alive(nodes)})
    if len(hosts) <= 1:
        return None
    shown = ", ".join(hosts[:4]) + (", ..." if len(hosts) > 4 else "")
    return (
        f"--storage {storage} is a node-local path but the Ray cluster spans {len(hosts)} hosts ({shown}), "
        "so a trial resumed on another node would not find its checkpoints; use a path every node mounts "
        "(e.g. NFS, then set HPSEARCH_SHARED_STORAGE=1) or a URI such as s3://bucket/hpsearch"
    )


def check_storage_reachable(storage: str, nodes: list[dict[str, Any]] | None = None) -> None:
    """On a multi-host cluster, refuse a node-local path for the checkpoints every node writes."""
    if S.is_uri(storage):
        return
    if nodes is None:
        import ray

        nodes = ray.nodes()
    problem = storage_problem(storage, nodes, shared=_truthy(os.environ.get("HPSEARCH_SHARED_STORAGE")))
    if problem:
        raise UserError(problem)


def _file_samples(data: Any, per_split: int = 3) -> dict[str, list[str]]:
    """A few file paths (first, middle, last) of each split streamed from files; {} when all are in memory."""
    out: dict[str, list[str]] = {}
    for split_name in ("train", "val", "test"):
        split = getattr(data, split_name, None)
        files = getattr(split, "files", None) if split is not None else None
        if files:
            picks = sorted({0, len(files) // 2, len(files) - 1})[:per_split]
            out[split_name] = [files[i] for i in picks]
    return out


def _unreadable(paths: list[str]) -> tuple[str, list[str]]:
    """Runs on one node: its host name and which of `paths` it cannot read."""
    import socket

    return socket.gethostname(), [p for p in paths if not (os.path.isfile(p) and os.access(p, os.R_OK))]


def check_data_on_nodes(data: Any, nodes: list[dict[str, Any]] | None = None, timeout_s: float = 120.0) -> None:
    """Refuse a data set streamed from files that some node of the cluster cannot read.

    A split too large for memory (dataset.max_in_memory_mb) stays a list of file paths, read by each
    trial on the node it runs on; a node without those files would train on nothing. One task per
    alive node (no CPU reserved) checks a few of the paths; a node that does not answer within
    `timeout_s` is not held against the search.
    """
    samples = _file_samples(data)
    if not samples:
        return
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    alive = _alive(nodes if nodes is not None else ray.nodes())
    if len(alive) == 1 and alive[0].get("NodeID") == ray.get_runtime_context().get_node_id():
        return  # the driver's own node: it has just read these files
    paths = [p for split_paths in samples.values() for p in split_paths]
    probe = ray.remote(num_cpus=0)(_unreadable)
    pending = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(paths): n
               for n in alive}
    done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    for ref in done:
        host, missing = ray.get(ref)
        if not missing:
            continue
        node = pending[ref]
        split_name = next(s for s, ps in samples.items() if missing[0] in ps)
        split = getattr(data, split_name)
        mb = sum(len(getattr(data, s)) for s in samples) * data.channels * data.image_size[0] * data.image_size[1] / 2**20
        raise UserError(
            f"node {host} ({node.get('NodeManagerAddress', '?')}, {str(node.get('NodeID'))[:8]}) cannot read the {split_name} "
            f"images streamed from files ({len(missing)} of {len(paths)} checked, first: {missing[0]}; {len(split)} files in "
            f"that split); put the data set at the same path on every node (a shared mount) or hold it in memory "
            f"(dataset.max_in_memory_mb: {int(mb) + 1} or more)")
