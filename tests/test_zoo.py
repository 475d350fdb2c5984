"""torchvision's classification builders through `model: torchvision.<builder>`, generated from the list.

Each builds for 10 classes and classifies a batch of small grey images (the input adapter repeats the
channel and resizes to what the family needs). Builders above LIGHT_PARAMS parameters, and the families
that take one 224-px size, are marked slow.
"""
from __future__ import annotations

import pytest
import torch

from trainables import zoo
from trainables.errors import UserError
from trainables.models import create_model, resolve_model

LIGHT_PARAMS = 12_000_000


def _weights_params(name: str) -> int:
    from torchvision import models

    return int(models.get_model_weights(name).DEFAULT.meta.get("num_params", 10**9))


def _cases() -> list:
    cases = []
    for name in zoo.builders():
        heavy = _weights_params(name) > LIGHT_PARAMS or zoo.min_input_size(name) >= zoo.FIXED_SIZE_FROM
        cases.append(pytest.param(name, marks=[pytest.mark.slow] if heavy else [], id=name))
    return cases


@pytest.mark.parametrize("builder", _cases())
def test_every_torchvision_classification_builder_classifies_small_grey_images_into_10_classes(builder):
    hidden = 0 if builder.startswith("squeezenet") else 16
    model = create_model(f"torchvision.{builder}", num_classes=10, in_channels=1, image_size=[28, 28], hidden=hidden)
    model.train()
    logits = model(torch.rand(2, 1, 28, 28))
    assert logits.shape == (2, 10)
    logits.sum().backward()  # trainable end to end (the head and the backbone)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_a_builders_own_keyword_is_a_hyperparameter_checked_against_its_class():
    source = resolve_model("torchvision.mobilenet_v2")
    assert {"width_mult", "dropout", "hidden", "pretrained", "freeze"} <= source.hparams
    narrow = create_model("torchvision.mobilenet_v2", num_classes=3, in_channels=3, image_size=[32, 32], width_mult=0.5)
    wide = create_model("torchvision.mobilenet_v2", num_classes=3, in_channels=3, image_size=[32, 32], width_mult=1.0)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters())
    with pytest.raises(UserError, match="does not take option.*'depth'"):
        create_model("torchvision.mobilenet_v2", num_classes=3, in_channels=3, image_size=[32, 32], depth=3)


def test_dropout_goes_to_the_builder_when_it_takes_one_else_to_the_new_head():
    mobilenet = create_model("torchvision.mobilenet_v3_small", num_classes=4, in_channels=3, image_size=[32, 32], dropout=0.3)
    assert mobilenet[1].classifier[2].p == 0.3  # MobileNetV3's own classifier dropout
    resnet = create_model("torchvision.resnet18", num_classes=4, in_channels=3, image_size=[32, 32], dropout=0.3)
    assert isinstance(resnet[1].fc, torch.nn.Sequential) and resnet[1].fc[0].p == 0.3


def test_small_images_are_resized_to_the_familys_minimum_and_vit_gets_its_one_size():
    assert zoo.input_side("alexnet", (28, 28), None) == 63
    assert zoo.input_side("resnet18", (28, 28), None) is None
    assert zoo.input_side("vit_b_16", (32, 32), None) == 224
    assert zoo.input_side("resnet18", (28, 28), 64) == 64


def test_pretrained_weights_are_never_downloaded_the_error_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError, match=r"mobilenet_v3_small-047dcff4\.pth.*copy it there.*pretrained: false"):
        create_model("torchvision.mobilenet_v3_small", num_classes=10, in_channels=3, image_size=[32, 32], pretrained=True)
    # a local weights file works (saved from a random network here: the format is what matters)
    from torchvision import models

    weights = tmp_path / "mnv3.pth"
    torch.save(models.mobilenet_v3_small(weights=None).state_dict(), weights)
    model = create_model("torchvision.mobilenet_v3_small", num_classes=10, in_channels=3, image_size=[32, 32],
                         pretrained=True, weights_path=str(weights), freeze="backbone")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".classifier.3." in n for n in trainable), trainable  # the new head alone


def test_names_that_are_not_torchvision_classification_models_are_refused_with_the_way_to_list_them():
    with pytest.raises(UserError, match="not a torchvision model.*list_models"):
        resolve_model("torchvision.resnet19")
    with pytest.raises(UserError, match="not a classification model"):
        resolve_model("torchvision.fcn_resnet50")  # a segmentation model
    with pytest.raises(UserError, match="freeze: backbone with pretrained: false"):
        create_model("torchvision.resnet18", num_classes=2, in_channels=3, image_size=[32, 32], freeze="backbone")
