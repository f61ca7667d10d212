"""Pooling ops against torch.nn.functional: values, gradients, ties, NaN, errors and jit."""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcnn import ops
from tests.helpers import fd_check, from_torch_nchw, to_torch_nchw


def _torch_op(torch, name, x, *args, **kwargs):
    """torch.nn.functional.<name> applied to an NHWC array, result back in NHWC."""
    y = getattr(torch.nn.functional, name)(to_torch_nchw(torch, x), *args, **kwargs)
    return from_torch_nchw(y)


def _torch_value_and_vjp(torch, name, x, ct, *args, **kwargs):
    """torch's name(x) and autograd input gradient of sum(name(x) * ct), NHWC in and out."""
    xt = to_torch_nchw(torch, x).requires_grad_(True)
    y = getattr(torch.nn.functional, name)(xt, *args, **kwargs)
    (y * to_torch_nchw(torch, ct)).sum().backward()
    return from_torch_nchw(y), from_torch_nchw(xt.grad)


def _value_and_vjp(fn, x, ct):
    """fn(x) and the input gradient of sum(fn(x) * ct), as numpy.

    Jitted: one compilation instead of one per primitive, which keeps the suite fast;
    `test_works_under_jit` checks that eager execution agrees.
    """

    def f(x, ct):
        y, vjp = jax.vjp(fn, x)
        return y, vjp(ct)[0]

    y, g = jax.jit(f)(jnp.asarray(x), jnp.asarray(ct))
    return np.asarray(y), np.asarray(g)


def _out_shape(fn, x):
    return jax.eval_shape(fn, jnp.asarray(x)).shape


def _seed(case) -> int:
    # Not hash(): hash(None) changes from process to process before Python 3.12.
    return zlib.crc32(repr(case).encode())


# (N, H, W, C, kernel_size, stride, padding, dilation): odd and non-square sizes and kernels,
# strides below, at and above the kernel, padding up to kernel // 2.
MAX_GEOMETRIES = [
    (2, 7, 9, 3, 2, None, 0, 1),
    (2, 7, 9, 3, 3, 2, 1, 1),
    (1, 13, 11, 2, (3, 2), (2, 3), (1, 1), 1),
    (1, 13, 11, 2, 3, 1, 1, 2),  # overlapping and dilated
    (2, 9, 7, 3, 4, 3, (2, 1), (1, 2)),
    (1, 8, 9, 2, (4, 2), (1, 2), (2, 0), 2),
    (1, 5, 6, 2, 3, 3, 0, 1),  # ceil_mode adds a partial last window
    (1, 5, 5, 1, 2, 2, 1, 1),  # ceil_mode's extra window would start in the padding: dropped
]
# avg/sum pooling has no dilation.
AVG_GEOMETRIES = [g[:7] for g in MAX_GEOMETRIES if g[7] == 1] + [
    (1, 13, 11, 2, (4, 3), (3, 1), (2, 1)),
    (2, 6, 7, 2, 3, 1, 1),
]


def _ids(case):
    return "-".join(str(v).replace(" ", "") for v in case)


# ------------------------------------------------------- values and gradients vs torch


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("geom", MAX_GEOMETRIES, ids=_ids)
def test_max_pool2d_matches_torch_float64(x64, torch, geom, ceil_mode):
    n, h, w, c, k, s, p, d = geom
    rng = np.random.default_rng(_seed(geom))
    x = rng.standard_normal((n, h, w, c))
    fn = functools.partial(
        ops.max_pool2d, kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil_mode
    )
    ct = rng.standard_normal(_out_shape(fn, x))
    y, g = _value_and_vjp(fn, x, ct)
    want_y, want_g = _torch_value_and_vjp(torch, "max_pool2d", x, ct, k, s, p, d, ceil_mode)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=0)
    np.testing.assert_allclose(g, want_g, rtol=1e-12, atol=0)


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("geom", AVG_GEOMETRIES, ids=_ids)
def test_avg_pool2d_matches_torch_float64(x64, torch, geom, ceil_mode, count_include_pad):
    n, h, w, c, k, s, p = geom
    rng = np.random.default_rng(_seed(geom))
    x = rng.standard_normal((n, h, w, c))
    fn = functools.partial(
        ops.avg_pool2d,
        kernel_size=k,
        stride=s,
        padding=p,
        ceil_mode=ceil_mode,
        count_include_pad=count_include_pad,
    )
    ct = rng.standard_normal(_out_shape(fn, x))
    y, g = _value_and_vjp(fn, x, ct)
    args = (k, s, p, ceil_mode, count_include_pad)
    want_y, want_g = _torch_value_and_vjp(torch, "avg_pool2d", x, ct, *args)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, want_g, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("geom", AVG_GEOMETRIES, ids=_ids)
