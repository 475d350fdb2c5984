"""The training loop shared by `hpsearch train` and the Ray Tune trainable.

A `Trainer` trains one configuration round by round. A round is one epoch by
default, or `report_every` training samples when a spec wants finer reports
(so ASHA can stop weak trials on large data sets within minutes). After each
round it evaluates the validation split and returns the metrics; the caller
reports them (Tune) or prints them (CLI). The test split is never touched here
except by `evaluate(data.test)` at the very end, called by the user of `fit`.

Hyperparameters (every one read as `hparams[name]`, defaults live in specs):
    optimizer        sgd | adam | adamw
    lr               peak learning rate
    momentum         SGD momentum (sgd only)
    nesterov         Nesterov momentum (sgd only)
    weight_decay     L2 penalty (decoupled for adamw)
    batch_size       training batch size (samples)
    label_smoothing  cross-entropy label smoothing in [0, 1)
    schedule         none | step | cosine | onecycle (stepped per batch)
    step_size        epochs between decays (step)
    gamma            decay factor (step)
    hflip rotation translate crop_padding   train-time augmentation (pipeline.Augmentation)
Everything else is a hyperparameter of the model (`trainables.models`).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainables import metrics as M
from trainables.data import DataBundle, Split
from trainables.errors import UserError
from trainables.models import create_model, resolve_model
from trainables.pipeline import Augmentation, BatchStream, Normalizer, SplitLoader


@dataclass(frozen=True)
class TrainHparams:
    """The training loop's hyperparameters and their defaults: a spec's baseline lists only what differs."""

    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 1e-3  # peak learning rate
    momentum: float = 0.9  # sgd only, in [0, 1)
    nesterov: bool = False  # sgd only
    weight_decay: float = 0.0  # L2 penalty (decoupled for adamw)
    batch_size: int = 64  # images per optimizer step
    label_smoothing: float = 0.0  # in [0, 1)
    schedule: str = "none"  # none | step | cosine | onecycle (over the whole run)
    step_size: int = 5  # schedule step: epochs between lr decays
    gamma: float = 0.1  # schedule step: lr factor at each decay
    hflip: bool = False  # random horizontal flips
    rotation: float = 0.0  # degrees: random rotation in [-rotation, rotation]
    translate: float = 0.0  # fraction of the side: random shift up to it
    crop_padding: int = 0  # pixels: pad, then a random crop back to size


TRAIN_DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(TrainHparams)}
TRAIN_HPARAMS = tuple(TRAIN_DEFAULTS)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")


@dataclass(frozen=True)
class RunSettings:
    """What a run needs besides hyperparameters: fixed by the spec, never searched."""

    model: str
    max_epochs: int
    seed: int = 0
    metric: str = M.VAL_ACC
    mode: str = "max"
    report_every: int | None = None  # training samples per report; None = one epoch
    threads: int | None = None  # torch intra-op threads (a trial's cpus)
    device: str = "auto"  # auto | cpu | cuda | mps
    eval_batch_size: int | None = None  # None: the device's (DevicePlan.eval_batch_size)
    # Rounds shorter than an epoch: the rounds that must evaluate val besides each epoch's end, the first and the last
    # (the scheduler's rungs); the others carry the last val values (M.VAL_ROUND says whose). None: every round evaluates.
    val_rounds: frozenset[int] | None = None
    loader_workers: int = 2  # DataLoader workers for streamed (file) splits
    # the user's model factory itself (file.py:Name, or an object from Python): it travels pickled by value
    # to the workers, so they need not have the file (trainables.references); None for other models
    model_factory: Any = field(default=None, compare=False)


CPU_EVAL_BATCH = 128  # about the fastest size for one CPU thread; 1024 pays on a GPU (benchmarks/README.md, "Val pass")
CUDA_EVAL_BATCH = 1024


@dataclass(frozen=True)
class DevicePlan:
    """How training uses the device: chosen at run time, unit-tested on CPU."""

    device: torch.device
    amp: bool  # float16 autocast + GradScaler (CUDA)
    channels_last: bool  # NHWC memory format (CUDA)
    resident_data: bool  # in-memory uint8 data copied to the device once
    eval_batch_size: int = CPU_EVAL_BATCH  # images per forward pass in evaluation


def select_device(preference: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; an explicit choice that is not available is a `UserError`."""
    cuda, mps = torch.cuda.is_available(), bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if preference == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    available = {"cpu": True, "cuda": cuda, "mps": mps}
    if preference not in available:
        raise UserError(f"device must be auto, cpu, cuda or mps, but got {preference!r}")
    if not available[preference]:
        raise UserError(f"device {preference!r} is not available on this machine; use device: auto")
    return torch.device(preference)


