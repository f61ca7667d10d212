"""Projections to pixels, Grad-CAM and occlusion on networks whose answers are derived by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxcnn
from jaxcnn import viz

# ----------------------------------------------------------------------------- a two-layer net

ACTIVATIONS = {
    "relu": jax.nn.relu,  # what the zoo calls (as flax.linen.relu)
    "maximum": lambda v: jnp.maximum(v, 0.0),  # a ReLU written by hand
    "tanh": jnp.tanh,
}


class TwoLayer(nn.Module):
    """x (N, 1, 3, 1) -> hidden = x W1 (3 units) -> activation -> logits = . W2 (2 classes)."""

    act: str = "relu"

    @nn.compact
    def __call__(self, x, train=False):
        h = nn.Dense(3, use_bias=False, name="hidden")(x.reshape(x.shape[0], -1))
        return nn.Dense(2, use_bias=False, name="out")(ACTIVATIONS[self.act](h))


X = np.array([1.0, -1.0, 2.0], np.float32).reshape(1, 1, 3, 1)
W1 = np.array([[1, 0, 1], [-1, 2, 1], [1, 0, 1]], np.float32)
W2 = np.array([[-1, 0.5], [4, 0.5], [2, 0.5]], np.float32)
VARS = {"params": {"hidden": {"kernel": jnp.asarray(W1)}, "out": {"kernel": jnp.asarray(W2)}}}

# By hand: the hidden pre-activations h = x W1 are
#   h0 = 1*1 + (-1)*(-1) + 2*1 = 4,  h1 = (-1)*2 = -2,  h2 = 1*1 + (-1)*1 + 2*1 = 2,
# so the ReLU passes units 0 and 2. The gradient of logit 0 reaching the ReLUs from above is
# W2[:, 0] = g = (-1, 4, 2). Each rule turns g into the gradient below the ReLUs:
#   gradient:   g * [h > 0]           = (-1, 0, 2)
#   deconvnet:  relu(g)               = ( 0, 4, 2)
#   guided:     relu(g) * [h > 0]     = ( 0, 0, 2)
# and the input gradient is W1 times it: (1, 3, 1), (2, 10, 2), (2, 2, 2).
H = np.array([4.0, -2.0, 2.0])
G = W2[:, 0].astype(np.float64)
EXPECTED_RELU = {
    "saliency": np.array([1.0, 3.0, 1.0]),
    "deconvnet": np.array([2.0, 10.0, 2.0]),
    "guided_backprop": np.array([2.0, 2.0, 2.0]),
}
FUNCTIONS = {
    "saliency": viz.saliency,
    "deconvnet": viz.deconvnet,
    "guided_backprop": viz.guided_backprop,
}


def test_hand_derivation_is_consistent():
    np.testing.assert_allclose(X.reshape(3) @ W1, H)
    mask = (H > 0).astype(float)
    np.testing.assert_allclose(W1 @ (G * mask), EXPECTED_RELU["saliency"])
    np.testing.assert_allclose(W1 @ np.maximum(G, 0), EXPECTED_RELU["deconvnet"])
    np.testing.assert_allclose(W1 @ (np.maximum(G, 0) * mask), EXPECTED_RELU["guided_backprop"])


@pytest.mark.parametrize("act", ["relu", "maximum"])
@pytest.mark.parametrize("method", list(FUNCTIONS))
def test_relu_rules_match_hand_derivation(act, method):
    g = FUNCTIONS[method](TwoLayer(act), VARS, X, target=0)
    assert g.shape == X.shape
    np.testing.assert_allclose(np.asarray(g).reshape(3), EXPECTED_RELU[method], atol=1e-6)


def test_tanh_rules():
    # tanh: deconvnet passes relu(g) (derivative dropped, as for a ReLU); guided backprop
    # passes tanh'(h) * relu(g); the plain gradient tanh'(h) * g.
    d = 1 - np.tanh(H) ** 2
    expected = {
        "saliency": W1 @ (d * G),
        "deconvnet": W1 @ np.maximum(G, 0),
        "guided_backprop": W1 @ (d * np.maximum(G, 0)),
    }
    for method, fn in FUNCTIONS.items():
        g = np.asarray(fn(TwoLayer("tanh"), VARS, X, target=0)).reshape(3)
        np.testing.assert_allclose(g, expected[method], rtol=1e-5, atol=1e-6, err_msg=method)


def test_default_target_is_the_predicted_class():
    # logits = (0, 3): class 1 is predicted; its column of W2 is (0.5, 0.5, 0.5), so the
    # gradient is W1 @ ((0.5, 0.5, 0.5) * [h > 0]) = W1 @ (0.5, 0, 0.5) = (1, 0, 1).
    g = viz.saliency(TwoLayer(), VARS, X)
    np.testing.assert_allclose(np.asarray(g).reshape(3), [1.0, 0.0, 1.0], atol=1e-6)


@pytest.mark.parametrize("method", list(FUNCTIONS))
def test_unit_of_a_layer(method):
    # Hidden unit 1 before its activation is x . W1[:, 1]: its gradient is W1[:, 1] under
    # every rule (no activation below it).
    g = FUNCTIONS[method](TwoLayer(), VARS, X, target=1, layer="hidden")
    np.testing.assert_allclose(np.asarray(g).reshape(3), W1[:, 1], atol=1e-6)


def test_with_rule_keeps_the_forward_values():
    f = lambda v, x: TwoLayer().apply(v, x)  # noqa: E731
    for rule in ("gradient", "deconvnet", "guided"):
        np.testing.assert_array_equal(viz.with_rule(f, rule)(VARS, X), f(VARS, X))
    with pytest.raises(ValueError, match="rule"):
        viz.with_rule(f, "lrp")


def random_variables(model, shape, seed=0):
    """Variables of `model` for inputs of `shape`, drawn with NumPy: no compilation, unlike
    `model.init`, whose eager or jitted run dominates these small tests' time."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    abstract = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda a: jnp.asarray(0.3 * rng.standard_normal(a.shape), a.dtype), abstract
    )


