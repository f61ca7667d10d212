"""Receptive fields of named layers against hand computation from the architectures.

The expected values are derived here, layer by layer, from each network's published
structure with the textbook recurrence (for a layer of kernel k, stride s, padding p on a map
whose units see `rf` pixels, `jump` apart, the first starting at `start`):

    rf' = rf + (k - 1) * jump,   jump' = jump * s,   start' = start - p * jump

and compared with `jaxcnn.viz.receptive_field`, which reads them off `jaxcnn.summary`.
"""

from __future__ import annotations

import pytest

import jaxcnn
from jaxcnn import viz


def chain(layers):
    """{name: (rf, jump, start)} along a sequence of (name, kernel, stride, padding)."""
    rf, jump, start, out = 1, 1, 0, {}
    for name, k, s, p in layers:
        rf, jump, start = rf + (k - 1) * jump, jump * s, start - p * jump
        out[name] = (rf, jump, start)
    return out


# LeNet-5: 5x5 valid convolutions, 2x2/2 average pools.
LENET5 = chain([("conv1", 5, 1, 0), ("pool1", 2, 2, 0), ("conv2", 5, 1, 0), ("pool2", 2, 2, 0)])

# torchvision AlexNet: conv 11/4 p2, pool 3/2, conv 5 p2, pool 3/2, three conv 3 p1, pool 3/2.
ALEXNET = chain(
    [
        ("features.0", 11, 4, 2),
        ("features.2", 3, 2, 0),
        ("features.3", 5, 1, 2),
        ("features.5", 3, 2, 0),
        ("features.6", 3, 1, 1),
        ("features.8", 3, 1, 1),
        ("features.10", 3, 1, 1),
        ("features.12", 3, 2, 0),
    ]
)


def _vgg16():
    # Configuration "D": 64 64 M 128 128 M 256x3 M 512x3 M 512x3 M, conv 3x3 p1, pool 2/2;
    # torchvision numbers the modules conv, relu, conv, relu, pool, ...
    cfg_d = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
    layers, i = [], 0
    for item in cfg_d:
        if item == "M":
            layers.append((f"features.{i}", 2, 2, 0))
            i += 1
        else:
            layers.append((f"features.{i}", 3, 1, 1))
            i += 2
    return chain(layers)


VGG16 = _vgg16()


def _resnet18():
    # conv1 7x7/2 p3, maxpool 3/2 p1, then [3x3 p1, 3x3 p1] x 2 per stage; the first conv of
    # stages 2-4 has stride 2.
    layers = [("conv1", 7, 2, 3), ("maxpool", 3, 2, 1)]
    for stage in range(1, 5):
        for block in range(2):
            s = 2 if stage > 1 and block == 0 else 1
            layers.append((f"layer{stage}.{block}.conv1", 3, s, 1))
            layers.append((f"layer{stage}.{block}.conv2", 3, 1, 1))
    return chain(layers)


RESNET18 = _resnet18()


@pytest.mark.parametrize(
    "name, input_shape, expected",
    [
        ("lenet5", (1, 32, 32, 1), LENET5),
        ("alexnet", (1, 64, 64, 3), ALEXNET),
        ("vgg16", (1, 32, 32, 3), VGG16),
        ("resnet18", (1, 32, 32, 3), RESNET18),
    ],
)
def test_receptive_fields_match_hand_computation(name, input_shape, expected):
    model = jaxcnn.create_model(name)
    for layer, (rf, jump, start) in expected.items():
        g = viz.receptive_field(model, layer, input_shape)
        assert g is not None, layer
        assert (g.rf, g.jump, g.start) == ((rf, rf), (jump, jump), (start, start)), layer


def test_published_receptive_fields():
    # The figures usually quoted, as an independent check of the recurrence above.
    assert LENET5["pool2"] == (16, 4, 0)
    assert ALEXNET["features.12"] == (195, 32, -66)
    assert VGG16["features.30"] == (212, 32, -90)
    assert RESNET18["layer4.1.conv2"] == (435, 32, -217)


def test_block_has_the_union_of_its_paths():
    # ResNet-18's layer2.0 adds conv2's output (field 67 from start -33) to the 1x1/2
    # shortcut's (layer1's field 43 from -21, subsampled): the block sees the union.
    model = jaxcnn.create_model("resnet18")
    g = viz.receptive_field(model, "layer2.0", (1, 32, 32, 3))
    shortcut = viz.receptive_field(model, "layer2.0.downsample.0", (1, 32, 32, 3))
    assert (shortcut.rf, shortcut.jump, shortcut.start) == ((43, 43), (8, 8), (-21, -21))
    assert (g.rf, g.jump, g.start) == ((67, 67), (8, 8), (-33, -33))


def test_fully_connected_layer_has_no_window():
    assert viz.receptive_field(jaxcnn.create_model("lenet5"), "fc1", (1, 32, 32, 1)) is None


def test_unknown_layer_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"no layer 'conv9'.*conv1, pool1, conv2, pool2, fc1"):
        viz.receptive_field(jaxcnn.create_model("lenet5"), "conv9", (1, 32, 32, 1))
