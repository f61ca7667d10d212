"""VGG's staged training: a deeper VGG initialised from a trained shallower one."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcnn import convert, transfer


def init(name, num_classes, seed):
    """Variables of VGG `name` whose every array is filled with its own value (seed + i).

    Distinct constants show exactly where each copied array came from, and cost far less
    than a random initialisation of VGG's 100M-weight first fully connected layer.
    """
    template = convert.template(name, num_classes=num_classes)
    leaves, treedef = jax.tree.flatten(template)
    return jax.tree.unflatten(
        treedef, [np.full(t.shape, seed + i, t.dtype) for i, t in enumerate(leaves)]
    )


@pytest.mark.slow
def test_vgg11_to_vgg16_copies_the_first_four_convolutions_and_the_classifier():
    src = init("vgg11", 10, 0)  # "trained" configuration A
    dst = init("vgg16", 10, 1000)  # freshly initialised configuration D
    # From an in-memory torchvision state dict: the variant is recognised from its keys.
    out, report = transfer.initialize_from(
        convert.to_torch("vgg11", src, num_classes=10),
        dst,
        model="vgg16",
        mapping="vgg_stages",
        input_shape=(32, 32, 3),
    )
    # conv1_1, conv2_1, conv3_1, conv3_2 of A go to the same stage and position in D.
    assert report["pairs"] == [
        ("features.0", "features.0"),
        ("features.3", "features.5"),
        ("features.6", "features.10"),
        ("features.8", "features.12"),
        ("classifier.0", "classifier.0"),
        ("classifier.3", "classifier.3"),
        ("classifier.6", "classifier.6"),
    ]
    copied = ["classifier.0", "classifier.3", "classifier.6"] + [
        f"features.{i}" for i in (0, 10, 12, 5)
    ]
    assert report["copied"] == sorted(copied)
    fresh = {f"features.{i}" for i in (2, 7, 14, 17, 19, 21, 24, 26, 28)}
    assert set(report["new"]) == fresh
    p, ps, pd = out["params"], src["params"], dst["params"]
    for a, b in report["pairs"]:
        for leaf in ("kernel", "bias"):
            np.testing.assert_array_equal(p[b][leaf], ps[a][leaf])
    for layer in fresh:  # the intermediate layers stay as initialised
        np.testing.assert_array_equal(p[layer]["kernel"], pd[layer]["kernel"])
    shapes = jax.tree.map(np.shape, out)
    assert shapes == jax.tree.map(np.shape, convert.template("vgg16", num_classes=10))


def test_vgg_stages_with_batchnorm_and_another_class_count():
    src = init("vgg11_bn", 1000, 0)
    dst = init("vgg13_bn", 10, 1000)
    out, report = transfer.vgg_stage_init("vgg11_bn", src, "vgg13_bn", dst)
    # BatchNorms come along with their convolutions; the 10-class head stays fresh.
    assert ("features.4", "features.7") in report["pairs"]  # A's conv2_1 -> B's conv2_1
    assert ("features.5", "features.8") in report["pairs"]  # ... and their BatchNorms
    assert "classifier.6" in report["new"] and "classifier.3" in report["copied"]
    np.testing.assert_array_equal(
        out["batch_stats"]["features.8"]["var"], src["batch_stats"]["features.5"]["var"]
    )
    np.testing.assert_array_equal(
        out["params"]["classifier.6"]["kernel"], dst["params"]["classifier.6"]["kernel"]
    )


def test_vgg_stages_errors():
    with pytest.raises(ValueError, match="vgg_stages needs VGG models"):
        transfer.vgg_stage_init("resnet18", {}, "vgg16", {})
    with pytest.raises(ValueError, match="both have BatchNorm or neither"):
        transfer.vgg_stage_init("vgg11", {}, "vgg16_bn", {})
    with pytest.raises(ValueError, match=r"num_conv must be an int in \[1, 8\]"):
        transfer.vgg_stage_init("vgg11", {}, "vgg16", {}, num_conv=9)
    with pytest.raises(ValueError, match="init_mapping must be one of"):
        transfer.initialize_from({}, {}, model="vgg16", mapping="vgg")
    with pytest.raises(ValueError, match="is not a VGG of torchvision's layout"):
        transfer.initialize_from({"fc.weight": np.zeros((2, 2))}, {}, model="vgg16",
                                 mapping="vgg_stages")  # fmt: skip
