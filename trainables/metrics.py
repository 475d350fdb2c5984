"""Names of the values a trial reports, shared by the trainer, Tune and MLflow."""

TRAIN_LOSS = "train_loss"
TRAIN_ACC = "train_acc"
VAL_LOSS = "val_loss"
VAL_ACC = "val_acc"
VAL_TOP5 = "val_top5"
LR = "lr"
EPOCH = "epoch"  # training progress in epochs (fractional when a round is smaller than an epoch)
ROUND = "round"  # 1-based count of reports: ASHA's time attribute
ROUND_SECONDS = "epoch_seconds"  # wall time of the round (an epoch by default)
TRAIN_SECONDS = "train_seconds"  # the part of ROUND_SECONDS spent training (the rest: its val pass)
STATUS = "status"  # STATUS_OK | STATUS_DIVERGED
BEST_ROUND = "best_round"  # the round with the best value of the search metric so far
VAL_ROUND = "val_round"  # the round whose val pass the val values are (earlier than `round` when this one skipped it)
STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"

VAL_KEYS = (VAL_LOSS, VAL_ACC, VAL_TOP5)


def val_is_fresh(row: dict) -> bool:
    """Whether a result's val values were measured in its own round (rows without `val_round` always were)."""
    return row.get(VAL_ROUND, row.get(ROUND)) == row.get(ROUND)


# Per-epoch values logged to MLflow and plotted as learning curves.
CURVE_METRICS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, VAL_TOP5, LR, ROUND_SECONDS)
# What a spec may name as its `metric`, with the direction that makes sense for each.
SELECTABLE = {VAL_ACC: "max", VAL_LOSS: "min", VAL_TOP5: "max"}


def curve_keys(row: dict) -> tuple[str, ...]:
    """The learning-curve values a result contributes: val ones only from the round that measured them."""
    keys = (*CURVE_METRICS, EPOCH)
    return keys if val_is_fresh(row) else tuple(k for k in keys if k not in VAL_KEYS)
