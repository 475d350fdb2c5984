"""One way to write a file so that a crash or a concurrent reader never sees half of it."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable

CHECKPOINT_FILE = "checkpoint.pt"  # a checkpoint folder's file (trainables.checkpoint; search.layout's best/ too)


def write_atomic(path: str | os.PathLike, content: bytes | str | Callable[[Path], None]) -> Path:
    """Write `content` (bytes, text, or a function that writes a given path) to a temporary sibling of
    `path`, then rename it over `path` (atomic on one file system); returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}.tmp")
    try:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        elif isinstance(content, str):
            tmp.write_text(content)
        else:
            content(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
