"""A search logging to a real MLflow tracking server (`mlflow server` on 127.0.0.1), as a team would."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from search.tuner import run_search
from tests._search_helpers import mlflow_runs, small_spec

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_search_logs_to_a_tracking_server(ray_local, tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, "NO_PROXY": "127.0.0.1,localhost"},
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(1)
        result = run_search(small_spec(tmp_path, name="server-test", samples=3, max_epochs=2), name="srv",
                            storage=str(tmp_path / "runs"), tracking_uri=uri, on_event=None)
        assert result.tracking.tracking_uri == uri
        assert result.tracking.ui_url == f"{uri}/#/experiments/{result.tracking.experiment_id}/runs"
        runs = mlflow_runs(uri, "server-test")
        assert len([r for r in runs if r.data.tags.get("hpsearch.kind") == "search"]) == 1
        assert len([r for r in runs if r.data.tags.get("hpsearch.kind") == "trial"]) == 3
        assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing went to the embedded store
        assert result.final.model_version is not None
        assert any((tmp_path / "server-artifacts").rglob("MLmodel"))  # the model went through the server
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
