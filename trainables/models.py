"""Models: a parametric `cnn` family, tutorial D's ResNet18, torchvision's zoo and the user's own.

`create_model(name, num_classes=..., in_channels=..., image_size=..., **hparams)`
builds a registered model (`cnn`, `resnet18`), any `torchvision.<builder>`
(trainables.zoo) or the user's `file.py:Name` / `package.module:Name`
(trainables.references); unknown names and options fail with the choices.
The `cnn` family expresses each tutorial network of SEEDS.md exactly (see the
specs in `spaces/`): per-block channels, pooling and batch norm, dropout after
the conv stack and before the last layer, an optional hidden FC layer.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from trainables import zoo
from trainables.errors import UserError
from trainables.references import PYTHON_PREFIX, canonical_reference, is_reference, keyword_parameters, load_reference
from trainables.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register
SHAPE_ARGS = ("num_classes", "in_channels", "image_size")  # set from the data set, never searched
# options that only say how to get ImageNet weights: a network rebuilt from a checkpoint never needs them
WEIGHT_OPTIONS = {"pretrained": False, "weights_path": ""}


@dataclass(frozen=True)
class ModelSource:
    """Where a spec's `model` comes from and what it takes.

    kind: "registered" (`cnn`, `resnet18`), "torchvision" (`torchvision.<builder>`), or "user" (the user's
    own factory: `file.py:Name`, `package.module:Name`, or an object handed to `run_search(model=...)`).
    `factory(**shape_args, **hparams)` builds the network; `shape_args` are the data shape args it accepts.
    """

    name: str
    kind: str
    factory: Callable[..., nn.Module]
    hparams: frozenset[str]  # keyword hyperparameters it takes (shape args excluded)
    open_kwargs: bool  # it also takes **kwargs: any key is passed on (its own signature cannot be checked)
    shape_args: tuple[str, ...]

    def build(self, **kwargs: Any) -> nn.Module:
        """The network for shape args + hyperparameters `kwargs` (shape args it does not take are dropped)."""
        unknown = set(kwargs) - set(SHAPE_ARGS) - self.hparams
        if unknown and not self.open_kwargs:
            raise UserError(f"model {self.name!r} does not take option(s) {sorted(unknown)}; it takes: {sorted(self.hparams)}")
        args = {k: v for k, v in kwargs.items() if k not in SHAPE_ARGS or k in self.shape_args}
        try:
            model = self.factory(**args)
        except UserError:
            raise
        except Exception as exc:
            if self.kind != "user":
                raise
            raise UserError(f"model {self.name!r} failed to build with {_short(args)}: {type(exc).__name__}: {_first_line(exc)}") from None
        if not isinstance(model, nn.Module):
            raise UserError(f"model {self.name!r} returned a {type(model).__name__}, not a torch nn.Module; "
                            "name an nn.Module class or a function that returns one")
        return model

    def default(self, key: str) -> tuple[bool, Any]:
        """(whether it has one, the default) of hyperparameter `key`, from the factory's signature
        (for torchvision: hpsearch's head options, then the model class's keywords)."""
        sources: list[Any] = [self.factory]
        if self.kind == "torchvision":
            sources.append(zoo.model_class(zoo.builder_name(self.name)).__init__)
        for source in sources:
            try:
                parameter = inspect.signature(source).parameters.get(key)
            except (TypeError, ValueError):
                continue
            if parameter is not None and parameter.default is not inspect.Parameter.empty:
                return True, parameter.default
        return False, None

    def rebuild_options(self) -> dict[str, Any]:
        """Options that make a rebuild from a checkpoint skip ImageNet weights (the checkpoint holds every weight)."""
        return {k: v for k, v in WEIGHT_OPTIONS.items() if k in self.hparams}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _short(args: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in args.items()) + "}"


_sources: dict[str, ModelSource] = {}  # per process: a user file is imported once


def resolve_model(name: str, factory: Callable[..., Any] | None = None, *, base_dir: str | Path | None = None) -> ModelSource:
    """The source of model `name`: registered, `torchvision.<builder>`, `file.py:Name` / `module:Name`, or `factory` itself."""
    if factory is None and name in _sources:  # before any file check: the driver may hold a file no longer on disk
        return _sources[name]
    if factory is None and is_reference(name):
        name = canonical_reference(name, base_dir=base_dir, kind="model")
        if name in _sources:
            return _sources[name]
    if factory is not None or is_reference(name):
        if factory is None:
            if name.startswith(PYTHON_PREFIX):
                raise UserError(f"model {name!r} was an object handed to run_search(model=...); pass it again "
                                "(run_search / resume_search(..., model=...)) or name a file.py:Name in the spec")
            factory = load_reference(name, kind="model")
        if not callable(factory):
            raise UserError(f"model {name!r} is a {type(factory).__name__}, not an nn.Module class or a function returning one")
        if isinstance(factory, nn.Module):
            raise UserError(f"model {name!r} is an nn.Module instance; name its class (or a function that builds it) so each trial gets a fresh network")
        accepted, open_kwargs = keyword_parameters(factory)
        source = ModelSource(name=name, kind="user", factory=factory, hparams=frozenset(accepted - set(SHAPE_ARGS)),
                             open_kwargs=open_kwargs, shape_args=tuple(a for a in SHAPE_ARGS if a in accepted or open_kwargs))
    elif name.startswith(zoo.PREFIX):
        builder = zoo.builder_name(name)
        source = ModelSource(name=name, kind="torchvision", factory=functools.partial(zoo.torchvision_model, builder),
                             hparams=frozenset(zoo.options(builder) - set(SHAPE_ARGS)), open_kwargs=False, shape_args=SHAPE_ARGS)
    else:
        registered = MODELS.get(name)  # an unknown name lists the choices
        source = ModelSource(name=name, kind="registered", factory=registered,
                             hparams=frozenset(MODELS.accepted_options(name) - set(SHAPE_ARGS)), open_kwargs=False,
                             shape_args=SHAPE_ARGS)
    _sources[name] = source
    return source


def create_model(name: str, *, factory: Callable[..., Any] | None = None, **kwargs: Any) -> nn.Module:
    """Build model `name`; `kwargs` = the data shape args plus the model's hyperparameters."""
    return resolve_model(name, factory).build(**kwargs)


