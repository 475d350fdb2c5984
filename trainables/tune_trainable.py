"""The Ray Tune function trainable: one trial = one `Trainer`, reporting every round.

It knows nothing about the tuner beyond `tune.report` / `tune.get_checkpoint`
(Syne Tune style). The data set arrives once through Ray's object store via
`tune.with_parameters`, so trials neither download nor decode it.
"""
from __future__ import annotations

import tempfile
from typing import Any

from trainables.checkpoint import load_checkpoint, save_checkpoint
from trainables.data import DataBundle
from trainables.train import RunSettings, Trainer


def tune_trainable(config: dict[str, Any], *, data: DataBundle, settings: RunSettings, baseline: dict[str, Any]) -> None:
    """Train `baseline` overridden by the sampled `config`; resume from Tune's checkpoint if any."""
    import ray
    from ray import tune

    node_id = ray.get_runtime_context().get_node_id()  # reported so placement and failover can be checked
    trainer = Trainer({**baseline, **config}, data, settings)
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                trainer.load_state_dict(load_checkpoint(folder))
            if trainer.finished and trainer.last_metrics:
                # Restored from its final checkpoint (the driver died before recording the end):
                # say the last result again so Tune and the tracker see a finished trial.
                tune.report({**trainer.last_metrics, "node_id": node_id})
        while not trainer.finished:
            metrics = {**trainer.run_round(), "node_id": node_id}
            with tempfile.TemporaryDirectory(prefix="hpsearch-ckpt-") as folder:
                save_checkpoint(trainer.state_dict(), folder)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        trainer.close()
