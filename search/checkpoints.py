"""After a search: each finished trial keeps its best-round and last checkpoints, the rest is deleted."""
from __future__ import annotations

from search import results as R
from search import storage as S
from trainables.errors import UserError


def prune_checkpoints(records: list[R.TrialRecord]) -> int:
    """Keep each finished trial's best-round and last checkpoints, delete the rest; returns how many went.

    For a search on a URI the checkpoints are listed and deleted there (the mirror holds few)."""
    import shutil

    removed = 0
    for record in records:
        if record.remote:
            names = R.checkpoint_names(record)
            if len(names) <= 2:
                continue
            keep = {names[-1]}
            try:
                keep.add(R.best_checkpoint_name(record, names))
            except UserError:
                pass
            for name in names:
                if name not in keep:
                    S.delete(S.join(record.remote, name))
                    shutil.rmtree(record.path / name, ignore_errors=True)
                    removed += 1
            continue
        folders = sorted(record.path.glob("checkpoint_*"))
        if len(folders) <= 2:
            continue
        keep = {folders[-1]}
        try:
            keep.add(R.best_checkpoint_dir(record))
        except UserError:
            pass
        for folder in folders:
            if folder not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
    return removed

