"""conv_transpose2d: torch parity, equality with the VJP of conv2d, gradients, errors."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcnn import ops
from tests.helpers import fd_check, from_torch_nchw, to_torch_nchw

# (N, H, W, C_in, C_out, groups, kernel, stride, padding, output_padding, dilation)
SWEEP = [
    (2, 5, 7, 4, 6, 2, 3, 2, 1, 1, 1),
    (1, 4, 4, 3, 2, 1, (2, 3), (3, 2), (1, 0), (2, 1), (1, 2)),
    (2, 6, 5, 6, 6, 6, 3, 1, 2, 0, 2),  # depthwise, dilated
    (1, 7, 3, 2, 5, 1, 4, 2, 1, 0, 1),  # DCGAN-style 4x4 / stride 2 doubling
    (1, 3, 3, 4, 4, 4, 5, 3, 0, 2, 1),
    (2, 1, 1, 3, 2, 1, 3, 1, 0, 0, 1),  # 1x1 input
]


def _op_kwargs(case) -> dict:
    """The keyword arguments of conv_transpose2d (and torch's) that a SWEEP case holds."""
    *_, groups, _, stride, padding, output_padding, dilation = case
    return dict(
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
    )


def _torch_weight_case(rng, case, dtype=np.float64):
    n, h, w, cin, cout, groups, kernel, *_ = case
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal((n, h, w, cin)).astype(dtype)
    wt = rng.standard_normal((cin, cout // groups, kh, kw)).astype(dtype)  # torch layout
    b = rng.standard_normal((cout,)).astype(dtype)
    return x, wt, b


@pytest.mark.parametrize("case", SWEEP, ids=lambda c: "x".join(map(str, c[:6])))
def test_matches_torch(x64, torch, case):
    rng = np.random.default_rng(sum(case[:6]))
    x, wt, b = _torch_weight_case(rng, case)
    kw = _op_kwargs(case)
    y = ops.conv_transpose2d(
        jnp.asarray(x), jnp.asarray(wt.transpose(2, 3, 0, 1)), jnp.asarray(b), **kw
    )
    ref = torch.nn.functional.conv_transpose2d(
        to_torch_nchw(torch, x), torch.from_numpy(wt), torch.from_numpy(b), **kw
    )
    assert y.shape == tuple(from_torch_nchw(ref).shape)
    np.testing.assert_allclose(np.asarray(y), from_torch_nchw(ref), rtol=1e-12, atol=1e-12)


def test_matches_torch_float32(torch):
    case = SWEEP[0]
    x, wt, b = _torch_weight_case(np.random.default_rng(0), case, np.float32)
    kw = _op_kwargs(case)
    y = ops.conv_transpose2d(
        jnp.asarray(x), jnp.asarray(wt.transpose(2, 3, 0, 1)), jnp.asarray(b), **kw
    )
    ref = torch.nn.functional.conv_transpose2d(
        to_torch_nchw(torch, x), torch.from_numpy(wt), torch.from_numpy(b), **kw
    )
    assert y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(y), from_torch_nchw(ref), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "h,w,k,stride,padding,dilation,groups",
    [
        (8, 8, 3, 2, 1, 1, 1),
        (9, 7, 3, 2, 1, 1, 1),  # odd size: output_padding needed to recover it
        (11, 10, (3, 5), (3, 2), (2, 1), (1, 2), 2),
        (7, 7, 5, 1, 2, 1, 4),
        (12, 9, 4, 4, 0, 1, 1),
    ],
)
def test_equals_vjp_of_conv2d(x64, h, w, k, stride, padding, dilation, groups):
    """The defining property: conv_transpose2d is the input-gradient of conv2d."""
    kh, kw = (k, k) if isinstance(k, int) else k
    rng = np.random.default_rng(h * w)
    c_x, c_y = 4, 8
    x = jnp.asarray(rng.standard_normal((2, h, w, c_x)))
    w_conv = jnp.asarray(rng.standard_normal((kh, kw, c_x // groups, c_y)))
    conv = functools.partial(
        ops.conv2d, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    y, vjp = jax.vjp(lambda x: conv(x, w_conv), x)
    g = jnp.asarray(rng.standard_normal(y.shape))
    (expected,) = vjp(g)

    s = (stride, stride) if isinstance(stride, int) else stride
    p = (padding, padding) if isinstance(padding, int) else padding
    d = (dilation, dilation) if isinstance(dilation, int) else dilation
    output_padding = tuple(
        (size + 2 * p[a] - d[a] * ((kh, kw)[a] - 1) - 1) % s[a] for a, size in enumerate((h, w))
    )
    got = ops.conv_transpose2d(
        g,
        w_conv.transpose(0, 1, 3, 2),
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
    )
    assert got.shape == x.shape
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-12, atol=1e-12)


def test_upsamples_by_stride():
    """A 2x2 kernel of ones at stride 2 copies each pixel into a 2x2 block (nearest upsampling)."""
    x = jnp.arange(6.0).reshape(1, 2, 3, 1)
    y = ops.conv_transpose2d(x, jnp.ones((2, 2, 1, 1)), stride=2)
    expected = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("case", SWEEP[:4], ids=lambda c: "x".join(map(str, c[:6])))
def test_gradients_finite_differences(x64, case):
    *_, groups, _, stride, padding, output_padding, dilation = case
    case = (1, min(case[1], 4), min(case[2], 4), *case[3:])
    x, wt, b = _torch_weight_case(np.random.default_rng(3), case)
    f = functools.partial(
        ops.conv_transpose2d,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        dilation=dilation,
        groups=groups,
    )
    fd_check(f, (x, wt.transpose(2, 3, 0, 1), b), argnums=(0, 1, 2))


def test_gradients_match_torch(x64, torch):
    case = SWEEP[1]
    rng = np.random.default_rng(4)
    x, wt, _b = _torch_weight_case(rng, case)
    kw = _op_kwargs(case)
    y = ops.conv_transpose2d(jnp.asarray(x), jnp.asarray(wt.transpose(2, 3, 0, 1)), **kw)
    ct = rng.standard_normal(y.shape)
    gx, gw = jax.grad(lambda x, w: jnp.sum(ops.conv_transpose2d(x, w, **kw) * ct), argnums=(0, 1))(
        jnp.asarray(x), jnp.asarray(wt.transpose(2, 3, 0, 1))
    )
    xt = to_torch_nchw(torch, x).requires_grad_()
    wtt = torch.from_numpy(wt).requires_grad_()
    (
        torch.nn.functional.conv_transpose2d(xt, wtt, **kw) * to_torch_nchw(torch, ct)
    ).sum().backward()
    np.testing.assert_allclose(gx, from_torch_nchw(xt.grad), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, wtt.grad.numpy().transpose(2, 3, 0, 1), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_second_order_and_jit(x64):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 4, 2))
    w = rng.standard_normal((3, 3, 2, 3))
    b = rng.standard_normal((3,))
    f = functools.partial(ops.conv_transpose2d, stride=2, padding=1, output_padding=1)
    check_grads(f, (x, w, b), order=2, modes=["fwd", "rev"])
    np.testing.assert_allclose(jax.jit(f)(x, w, b), f(x, w, b), rtol=1e-12)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(x=jnp.zeros((4, 4, 2))), ValueError, r"`x` must have rank 4"),
        (dict(x=jnp.zeros((1, 4, 4, 2), jnp.int32)), TypeError, r"floating dtype"),
        (dict(w=jnp.zeros((3, 3, 2))), ValueError, r"`w` must have rank 4"),
        (dict(w=jnp.zeros((3, 3, 3, 2))), ValueError, r"channel mismatch.*C_in=2"),
        (dict(groups=0), ValueError, r"`groups` must be a positive int"),
        (
            dict(x=jnp.zeros((1, 4, 4, 3)), w=jnp.zeros((3, 3, 3, 2)), groups=2),
            ValueError,
            r"C_in=3 must be divisible by groups=2",
        ),
        (dict(b=jnp.zeros(5)), ValueError, r"`b` must have shape \(C_out,\) = \(3,\)"),
        (dict(stride=0), ValueError, r"`stride` must be >= 1"),
        (dict(output_padding=-1), ValueError, r"`output_padding` must be >= 0"),
        (dict(output_padding=1), ValueError, r"`output_padding` must be smaller than stride"),
        (dict(stride=2, output_padding=(0, 2)), ValueError, r"smaller than stride or dilation"),
        (dict(padding=-1), ValueError, r"`padding` must be non-negative"),
        (dict(padding="same"), TypeError, r"`padding` must be an int"),
        (dict(x=jnp.zeros((1, 1, 1, 2)), padding=2), ValueError, r"output size would be"),
    ],
)
def test_errors(kwargs, exc, match):
    args = dict(x=jnp.zeros((1, 4, 4, 2)), w=jnp.zeros((3, 3, 2, 3)), b=None)
    args.update(kwargs)
    x, w, b = args.pop("x"), args.pop("w"), args.pop("b")
    with pytest.raises(exc, match=match):
        ops.conv_transpose2d(x, w, b, **args)