def plan_for(device: torch.device, data_in_memory: bool) -> DevicePlan:
    """Device-dependent choices: AMP, channels_last, GPU-resident data and large evaluation batches on CUDA only."""
    on_cuda = device.type == "cuda"
    return DevicePlan(device=device, amp=on_cuda, channels_last=on_cuda, resident_data=on_cuda and data_in_memory,
                      eval_batch_size=CUDA_EVAL_BATCH if on_cuda else CPU_EVAL_BATCH)


def split_hparams(model: str, hparams: dict[str, Any], factory: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training hyperparameters, model hyperparameters); an unknown key is a `UserError`.

    A user's model that takes **kwargs gets every key the training loop does not take."""
    source = resolve_model(model, factory)
    accepted = set(source.hparams)
    unknown = set(hparams) - set(TRAIN_HPARAMS) - accepted
    if source.open_kwargs:
        accepted |= unknown
        unknown = set()
    if unknown:
        raise UserError(
            f"hyperparameter(s) {sorted(unknown)} are taken neither by the training loop nor by model {model!r}; "
            f"model takes {sorted(accepted)}, training takes {sorted(TRAIN_HPARAMS)}"
        )
    train = {k: hparams.get(k, default) for k, default in TRAIN_DEFAULTS.items()}  # defaults: TrainHparams
    return train, {k: v for k, v in hparams.items() if k in accepted}


def dry_forward(hparams: dict[str, Any], data: DataBundle, settings: RunSettings, *, batch: int = 2) -> tuple[int, ...]:
    """Build the network for `hparams` and run it on `batch` real train images, on the CPU, before any trial.

    A network that fails on the data, or that does not return one logit per class, is a `UserError` that
    says so here, in one line, instead of inside every Ray trial."""
    from trainables.data import decode_images

    _, model_hp = split_hparams(settings.model, hparams, settings.model_factory)
    shape = {"num_classes": data.num_classes, "in_channels": data.channels, "image_size": list(data.image_size)}
    model = create_model(settings.model, factory=settings.model_factory, **shape, **model_hp)
    split = data.train
    if split.images is not None:
        images = split.images[:batch]
    else:
        decoded = [a for a in decode_images(list(split.files or [])[: batch * 4], data.image_size, data.channels) if a is not None][:batch]
        if not decoded:
            raise UserError(f"none of the first train images of {data.name} could be read; check the files")
        images = np.stack(decoded)
    normalize = Normalizer(data.mean or (0.0,) * data.channels, data.std or (1.0,) * data.channels, torch.device("cpu"))
    x = normalize(torch.from_numpy(np.ascontiguousarray(images)))  # as training feeds the network
    where = f"model {settings.model!r} on a batch of the data ({'x'.join(str(d) for d in x.shape)})"
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except UserError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"{where} fails: {type(exc).__name__}: {text}; the network must take (N, {data.channels}, "
                        f"{data.image_size[0]}, {data.image_size[1]}) images (accept in_channels / image_size to adapt)") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), data.num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{where} returns {got}; it must return one logit per class, ({len(x)}, {data.num_classes}): "
                        "take num_classes in the constructor or size the last layer to the data set's classes")
    return tuple(out.shape)


