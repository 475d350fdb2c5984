"""Process helpers for tests that start and kill processes (a Ray cluster, the MLflow writer): psutil."""
from __future__ import annotations

from typing import Iterable

import psutil


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    table = {}
    for proc in psutil.process_iter(["ppid", "cmdline"]):
        table[proc.pid] = (proc.info["ppid"] or 0, " ".join(proc.info["cmdline"] or ()))
    return table


def alive(pids: Iterable[int]) -> set[int]:
    """Those of `pids` still running (a zombie has exited)."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            continue
    return out
