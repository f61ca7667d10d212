"""Filters, feature maps, layer names (and the error for an unknown one), and the figures."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from PIL import Image

import jaxcnn
from jaxcnn import layers, ops, viz


def random_variables(model, shape, seed=0):
    """Variables of `model` for inputs of `shape`, drawn with NumPy: no compilation, unlike
    `model.init`, whose eager or jitted run dominates these small tests' time."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype), abstract
    )


@pytest.fixture(scope="module")
def lenet():
    model = jaxcnn.create_model("lenet5")
    x = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
    return model, random_variables(model, x.shape), x


LENET_LAYERS = ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "fc3"]


def test_layer_shapes_in_call_order(lenet):
    model, _, _ = lenet
    shapes = viz.layer_shapes(model, (2, 32, 32, 1))
    assert list(shapes) == LENET_LAYERS
    assert shapes["conv1"] == (2, 28, 28, 6) and shapes["pool2"] == (2, 5, 5, 16)


def test_feature_maps_are_the_layer_outputs(lenet):
    model, v, x = lenet
    p = v["params"]
    conv1 = ops.conv2d(x, p["conv1"]["kernel"], p["conv1"]["bias"])
    np.testing.assert_allclose(viz.feature_maps(model, v, x, "conv1"), conv1, rtol=1e-5, atol=1e-6)
    pool1 = ops.avg_pool2d(jnp.tanh(conv1), 2)
    np.testing.assert_allclose(viz.feature_maps(model, v, x, "pool1"), pool1, rtol=1e-5, atol=1e-6)
    assert viz.feature_maps(model, v, x, "fc2").shape == (2, 84)


class Block(nn.Module):
    """relu(conv(x) + x), a residual block with one child."""

    @nn.compact
    def __call__(self, x):
        return jax.nn.relu(layers.Conv(x.shape[-1], 3, padding=1, name="conv")(x) + x)


class BlockNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return jnp.mean(Block(name="layer1.0")(x), axis=(1, 2))


def test_feature_maps_and_field_of_a_block():
    # A block is a layer too: its output is after the addition and ReLU, so non-negative.
    model = BlockNet()
    x = jax.random.normal(jax.random.key(0), (1, 6, 6, 2))
    v = random_variables(model, x.shape)
    assert list(viz.layer_shapes(model, x.shape)) == ["layer1.0.conv", "layer1.0"]
    y = viz.feature_maps(model, v, x, "layer1.0")
    conv = viz.feature_maps(model, v, x, "layer1.0.conv")
    np.testing.assert_allclose(y, jax.nn.relu(conv + x), rtol=1e-6)
    g = viz.receptive_field(model, "layer1.0", x.shape)
    assert (g.rf, g.jump, g.start) == ((3, 3), (1, 1), (-1, -1))


@pytest.mark.parametrize(
    "call",
    [
        lambda m, v, x: viz.feature_maps(m, v, x, "conv3"),
        lambda m, v, x: viz.receptive_field(m, "conv3", x.shape),
        lambda m, v, x: viz.top_patches(m, v, [x], "conv3", [0]),
        lambda m, v, x: viz.saliency(m, v, x, layer="conv3"),
        lambda m, v, x: viz.deconvnet(m, v, x, layer="conv3"),
        lambda m, v, x: viz.guided_backprop(m, v, x, layer="conv3"),
        lambda m, v, x: viz.grad_cam(m, v, x, "conv3"),
    ],
    ids=[
        "feature_maps",
        "receptive_field",
        "top_patches",
        "saliency",
        "deconvnet",
        "guided_backprop",
        "grad_cam",
    ],
)
def test_unknown_layer_name_lists_the_valid_ones(lenet, call):
    model, v, x = lenet
    with pytest.raises(ValueError) as info:
        call(model, v, x)
    message = str(info.value)
    assert "'conv3'" in message and ", ".join(LENET_LAYERS) in message


def test_unknown_filter_layer_lists_the_convolutions(lenet):
    _, v, _ = lenet
    with pytest.raises(ValueError, match=r"no convolution named 'fc1'.*: conv1, conv2$"):
        viz.filters(v, "fc1")


def test_layer_name_must_be_a_string(lenet):
    model, v, x = lenet
    with pytest.raises(TypeError, match="`layer`"):
        viz.feature_maps(model, v, x, 3)


# ----------------------------------------------------------------------------- filters


