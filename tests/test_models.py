"""Tests of `trainables.models`: every registered model, the five tutorial networks layer by layer
(parameter counts worked out by hand from SEEDS.md), and ResNet18 transfer heads and freezing."""
from __future__ import annotations

import pytest
import torch
from _fixtures import SPACES
from torch import nn

from search.spec import load_spec
from trainables.errors import UserError
from trainables.models import MODELS, count_parameters, create_model, list_models, model_hparams, output_shape, parse_channels
from trainables.train import split_hparams

# Options a registered model needs to build here (offline, no downloaded weights).
OFFLINE_OPTIONS = {"resnet18": {"pretrained": False}}


# ---------------------------------------------------------------------------------------------
# Registry-generated


@pytest.mark.parametrize("name", list_models())
def test_registered_model_output_shape(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=3, image_size=[32, 32], **OFFLINE_OPTIONS.get(name, {}))
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    assert output_shape(model, 3, (32, 32)) == (1, 7)
    assert count_parameters(model) > 0


@pytest.mark.parametrize("name", list_models())
def test_registered_model_hparams_exclude_shape_args(name):
    hps = model_hparams(name)
    assert not hps & {"num_classes", "in_channels", "image_size"}
    assert hps <= MODELS.accepted_options(name)


def test_unknown_model_lists_the_choices():
    with pytest.raises(UserError) as info:
        create_model("vgg16", num_classes=10, in_channels=3, image_size=32)
    message = str(info.value)
    assert "vgg16" in message
    for name in list_models():
        assert name in message


def test_unknown_model_option():
    with pytest.raises(UserError, match=r"does not take option\(s\) \['depth'\]"):
        create_model("cnn", num_classes=10, in_channels=3, image_size=32, depth=3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"channels": "16-x"}, "channels must look like"),
        ({"channels": [0, 4]}, "positive integers"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"dropout": 1.0}, "dropout"),
        ({"pool": [True]}, "pool has 1 entries"),
        ({"channels": "4-4-4-4", "image_size": 4}, "too many pooling blocks"),
    ],
)
def test_cnn_option_errors(kwargs, match):
    args = {"num_classes": 3, "in_channels": 3, "image_size": 32, **kwargs}
    with pytest.raises(UserError, match=match):
        create_model("cnn", **args)


def test_parse_channels_forms():
    assert parse_channels("16-32-64") == [16, 32, 64]
    assert parse_channels(8) == [8]
    assert parse_channels([4, 8]) == [4, 8]


def test_cnn_width_mult_and_non_square_input():
    model = create_model("cnn", num_classes=5, in_channels=1, image_size=[16, 24], channels="8-16", width_mult=0.5, hidden=0)
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [4, 8]
    assert model[-1].in_features == 8 * 4 * 6  # 16x24 pooled twice
    assert model(torch.zeros(3, 1, 16, 24)).shape == (3, 5)


# ---------------------------------------------------------------------------------------------
# The tutorial networks (SEEDS.md), built from each spec's baseline


def _describe(model: nn.Module) -> list[tuple]:
    """(layer type, shape) per layer of a Sequential: what the tutorials write down."""
    out = []
    for m in model:
        if isinstance(m, nn.Conv2d):
            out.append(("Conv2d", m.in_channels, m.out_channels, m.kernel_size, m.padding))
        elif isinstance(m, nn.Linear):
            out.append(("Linear", m.in_features, m.out_features))
        elif isinstance(m, nn.BatchNorm2d):
            out.append(("BatchNorm2d", m.num_features))
        elif isinstance(m, nn.MaxPool2d):
            out.append(("MaxPool2d", m.kernel_size))
        elif isinstance(m, nn.Dropout):
            out.append(("Dropout", m.p))
        else:
            out.append((type(m).__name__,))
    return out


C3 = lambda i, o: ("Conv2d", i, o, (3, 3), (1, 1))  # noqa: E731 - conv3x3 'same'
RELU, POOL, FLAT = ("ReLU",), ("MaxPool2d", 2), ("Flatten",)

