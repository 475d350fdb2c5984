"""torchvision's classification models by name: `model: torchvision.<builder>`.

Any builder of `torchvision.models.list_models(module=torchvision.models)`
(resnet18/34/50, mobilenet_v2/v3, efficientnet_b0.., regnet, shufflenet,
convnext_tiny, vit, swin, ...). What hpsearch adds around it:

- the last classification layer is replaced by a head for the data set's
  classes: Linear(features, classes), or with `hidden` > 0
  Linear(features, hidden) -> ReLU -> Dropout -> Linear(hidden, classes);
- `dropout` goes to the builder when it takes one (its classifier's dropout,
  kept in front of the new head: mobilenet, efficientnet, vgg, ...), else to the
  new head; every other keyword of the model class (`width_mult`,
  `stochastic_depth_prob`, `drop_rate`, ...) is a hyperparameter too, checked
  against the class's signature and by a dry build;
- grey images are fed as 3 channels (repeated), other channel counts through
  a learned 1x1 convolution;
- small images are resized inside the network to what the family needs: the
  `min_size` torchvision's weights declare (alexnet 63, inception_v3 75,
  densenet 29, squeezenet 21, convnext/vgg 32, googlenet 15, others 1). ViT,
  Swin and MaxViT take one size (224) and always get it. `input_size` sets the
  size yourself (pretrained weights are best at 224);
- `pretrained: true` loads ImageNet weights from `weights_path` or the torch
  hub cache only; nothing is downloaded mid-search (the error names the file
  and where to put it); `freeze: backbone` trains the head alone.
"""
from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from trainables.errors import UserError

PREFIX = "torchvision."
FREEZE_CHOICES = ("none", "backbone")
# options hpsearch handles itself; the rest of a builder's keywords go to the model class
HEAD_OPTIONS = ("pretrained", "weights_path", "freeze", "hidden", "dropout", "input_size")
_NOT_HPARAMS = {"self", "num_classes", "weights", "progress"}
FIXED_SIZE_FROM = 224  # a family whose weights need >= 224 px takes exactly that size (ViT, Swin, MaxViT)


@functools.lru_cache(maxsize=None)
def builders() -> tuple[str, ...]:
    """Names of torchvision's classification builders (`torchvision.models.list_models(module=torchvision.models)`)."""
    from torchvision import models

    return tuple(models.list_models(module=models))


def builder_name(model: str) -> str:
    """`torchvision.mobilenet_v3_small` -> `mobilenet_v3_small`; a name that is not a classification builder is a `UserError`."""
    name = model.removeprefix(PREFIX)
    if name not in builders():
        from torchvision import models

        other = [m for m in models.list_models() if m == name]
        what = "not a classification model (it is in another torchvision.models module)" if other else "not a torchvision model"
        close = [b for b in builders() if name.split("_")[0] in b][:8]
        raise UserError(f"model {model!r}: {name!r} is {what}; use one of torchvision.models.list_models(module=torchvision.models)"
                        + (f", e.g. {', '.join(PREFIX + c for c in close)}" if close else ""))
    return name


@functools.lru_cache(maxsize=None)
def model_class(name: str) -> type:
    """The nn.Module class a builder returns (its return annotation)."""
    from torchvision import models

    return typing.get_type_hints(models.get_model_builder(name))["return"]


@functools.lru_cache(maxsize=None)
def builder_options(name: str) -> tuple[str, ...]:
    """The model class's own keyword arguments a spec may set (num_classes and weights excluded)."""
    params = inspect.signature(model_class(name).__init__).parameters.values()
    return tuple(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in _NOT_HPARAMS)


def plain_options(name: str) -> tuple[str, ...]:
    """The class's keywords whose default is a plain number, bool or string: the ones worth searching in YAML."""
    params = inspect.signature(model_class(name).__init__).parameters
    return tuple(k for k in builder_options(name)
                 if isinstance(params[k].default, (int, float, str, bool)) and params[k].default is not inspect.Parameter.empty)


def options(name: str) -> set[str]:
    """Every hyperparameter `torchvision.<name>` takes: hpsearch's head options and the class's keywords."""
    return set(HEAD_OPTIONS) | set(builder_options(name))


def _weights_enum(name: str) -> Any:
    from torchvision import models

    return models.get_model_weights(name).DEFAULT


def min_input_size(name: str) -> int:
    """The smallest image side the family takes (torchvision's weights metadata)."""
    return int(max(_weights_enum(name).meta.get("min_size", (1, 1))))


def input_side(name: str, image_size: Sequence[int], input_size: int | None) -> int | None:
    """The side images are resized to inside the network, or None to keep them as they are (ViT without
    pretrained weights: 224, see torchvision_model)."""
    if input_size:
        return int(input_size)
    if name.startswith("vit_") and tuple(image_size) != (224, 224):
        return 224
    need = min_input_size(name)
    if need >= FIXED_SIZE_FROM:
        return need if tuple(image_size) != (need, need) else None
    return need if min(image_size) < need else None


def weights_file(name: str) -> Path:
    """Where torchvision's DEFAULT ImageNet weights of `name` live in the torch hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_weights_enum(name).url).name


def load_weights(name: str, weights_path: str) -> dict[str, torch.Tensor]:
    """ImageNet weights from `weights_path` or the torch hub cache; never downloaded."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise UserError(f"weights_path {path} does not exist; point it at a {name} state_dict (.pth) file")
    else:
        path = weights_file(name)
        if not path.is_file():
            raise UserError(f"pretrained {name} weights not found at {path}; download {_weights_enum(name).url} on a machine "
                            "with internet and copy it there (or set weights_path to the file), or set pretrained: false")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) and "state_dict" in state else state