def test_sum_pool2d_matches_torch_float64(x64, torch, geom, ceil_mode):
    # torch has no sum pool; avg_pool2d with divisor_override=1 is exactly the window sum.
    n, h, w, c, k, s, p = geom
    x = np.random.default_rng(_seed(geom)).standard_normal((n, h, w, c))
    fn = functools.partial(ops.sum_pool2d, kernel_size=k, stride=s, padding=p, ceil_mode=ceil_mode)
    want = _torch_op(torch, "avg_pool2d", x, k, s, p, ceil_mode, divisor_override=1)
    np.testing.assert_allclose(jax.jit(fn)(x), want, rtol=1e-12, atol=1e-14)


# (H, W, output_size): shrinking by integer and non-integer factors, global pooling,
# upsampling (overlapping bins) and None (= keep that dimension).
ADAPTIVE = [
    (7, 9, (3, 4)),
    (13, 11, (5, 3)),
    (6, 6, 3),
    (7, 9, 1),
    (5, 6, (7, 8)),
    (8, 7, (None, 3)),
    (8, 7, (4, None)),
    (6, 7, (6, 7)),  # identity (AlexNet's 6x6 at 224x224)
    (12, 8, (4, 2)),  # bins are plain 3x4 windows: the sliding-window fast path
]


@pytest.mark.parametrize("case", ADAPTIVE, ids=_ids)
@pytest.mark.parametrize("name", ["adaptive_avg_pool2d", "adaptive_max_pool2d"])
def test_adaptive_pools_match_torch_float64(x64, torch, name, case):
    h, w, out = case
    rng = np.random.default_rng(_seed(case))
    x = rng.standard_normal((2, h, w, 3))
    fn = functools.partial(getattr(ops, name), output_size=out)
    ct = rng.standard_normal(_out_shape(fn, x))
    y, g = _value_and_vjp(fn, x, ct)
    want_y, want_g = _torch_value_and_vjp(torch, name, x, ct, out)
    np.testing.assert_allclose(y, want_y, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, want_g, rtol=1e-12, atol=1e-15)


def test_pools_match_torch_float32(torch):
    x = np.random.default_rng(0).standard_normal((2, 13, 11, 3)).astype(np.float32)
    cases = [
        (ops.max_pool2d, "max_pool2d", (3, 2, 1, 1, True)),
        (ops.avg_pool2d, "avg_pool2d", (3, 2, 1, True, False)),
        (ops.adaptive_avg_pool2d, "adaptive_avg_pool2d", ((4, 5),)),
        (ops.adaptive_max_pool2d, "adaptive_max_pool2d", ((4, 5),)),
    ]
    for fn, name, args in cases:
        got = fn(x, *args)
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, _torch_op(torch, name, x, *args), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.float16])
def test_tiling_sum_pool_keeps_the_dtype(dtype):
    # Tiling windows (stride == kernel, no padding) sum in x's own dtype: integers do not
    # promote, as `jnp.sum` would make them.
    x = np.arange(2 * 7 * 9 * 3).reshape(2, 7, 9, 3).astype(dtype) % 5
    for fn in (jax.jit(functools.partial(ops.sum_pool2d, kernel_size=2)), ops.sum_pool2d):
        got = fn(x, 2) if fn is ops.sum_pool2d else fn(x)
        assert got.dtype == dtype
        want = x[:, :6, :8].astype(np.int64).reshape(2, 3, 2, 4, 2, 3).sum((2, 4))
        np.testing.assert_array_equal(np.asarray(got, np.int64), want)
    assert ops.avg_pool2d(x.astype(np.float32), 2).dtype == np.float32


