"""Where searches live: a local folder, or a URI of any pyarrow filesystem (s3://, gs://, hdfs://...).

Ray Tune writes a search's checkpoints and results to a URI by itself (`RunConfig(storage_path=...,
storage_filesystem=...)`); this module does the rest for hpsearch's own files there (hpsearch.json,
mlflow_runs.json, best/checkpoint.pt) and for reading a search back: read / write / list / delete
on the URI, and downloads into a local *mirror* of the search folder, so that the code reading
Tune's files (ExperimentAnalysis, result.json, checkpoints) works on a local folder.

    s3://bucket/prefix                                   credentials from the environment
    s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http   an S3-compatible server (MinIO...)

Credentials never appear in a URI (pyarrow refuses them there) nor in any file hpsearch writes:
they come from the environment of every process (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY,
AWS_PROFILE, an instance profile; GOOGLE_APPLICATION_CREDENTIALS for gs://). On a cluster each
node needs them, as for Ray's own cloud storage.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import uuid
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from trainables.errors import UserError

_BUCKET_SCHEMES = ("s3", "gs", "gcs")
_CREDENTIALS_HINT = {
    "s3": "AWS credentials in the environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or an instance profile)",
    "gs": "Google credentials in the environment (GOOGLE_APPLICATION_CREDENTIALS or the instance's service account)",
}


def is_uri(value: Any) -> bool:
    """Whether `value` names a URI storage (file:// URIs are local paths)."""
    text = str(value or "")
    return "://" in text and not text.startswith("file://")


def local_path(value: str) -> Path:
    """A local storage value (a path or a file:// URI) as an absolute path."""
    text = str(value)
    if text.startswith("file://"):
        text = urlsplit(text).path
    return Path(text).expanduser().resolve()


def normalize(uri: str) -> str:
    """The URI without a trailing slash on its path (query kept: endpoint_override, scheme, region...)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), parts.query, ""))


def join(uri: str, *names: str) -> str:
    """`uri` + '/name/...' with its query string kept at the end."""
    parts = urlsplit(uri)
    path = parts.path.rstrip("/")
    for name in names:
        path += "/" + str(name).strip("/")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def display(uri: str) -> str:
    """The URI without its query (for messages that name a location, not a command)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _scheme(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    return "gs" if scheme == "gcs" else scheme


@lru_cache(maxsize=16)
def _filesystem_of(scheme: str, netloc: str, query: str) -> tuple[Any, str]:
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(urlunsplit((scheme, netloc, "", query, "")))


def filesystem(uri: str) -> tuple[Any, str]:
    """(pyarrow filesystem, path on it) of `uri`; a URI pyarrow cannot open is a UserError."""
    parts = urlsplit(uri)
    try:
        if parts.scheme in _BUCKET_SCHEMES:  # one filesystem per bucket and options; the path is bucket/key
            fs, _ = _filesystem_of(parts.scheme, parts.netloc, parts.query)
            return fs, _bucket_path(parts)
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(uri)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises ArrowInvalid / OSError / ValueError here
        raise UserError(f"--storage {uri}: pyarrow cannot open this URI ({_first_line(exc)}); use s3://bucket/prefix, "
                        "gs://bucket/prefix (an S3-compatible server: s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http) "
                        "or a local path") from None


def _bucket_path(parts: Any) -> str:
    return (parts.netloc + parts.path).rstrip("/")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def _io_error(uri: str, what: str, exc: BaseException) -> UserError:
    hint = _CREDENTIALS_HINT.get(_scheme(uri), "the filesystem's credentials in the environment")
    return UserError(f"cannot {what} {display(uri)} ({_first_line(exc)}); check the URI (bucket, endpoint_override, region) and {hint}")


# ----------------------------------------------------------------------------------------------
# Operations on a URI


def _info(uri: str) -> Any:
    fs, path = filesystem(uri)
    try:
        return fs.get_file_info(path)
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "read", exc) from None


def exists(uri: str) -> bool:
    import pyarrow.fs

    return _info(uri).type != pyarrow.fs.FileType.NotFound


def is_file(uri: str) -> bool:
    import pyarrow.fs

    return _info(uri).type == pyarrow.fs.FileType.File


def read_text(uri: str) -> str | None:
    """The text of the file at `uri`, or None when there is none."""
    fs, path = filesystem(uri)
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode()
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        if "NotFound" in str(exc) or "NO_SUCH_KEY" in str(exc) or "Path does not exist" in str(exc):
            return None
        raise _io_error(uri, "read", exc) from None


def write_text(uri: str, text: str) -> None:
    """Write a whole file (an object store replaces it atomically)."""
    fs, path = filesystem(uri)
    try:
        with fs.open_output_stream(path) as f:
            f.write(text.encode())
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "write to", exc) from None


def list_names(uri: str, *, dirs_only: bool = False) -> list[str]:
    """Names directly under `uri` (empty when it does not exist)."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True, recursive=False))
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "list", exc) from None
    return sorted(posixpath.basename(i.path.rstrip("/")) for i in infos
                  if not dirs_only or i.type == pyarrow.fs.FileType.Directory)


def list_files(uri: str) -> dict[str, Any]:
    """Every file under `uri`, recursively: relative path → pyarrow FileInfo."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True, recursive=True))
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "list", exc) from None
    root = path.rstrip("/") + "/"
    return {i.path[len(root):]: i for i in infos if i.type == pyarrow.fs.FileType.File and i.path.startswith(root)}