class InputAdapter(nn.Module):
    """Images as the backbone needs them: 3 channels, and at least (or exactly) its input side.

    The resize is a constant scale factor (not a target size), so exported graphs keep static spatial
    shapes: ONNX's adaptive pooling (VGG, DenseNet, ConvNeXt, AlexNet) needs them."""

    def __init__(self, in_channels: int, side: int | None, image_size: Sequence[int] = ()) -> None:
        super().__init__()
        self.in_channels, self.side = in_channels, side
        self.mix = nn.Conv2d(in_channels, 3, kernel_size=1) if in_channels not in (1, 3) else None
        # a hair above side / size so that floor(size * scale) is exactly `side`
        self.scale = tuple(side / s + 1e-6 for s in image_size) if side is not None and image_size else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mix is not None:
            x = self.mix(x)
        elif self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.scale is not None:
            x = nn.functional.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False,
                                          recompute_scale_factor=False)
        elif self.side is not None:
            x = nn.functional.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)
        return x


def _last_classifier(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(parent, attribute, layer) of the network's last Linear (or SqueezeNet's final 1x1 conv)."""
    found = None
    for qualified, module in model.named_modules():
        if isinstance(module, nn.Linear) and not qualified.startswith(("AuxLogits", "aux1", "aux2")):
            found = (qualified, module)
    if found is None:  # SqueezeNet classifies with a 1x1 conv
        convs = [(q, m) for q, m in model.named_modules() if isinstance(m, nn.Conv2d) and q.startswith("classifier")]
        found = convs[-1] if convs else None
    if found is None:
        raise UserError(f"{type(model).__name__} has no final Linear layer to replace")
    qualified, layer = found
    parent_name, _, attribute = qualified.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model, attribute, layer


def torchvision_model(
    name: str, *, num_classes: int, in_channels: int, image_size: Sequence[int] | int,
    pretrained: bool = False, weights_path: str = "", freeze: str = "none", hidden: int = 0, dropout: float | None = None,
    input_size: int | None = None, **builder_kwargs: Any,
) -> nn.Module:
    """`torchvision.models.<name>` with a head for `num_classes`, fed `in_channels` x `image_size` images."""
    from torchvision import models

    size = (int(image_size), int(image_size)) if isinstance(image_size, (int, float)) else tuple(int(s) for s in image_size)
    if freeze not in FREEZE_CHOICES:
        raise UserError(f"freeze must be one of {', '.join(FREEZE_CHOICES)}, but got {freeze=}")
    if freeze == "backbone" and not pretrained:
        raise UserError("freeze: backbone with pretrained: false trains a head on random features; set pretrained: true or freeze: none")
    if dropout is not None and not 0.0 <= float(dropout) < 1.0:
        raise UserError(f"dropout must be in [0, 1), but got {dropout=}")
    unknown = set(builder_kwargs) - set(builder_options(name))
    if unknown:
        raise UserError(f"torchvision.{name} does not take {sorted(unknown)}; it takes: {', '.join(sorted(options(name)))}")
    own_dropout = "dropout" in builder_options(name)
    if own_dropout and dropout is not None:
        builder_kwargs["dropout"] = float(dropout)
    if name in ("googlenet", "inception_v3"):
        builder_kwargs.setdefault("init_weights", True)  # torchvision warns without it; aux heads are dropped below
    side = input_side(name, size, input_size)
    if name.startswith("vit_"):  # ViT is built for one input size: its weights' (vit_h_14: 518) or torchvision's 224
        side = int(input_size) if input_size else (min_input_size(name) if pretrained else 224)
        side = None if tuple(size) == (side, side) else side
        builder_kwargs["image_size"] = side or size[0]
    if input_size and name.startswith("maxvit"):  # so is MaxViT
        builder_kwargs["input_size"] = (int(input_size), int(input_size))
    try:
        backbone = models.get_model_builder(name)(weights=None, **builder_kwargs)
    except (TypeError, ValueError, AssertionError) as exc:
        raise UserError(f"torchvision.{name} rejects {builder_kwargs}: {str(exc).splitlines()[0]}") from None
    if pretrained:
        try:
            backbone.load_state_dict(load_weights(name, weights_path))
        except RuntimeError as exc:
            raise UserError(f"the weights for torchvision.{name} do not fit it (was it built with other options?): {str(exc).splitlines()[0][:160]}") from None
    for aux in ("AuxLogits", "aux1", "aux2"):  # inception / googlenet's training-time side heads
        if getattr(backbone, aux, None) is not None:
            setattr(backbone, aux, None)
    if hasattr(backbone, "aux_logits"):
        backbone.aux_logits = False
    if freeze == "backbone":
        for param in backbone.parameters():
            param.requires_grad = False
    parent, attribute, layer = _last_classifier(backbone)
    head_dropout = 0.0 if own_dropout or dropout is None else float(dropout)
    if isinstance(layer, nn.Conv2d):
        if hidden:
            raise UserError(f"torchvision.{name} classifies with a 1x1 convolution: hidden must be 0")
        head: nn.Module = nn.Conv2d(layer.in_channels, num_classes, kernel_size=1)
    elif hidden:
        inner = float(dropout) if dropout is not None else 0.0
        head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(layer.in_features, hidden), nn.ReLU(inplace=True),
                             nn.Dropout(inner), nn.Linear(hidden, num_classes))
    else:
        head = nn.Sequential(nn.Dropout(head_dropout), nn.Linear(layer.in_features, num_classes))
    setattr(parent, attribute, head)
    return nn.Sequential(InputAdapter(in_channels, side, size), backbone)