class OneConv(nn.Module):
    """A single 3x3 valid convolution, 1 -> 2 channels, then global average pool + linear."""

    @nn.compact
    def __call__(self, x, train=False):
        y = nn.Conv(2, (3, 3), padding="VALID", use_bias=False, name="conv")(x)
        return nn.Dense(2, name="fc")(jnp.mean(jax.nn.relu(y), axis=(1, 2)))


def test_unit_projection_at_a_position():
    # d conv[n, i, j, c] / dx is the kernel of channel c placed over the unit's window.
    model = OneConv()
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 1))
    v = random_variables(model, x.shape)
    kernel = np.asarray(v["params"]["conv"]["kernel"][:, :, 0, 1])
    g = np.asarray(viz.deconvnet(model, v, x, target=1, layer="conv", position=(1, 2)))
    expected = np.zeros((6, 6))
    expected[1:4, 2:5] = kernel
    for n in range(2):
        np.testing.assert_allclose(g[n, ..., 0], expected, atol=1e-6)
    # Default position: where the channel is largest in each image.
    y = np.asarray(viz.feature_maps(model, v, x, "conv"))[..., 1]
    g = np.asarray(viz.saliency(model, v, x, target=1, layer="conv"))
    for n in range(2):
        i, j = np.unravel_index(np.argmax(y[n]), y[n].shape)
        expected = np.zeros((6, 6))
        expected[i : i + 3, j : j + 3] = kernel
        np.testing.assert_allclose(g[n, ..., 0], expected, atol=1e-6)


def test_bad_targets_and_positions():
    with pytest.raises(ValueError, match=r"`target`.*\[0, 2\)"):
        viz.saliency(TwoLayer(), VARS, X, target=2)
    with pytest.raises(ValueError, match="`position`"):
        viz.saliency(TwoLayer(), VARS, X, target=0, layer="hidden", position=(0, 0))
    with pytest.raises(ValueError, match=r"\(N, H, W, C\).*x\[None\]"):
        viz.saliency(TwoLayer(), VARS, X[0])


# ----------------------------------------------------------------------------- every model