def test_integer_max_and_sum_pools_are_exact(torch):
    x = np.random.default_rng(1).integers(-50, 50, (2, 7, 9, 3)).astype(np.int32)
    got = ops.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, _torch_op(torch, "max_pool2d", x, 3, 2, 1, 1, True))
    got = ops.sum_pool2d(x, 3, 2, 1, ceil_mode=True)
    assert got.dtype == jnp.int32
    want = _torch_op(torch, "avg_pool2d", x.astype(np.float64), 3, 2, 1, True, divisor_override=1)
    np.testing.assert_array_equal(got, want.astype(np.int32))
    # torch has no integer adaptive max pool: compare with its float result instead.
    got = ops.adaptive_max_pool2d(x, (3, 4))
    assert got.dtype == jnp.int32
    want = _torch_op(torch, "adaptive_max_pool2d", x.astype(np.float64), (3, 4))
    np.testing.assert_array_equal(got, want.astype(np.int32))


# ------------------------------------------------------------- finite differences, smooth


FD_CASES = {
    "max_pool2d": functools.partial(
        ops.max_pool2d, kernel_size=3, stride=2, padding=1, dilation=(1, 2), ceil_mode=True
    ),
    "max_pool2d_overlap": functools.partial(ops.max_pool2d, kernel_size=(2, 3), stride=1),
    "avg_pool2d": functools.partial(
        ops.avg_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False
    ),
    "sum_pool2d": functools.partial(
        ops.sum_pool2d, kernel_size=(3, 2), stride=(1, 2), padding=(1, 0), ceil_mode=True
    ),
    "adaptive_avg_pool2d": functools.partial(ops.adaptive_avg_pool2d, output_size=(3, 4)),
    "adaptive_max_pool2d": functools.partial(ops.adaptive_max_pool2d, output_size=(3, 4)),
    "channel_pool_max": functools.partial(ops.channel_pool, group_size=2, mode="max"),
    "channel_pool_sum": functools.partial(ops.channel_pool, group_size=2, mode="sum"),
    "channel_pool_avg": functools.partial(ops.channel_pool, group_size=2, mode="avg"),
}
SMOOTH = ["avg_pool2d", "sum_pool2d", "adaptive_avg_pool2d", "channel_pool_sum", "channel_pool_avg"]


@pytest.mark.parametrize("name", sorted(FD_CASES))
def test_grad_matches_finite_differences(x64, name):
    # Continuous random inputs have no ties, so even the max pools are differentiable here.
    x = np.random.default_rng(3).standard_normal((1, 7, 9, 4))
    fd_check(jax.jit(FD_CASES[name]), (x,))


@pytest.mark.parametrize("name", SMOOTH)
def test_smooth_pools_second_order(x64, name):
    x = jnp.asarray(np.random.default_rng(4).standard_normal((1, 7, 9, 4)))
    check_grads(jax.jit(FD_CASES[name]), (x,), order=2, modes=["rev"])


# ------------------------------------------------------------------------------- ties


def _ties(shape, seed):
    """Small integers as floats: many windows hold their maximum more than once."""
    return np.random.default_rng(seed).integers(0, 3, shape).astype(np.float64)


def test_max_pool2d_tie_goes_to_first_max_by_hand(x64):
    # All-equal 2x2 windows: the whole gradient lands on each window's top-left cell.
    fn = functools.partial(ops.max_pool2d, kernel_size=2)
    _, g = _value_and_vjp(fn, np.ones((1, 4, 4, 1)), np.ones((1, 2, 2, 1)))
    want = np.zeros((4, 4))
    want[::2, ::2] = 1.0
    np.testing.assert_array_equal(g[0, :, :, 0], want)
    # A later equal maximum in row-major order gets nothing.
    x = np.array([[0.0, 5.0], [5.0, 5.0]]).reshape(1, 2, 2, 1)
    _, g = _value_and_vjp(fn, x, np.ones((1, 1, 1, 1)))
    np.testing.assert_array_equal(g.ravel(), [0, 1, 0, 0])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(kernel_size=2),
        dict(kernel_size=3, stride=1, padding=1),
        dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), dilation=(1, 2), ceil_mode=True),
        dict(kernel_size=4, stride=3, padding=2, ceil_mode=True),
    ],
    ids=lambda kw: _ids(tuple(kw.values())),
)
def test_max_pool2d_tie_grad_matches_torch(x64, torch, kwargs):
    x = _ties((2, 9, 8, 2), 5)
    fn = functools.partial(ops.max_pool2d, **kwargs)
    ct = np.random.default_rng(6).standard_normal(_out_shape(fn, x))
    _, got = _value_and_vjp(fn, x, ct)
    _, want = _torch_value_and_vjp(torch, "max_pool2d", x, ct, **kwargs)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_max_pool2d_all_minus_inf_window_matches_torch(x64, torch):
    # Every real cell is -inf, so it ties with the -inf padding; torch picks the first real
    # cell, never a padding cell (which would drop the gradient).
    x = np.full((1, 3, 3, 1), -np.inf)
    ct = np.ones((1, 3, 3, 1))
    fn = functools.partial(ops.max_pool2d, kernel_size=3, stride=1, padding=1)
    _, got = _value_and_vjp(fn, x, ct)
    np.testing.assert_array_equal(got, _torch_value_and_vjp(torch, "max_pool2d", x, ct, 3, 1, 1)[1])
    np.testing.assert_array_equal(got[0, :, :, 0], [[4, 2, 0], [2, 1, 0], [0, 0, 0]])


