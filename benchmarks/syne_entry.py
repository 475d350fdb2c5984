"""The trial script of the Syne Tune peer (benchmarks/peer_syne.py): one configuration, a report per round.

Syne Tune's LocalBackend starts it once per trial, as
`python syne_entry.py --st_config_json_filename F --st_checkpoint_dir D` (pass_args_as_json=True): F holds the
sampled config with its JSON types (bools stay bools) plus the path of the spec (`spec.raw` as JSON, written
by the driver). The trial rebuilds the spec, loads the data set, trains the configuration with hpsearch's own
`trainables.train.Trainer` on one torch thread, and after every round reports round, epoch, val_acc,
epoch_seconds and train_seconds through `syne_tune.Reporter`. At each round that improves its val_acc it
first saves `Trainer.state_dict()` (hpsearch's checkpoint format, written atomically) as D/round_NNNN.pt, then
reports: a round the tuner has seen always has its state on disk. It ends by itself after the last round (or
a diverged one); ASHA's stop kills it.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent  # benchmarks/: peer_syne (sys.path[0] when run as a script)
ROOT = HERE.parent  # the repo's import root: search/ and trainables/ sit beside benchmarks/
for folder in (str(HERE), str(ROOT)):
    if folder not in sys.path:
        sys.path.insert(0, folder)


def main(argv: list[str] | None = None) -> None:
    """Parse Syne Tune's arguments, train the configuration, report every round."""
    import torch

    torch.set_num_threads(1)  # one CPU per trial (the spec's resources.cpu; the Trainer sets it too)

    import peer_syne as P
    from syne_tune import Reporter
    from syne_tune.constants import ST_CHECKPOINT_DIR
    from syne_tune.utils import add_checkpointing_to_argparse, add_config_json_to_argparse, load_config_json

    from search.spec import parse_spec
    from trainables import metrics as M
    from trainables.checkpoint import save_checkpoint
    from trainables.train import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_json_to_argparse(parser)
    add_checkpointing_to_argparse(parser)
    args, _ = parser.parse_known_args(argv)
    config = load_config_json(vars(args))
    spec = parse_spec(json.loads(Path(config[P.SPEC_FILE_KEY]).read_text()), "<benchmark>")
    params = P.from_syne(spec.space, config)
    checkpoint_dir = Path(config[ST_CHECKPOINT_DIR])

    data = spec.load_data()
    trainer = Trainer(spec.full_config(params), data, spec.settings())
    report = Reporter()
    best = -math.inf
    try:
        while not trainer.finished:
            metrics = trainer.run_round()
            val = float(metrics[M.VAL_ACC])
            if not trainer.diverged and val > best:
                best = val
                save_checkpoint(trainer.state_dict(), P.state_file(checkpoint_dir, int(metrics[M.ROUND])))
            seconds = float(metrics[M.ROUND_SECONDS])
            report(round=int(metrics[M.ROUND]), epoch=float(metrics[M.EPOCH]), val_acc=val, epoch_seconds=seconds,
                   train_seconds=float(metrics.get("train_seconds", seconds)))  # absent: a Trainer without it
    finally:
        trainer.close()


if __name__ == "__main__":
    main()
