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
STATUS = "status"  # STATUS_OK | STATUS_DIVERGED
BEST_ROUND = "best_round"  # the round with the best value of the search metric so far
STATUS_OK = "ok"
STATUS_DIVERGED = "diverged"

# Per-epoch values logged to MLflow and plotted as learning curves.
CURVE_METRICS = (TRAIN_LOSS, TRAIN_ACC, VAL_LOSS, VAL_ACC, VAL_TOP5, LR, ROUND_SECONDS)
# What a spec may name as its `metric`, with the direction that makes sense for each.
SELECTABLE = {VAL_ACC: "max", VAL_LOSS: "min", VAL_TOP5: "max"}
