"""What one trial does: data sets, models, the training loop and the Tune trainable.

Usable without the search (`hpsearch train`); never imports `search`.
"""
from trainables.data import DATASETS, DataBundle, Split, create_dataset, register_dataset
from trainables.errors import DivergedError, UserError
from trainables.models import MODELS, create_model, list_models, register_model
from trainables.train import RunSettings, Trainer, fit

__all__ = [
    "DATASETS", "DataBundle", "Split", "create_dataset", "register_dataset", "DivergedError", "UserError",
    "MODELS", "create_model", "list_models", "register_model", "RunSettings", "Trainer", "fit",
]
