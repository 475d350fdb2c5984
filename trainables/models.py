"""Model zoo: a parametric `cnn` family and torchvision's ResNet18 with a new head.

`create_model(name, num_classes=..., in_channels=..., image_size=..., **hparams)`
builds a registered model; unknown names and options fail with the choices.
The `cnn` family expresses each tutorial network of SEEDS.md exactly (see the
specs in `spaces/`): per-block channels, pooling and batch norm, dropout after
the conv stack and before the last layer, an optional hidden FC layer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from trainables.errors import UserError
from trainables.registry import Registry

MODELS = Registry("model")
register_model = MODELS.register
SHAPE_ARGS = ("num_classes", "in_channels", "image_size")  # set from the data set, never searched


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model `name`; `kwargs` = the data shape args plus the model's hyperparameters."""
    return MODELS.create(name, **kwargs)


def model_hparams(name: str) -> set[str]:
    """The hyperparameters model `name` takes (without the data shape args)."""
    return MODELS.accepted_options(name) - set(SHAPE_ARGS)


def list_models() -> list[str]:
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
    from torchvision.models import ResNet18_Weights, resnet18 as tv_resnet18

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

