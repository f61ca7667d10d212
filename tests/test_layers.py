"""jaxcnn.layers: PyTorch's initialisation and BatchNorm semantics, input checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxcnn import layers


def test_batchnorm_matches_torch_training_and_eval(torch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 3, 6)).astype(np.float32) * 2 + 1
    bn_t = torch.nn.BatchNorm2d(6, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        bn_t.weight.uniform_(0.5, 1.5)
        bn_t.bias.normal_()
    bn = layers.BatchNorm(epsilon=1e-3)
    variables = bn.init(jax.random.key(0), jnp.asarray(x))
    variables = {
        "params": {
            "scale": jnp.asarray(bn_t.weight.detach()),
            "bias": jnp.asarray(bn_t.bias.detach()),
        },
        "batch_stats": variables["batch_stats"],
    }
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    for _ in range(3):  # three training steps: the running statistics follow torch's
        y, upd = bn.apply(variables, jnp.asarray(x), train=True, mutable=["batch_stats"])
        variables = {"params": variables["params"], **upd}
        bn_t.train()
        yt = bn_t(xt).detach().numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(y, yt, rtol=1e-5, atol=1e-5)
    stats = variables["batch_stats"]
    np.testing.assert_allclose(stats["mean"], bn_t.running_mean.numpy(), rtol=1e-6, atol=1e-6)
    # Unbiased variance in the running estimate, as torch.
    np.testing.assert_allclose(stats["var"], bn_t.running_var.numpy(), rtol=1e-6, atol=1e-6)
    assert int(stats["num_batches_tracked"]) == int(bn_t.num_batches_tracked) == 3
    bn_t.eval()
    y = bn.apply(variables, jnp.asarray(x), train=False)
    np.testing.assert_allclose(
        y, bn_t(xt).detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5
    )


def test_batchnorm_keeps_input_dtype_and_computes_stats_in_float32():
    x = jnp.ones((2, 3, 3, 4), jnp.bfloat16) * 3
    bn = layers.BatchNorm()
    v = bn.init(jax.random.key(0), x)
    y, upd = bn.apply(v, x, train=True, mutable=["batch_stats"])
    assert y.dtype == jnp.bfloat16
    assert upd["batch_stats"]["mean"].dtype == jnp.float32


@pytest.mark.parametrize("transform", ["vmap", "pmap"])
def test_batchnorm_pmean_over_axis_name_equals_global_batch(transform):
    """With axis_name, BatchNorm uses the statistics of the batch over all devices: those of
    the whole batch, computed here in float64 (pmap over the devices there are, vmap over 4
    shards)."""
    shards = jax.local_device_count() if transform == "pmap" else 4
    x = np.random.default_rng(1).standard_normal((shards, 2, 3, 3, 5)).astype(np.float32)
    x = x * np.linspace(0.5, 3.0, 5).astype(np.float32) + 1  # channels of different spread
    bn = layers.BatchNorm(axis_name="batch")
    v = bn.init(jax.random.key(0), jnp.asarray(x[0]))

    def step(x):
        return bn.apply(v, x, train=True, mutable=["batch_stats"])

    mapped = jax.pmap if transform == "pmap" else jax.vmap
    y, upd = mapped(step, axis_name="batch")(jnp.asarray(x))
    whole = x.reshape(-1, 5).astype(np.float64)
    mean, var = whole.mean(0), whole.var(0)
    expected = (x.astype(np.float64) - mean) / np.sqrt(var + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    for i in range(shards):  # every device's running statistics: those of the whole batch
        np.testing.assert_allclose(upd["batch_stats"]["mean"][i], 0.1 * mean, rtol=1e-5)
        np.testing.assert_allclose(
            upd["batch_stats"]["var"][i], 0.9 + 0.1 * whole.var(0, ddof=1), rtol=1e-5
        )
        assert int(upd["batch_stats"]["num_batches_tracked"][i]) == 1
    if shards > 1:  # without the axis, each shard has its own statistics
        y_local, _ = mapped(
            lambda x: layers.BatchNorm().apply(v, x, train=True, mutable=["batch_stats"])
        )(jnp.asarray(x))
        assert not np.allclose(y_local, expected, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("module,fan_in", [(layers.Conv(64, 3), 3 * 3 * 8), (layers.Dense(64), 8)])
def test_default_init_is_torch_default(module, fan_in):
    """PyTorch's default: weights and biases uniform in +-1/sqrt(fan_in)."""
    x = jnp.ones((1, 5, 5, 8)) if isinstance(module, layers.Conv) else jnp.ones((1, 8))
    params = module.init(jax.random.key(0), x)["params"]
    bound = 1 / np.sqrt(fan_in)
    for leaf in (params["kernel"], params["bias"]):
        leaf = np.asarray(leaf)
        assert np.abs(leaf).max() <= bound
        assert np.abs(leaf).max() > 0.9 * bound  # uniform over the whole interval
    # Variance of U(-b, b) is b^2 / 3.
    assert np.var(np.asarray(params["kernel"])) == pytest.approx(bound**2 / 3, rel=0.1)