def model_hparams(name: str, factory: Callable[..., Any] | None = None) -> set[str]:
    """The hyperparameters model `name` takes (without the data shape args)."""
    return set(resolve_model(name, factory).hparams)


def list_models() -> list[str]:
    """Registered names; every `torchvision.<builder>` of `trainables.zoo.builders()` works too."""
    return MODELS.names()


def parse_channels(channels: str | int | Sequence[int]) -> list[int]:
    """Channels per conv block from a list, one int, or a dash string like "16-32-64"."""
    if isinstance(channels, str):
        try:
            values = [int(c) for c in channels.split("-")]
        except ValueError:
            raise UserError(f"channels must look like '16-32-64', but got {channels!r}") from None
    elif isinstance(channels, int):
        values = [channels]
    else:
        values = [int(c) for c in channels]
    if not values or min(values) < 1:
        raise UserError(f"channels must be positive integers, but got {channels!r}")
    return values


def _per_block(value: bool | Sequence[bool], blocks: int, name: str) -> list[bool]:
    if isinstance(value, bool):
        return [value] * blocks
    values = [bool(v) for v in value]
    if len(values) != blocks:
        raise UserError(f"{name} has {len(values)} entries but the network has {blocks} conv blocks")
    return values


@register_model()
def cnn(
    *, num_classes: int, in_channels: int, image_size: int | Sequence[int],
    channels: str | Sequence[int] = "32-64", width_mult: float = 1.0, kernel_size: int = 3,
    pool: bool | Sequence[bool] = True, batch_norm: bool | Sequence[bool] = False, global_pool: bool = False,
    conv_dropout: float = 0.0, hidden: int = 128, hidden_activation: bool = True, dropout: float = 0.0,
) -> nn.Sequential:
    """Conv blocks (conv k×k 'same' → ReLU → [BatchNorm] → [MaxPool 2]) → [global avg pool] → flatten
    → [dropout conv_dropout] → [FC hidden → [ReLU] → dropout] → FC num_classes.

    channels: per-block widths ("16-32-64"), each scaled by width_mult.
    pool / batch_norm: one bool, or one per block. hidden: 0 for no hidden layer.
    """
    widths = [max(1, int(round(c * width_mult))) for c in parse_channels(channels)]
    pools, norms = _per_block(pool, len(widths), "pool"), _per_block(batch_norm, len(widths), "batch_norm")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise UserError(f"kernel_size must be a positive odd number, but got {kernel_size=}")
    for name, p in (("conv_dropout", conv_dropout), ("dropout", dropout)):
        if not 0.0 <= p < 1.0:
            raise UserError(f"{name} must be in [0, 1), but got {name}={p}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else image_size
    layers: list[nn.Module] = []
    c_in = in_channels
    for c_out, do_pool, do_norm in zip(widths, pools, norms):
        layers += [nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True)]
        if do_norm:
            layers.append(nn.BatchNorm2d(c_out))
        if do_pool:
            if min(h, w) < 2:
                raise UserError(f"too many pooling blocks for {image_size}px images ({len(widths)} blocks); use fewer channels entries or pool: false")
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c_in = c_out
    if global_pool:
        layers.append(nn.AdaptiveAvgPool2d(1))
        h = w = 1
    layers.append(nn.Flatten())
    if conv_dropout > 0:
        layers.append(nn.Dropout(conv_dropout))
    features = c_in * h * w
    if hidden > 0:
        layers.append(nn.Linear(features, hidden))
        if hidden_activation:
            layers.append(nn.ReLU(inplace=True))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        features = hidden
    elif dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