def test_first_layer_filters_grey(lenet):
    _, v, _ = lenet
    assert list(viz.conv_kernels(v)) == ["conv1", "conv2"]
    f = viz.filters(v)  # the first convolution
    assert f.shape == (6, 5, 5, 1)
    w = np.asarray(v["params"]["conv1"]["kernel"])[:, :, 0, :]  # (5, 5, 6)
    for k in range(6):
        expected = (w[..., k] - w[..., k].min()) / np.ptp(w[..., k])  # each on its own
        np.testing.assert_allclose(f[k, ..., 0], expected, rtol=1e-5, atol=1e-6)


def test_deeper_filters_summed_over_inputs(lenet):
    _, v, _ = lenet
    f = viz.filters(v, "conv2")  # 6 input channels: summed by default
    assert f.shape == (16, 5, 5, 1)
    s = np.asarray(v["params"]["conv2"]["kernel"]).sum(axis=2)[..., 3]
    np.testing.assert_allclose(f[3, ..., 0], (s - s.min()) / np.ptp(s), rtol=1e-5, atol=1e-6)


class RGBNet(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return layers.Conv(4, 3, name="stem")(x)


def test_rgb_filters_keep_their_colours():
    v = random_variables(RGBNet(), (1, 8, 8, 3))
    f = viz.filters(v)
    assert f.shape == (4, 3, 3, 3)
    assert np.allclose(f.min(axis=(1, 2, 3)), 0) and np.allclose(f.max(axis=(1, 2, 3)), 1)
    assert viz.filters(v, sum_channels=True).shape == (4, 3, 3, 1)
    with pytest.raises(ValueError, match="no convolution kernel"):
        viz.filters({"params": {}})


# ----------------------------------------------------------------------------- figures


def test_image_grid_layout():
    imgs = np.arange(5 * 2 * 2, dtype=np.float32).reshape(5, 2, 2, 1)
    g = viz.image_grid(imgs, ncols=3, pad=1, pad_value=-1)
    assert g.shape == (2 * 2 + 1, 3 * 2 + 2, 1)
    np.testing.assert_array_equal(g[0:2, 3:5, 0], imgs[1, ..., 0])
    np.testing.assert_array_equal(g[3:5, 0:2, 0], imgs[3, ..., 0])
    assert (g[2] == -1).all() and (g[3:5, 6:8] == -1).all()  # padding and the empty tile


def test_unnormalize():
    x = np.array([[[[-1.0, 0.0, 10.0]]]])
    y = viz.unnormalize(x, [0.5, 0.5, 0.5], [0.25, 0.1, 0.1])
    np.testing.assert_allclose(y, [[[[0.25, 0.5, 1.0]]]])


def _png(path):
    with Image.open(path) as im:
        im.load()
        return im.size


def test_figures_write_pngs(tmp_path, lenet):
    model, v, x = lenet
    # A tiny stream for top patches; Grad-CAM and occlusion on two images.
    top = viz.top_patches(model, v, [x], "conv2", [0, 1, 2], k=2)
    cam = viz.grad_cam(model, v, x, "conv2")
    occ = viz.occlusion(model, v, x, size=16, stride=16)
    figs = {
        "filters.png": viz.plot_filters(viz.filters(v), "filters"),
        "maps.png": viz.plot_feature_maps(np.asarray(viz.feature_maps(model, v, x, "conv1"))[0]),
        "top.png": viz.plot_top_patches(top, mean=0.5, std=0.25),
        "panel.png": viz.plot_attributions(
            viz.unnormalize(x, 0.5, 0.25),
            [
                viz.Column("saliency", np.asarray(viz.saliency(model, v, x)), "heat"),
                viz.Column("deconvnet", np.asarray(viz.deconvnet(model, v, x)), "signed"),
                viz.Column("Grad-CAM", cam.heatmap, "overlay"),
                viz.Column("occlusion", occ.heatmap, "overlay", vmax=1.0, captions=["a", "b"]),
            ],
            row_labels=["one", "two"],
            title="panel",
        ),
    }
    for name, fig in figs.items():
        path = viz.save_figure(fig, tmp_path / "sub" / name)
        w, h = _png(path)
        assert 100 <= w <= 3000 and 100 <= h <= 3000, (name, w, h)
    # The panel: 5 columns of 1.9 inches at 100 dpi, 2 rows.
    assert _png(tmp_path / "sub" / "panel.png") == (950, 440)
    with pytest.raises(ValueError, match="style"):
        viz.plot_attributions(np.zeros((1, 4, 4, 1)), [viz.Column("x", np.zeros((1, 4, 4)), "?")])