def test_max_pool2d_nan_matches_torch(x64, torch):
    # Windows with two NaNs, one NaN and none: NaN wins, its gradient goes to the last NaN.
    x = np.arange(16, dtype=np.float64).reshape(1, 4, 4, 1)
    x[0, 0, 0, 0] = x[0, 1, 1, 0] = x[0, 0, 3, 0] = np.nan
    ct = np.random.default_rng(7).standard_normal((1, 2, 2, 1))
    y, g = _value_and_vjp(functools.partial(ops.max_pool2d, kernel_size=2), x, ct)
    want_y, want_g = _torch_value_and_vjp(torch, "max_pool2d", x, ct, 2)
    np.testing.assert_array_equal(y, want_y)  # assert_array_equal counts NaN == NaN
    np.testing.assert_array_equal(g, want_g)
    assert np.isnan(y[0, 0, :, 0]).all() and not np.isnan(y[0, 1, :, 0]).any()
    assert g[0, 1, 1, 0] == ct[0, 0, 0, 0] and g[0, 0, 0, 0] == 0


@pytest.mark.parametrize("out", [(3, 4), 1, (4, 5), (9, 7)], ids=str)
def test_adaptive_max_pool2d_tie_grad_matches_torch(x64, torch, out):
    x = _ties((2, 7, 6, 2), 8)
    fn = functools.partial(ops.adaptive_max_pool2d, output_size=out)
    ct = np.random.default_rng(9).standard_normal(_out_shape(fn, x))
    _, got = _value_and_vjp(fn, x, ct)
    _, want = _torch_value_and_vjp(torch, "adaptive_max_pool2d", x, ct, out)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


def test_adaptive_max_pool2d_tie_and_nan_by_hand(x64, torch):
    # One bin over the whole 3x3 map. Maxima at (1, 2) and (2, 0): row-major first is (1, 2),
    # although (2, 0) comes first in column-major order.
    fn = functools.partial(ops.adaptive_max_pool2d, output_size=1)
    ct = np.ones((1, 1, 1, 1))
    x = np.zeros((1, 3, 3, 1))
    x[0, 1, 2, 0] = x[0, 2, 0, 0] = 1.0
    _, g = _value_and_vjp(fn, x, ct)
    want = np.zeros_like(x)
    want[0, 1, 2, 0] = 1.0
    np.testing.assert_array_equal(g, want)
    # With NaNs the output is NaN and the gradient goes to the last NaN, as in torch.
    x[0, 0, 1, 0] = x[0, 1, 0, 0] = np.nan
    y, g = _value_and_vjp(fn, x, ct)
    assert np.isnan(y).all()
    np.testing.assert_array_equal(
        g, _torch_value_and_vjp(torch, "adaptive_max_pool2d", x, ct, 1)[1]
    )
    assert g[0, 1, 0, 0] == 1.0


# ------------------------------------------------------------------- second order (max)


