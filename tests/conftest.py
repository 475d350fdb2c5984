"""Shared pytest configuration: every test gets its own hpsearch cache.

`HPSEARCH_CACHE` points at a fresh temporary folder for each test, so no test
reads or writes ~/.cache/hpsearch (decoded image folders, normalisation
statistics) and no test sees another test's cache.
"""
from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def hpsearch_cache(tmp_path_factory, monkeypatch):
    """A per-test cache folder, exported as $HPSEARCH_CACHE."""
    folder = tmp_path_factory.mktemp("hpsearch-cache")
    monkeypatch.setenv("HPSEARCH_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance shared by every test that needs Ray (ray.init takes ~10 s here)."""
    import os

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from search.cluster import connect

    connect(None)
    import ray

    yield ray
    ray.shutdown()
