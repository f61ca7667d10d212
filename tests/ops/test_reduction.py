"""channel_sum / channel_broadcast / add_bias / batch_norm: values and gradients against numpy,
torch.nn.functional.batch_norm and finite differences; the CPU lowering is a product."""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcnn import ops
from tests.helpers import from_torch_nchw, to_torch_nchw

SHAPES = [(2, 5, 4, 3), (7, 6), (1, 1, 1, 5)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_channel_sum_and_broadcast_match_numpy(x64, shape):
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(ops.channel_sum(x), x.reshape(-1, shape[-1]).sum(0), rtol=1e-13)
    v = rng.standard_normal(shape[-1])
    np.testing.assert_array_equal(ops.channel_broadcast(v, shape), np.broadcast_to(v, shape))


def test_channel_ops_float32_and_jit():
    x = np.random.default_rng(0).standard_normal((8, 28, 28, 16)).astype(np.float32)
    got = jax.jit(ops.channel_sum)(x)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, x.astype(np.float64).reshape(-1, 16).sum(0), rtol=1e-4)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float16])
def test_channel_sum_keeps_the_dtype_under_jit(dtype):
    # Both platform branches must agree on the dtype (jit traces both): no integer promotion.
    x = (np.arange(4 * 3 * 5) % 7).reshape(4, 3, 5).astype(dtype)
    for fn in (ops.channel_sum, jax.jit(ops.channel_sum)):
        got = fn(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(np.asarray(got, np.int64), x.astype(np.int64).sum((0, 1)))


def test_channel_sum_rejects_bool_and_scalars():
    with pytest.raises(TypeError, match="numeric array of rank >= 1; got bool"):
        ops.channel_sum(jnp.ones((2, 3), bool))
    with pytest.raises(TypeError, match="rank >= 1"):
        ops.channel_sum(jnp.float32(1.0))


def test_add_bias_is_the_plain_sum_with_any_order_gradients(x64):
    rng = np.random.default_rng(1)
    y, b = rng.standard_normal((2, 3, 4, 5)), rng.standard_normal(5)
    np.testing.assert_array_equal(ops.add_bias(y, b), y + b)
    # No custom derivative rule: forward and reverse mode, second order, both work.
    check_grads(ops.add_bias, (y, b), order=2, modes=["fwd", "rev"])
    g = jax.grad(lambda b: jnp.sum(jnp.sin(ops.add_bias(y, b))))(b)
    np.testing.assert_allclose(g, np.cos(y + b).reshape(-1, 5).sum(0), rtol=1e-12)


def test_channel_broadcast_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"`v` must have shape \(C,\).*v.shape=\(4,\)"):
        ops.channel_broadcast(jnp.ones(4), (2, 3))
    with pytest.raises(ValueError, match=r"v.shape=\(1, 3\)"):
        ops.channel_broadcast(jnp.ones((1, 3)), (2, 3))


# ---------------------------------------------------------------------------- batch_norm


def _torch_batch_norm(torch, x, scale, bias, eps, ct):
    """torch's training-mode batch_norm: y, its VJP (dx, dscale, dbias), mean, biased var."""
    xt = to_torch_nchw(torch, x).requires_grad_(True)
    st = torch.tensor(scale, requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True)
    rm, rv = torch.zeros(x.shape[-1], dtype=xt.dtype), torch.ones(x.shape[-1], dtype=xt.dtype)
    y = torch.nn.functional.batch_norm(xt, rm, rv, st, bt, training=True, momentum=1.0, eps=eps)
    (y * to_torch_nchw(torch, ct)).sum().backward()
    n = x.size // x.shape[-1]
    # With momentum 1 the running stats are the batch's: mean and *unbiased* variance.
    var = rv.numpy() * (n - 1) / n
    grads = (from_torch_nchw(xt.grad), st.grad.numpy(), bt.grad.numpy())
    return from_torch_nchw(y.detach()), grads, rm.numpy(), var


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_batch_norm_matches_torch_float64(x64, torch, eps):
    rng = np.random.default_rng(2)
    x = 3.0 * rng.standard_normal((4, 5, 3, 6)) + 2.0  # mean far from zero
    scale, bias = rng.standard_normal(6), rng.standard_normal(6)
    ct = rng.standard_normal(x.shape)
    fn = functools.partial(ops.batch_norm, epsilon=eps)
    (y, mean, var), vjp = jax.vjp(fn, x, scale, bias)
    grads = vjp((ct, jnp.zeros(6), jnp.zeros(6)))
    want_y, want_grads, want_mean, want_var = _torch_batch_norm(torch, x, scale, bias, eps, ct)
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(mean, want_mean, rtol=1e-12)
    np.testing.assert_allclose(var, want_var, rtol=1e-12)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


def test_batch_norm_matches_torch_float32(torch):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 7, 7, 16)).astype(np.float32)
    scale, bias = (rng.standard_normal(16).astype(np.float32) for _ in range(2))
    ct = rng.standard_normal(x.shape).astype(np.float32)
    (y, _, _), vjp = jax.vjp(ops.batch_norm, x, scale, bias)
    grads = vjp((ct, jnp.zeros(16), jnp.zeros(16)))
    want_y, want_grads, _, _ = _torch_batch_norm(torch, x, scale, bias, 1e-5, ct)
    np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_batch_norm_gradients_of_every_output_any_order(x64):
    # Gradients through y, mean and var, forward and reverse, to second order.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 4, 3))
    scale, bias = rng.standard_normal(3), rng.standard_normal(3)
    check_grads(ops.batch_norm, (x, scale, bias), order=2, modes=["fwd", "rev"], atol=1e-5)


def test_batch_norm_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"`scale` must have shape \(3,\); got \(4,\)"):
        ops.batch_norm(jnp.ones((2, 3)), jnp.ones(4), jnp.zeros(3))
    with pytest.raises(ValueError, match=r"`bias` must have shape \(3,\)"):
        ops.batch_norm(jnp.ones((2, 3)), jnp.ones(3), jnp.zeros((1, 3)))
    with pytest.raises(ValueError, match=r"rank >= 2; got shape \(3,\)"):
        ops.batch_norm(jnp.ones(3), jnp.ones(3), jnp.zeros(3))


# ------------------------------------------------------------------- the CPU lowering


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU branch is what is checked")
def test_on_cpu_the_gradient_of_batch_norm_has_no_column_reduction():
    # The point of these functions: on CPU, neither the forward pass nor the gradient reduces
    # an activation over its leading axes (XLA:CPU's slow column reductions); they multiply.
    x = jnp.ones((8, 14, 14, 32), jnp.float32)
    s = jnp.ones((32,), jnp.float32)

    def loss(x, s):
        y, _, _ = ops.batch_norm(x, s, s)
        return jnp.sum(jnp.tanh(ops.add_bias(y, s)))

    hlo = jax.jit(jax.grad(loss, (0, 1))).lower(x, s).as_text("hlo")
    big_reduces = [
        line
        for line in hlo.splitlines()
        if re.search(r"= f32\[32\]\{?[0-9]*\}? reduce\(f32\[8,14,14,32\]", line)
        or re.search(r"= f32\[32\][^ ]* reduce\(f32\[1568,32\]", line)
    ]
    assert big_reduces == []
    assert " dot(" in hlo