def test_max_pool2d_hessian_vector_product_matches_torch(x64, torch):
    # f(x) = sum(max_pool2d(x)^2 * c) is quadratic in the selected cells; its Hessian is
    # not zero, so this checks that the custom backward pass itself differentiates.
    rng = np.random.default_rng(10)
    x, v = rng.standard_normal((2, 1, 7, 8, 2))
    kwargs = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    c = rng.standard_normal(_out_shape(functools.partial(ops.max_pool2d, **kwargs), x))

    def f(x):
        return jnp.sum(ops.max_pool2d(x, **kwargs) ** 2 * c)

    got = jax.jit(jax.grad(lambda x: jnp.vdot(jax.grad(f)(x), v)))(jnp.asarray(x))

    F = torch.nn.functional
    xt = to_torch_nchw(torch, x).requires_grad_(True)
    y = F.max_pool2d(xt, **kwargs)
    (gt,) = torch.autograd.grad((y**2 * to_torch_nchw(torch, c)).sum(), xt, create_graph=True)
    (hvt,) = torch.autograd.grad((gt * to_torch_nchw(torch, v)).sum(), xt)
    np.testing.assert_allclose(np.asarray(got), from_torch_nchw(hvt), rtol=1e-12, atol=0)
    assert np.abs(np.asarray(got)).max() > 0


def test_max_pool2d_second_derivative_of_linear_loss_is_zero(x64):
    rng = np.random.default_rng(11)
    x, v = rng.standard_normal((2, 1, 6, 6, 2))
    c = rng.standard_normal((1, 6, 6, 2))

    def grad_f(x):
        return jax.grad(lambda x: jnp.sum(ops.max_pool2d(x, 3, 1, 1) * c))(x)

    g = jax.jit(grad_f)(jnp.asarray(x))
    # Each output's gradient lands whole on one input (none is lost in the padding)...
    np.testing.assert_allclose(np.asarray(g).sum(), c.sum(), rtol=1e-12)
    # ...and, being piecewise constant in x, has zero derivative.
    h = jax.jit(jax.grad(lambda x: jnp.vdot(grad_f(x), v)))(jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(h), np.zeros_like(x))


# ------------------------------------------------------------------------ channel_pool


