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
    from ray import tune

    trainer = Trainer({**baseline, **config}, data, settings)
    try:
        checkpoint = tune.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                trainer.load_state_dict(load_checkpoint(folder))
        while not trainer.finished:
            metrics = trainer.run_round()
            with tempfile.TemporaryDirectory(prefix="hpsearch-ckpt-") as folder:
                save_checkpoint(trainer.state_dict(), folder)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        trainer.close()