def validate_train_hparams(train: dict[str, Any]) -> None:
    """Range checks that name the offending value."""
    if train["optimizer"] not in OPTIMIZERS:
        raise UserError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, but got {train['optimizer']!r}")
    if train["schedule"] not in SCHEDULES:
        raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, but got {train['schedule']!r}")
    if isinstance(train["lr"], bool) or not isinstance(train["lr"], (int, float)) or not train["lr"] > 0:
        raise UserError(f"lr must be > 0, but got lr={train['lr']}")
    if isinstance(train["batch_size"], bool) or not isinstance(train["batch_size"], int) or int(train["batch_size"]) < 1:
        raise UserError(f"batch_size must be >= 1, but got batch_size={train['batch_size']}")
    if not 0 <= train["label_smoothing"] < 1:
        raise UserError(f"label_smoothing must be in [0, 1), but got {train['label_smoothing']}")
    for key in ("nesterov", "hflip"):
        if not isinstance(train[key], bool):
            raise UserError(f"{key} must be true or false, but got {key}={train[key]!r}")
    checks = (("momentum", 0.0, 1.0, True), ("weight_decay", 0.0, None, False), ("gamma", 0.0, None, True),
              ("rotation", 0.0, 180.0, False), ("translate", 0.0, 1.0, True))
    for key, low, high, high_open in checks:
        value = train[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low or (
                high is not None and (value >= high if high_open else value > high)) or (key == "gamma" and value <= 0):
            bound = f"[{low}, {high}{')' if high_open else ']'}" if high is not None else f">= {low}" if key != "gamma" else "> 0"
            raise UserError(f"{key} must be {'in ' if high is not None else ''}{bound}, but got {key}={value!r}")
    for key, low in (("step_size", 1), ("crop_padding", 0)):
        value = train[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
            raise UserError(f"{key} must be a whole number >= {low}, but got {key}={value!r}")


def lr_factor(schedule: str, step: int, total_steps: int, steps_per_epoch: float, step_size: float, gamma: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based) for each schedule."""
    progress = min(step / max(total_steps, 1), 1.0)
    if schedule == "none":
        return 1.0
    if schedule == "step":
        return gamma ** math.floor(step / max(steps_per_epoch * step_size, 1))
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "onecycle":  # warm up over 30 % from lr/25, then cosine down to lr/1e4
        warm = 0.3
        if progress < warm:
            return 1 / 25 + (1 - 1 / 25) * progress / warm
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm)))
    raise UserError(f"schedule must be one of {', '.join(SCHEDULES)}, but got {schedule!r}")


def _make_optimizer(train: dict[str, Any], params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    name, lr, wd = train["optimizer"], float(train["lr"]), float(train["weight_decay"])
    if name == "sgd":
        momentum = float(train["momentum"])
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=bool(train["nesterov"]) and momentum > 0, weight_decay=wd)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    return torch.optim.AdamW(params, lr=lr, weight_decay=wd)


class Trainer:
    """Trains one configuration on one data set, a round at a time; checkpointable."""

    def __init__(self, hparams: dict[str, Any], data: DataBundle, settings: RunSettings) -> None:
        self.hparams, self.data, self.settings = {**TRAIN_DEFAULTS, **hparams}, data, settings
        self.train_hp, self.model_hp = split_hparams(settings.model, self.hparams, settings.model_factory)
        validate_train_hparams(self.train_hp)
        if settings.threads:
            torch.set_num_threads(max(1, int(settings.threads)))
        self.plan = plan_for(select_device(settings.device), data.train.in_memory)
        torch.manual_seed(settings.seed)
        self.model_kwargs = {"num_classes": data.num_classes, "in_channels": data.channels, "image_size": list(data.image_size)}
        self.model = create_model(settings.model, factory=settings.model_factory, **self.model_kwargs, **self.model_hp).to(self.plan.device)
        if self.plan.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if not trainable:
            raise UserError(f"model {settings.model!r} with {self.model_hp} has no trainable parameters")
        self.optimizer = _make_optimizer(self.train_hp, trainable)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.plan.amp)
        self.generator = torch.Generator().manual_seed(settings.seed)
        self.batch_size = int(self.train_hp["batch_size"])
        self.augmentation = Augmentation(
            hflip=bool(self.train_hp["hflip"]), rotation=float(self.train_hp["rotation"]),
            translate=float(self.train_hp["translate"]), crop_padding=int(self.train_hp["crop_padding"]),
        )
        self.normalizer = Normalizer(data.mean, data.std, self.plan.device)
        n_train = len(data.train)
        self.samples_per_round = int(settings.report_every or n_train)
        self.total_rounds = max(1, math.ceil(settings.max_epochs * n_train / self.samples_per_round))
        self.steps_per_epoch = math.ceil(n_train / self.batch_size)
        # Upper bound of optimizer steps: a round that crosses an epoch boundary takes one extra, shorter batch.
        extra = self.total_rounds if settings.report_every else 0
        self.total_steps = math.ceil(self.samples_per_round / self.batch_size) * self.total_rounds + extra
        self.stream = BatchStream(n_train, self.batch_size, self.generator)
        loader = lambda split: SplitLoader(  # noqa: E731
            split, device=self.plan.device, image_size=data.image_size, channels=data.channels,
            resident=self.plan.resident_data, workers=settings.loader_workers,
        )
        self.train_loader, self.val_loader = loader(data.train), loader(data.val)
        self._loader = loader
        self.round = 0
        self.step = 0
        self.samples_seen = 0
        self.diverged = False
        self.best_value: float | None = None
        self.best_round = 0
        self.last_metrics: dict[str, Any] = {}

    # -- training ---------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.diverged or self.round >= self.total_rounds

    def is_better(self, value: float) -> bool:
        """Whether `value` of the search metric beats the best so far (ties keep the earlier round)."""
        if self.best_value is None:
            return True
        return value > self.best_value if self.settings.mode == "max" else value < self.best_value

    def run_round(self) -> dict[str, Any]:
        """Train one round, evaluate val, and return the round's metrics."""
        started = time.perf_counter()
        self.model.train()
        device = self.plan.device
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        tr = self.train_hp
        for images, labels in self.train_loader.batches(self.stream.take(self.samples_per_round)):
            factor = lr_factor(tr["schedule"], self.step, self.total_steps, self.steps_per_epoch, tr["step_size"], tr["gamma"])
            for group in self.optimizer.param_groups:
                group["lr"] = float(tr["lr"]) * factor
            x = self.normalizer(images, self.augmentation, self.generator)
            if self.plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=self.plan.amp):
                logits = self.model(x)
                loss = F.cross_entropy(logits, labels, label_smoothing=float(tr["label_smoothing"]))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            loss_sum += loss.detach().double() * len(labels)
            correct += (logits.detach().argmax(1) == labels).sum()
            seen += len(labels)
            self.step += 1
        self.round += 1
        self.samples_seen += seen
        train_seconds = time.perf_counter() - started
        train_loss = float(loss_sum) / max(seen, 1)
        metrics: dict[str, Any] = {
            M.ROUND: self.round,
            M.EPOCH: round(self.samples_seen / len(self.data.train), 4),
            M.TRAIN_LOSS: train_loss,
            M.TRAIN_ACC: float(correct) / max(seen, 1),
            M.LR: self.optimizer.param_groups[0]["lr"],
        }
        n_train = len(self.data.train)
        ends_epoch = self.samples_seen // n_train > (self.samples_seen - seen) // n_train
        if not math.isfinite(train_loss):
            self.diverged = True
            metrics.update({M.STATUS: M.STATUS_DIVERGED, M.VAL_LOSS: float("inf"), M.VAL_ACC: 0.0})
            if self.data.num_classes >= 5:
                metrics[M.VAL_TOP5] = 0.0
        elif self._needs_val(ends_epoch):
            val = self.evaluate(self.val_loader)
            metrics.update({M.VAL_LOSS: val["loss"], M.VAL_ACC: val["acc"], M.STATUS: M.STATUS_OK, M.VAL_ROUND: self.round})
            if "top5" in val:
                metrics[M.VAL_TOP5] = val["top5"]
            if self.is_better(metrics[self.settings.metric]):
                self.best_value, self.best_round = float(metrics[self.settings.metric]), self.round
        else:  # Tune wants the metric in every result: the last pass's values, marked as such
            metrics.update({k: self.last_metrics[k] for k in (*M.VAL_KEYS, M.VAL_ROUND) if k in self.last_metrics})
            metrics[M.STATUS] = M.STATUS_OK
        metrics[M.BEST_ROUND] = self.best_round
        metrics[M.ROUND_SECONDS] = time.perf_counter() - started
        metrics[M.TRAIN_SECONDS] = train_seconds
        self.last_metrics = metrics
        return metrics

    def _needs_val(self, ends_epoch: bool) -> bool:
        """Whether this round evaluates val: every round unless `settings.val_rounds` says which (see RunSettings)."""
        wanted = self.settings.val_rounds
        return (wanted is None or ends_epoch or self.round in wanted or self.round >= self.total_rounds
                or M.VAL_ROUND not in self.last_metrics)

    # -- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: Split | SplitLoader, *, per_class: bool = False) -> dict[str, Any]:
        """Loss, top-1, top-5 (≥5 classes) and optionally per-class accuracy + confusion matrix."""
        loader = split if isinstance(split, SplitLoader) else self._loader(split)
        self.model.eval()
        k = self.data.num_classes
        device = self.plan.device
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        top1 = torch.zeros((), device=device, dtype=torch.int64)
        top5 = torch.zeros((), device=device, dtype=torch.int64)
        confusion = torch.zeros((k, k), device=device, dtype=torch.int64)
        n = 0
        for images, labels in loader.sequential(self.settings.eval_batch_size or self.plan.eval_batch_size):
            x = self.normalizer(images)
            if self.plan.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=self.plan.amp):
                logits = self.model(x).float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
            pred = logits.argmax(1)
            top1 += (pred == labels).sum()
            if k >= 5:
                top5 += (logits.topk(5, dim=1).indices == labels[:, None]).any(1).sum()
            if per_class:
                confusion += torch.bincount(labels * k + pred, minlength=k * k).view(k, k)
            n += len(labels)
        out: dict[str, Any] = {"loss": float(loss_sum) / max(n, 1), "acc": float(top1) / max(n, 1), "n": n}
        if k >= 5:
            out["top5"] = float(top5) / max(n, 1)
        if per_class:
            cm = confusion.cpu().numpy()
            totals = cm.sum(1)
            out["per_class"] = {
                name: (float(cm[i, i] / totals[i]) if totals[i] else float("nan")) for i, name in enumerate(self.data.class_names)
            }
            out["confusion"] = cm
        return out

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything to resume this run or export its model (tensors and plain containers only)."""
        return {
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": self._global_rng_state(),  # dropout draws from torch's global generator
            "stream": self.stream.state_dict(),
            "round": self.round,
            "step": self.step,
            "samples_seen": self.samples_seen,
            "best_value": self.best_value,
            "best_round": self.best_round,
            "diverged": self.diverged,
            "hparams": dict(self.hparams),
            "model_name": self.settings.model,
            "model_kwargs": dict(self.model_kwargs),
            "class_names": list(self.data.class_names),
            "mean": list(self.data.mean),
            "std": list(self.data.std),
            "metrics": {k: v for k, v in self.last_metrics.items() if isinstance(v, (int, float, str))},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()` output (e.g. after a preempted node)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        if "torch_rng" in state:
            self._set_global_rng_state(state["torch_rng"])
        self.stream.load_state_dict(state["stream"])
        self.round, self.step, self.samples_seen = int(state["round"]), int(state["step"]), int(state["samples_seen"])
        self.best_value, self.best_round = state["best_value"], int(state["best_round"])
        self.diverged = bool(state["diverged"])
        self.last_metrics = dict(state["metrics"])

    def _global_rng_state(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if self.plan.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.plan.device)
        return state

    def _set_global_rng_state(self, state: dict[str, torch.Tensor]) -> None:
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and self.plan.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.plan.device)

    def close(self) -> None:
        """Free the model, optimizer and device data (ASHA-stopped trials must not keep GPU memory)."""
        for name in ("model", "optimizer", "train_loader", "val_loader"):
            if hasattr(self, name):
                delattr(self, name)
        if self.plan.device.type == "cuda":
            torch.cuda.empty_cache()


@dataclass
class FitResult:
    """Outcome of `fit`: history, best round's weights and metrics, and the final test evaluation."""

    status: str
    history: list[dict[str, Any]]
    best_round: int
    best_metrics: dict[str, Any]
    best_state: dict[str, Any]
    test: dict[str, Any] | None = field(default=None)