def _channel_pool_reference(x, g, mode):
    n, h, w, c = x.shape
    groups = x.reshape(n, h, w, c // g, g)
    return {"max": groups.max(-1), "sum": groups.sum(-1), "avg": groups.mean(-1)}[mode]


@pytest.mark.parametrize("mode", ["max", "sum", "avg"])
@pytest.mark.parametrize("group_size", [1, 2, 3, 6])
def test_channel_pool_matches_numpy(x64, mode, group_size):
    x = np.random.default_rng(group_size).standard_normal((2, 3, 5, 6))
    got = ops.channel_pool(x, group_size, mode)
    assert got.shape == (2, 3, 5, 6 // group_size)
    np.testing.assert_allclose(
        np.asarray(got), _channel_pool_reference(x, group_size, mode), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("mode", ["max", "sum"])
def test_channel_pool_integers_exact(mode):
    x = np.random.default_rng(12).integers(-9, 9, (2, 3, 4, 6)).astype(np.int32)
    got = ops.channel_pool(x, 3, mode)
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, _channel_pool_reference(x, 3, mode))


def _torch_maxout(torch, x, g, ct):
    """Maxout as PyTorch code writes it: view channels as (C // g, g) and take the max."""
    xt = to_torch_nchw(torch, x).requires_grad_(True)
    n, c, h, w = xt.shape
    y = xt.view(n, c // g, g, h, w).max(dim=2).values
    (y * to_torch_nchw(torch, ct)).sum().backward()
    return from_torch_nchw(y), from_torch_nchw(xt.grad)


@pytest.mark.parametrize("ties", [False, True])
def test_maxout_matches_torch(x64, torch, ties):
    shape = (2, 3, 4, 6)
    x = _ties(shape, 13) if ties else np.random.default_rng(13).standard_normal(shape)
    ct = np.random.default_rng(14).standard_normal((2, 3, 4, 2))
    y, g = _value_and_vjp(functools.partial(ops.channel_pool, group_size=3, mode="max"), x, ct)
    want_y, want_g = _torch_maxout(torch, x, 3, ct)
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(g, want_g)


def test_maxout_tie_and_nan_by_hand(x64, torch):
    # One group of 4 channels: [1, 3, 3, 0] -> the first 3; [nan, 2, nan, 5] -> the first NaN
    # (torch.max's rule, unlike the pooling kernels' last NaN).
    x = np.array([[1.0, 3.0, 3.0, 0.0], [np.nan, 2.0, np.nan, 5.0]]).reshape(1, 1, 2, 4)
    ct = np.ones((1, 1, 2, 1))
    y, g = _value_and_vjp(functools.partial(ops.channel_pool, group_size=4), x, ct)
    np.testing.assert_array_equal(g.reshape(2, 4), [[0, 1, 0, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(g, _torch_maxout(torch, x, 4, ct)[1])
    assert np.isnan(y[0, 0, 1, 0])


# ------------------------------------------------------------------------------- errors


X = np.zeros((1, 6, 6, 4), np.float32)
XI = np.zeros((1, 6, 6, 4), np.int32)
X3 = np.zeros((6, 6, 4), np.float32)

ERRORS = [
    # (function, args, kwargs, exception, message regex)
    (ops.max_pool2d, (X3, 2), {}, ValueError, r"max_pool2d: `x` must have rank 4.*x\[None\]"),
    (ops.max_pool2d, ([[1.0]], 2), {}, TypeError, r"max_pool2d: `x` must be an array"),
    (ops.max_pool2d, (X.astype(bool), 2), {}, TypeError, r"max_pool2d: `x`.*dtype; got bool"),
    (ops.max_pool2d, (X, 0), {}, ValueError, r"max_pool2d: `kernel_size` must be >= 1"),
    (ops.max_pool2d, (X, 2.5), {}, TypeError, r"max_pool2d: `kernel_size` must be an int"),
    (ops.max_pool2d, (X, (2, 2, 2)), {}, TypeError, r"max_pool2d: `kernel_size`.*pair"),
    (ops.max_pool2d, (X, 2), {"stride": 0}, ValueError, r"max_pool2d: `stride` must be >= 1"),
    (ops.max_pool2d, (X, 2), {"dilation": (1, 0)}, ValueError, r"max_pool2d: `dilation`"),
    (ops.max_pool2d, (X, 2), {"padding": -1}, ValueError, r"max_pool2d: `padding` must be >= 0"),
    (
        ops.max_pool2d,
        (X, 3),
        {"padding": 2},
        ValueError,
        r"max_pool2d: `padding` must be at most half of `kernel_size`.*got padding=\(2, 2\)",
    ),
    (
        ops.max_pool2d,
        (X, (4, 3)),
        {"padding": (2, 2)},
        ValueError,
        r"max_pool2d: `padding`.*kernel_size=\(4, 3\)",
    ),
    (
        ops.max_pool2d,
        (X, 2),
        {"ceil_mode": 1},
        TypeError,
        r"max_pool2d: `ceil_mode` must be a bool",
    ),
    (
        ops.max_pool2d,
        (X, 4),
        {"dilation": 2},
        ValueError,
        r"max_pool2d: input of spatial size \(6, 6\).*smallest valid input.*>= \(7, 7\)",
    ),
    (ops.avg_pool2d, (X3, 2), {}, ValueError, r"avg_pool2d: `x` must have rank 4"),
    (ops.avg_pool2d, (XI, 2), {}, TypeError, r"avg_pool2d: `x` must have a floating dtype"),
    (ops.avg_pool2d, (X, 2), {"stride": (1, 0)}, ValueError, r"avg_pool2d: `stride`"),
    (ops.avg_pool2d, (X, 4), {"padding": 3}, ValueError, r"avg_pool2d: `padding` must be at most"),
    (
        ops.avg_pool2d,
        (X, 2),
        {"count_include_pad": "yes"},
        TypeError,
        r"avg_pool2d: `count_include_pad` must be a bool",
    ),
    (ops.avg_pool2d, (X, 7), {}, ValueError, r"avg_pool2d: input of spatial size \(6, 6\)"),
    (ops.sum_pool2d, (X3, 2), {}, ValueError, r"sum_pool2d: `x` must have rank 4"),
    (ops.sum_pool2d, (X, -1), {}, ValueError, r"sum_pool2d: `kernel_size` must be >= 1"),
    (ops.sum_pool2d, (X, 2), {"padding": 2}, ValueError, r"sum_pool2d: `padding` must be at most"),
    (ops.sum_pool2d, (X, (2, 9)), {}, ValueError, r"sum_pool2d: input of spatial size"),
    (
        ops.adaptive_avg_pool2d,
        (X3, 2),
        {},
        ValueError,
        r"adaptive_avg_pool2d: `x` must have rank 4",
    ),
    (ops.adaptive_avg_pool2d, (XI, 2), {}, TypeError, r"adaptive_avg_pool2d: `x`.*floating"),
    (
        ops.adaptive_avg_pool2d,
        (X, 0),
        {},
        ValueError,
        r"adaptive_avg_pool2d: `output_size` must be >= 1.*got 0",
    ),
    (ops.adaptive_avg_pool2d, (X, (2, -1)), {}, ValueError, r"adaptive_avg_pool2d: `output_size`"),
    (
        ops.adaptive_max_pool2d,
        (X, None),
        {},
        TypeError,
        r"adaptive_max_pool2d: `output_size` must be an int or a pair",
    ),
    (ops.adaptive_max_pool2d, (X, (2, 2, 2)), {}, TypeError, r"adaptive_max_pool2d: `output_size`"),
    (ops.adaptive_max_pool2d, (X, 2.0), {}, TypeError, r"adaptive_max_pool2d: `output_size`"),
    (
        ops.adaptive_max_pool2d,
        (X3, 2),
        {},
        ValueError,
        r"adaptive_max_pool2d: `x` must have rank 4",
    ),
    (
        ops.adaptive_max_pool2d,
        (X[:, :0], 2),
        {},
        ValueError,
        r"adaptive_max_pool2d: `x` must have non-empty spatial dimensions.*\(1, 1\)",
    ),
    (ops.adaptive_max_pool2d, (X.astype(bool), 2), {}, TypeError, r"adaptive_max_pool2d: `x`"),
    (ops.channel_pool, (X3, 2), {}, ValueError, r"channel_pool: `x` must have rank 4"),
    (ops.channel_pool, (X, 0), {}, ValueError, r"channel_pool: `group_size` must be a positive"),
    (ops.channel_pool, (X, 2.0), {}, TypeError, r"channel_pool: `group_size` must be a positive"),
    (
        ops.channel_pool,
        (X, 3),
        {},
        ValueError,
        r"channel_pool: the channel count C=4.*divisible by `group_size`=3",
    ),
    (
        ops.channel_pool,
        (X, 2),
        {"mode": "min"},
        ValueError,
        r"channel_pool: `mode` must be one of \('max', 'sum', 'avg'\); got 'min'",
    ),
    (ops.channel_pool, (XI, 2), {"mode": "avg"}, TypeError, r"channel_pool: `x`.*floating"),
    (ops.channel_pool, (X.astype(bool), 2), {}, TypeError, r"channel_pool: `x`.*dtype"),
]


@pytest.mark.parametrize(
    "fn, args, kwargs, exc, match",
    ERRORS,
    ids=[f"{e[0].__name__}-{i}" for i, e in enumerate(ERRORS)],
)
def test_errors_name_the_argument(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


# ---------------------------------------------------------------------------------- jit


JIT_CASES = [
    functools.partial(ops.max_pool2d, kernel_size=3, stride=2, padding=1, ceil_mode=True),
    functools.partial(ops.avg_pool2d, kernel_size=3, stride=2, padding=1, count_include_pad=False),
    functools.partial(ops.sum_pool2d, kernel_size=2),
    functools.partial(ops.adaptive_avg_pool2d, output_size=(2, 3)),
    functools.partial(ops.adaptive_max_pool2d, output_size=(2, 3)),
    functools.partial(ops.channel_pool, group_size=2, mode="max"),
]


@pytest.mark.parametrize("fn", JIT_CASES, ids=lambda f: f.func.__name__)
def test_works_under_jit(fn):
    # Static arguments are bound by partial; only x is traced. (The gradient tests above
    # all run under jit, so this compares against eager execution.)
    x = jnp.asarray(np.random.default_rng(15).standard_normal((2, 7, 9, 4)), jnp.float32)
    np.testing.assert_allclose(jax.jit(fn)(x), fn(x), rtol=1e-6, atol=1e-6)