def test_conv_layer_computes_in_dtype_with_float32_params():
    conv = layers.Conv(4, 3, padding=1, dtype=jnp.bfloat16)
    v = conv.init(jax.random.key(0), jnp.ones((1, 6, 6, 2)))
    assert v["params"]["kernel"].dtype == jnp.float32
    assert conv.apply(v, jnp.ones((1, 6, 6, 2))).dtype == jnp.bfloat16


def test_flatten_chw_is_torch_flatten_order(torch):
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # NHWC
    want = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).flatten(1).numpy()
    np.testing.assert_array_equal(layers.flatten_chw(jnp.asarray(x)), want)


@pytest.mark.parametrize(
    "shape,match",
    [
        ((8, 8, 3), r"rank 4.*single image.*smallest valid input is \(N, 4, 5, 3\)"),
        ((1, 8, 8, 1), r"3 channels.*smallest valid input is \(N, 4, 5, 3\)"),
        ((1, 3, 8, 3), r"too small.*smallest valid input is \(N, 4, 5, 3\)"),
        ((1, 8, 4, 3), r"too small"),
    ],
)
def test_check_input(shape, match):
    with pytest.raises(ValueError, match=match):
        layers.check_input(jnp.zeros(shape), "net", channels=3, min_size=(4, 5))
    with pytest.raises(TypeError, match=r"floating dtype"):
        layers.check_input(jnp.zeros((1, 4, 5, 3), jnp.int32), "net", channels=3, min_size=(4, 5))
    layers.check_input(jnp.zeros((1, 4, 5, 3)), "net", channels=3, min_size=(4, 5))


@pytest.mark.slow
def test_pool_and_lrn_layers_are_the_ops():
    x = jax.random.normal(jax.random.key(0), (2, 9, 7, 6))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            a = layers.MaxPool(3, 2, 1, ceil_mode=True)(x)
            b = layers.AvgPool(3, 2, 1, count_include_pad=False)(x)
            c = layers.AdaptiveAvgPool((2, 3))(x)
            d = layers.AdaptiveMaxPool(2)(x)
            e = layers.LocalResponseNorm(3, 1e-2, 0.5, 2.0)(x)
            return a, b, c, d, e

    from jaxcnn import ops

    got = Net().apply({}, x)
    want = (
        ops.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        ops.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
        ops.adaptive_avg_pool2d(x, (2, 3)),
        ops.adaptive_max_pool2d(x, 2),
        ops.local_response_norm(x, 3, 1e-2, 0.5, 2.0),
    )
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, w)


def test_check_input_max_size():
    with pytest.raises(
        ValueError,
        match=r"too large; the head needs 2x2, i.e. inputs from "
        r"\(N, 4, 5, 3\) to \(N, 6, 7, 3\)",
    ):
        layers.check_input(jnp.zeros((1, 7, 5, 3)), "net", channels=3, min_size=(4, 5),
                           max_size=(6, 7), why_max="the head needs 2x2")  # fmt: skip
    layers.check_input(jnp.zeros((1, 6, 7, 3)), "net", channels=3, min_size=(4, 5), max_size=(6, 7))