def fit(
    hparams: dict[str, Any], data: DataBundle, settings: RunSettings,
    on_round: Callable[[dict[str, Any]], None] | None = None, *, evaluate_test: bool = True,
) -> FitResult:
    """Train to the end (no Tune), keep the best-val round's state, then evaluate test once with it."""
    trainer = Trainer(hparams, data, settings)
    history: list[dict[str, Any]] = []
    best_state: dict[str, Any] | None = None
    while not trainer.finished:
        metrics = trainer.run_round()
        history.append(metrics)
        if on_round is not None:
            on_round(metrics)
        if trainer.best_round == trainer.round and not trainer.diverged:
            best_state = copy.deepcopy(trainer.state_dict())
    if best_state is None:  # diverged in the first round
        best_state = trainer.state_dict()
    status = M.STATUS_DIVERGED if trainer.diverged else M.STATUS_OK
    best_metrics = next((h for h in history if h[M.ROUND] == trainer.best_round), history[-1])
    test = None
    if evaluate_test and status == M.STATUS_OK and data.test is not None and data.test.labelled:
        trainer.model.load_state_dict(best_state["model"])
        test = trainer.evaluate(data.test, per_class=True)
    trainer.close()
    return FitResult(status=status, history=history, best_round=trainer.best_round, best_metrics=best_metrics, best_state=best_state, test=test)


def confusion_to_list(cm: np.ndarray) -> list[list[int]]:
    return [[int(v) for v in row] for row in cm]
