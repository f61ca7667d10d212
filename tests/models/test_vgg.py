"""VGG: torchvision parity for all eight variants, parameter counts, sizes, init, training mode.

Each torchvision VGG holds 530-575 MB of float32 weights: every parity test builds one torch
model and drops it before the next, so that only one is alive at a time.
"""

from __future__ import annotations

import gc
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import ops
from jaxcnn.models import get_spec
from jaxcnn.models.vgg import CFGS
from tests.models.parity import assert_parity

# torchvision's parameter counts (sum of p.numel() over torchvision.models.<name>(weights=None)
# .parameters() with torchvision 0.29.1).
EXPECTED_PARAMS = {
    "vgg11": 132_863_336,
    "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848,
    "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544,
    "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240,
    "vgg19_bn": 143_678_248,
}
NAMES = list(EXPECTED_PARAMS)

# The minimum (last map 1x1, copied 7x7 by the adaptive pool) and an odd size whose 2x3 last
# map the adaptive pool really spreads over 7x7 with overlapping bins.
PARITY_SIZES = [(32, 32), (67, 101)]
# Absolute tolerances scaled to the logits (rtol 0: elementwise relative errors of logits that
# happen to be near 0 mean nothing). torchvision's init gives logits of magnitude 0.05-0.3
# without BatchNorm (max |diff| reached 4.1e-7, vgg13); with the helper's randomised BatchNorm
# statistics and affine parameters they reach 1-1.6 (max |diff| reached 1.5e-6, vgg11_bn).
PARITY_ATOL = {False: 1e-6, True: 5e-6}  # keyed by batch_norm

SMALLEST = re.escape("smallest valid input is (N, 32, 32, 3)")


def _abstract_init(name, h=32, w=32, c=3, **kw):
    model = jaxcnn.create_model(name, **kw)
    x = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


@pytest.mark.parametrize("name", NAMES)
def test_param_count(name):
    variables = _abstract_init(name, 224, 224)
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == EXPECTED_PARAMS[name]
    assert get_spec(name).num_params == EXPECTED_PARAMS[name]
    assert ("batch_stats" in variables) == name.endswith("_bn")


def test_cfgs_are_torchvisions():
    from torchvision.models.vgg import cfgs

    assert {k: tuple(v) for k, v in cfgs.items()} == CFGS


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_parity(torch, name):
    import torchvision

    torch_model = getattr(torchvision.models, name)(weights=None)
    try:
        atol = PARITY_ATOL[name.endswith("_bn")]
        worst = assert_parity(torch, name, torch_model, PARITY_SIZES, rtol=0.0, atol=atol)
        assert worst <= atol
        # The reference itself fails (at the fifth max-pool) one pixel below our minimum.
        for h, w in [(31, 32), (32, 31)]:
            with pytest.raises(RuntimeError, match="too small"), torch.no_grad():
                torch_model(torch.zeros(1, 3, h, w))
    finally:
        del torch_model
        gc.collect()


def test_min_input_size_follows_from_the_geometry():
    """3x3 pad-1 convolutions keep the size; the five 2x2/2 pools each need >= 2 rows."""

    def admits(h):
        try:
            for _ in range(5):
                h = ops.conv_output_size(h, 2, 2)
        except ValueError:  # a pool's output would be empty
            return False
        return True

    assert not admits(31) and all(admits(h) for h in range(32, 100))


@pytest.mark.parametrize("name", NAMES)
def test_min_input_size(name):
    assert get_spec(name).min_input_size == (32, 32)
    model = jaxcnn.create_model(name)
    variables = _abstract_init(name)
    y = jax.eval_shape(model.apply, variables, jax.ShapeDtypeStruct((2, 32, 32, 3), "f4"))
    assert y.shape == (2, 1000) and y.dtype == jnp.float32
    for h, w in [(31, 32), (32, 31)]:
        with pytest.raises(ValueError, match=SMALLEST):
            _abstract_init(name, h, w)


@pytest.mark.parametrize("shape", [(1, 32, 32, 1), (32, 32, 3), (1, 3, 32, 32)])
def test_bad_input_raises(shape):
    model = jaxcnn.create_model("vgg16")
    with pytest.raises(ValueError, match=SMALLEST):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.fixture(scope="module")
def vgg11_bn_variables():
    model = jaxcnn.create_model("vgg11_bn", num_classes=10)
    return jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


@pytest.mark.slow
def test_torchvision_initialisation(vgg11_bn_variables):
    """kaiming_normal(fan_out, relu) convolutions, N(0, 0.01) linears, zero biases, BN 1/0."""
    params = vgg11_bn_variables["params"]
    for name, p in params.items():
        if "kernel" in p and p["kernel"].ndim == 4:  # convolution
            kh, kw, _, c_out = p["kernel"].shape
            std = np.sqrt(2.0 / (kh * kw * c_out))
            assert abs(np.std(p["kernel"]) / std - 1) < 0.05, name
            np.testing.assert_array_equal(p["bias"], 0, err_msg=name)
        elif "kernel" in p:  # linear
            assert abs(np.std(p["kernel"]) / 0.01 - 1) < 0.05, name
            np.testing.assert_array_equal(p["bias"], 0, err_msg=name)
        else:  # BatchNorm
            np.testing.assert_array_equal(p["scale"], 1, err_msg=name)
            np.testing.assert_array_equal(p["bias"], 0, err_msg=name)
    assert sorted(params, key=lambda k: (k.split(".")[0], int(k.split(".")[1]))) == [
        *(f"classifier.{i}" for i in (0, 3, 6)),
        *(f"features.{i}" for i in (0, 1, 4, 5, 8, 9, 11, 12, 15, 16, 18, 19, 22, 23, 25, 26)),
    ]


def test_training_mode(vgg11_bn_variables):
    """train=True: batch statistics update (PyTorch's rule) and dropout uses its RNG stream."""
    model = jaxcnn.create_model("vgg11_bn", num_classes=10)
    x = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))

    @jax.jit
    def train_apply(variables, x, key):
        return model.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])

    y1, updates = train_apply(vgg11_bn_variables, x, jax.random.key(2))
    y2, _ = train_apply(vgg11_bn_variables, x, jax.random.key(3))
    assert y1.shape == (2, 10) and y1.dtype == jnp.float32
    assert np.abs(y1 - y2).max() > 0  # different dropout masks

    stats = updates["batch_stats"]
    assert set(stats) == set(vgg11_bn_variables["batch_stats"])
    first = stats["features.1"]
    assert int(first["num_batches_tracked"]) == 1
    # The first BatchNorm sees conv(x): its new running mean is 0.1 * the batch mean.
    conv = vgg11_bn_variables["params"]["features.0"]
    h = ops.conv2d(x, conv["kernel"], conv["bias"], padding=1)
    np.testing.assert_allclose(first["mean"], 0.1 * jnp.mean(h, (0, 1, 2)), rtol=1e-4, atol=1e-6)
    n = h.size // h.shape[-1]
    unbiased = jnp.var(h, (0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(first["var"], 0.9 + 0.1 * unbiased, rtol=1e-4)