TUTORIALS = {
    # A: ConvNet(n_chans1=32), 64x64 RGB, 3 classes
    "tutorial_a_animals.yaml": dict(
        num_classes=3, in_channels=3, image_size=64,
        layers=[C3(3, 32), RELU, POOL, C3(32, 16), RELU, POOL, C3(16, 16), RELU, POOL, FLAT,
                ("Linear", 16 * 8 * 8, 32), RELU, ("Linear", 32, 3)],
        params=(3 * 32 * 9 + 32) + (32 * 16 * 9 + 16) + (16 * 16 * 9 + 16) + (16 * 8 * 8 * 32 + 32) + (32 * 3 + 3),
    ),
    # B: CIFAR-10, three conv blocks, dropout 0.25 after the convs and before the last FC
    "tutorial_b_cifar10.yaml": dict(
        num_classes=10, in_channels=3, image_size=32,
        layers=[C3(3, 16), RELU, POOL, C3(16, 32), RELU, POOL, C3(32, 64), RELU, POOL, FLAT, ("Dropout", 0.25),
                ("Linear", 64 * 4 * 4, 500), RELU, ("Dropout", 0.25), ("Linear", 500, 10)],
        params=(3 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 4 * 4 * 500 + 500) + (500 * 10 + 10),
    ),
    # C: MNIST, two conv blocks, FC straight to the 10 classes
    "tutorial_c_mnist.yaml": dict(
        num_classes=10, in_channels=1, image_size=28,
        layers=[C3(1, 8), RELU, POOL, C3(8, 16), RELU, POOL, FLAT, ("Linear", 16 * 7 * 7, 10)],
        params=(1 * 8 * 9 + 8) + (8 * 16 * 9 + 16) + (16 * 7 * 7 * 10 + 10),
    ),
    # D (scratch): 224x224, 133 breeds; BatchNorm (weight + bias) after the ReLU of blocks 2, 3
    "tutorial_d_dogs_scratch.yaml": dict(
        num_classes=133, in_channels=3, image_size=224,
        layers=[C3(3, 32), RELU, C3(32, 64), RELU, ("BatchNorm2d", 64), POOL, C3(64, 128), RELU, ("BatchNorm2d", 128), POOL,
                ("AdaptiveAvgPool2d",), FLAT, ("Linear", 128, 512), ("Dropout", 0.5), ("Linear", 512, 133)],
        params=(3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + 2 * 64 + (64 * 128 * 9 + 128) + 2 * 128 + (128 * 512 + 512) + (512 * 133 + 133),
    ),
    # E: CIFAR-10, two conv blocks, FC 64*8*8 -> 512 -> 10
    "tutorial_e_cifar10.yaml": dict(
        num_classes=10, in_channels=3, image_size=32,
        layers=[C3(3, 32), RELU, POOL, C3(32, 64), RELU, POOL, FLAT, ("Linear", 64 * 8 * 8, 512), RELU, ("Linear", 512, 10)],
        params=(3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 8 * 8 * 512 + 512) + (512 * 10 + 10),
    ),
}


def test_every_cnn_tutorial_spec_is_covered():
    cnn_tutorials = {p.name for p in SPACES.glob("tutorial_*.yaml") if load_spec(p).model == "cnn"}
    assert cnn_tutorials == set(TUTORIALS)


def test_hand_counted_parameter_totals():
    # the arithmetic above, summed (guards the table against typos)
    assert [TUTORIALS[k]["params"] for k in sorted(TUTORIALS)] == [40_739, 541_094, 9_098, 227_909, 2_122_186]


@pytest.mark.parametrize("spec_file", sorted(TUTORIALS))
def test_tutorial_network_matches_seeds(spec_file):
    want = TUTORIALS[spec_file]
    spec = load_spec(SPACES / spec_file)
    assert spec.model == "cnn"
    if "image_size" in spec.dataset_options:  # image folders: the size comes from the spec
        assert spec.dataset_options["image_size"] == want["image_size"]
    _, model_hp = split_hparams(spec.model, spec.baseline)
    size = want["image_size"]
    model = create_model(spec.model, num_classes=want["num_classes"], in_channels=want["in_channels"], image_size=size, **model_hp)

    assert _describe(model) == want["layers"]
    assert count_parameters(model) == want["params"]
    assert count_parameters(model, trainable_only=True) == want["params"]
    with torch.no_grad():
        out = model.eval()(torch.zeros(2, want["in_channels"], size, size))
    assert out.shape == (2, want["num_classes"])


# ---------------------------------------------------------------------------------------------
# ResNet18 transfer (tutorial D, pretrained: false here: no weights offline)

RESNET18_PARAMS = 11_689_512  # torchvision resnet18 with its 1000-way fc
HEAD_PARAMS = (1000 * 512 + 512) + (512 * 133 + 133)


def _transfer_model(freeze: str) -> nn.Module:
    spec = load_spec(SPACES / "tutorial_d_dogs_transfer.yaml", ["baseline.pretrained=false", f"baseline.freeze={freeze}"])
    _, model_hp = split_hparams(spec.model, spec.baseline)
    assert model_hp["pretrained"] is False
    return create_model(spec.model, num_classes=133, in_channels=3, image_size=224, **model_hp)


def test_resnet18_transfer_head_and_frozen_backbone():
    model = _transfer_model("backbone")
    head = model[1]
    assert _describe(head) == [("Linear", 1000, 512), RELU, ("Dropout", 0.5), ("Linear", 512, 133)]
    assert count_parameters(model) == RESNET18_PARAMS + HEAD_PARAMS
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"1.0.weight", "1.0.bias", "1.3.weight", "1.3.bias"}
    assert count_parameters(model, trainable_only=True) == HEAD_PARAMS
    with torch.no_grad():
        assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 133)


def test_resnet18_all_but_last_block_trains_layer4():
    model = _transfer_model("all_but_last_block")
    for name, p in model.named_parameters():
        expected = name.startswith(("0.layer4.", "0.fc.", "1."))
        assert p.requires_grad == expected, name
    layer4 = sum(p.numel() for n, p in model.named_parameters() if n.startswith("0.layer4."))
    assert count_parameters(model, trainable_only=True) == layer4 + (512 * 1000 + 1000) + HEAD_PARAMS


def test_resnet18_freeze_none_trains_everything():
    model = create_model("resnet18", num_classes=133, in_channels=3, image_size=224, pretrained=False, freeze="none")
    assert count_parameters(model, trainable_only=True) == count_parameters(model)


def test_resnet18_errors(tmp_path):
    with pytest.raises(UserError, match="freeze must be one of"):
        create_model("resnet18", num_classes=2, in_channels=3, image_size=32, pretrained=False, freeze="head")
    with pytest.raises(UserError, match="in_channels=3"):
        create_model("resnet18", num_classes=2, in_channels=1, image_size=32, pretrained=False)
    missing = tmp_path / "resnet18.pth"
    with pytest.raises(UserError, match="weights_path .* does not exist"):
        create_model("resnet18", num_classes=2, in_channels=3, image_size=32, weights_path=str(missing))


def test_resnet18_loads_local_weights(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    source = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = create_model("resnet18", num_classes=2, in_channels=3, image_size=32, weights_path=str(path))
    for k, v in source.state_dict().items():
        assert torch.equal(model[0].state_dict()[k], v), k
