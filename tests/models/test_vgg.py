"""VGG: torchvision parity for all eight variants, the smallest input, init, training mode.
Counts, structure against torchvision's, limits, outputs and a training step are
test_registry.py's.

Each torchvision VGG holds 530-575 MB of float32 weights: every parity test builds one torch
model and drops it before the next, so that only one is alive at a time.
"""

from __future__ import annotations

import gc

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import ops
from jaxcnn.models import get_spec
from jaxcnn.xla import run_once_compiler_options
from tests.models.parity import assert_parity

NAMES = [f"vgg{depth}{bn}" for depth in (11, 13, 16, 19) for bn in ("", "_bn")]

# The minimum (last map 1x1, copied 7x7 by the adaptive pool) and an odd size whose 2x3 last
# map the adaptive pool really spreads over 7x7 with overlapping bins.
PARITY_SIZES = [(32, 32), (67, 101)]
# Absolute tolerances scaled to the logits (rtol 0: elementwise relative errors of logits that
# happen to be near 0 mean nothing). torchvision's init gives logits of magnitude 0.05-0.3
# without BatchNorm (max |diff| reached 4.1e-7, vgg13); with the helper's randomised BatchNorm
# statistics and affine parameters they reach 1-1.6 (max |diff| reached 1.5e-6, vgg11_bn).
PARITY_ATOL = {False: 1e-6, True: 5e-6}  # keyed by batch_norm


def test_names_are_the_registrys():
    assert NAMES == [n for n in jaxcnn.list_models() if n.startswith("vgg")]


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
    for name in NAMES:  # what the registry and the models' input checks hold them to
        assert get_spec(name).min_input_size == (32, 32)


@pytest.fixture(scope="module")
def vgg11_bn_variables():
    model = jaxcnn.create_model("vgg11_bn", num_classes=10)
    init = jax.jit(model.init, compiler_options=run_once_compiler_options())
    return init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


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


@pytest.mark.slow
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