@pytest.mark.parametrize(
    "name, shape, activations",
    [
        # Counted from the architectures: LeNet-5 tanh after conv1, conv2, fc1, fc2; the 1998
        # net squashes c1, s2, c3, s4, c5, f6; AlexNet 5 conv + 2 fc ReLUs; VGG-11 8 + 2;
        # ResNet-18 the stem + 2 per basic block x 8; GoogLeNet 3 stem convs + 6 per
        # inception block x 9.
        ("lenet5", (1, 32, 32, 1), 4),
        ("lenet5_1998", (1, 32, 32, 1), 6),
        ("alexnet", (1, 63, 63, 3), 7),
        ("vgg11", (1, 32, 32, 3), 10),
        ("resnet18", (1, 32, 32, 3), 17),
        ("googlenet", (1, 64, 64, 3), 57),
    ],
)
def test_every_activation_of_zoo_models_is_replaced(name, shape, activations):
    # Traced only: the rule's forward pass has one more custom_vjp call per activation, and
    # no ReLU (max with 0) or tanh is left.
    model = jaxcnn.create_model(name)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    v = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)

    def f(v, x):
        return model.apply(v, x, train=False)

    before = _count(jax.make_jaxpr(f)(v, x).jaxpr)
    after = _count(jax.make_jaxpr(viz.with_rule(f, "guided"))(v, x).jaxpr)
    assert before["custom_vjp_call"] + activations == after["custom_vjp_call"]
    assert before["relu"] + before["tanh"] == activations
    assert after["relu"] == after["tanh"] == 0


def _count(jaxpr) -> dict[str, int]:
    counts = {"custom_vjp_call": 0, "relu": 0, "tanh": 0}
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "custom_vjp_call":
            counts[name] += 1
            continue  # the pools' own backward rules: not activations
        if name == "tanh":
            counts["tanh"] += 1
        if name == "max" and any(
            isinstance(v, jax.extend.core.Literal) and np.asarray(v.val) == 0 for v in eqn.invars
        ):
            counts["relu"] += 1
        for key in ("jaxpr", "call_jaxpr"):
            sub = eqn.params.get(key)
            if sub is not None:
                for k, n in _count(getattr(sub, "jaxpr", sub)).items():
                    counts[k] += n
    return counts


# ----------------------------------------------------------------------------- Grad-CAM


class CamNet(nn.Module):
    """x -> 1x1 identity "conv" (layer "maps") -> global average pool -> linear (W)."""

    stride: int = 1

    @nn.compact
    def __call__(self, x, train=False):
        s = self.stride
        a = jaxcnn.layers.Conv(2, s, stride=s, use_bias=False, name="maps")(x)
        return nn.Dense(3, use_bias=False, name="fc")(jnp.mean(a, axis=(1, 2)))


def test_grad_cam_global_pool_linear():
    # logits_c = mean_ij sum_k A_ijk W_kc, so d logit_c / d A_ijk = W_kc / (h w): Grad-CAM's
    # weights are W[:, c] / 16 and the map is relu(sum_k A_k W_kc / 16) (Selvaraju et al.
    # note this equals CAM up to the factor).
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 4, 2)).astype(np.float32)
    w = rng.standard_normal((2, 3)).astype(np.float32)
    v = {"params": {"maps": {"kernel": jnp.eye(2).reshape(1, 1, 2, 2)}, "fc": {"kernel": w}}}
    out = viz.grad_cam(CamNet(), v, x, "maps", target=[0, 2])
    np.testing.assert_array_equal(out.target, [0, 2])
    np.testing.assert_allclose(out.weights, w[:, [0, 2]].T / 16, rtol=1e-6)
    expected = np.maximum(np.einsum("nhwk,nk->nhw", x, w[:, [0, 2]].T) / 16, 0)
    np.testing.assert_allclose(out.cam, expected, rtol=1e-5, atol=1e-7)
    # Receptive fields of 1 pixel: the heatmap is the map itself.
    np.testing.assert_allclose(out.heatmap, expected, rtol=1e-5, atol=1e-7)
    # Default target: the predicted class.
    logits = np.einsum("nhwk,kc->nc", x, w) / 16
    np.testing.assert_array_equal(viz.grad_cam(CamNet(), v, x, "maps").target, logits.argmax(1))


