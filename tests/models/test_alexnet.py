"""AlexNet: torchvision parity, and the 2012 paper's groups, LRN, initialisation and sizes.
Counts, limits, outputs and a training step of both models are test_registry.py's."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxcnn
from jaxcnn import convert, ops
from jaxcnn.models import get_spec
from jaxcnn.xla import run_once_compiler_options
from tests.models.expected import EXPECTED
from tests.models.parity import assert_parity

# Parity sizes: the minimum (the last map is 1x1, copied by the adaptive pool), an odd size
# whose 3x4 last map the adaptive pool really averages into 6x6, and the design size.
PARITY_SIZES = [(63, 63), (131, 163), (224, 224)]
# torchvision's AlexNet has PyTorch's default init, under which its logits are small (|y| up to
# ~0.03), so the tolerance is absolute, ~3e-6 of the logit scale (rtol 0: elementwise relative
# errors of logits near 0 mean nothing). Max |diff| reached: 1.5e-8.
PARITY_ATOL = 1e-7


def _abstract_init(name, h, w, c=3):
    model = jaxcnn.create_model(name)
    x = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


@pytest.fixture(scope="module")
def alexnet_2012_variables():
    model = jaxcnn.create_model("alexnet_2012")
    init = jax.jit(model.init, compiler_options=run_once_compiler_options())
    return init(jax.random.key(0), jnp.zeros((1, 224, 224, 3)))


def test_alexnet_2012_param_count_per_layer():
    params = _abstract_init("alexnet_2012", 224, 224)["params"]
    shapes = {k: (v["kernel"].shape, v["bias"].shape) for k, v in params.items()}
    # conv2, conv4 and conv5 see half of their input channels: the two GPUs of the paper.
    assert shapes == {
        "conv1": ((11, 11, 3, 96), (96,)),  # 34,944
        "conv2": ((5, 5, 48, 256), (256,)),  # 307,456
        "conv3": ((3, 3, 256, 384), (384,)),  # 885,120
        "conv4": ((3, 3, 192, 384), (384,)),  # 663,936
        "conv5": ((3, 3, 192, 256), (256,)),  # 442,624
        "fc6": ((9216, 4096), (4096,)),  # 37,752,832
        "fc7": ((4096, 4096), (4096,)),  # 16,781,312
        "fc8": ((4096, 1000), (1000,)),  # 4,097,000
    }
    total = sum(math.prod(k) + math.prod(b) for k, b in shapes.values())
    assert total == EXPECTED["alexnet_2012"].params == 60_965_224


@pytest.mark.slow
def test_alexnet_parity(torch):
    from torchvision.models import alexnet

    torch_model = alexnet(weights=None)
    worst = assert_parity(torch, "alexnet", torch_model, PARITY_SIZES, rtol=0.0, atol=PARITY_ATOL)
    assert worst <= PARITY_ATOL
    # The reference itself rejects one pixel less than our minimum, in either axis.
    for h, w in [(62, 63), (63, 62)]:
        with pytest.raises(RuntimeError, match="too small"), torch.no_grad():
            torch_model(torch.zeros(1, 3, h, w))

    # Training mode: dropout draws from the "dropout" RNG stream.
    variables = convert.from_torch("alexnet", torch_model.state_dict())
    del torch_model
    model = jaxcnn.create_model("alexnet")
    x = jax.random.normal(jax.random.key(0), (2, 63, 63, 3))
    y = model.apply(variables, x)
    t1 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    t2 = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
    assert t1.shape == (2, 1000)
    assert np.abs(t1 - t2).max() > 0 and np.abs(t1 - y).max() > 0


def test_alexnet_2012_input_range_follows_from_the_geometry():
    """fc6 needs a 6x6 map: conv 11/4 pad 2, then three 3x3/2 pools."""

    def final(h):
        h = ops.conv_output_size(h, 11, 4, 2)
        for _ in range(3):
            h = ops.conv_output_size(h, 3, 2)
        return h

    admitted = [h for h in range(63, 400) if final(h) == 6]
    assert admitted == list(range(223, 255))
    # What the registry and the model's input check hold it to (test_registry.py).
    assert (
        get_spec("alexnet_2012").min_input_size == (223, 223) == EXPECTED["alexnet_2012"].min_size
    )
    assert EXPECTED["alexnet_2012"].max_size == (254, 254)
    for size in (223, 224, 227, 254):  # the paper's 224 and Caffe's 227 both fit
        _abstract_init("alexnet_2012", size, size)


@pytest.mark.slow
def test_alexnet_2012_paper_initialisation(alexnet_2012_variables):
    params = alexnet_2012_variables["params"]
    for layer, bias in [("conv1", 0), ("conv2", 1), ("conv3", 0), ("conv4", 1), ("conv5", 1)]:
        np.testing.assert_array_equal(params[layer]["bias"], bias, err_msg=layer)
    for layer, bias in [("fc6", 1), ("fc7", 1), ("fc8", 0)]:
        np.testing.assert_array_equal(params[layer]["bias"], bias, err_msg=layer)
    for layer, p in params.items():
        k = np.asarray(p["kernel"])
        assert abs(k.std() - 0.01) < 0.0005, layer  # conv1, the smallest, has 34,848 weights
        assert abs(k.mean()) < 0.0005, layer


def _input_grads_by_output_half(model, variables, x, layer):
    """Inside the model: `layer`'s output shape, and for each half of its output channels the
    gradient of their sum with respect to `layer`'s input (one compiled program)."""

    def layer_output(delta):
        out = {}

        def perturb(next_fun, args, kwargs, context):
            if context.module.name == layer and context.method_name == "__call__":
                out["y"] = next_fun(args[0] if delta is None else args[0] + delta, **kwargs)
                out["in"] = args[0]
                return out["y"]
            return next_fun(*args, **kwargs)

        with nn.intercept_methods(perturb):
            model.apply(variables, x)
        return out

    io = jax.eval_shape(lambda: layer_output(None))

    @jax.jit
    def grads(delta):
        y, vjp = jax.vjp(lambda d: layer_output(d)["y"], delta)
        c = y.shape[-1]
        return [vjp(jnp.zeros(y.shape).at[..., g * c // 2 : (g + 1) * c // 2].set(1.0))[0]
                for g in (0, 1)]  # fmt: skip

    return io["y"].shape, grads(jnp.zeros(io["in"].shape))


@pytest.mark.parametrize(
    "layer, c_in, c_out, groups",
    [("conv2", 96, 256, 2), ("conv3", 256, 384, 1), ("conv4", 384, 384, 2), ("conv5", 384, 256, 2)],
)
def test_alexnet_2012_groups_split_the_channels(alexnet_2012_variables, layer, c_in, c_out, groups):
    """In the model, output group g of a grouped layer depends only on input group g."""
    model = jaxcnn.create_model("alexnet_2012")
    x = jax.random.normal(jax.random.key(1), (1, 224, 224, 3))
    y_shape, grads = _input_grads_by_output_half(model, alexnet_2012_variables, x, layer)
    assert y_shape[-1] == c_out
    for g_out, grad in enumerate(grads):  # the paper's two GPUs
        assert grad.shape[-1] == c_in
        depends = np.any(np.asarray(grad) != 0, axis=(0, 1, 2))  # (c_in,)
        for g_in in range(2):
            half = depends[g_in * c_in // 2 : (g_in + 1) * c_in // 2]
            if groups == 1 or g_in == g_out:
                assert half.all(), (layer, g_out, g_in)
            else:
                assert not half.any(), (layer, g_out, g_in)


@pytest.mark.parametrize("layer", ["norm1", "norm2"])
def test_alexnet_2012_lrn_is_the_papers(alexnet_2012_variables, layer):
    """b_i = a_i / (2 + 1e-4 * sum_{|j - i| <= 2} a_j^2) ^ 0.75, the paper's Section 3.3."""
    io = {}

    def capture(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        if context.module.name == layer:
            io["a"], io["b"] = np.asarray(args[0], np.float64), np.asarray(y)
        return y

    # Inputs large enough that the alpha term matters at both layers.
    x = 100.0 * jax.random.normal(jax.random.key(2), (1, 224, 224, 3))
    with nn.intercept_methods(capture):
        jaxcnn.create_model("alexnet_2012").apply(alexnet_2012_variables, x)
    a = io["a"]
    n_maps = a.shape[-1]
    sq = np.square(a)
    window_sum = np.stack(
        [sq[..., max(0, i - 2) : min(n_maps, i + 3)].sum(-1) for i in range(n_maps)], axis=-1
    )
    want = a / (2.0 + 1e-4 * window_sum) ** 0.75
    without_alpha = a / 2.0**0.75
    assert np.abs(want - without_alpha).max() > 1e-3 * np.abs(a).max()
    np.testing.assert_allclose(io["b"], want, rtol=2e-5, atol=1e-6)


def test_alexnet_2012_forward_and_dropout(alexnet_2012_variables):
    model = jaxcnn.create_model("alexnet_2012")
    apply = jax.jit(model.apply, static_argnames="train")
    x = jax.random.normal(jax.random.key(3), (2, 227, 227, 3))
    y = apply(alexnet_2012_variables, x)
    assert y.shape == (2, 1000) and y.dtype == jnp.float32
    assert np.all(np.isfinite(y))
    np.testing.assert_array_equal(y, apply(alexnet_2012_variables, x))
    key1, key2 = jax.random.key(4), jax.random.key(5)
    t1 = apply(alexnet_2012_variables, x, train=True, rngs={"dropout": key1})
    t2 = apply(alexnet_2012_variables, x, train=True, rngs={"dropout": key2})
    np.testing.assert_array_equal(
        t1, apply(alexnet_2012_variables, x, train=True, rngs={"dropout": key1})
    )
    assert np.abs(t1 - t2).max() > 0 and np.abs(t1 - y).max() > 0