def download(uri: str, local: Path, *, skip: Callable[[str], bool] | None = None) -> Path:
    """Copy the folder at `uri` into `local` (files whose relative path `skip` accepts are left out).

    A local file with the remote file's size and modification time is not downloaded again,
    so reading a search back a second time only fetches what changed.
    """
    fs, _ = filesystem(uri)
    files = {rel: info for rel, info in list_files(uri).items() if not (skip and skip(rel))}
    local.mkdir(parents=True, exist_ok=True)

    def fetch(item: tuple[str, Any]) -> None:
        rel, info = item
        target = local / rel
        mtime = info.mtime.timestamp() if info.mtime is not None else None
        if target.is_file() and target.stat().st_size == info.size and mtime is not None and abs(target.stat().st_mtime - mtime) < 1e-3:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.part")
        with fs.open_input_stream(info.path) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        tmp.replace(target)

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(fetch, files.items()))
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "download", exc) from None
    return local


def upload(local: Path, uri: str) -> None:
    """Copy a local file or folder to `uri` (a folder's files under it)."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    try:
        if local.is_dir():
            pyarrow.fs.copy_files(str(local), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=fs)
        else:
            with open(local, "rb") as src, fs.open_output_stream(path) as dst:
                dst.write(src.read())
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "upload to", exc) from None


def delete(uri: str) -> None:
    """Delete the folder at `uri` (nothing when it is not there)."""
    fs, path = filesystem(uri)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "delete", exc) from None


def missing_bucket(uri: str) -> str | None:
    """Why the bucket of an s3:// or gs:// URI cannot be used (it does not exist), or None."""
    import pyarrow.fs

    fs, path = filesystem(uri)
    scheme = _scheme(uri)
    if scheme not in ("s3", "gs"):
        return None
    bucket = path.split("/", 1)[0]
    try:
        if fs.get_file_info(bucket).type != pyarrow.fs.FileType.NotFound:
            return None
    except Exception as exc:  # noqa: BLE001
        raise _io_error(uri, "reach", exc) from None
    make = f"aws s3 mb s3://{bucket}" if scheme == "s3" else f"gcloud storage buckets create gs://{bucket}"
    return (f"--storage {uri}: bucket {bucket!r} does not exist (or these credentials cannot see it); "
            f"create it first (`{make}`) or fix the name")


def check_writable(uri: str) -> None:
    """Refuse, in one line, a URI whose bucket does not exist or that these credentials cannot write.

    Writes and deletes one small probe object under the URI.
    """
    fs, path = filesystem(uri)
    try:
        problem = missing_bucket(uri)
        if problem:
            raise UserError(problem)
        probe = f"{path.rstrip('/')}/.hpsearch-write-check-{uuid.uuid4().hex[:12]}"
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except UserError as exc:
        if str(exc).startswith("--storage"):
            raise
        cause = str(exc).split(" (", 1)[1].rsplit("); check", 1)[0] if " (" in str(exc) else str(exc)
        raise UserError(_unusable(uri, cause)) from None
    except Exception as exc:  # noqa: BLE001
        raise UserError(_unusable(uri, _first_line(exc))) from None


def _unusable(uri: str, cause: str) -> str:
    hint = _CREDENTIALS_HINT.get(_scheme(uri), "the filesystem's credentials in the environment")
    return (f"--storage {uri}: cannot reach or write to it ({cause}); check the bucket, endpoint_override and region, "
            f"and {hint}")


# ----------------------------------------------------------------------------------------------
# The local mirror of a URI search


def mirror_dir(experiment_uri: str) -> Path:
    """The local folder mirroring a search stored at `experiment_uri` (under the hpsearch cache).

    It holds what the driver writes before uploading (mlflow_runs.json, best/) and what reading
    the search back downloads (Tune's experiment state, result.json files, checkpoints used).
    """
    from trainables.data import cache_dir

    uri = normalize(experiment_uri)
    digest = hashlib.sha1(uri.encode()).hexdigest()[:12]
    return cache_dir() / "storage" / f"{posixpath.basename(urlsplit(uri).path) or 'root'}-{digest}"


DEFAULT_STORAGE = "hpsearch-runs"  # where searches go without --storage / $HPSEARCH_STORAGE


def storage_root(storage: str | None) -> str:
    """The storage a search uses: a normalised URI, or an absolute path (default ./hpsearch-runs)."""
    if is_uri(storage):
        return normalize(str(storage))
    return str(local_path(storage or DEFAULT_STORAGE))


def local_tracking_root(storage_root: str) -> Path:
    """Where the embedded MLflow store (mlflow.db, mlartifacts/) of a search goes: beside the searches,
    or for URI storage (SQLite cannot live in a bucket) ./hpsearch-runs on the driver's machine."""
    return Path(DEFAULT_STORAGE).resolve() if is_uri(storage_root) else Path(storage_root)
