"""jaxcnn.summary: MACs against torchvision's published figures, receptive fields by hand."""

from __future__ import annotations

import pytest
from flax import linen as nn

import jaxcnn
from jaxcnn import layers


# torchvision's model cards list "GFLOPS" that are multiply-accumulates of the convolutions
# and fully connected layers at the model's native input size.
@pytest.mark.parametrize(
    "name,input_shape,gmacs",
    [
        ("alexnet", (1, 224, 224, 3), 0.714),
        ("vgg16", (1, 224, 224, 3), 15.47),
        ("googlenet", (1, 224, 224, 3), 1.498),
        ("inception_v3", (1, 299, 299, 3), 5.713),
        ("resnet50", (1, 224, 224, 3), 4.089),
    ],
)
def test_macs_match_torchvision_published(name, input_shape, gmacs):
    s = jaxcnn.summary(name, input_shape)
    assert s.total_macs / 1e9 == pytest.approx(gmacs, rel=0.01)
    assert s.total_params == jaxcnn.models.get_spec(name).num_params
    assert s.total_macs == sum(r.macs for r in s.layers)


@pytest.mark.parametrize(
    "name,kwargs", [("googlenet", {"aux_logits": True}), ("lenet5_1998", {}), ("resnet18", {})]
)
def test_rows_add_up_to_the_totals(name, kwargs):
    """Every parameter is in some row, also those of heads that run only in training."""
    s = jaxcnn.summary(name, **kwargs)
    assert sum(r.params for r in s.layers) == s.total_params
    if kwargs.get("aux_logits"):
        assert s.layer("aux1.fc2").kind == "not run in evaluation"


def test_macs_scale_with_batch():
    one = jaxcnn.summary("resnet18", (1, 64, 64, 3)).total_macs
    assert jaxcnn.summary("resnet18", (3, 64, 64, 3)).total_macs == 3 * one


def test_vgg16_compute_in_convs_parameters_in_fc():
    """The lecture's point: most compute in the convolutions, most parameters in the FC layers."""
    s = jaxcnn.summary("vgg16")
    assert s.conv_macs / s.total_macs > 0.99
    assert s.dense_params / s.total_params > 0.85
    text = str(s)
    assert "fully connected" in text and "features.0" in text and "classifier.0" in text


def _rf(s, layer):
    row = s.layer(layer)
    return row.receptive_field, row.jump


@pytest.mark.parametrize(
    "name,layer,rf,jump",
    [
        # AlexNet: 11/4 conv, 3/2 pools, 5x5 and 3x3 convs: 11, 19, 51, 67, 99, 131, 163, 195.
        ("alexnet", "features.0", 11, 4),
        ("alexnet", "features.2", 19, 8),
        ("alexnet", "features.3", 51, 8),
        ("alexnet", "features.5", 67, 16),
        ("alexnet", "features.10", 163, 16),
        ("alexnet", "features.12", 195, 32),
        # VGG-16: each 3x3 conv adds 2 * jump, each 2x2 pool adds 1 * jump and doubles it.
        ("vgg16", "features.2", 5, 1),
        ("vgg16", "features.4", 6, 2),
        ("vgg16", "features.16", 44, 8),
        ("vgg16", "features.23", 100, 16),
        ("vgg16", "features.30", 212, 32),
        ("vgg16", "avgpool", 212, 32),  # 7x7 -> 7x7: an identity, the input's geometry
        # ResNet-18: stem 7, maxpool 11, then 3x3 convs; the classic figure of 435.
        ("resnet18", "conv1", 7, 2),
        ("resnet18", "maxpool", 11, 4),
        ("resnet18", "layer1.1.conv2", 43, 4),
        ("resnet18", "layer2.0.conv1", 51, 8),
        ("resnet18", "layer2.0.downsample.0", 43, 8),
        ("resnet18", "layer3.1.conv2", 211, 16),
        ("resnet18", "layer4.1.conv2", 435, 32),
    ],
)
def test_receptive_fields_by_hand(name, layer, rf, jump):
    s = jaxcnn.summary(name)
    assert _rf(s, layer) == ((rf, rf), (jump, jump))


def test_geometry_start_and_windows():
    s = jaxcnn.summary("alexnet")
    g = s.layer("features.0").geometry  # 11x11, stride 4, padding 2
    assert g.start == (-2, -2)
    assert g.window(0, 0) == ((-2, 9), (-2, 9))
    assert g.window(1, 2) == ((2, 13), (6, 17))
    # After the flatten the classifier's units see everything: no sliding-window geometry.
    assert s.layer("classifier.1").geometry is None


def test_summary_of_a_module_and_errors():
    class Tiny(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = layers.Conv(4, 3, stride=2, padding=1, dilation=1, name="c")(x)
            x = layers.MaxPool(2, name="p")(x)
            return layers.Dense(3, name="fc")(layers.flatten_chw(x))

    s = jaxcnn.summary(Tiny(), (2, 8, 8, 1))
    assert [r.name for r in s.layers] == ["c", "p", "fc"]
    assert s.layer("c").macs == 2 * 4 * 4 * 4 * 9 and s.layer("c").params == 40
    assert s.layer("fc").macs == 2 * 16 * 3 and s.layer("fc").params == 51
    assert s.layer("p").receptive_field == (5, 5) and s.layer("p").jump == (4, 4)
    with pytest.raises(ValueError, match=r"no layer 'q'; its layers are: c, p, fc"):
        s.layer("q")
    with pytest.raises(ValueError, match=r"input_shape.*required"):
        jaxcnn.summary(Tiny())
    with pytest.raises(ValueError, match=r"unknown model"):
        jaxcnn.summary("tiny")


def test_lenet5_1998_counts_only_connected_weights():
    """LeCun et al. 1998: C3 has 151,600 connections, 1,500 weights x 100 positions + biases."""
    s = jaxcnn.summary("lenet5_1998")
    assert s.layer("c3").macs == 1500 * 100
    assert s.layer("c1").macs == 6 * 25 * 28 * 28  # 122,304 connections minus 4,704 biases
    assert s.layer("c3").receptive_field == (14, 14)