def test_grad_cam_heatmap_sits_on_receptive_field_centres():
    # A 2x2/2 layer on 4x4: unit row i sees pixel rows 2i and 2i + 1, centred at 2i + 0.5.
    # Pixel row 0 is before the first centre (it takes unit row 0's value), row 3 after the
    # last (unit row 1's); rows 1 and 2 lie 1/4 and 3/4 of the way from centre 0.5 to 2.5.
    x = np.zeros((1, 4, 4, 2), np.float32)
    x[0, 0:2, :, 0] = 4.0  # channel 0 is 4 on the windows of unit row 0, 0 elsewhere
    kernel = np.zeros((2, 2, 2, 2), np.float32)
    kernel[..., 0, 0] = 0.25  # map 0 = sum of the window's channel 0 / 4, i.e. 4 or 0
    w = np.array([[1.0, 0, 0], [0, 0, 0]], np.float32)
    v = {"params": {"maps": {"kernel": jnp.asarray(kernel)}, "fc": {"kernel": w}}}
    out = viz.grad_cam(CamNet(stride=2), v, x, "maps", target=0)
    # weight of map 0 = W[0, 0] / (2 * 2) = 1/4, so cam = relu(A / 4) = 1 on unit row 0.
    np.testing.assert_allclose(out.cam[0], [[1.0, 1.0], [0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(out.heatmap[0, :, 0], [1.0, 0.75, 0.25, 0.0], atol=1e-6)


# ----------------------------------------------------------------------------- occlusion


class SpotNet(nn.Module):
    """Class 0's logit is 10 x the mean of rows/cols 8..11 of channel 0; class 1's is 0."""

    @nn.compact
    def __call__(self, x, train=False):
        spot = jnp.mean(x[:, 8:12, 8:12, 0], axis=(1, 2))
        return jnp.stack([10.0 * spot, jnp.zeros_like(spot)], axis=1)


def test_occlusion_finds_the_one_region_the_answer_depends_on():
    x = np.zeros((1, 16, 16, 1), np.float32)
    x[0, 8:12, 8:12, 0] = 1.0
    occ = viz.occlusion(SpotNet(), {}, x, target=0, size=4, stride=2)
    p_full = 1 / (1 + np.exp(-10.0))
    np.testing.assert_allclose(occ.baseline, [p_full], rtol=1e-6)
    np.testing.assert_array_equal(occ.rows, [0, 2, 4, 6, 8, 10, 12])
    overlap = np.zeros((7, 7))
    for i, r in enumerate(occ.rows):
        for j, c in enumerate(occ.cols):
            rows = max(0, min(r + 4, 12) - max(r, 8))
            cols = max(0, min(c + 4, 12) - max(c, 8))
            overlap[i, j] = rows * cols / 16  # fraction of the spot the square hides
    # With the spot's mean m = 1 - overlap, p(class 0) = sigmoid(10 m).
    expected = p_full - 1 / (1 + np.exp(-10 * (1 - overlap)))
    np.testing.assert_allclose(occ.drop[0], expected, rtol=1e-5, atol=1e-6)
    assert np.unravel_index(occ.drop[0].argmax(), (7, 7)) == (4, 4)  # the square on the spot
    assert (occ.drop[0][overlap == 0] == 0).all()
    # Per pixel, only pixels some overlapping square covers (rows/cols 5..14) show a drop.
    heat = occ.heatmap[0]
    assert heat[8:12, 8:12].min() > 0.1
    assert heat[:5].max() == heat[:, :5].max() == 0


def test_occlusion_fill_and_arguments():
    x = np.ones((1, 16, 16, 1), np.float32)
    # Filling with the image's own value hides nothing.
    occ = viz.occlusion(SpotNet(), {}, x, target=0, size=4, fill=1.0)
    np.testing.assert_allclose(occ.drop, 0.0, atol=1e-7)
    assert occ.size == 4 and occ.rows[-1] == 12
    with pytest.raises(ValueError, match="`size`"):
        viz.occlusion(SpotNet(), {}, x, size=17)
    with pytest.raises(ValueError, match="`fill`"):
        viz.occlusion(SpotNet(), {}, x, fill=[0.0, 0.0])
    with pytest.raises(ValueError, match="`target`"):
        viz.occlusion(SpotNet(), {}, x, target=[0, 1])