FREEZE_CHOICES = ("backbone", "all_but_last_block", "none")


@register_model()
def resnet18(
    *, num_classes: int, in_channels: int, image_size: int | Sequence[int],
    pretrained: bool = True, weights_path: str = "", freeze: str = "backbone", hidden: int = 512, dropout: float = 0.5,
) -> nn.Module:
    """torchvision ResNet18 whose 1000-way output feeds a new head FC 1000→hidden → ReLU → dropout → FC classes
    (tutorial D). freeze: backbone | all_but_last_block | none. Weights: `weights_path` (a local
    state_dict file) or torchvision's cache; never a download that would fail offline mid-search.
    """
    from torchvision.models import ResNet18_Weights
    from torchvision.models import resnet18 as tv_resnet18

    if freeze not in FREEZE_CHOICES:
        raise UserError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, but got {freeze=}")
    if in_channels != 3:
        raise UserError(f"resnet18 needs RGB images (in_channels=3), but the data set has {in_channels}; use grayscale: false")
    backbone = tv_resnet18(weights=None)
    if pretrained:
        backbone.load_state_dict(_resnet18_weights(weights_path, ResNet18_Weights.IMAGENET1K_V1))
    if freeze != "none":
        trainable_prefixes = ("layer4.", "fc.") if freeze == "all_but_last_block" else ()
        for pname, param in backbone.named_parameters():
            param.requires_grad = pname.startswith(trainable_prefixes)
    if hidden > 0:
        head = nn.Sequential(nn.Linear(1000, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    else:
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(1000, num_classes))
    return nn.Sequential(backbone, head)


def _resnet18_weights(weights_path: str, weights: Any) -> dict[str, torch.Tensor]:
    """ImageNet weights from a local file or torchvision's hub cache (no download here)."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise UserError(f"weights_path {path} does not exist; point it at a ResNet18 state_dict (.pth) file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        return state.get("state_dict", state) if isinstance(state, dict) else state
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    raise UserError(
        f"pretrained ResNet18 weights not found at {cached}; download {weights.url} on a machine with internet "
        "and set weights_path to the file (or copy it there), or set pretrained: false"
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those that require grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def output_shape(model: nn.Module, in_channels: int, image_size: Sequence[int]) -> tuple[int, ...]:
    """Shape of the logits for one dummy image (checks the network is well formed)."""
    with torch.no_grad():
        return tuple(model.eval()(torch.zeros(1, in_channels, *image_size)).shape)

