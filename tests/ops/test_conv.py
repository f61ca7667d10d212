"""conv2d ("xla" algorithm) and conv_output_size against torch.nn.functional and by hand."""

from __future__ import annotations

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcnn import ops
from tests.helpers import fd_check, from_torch_nchw, to_torch_nchw, to_torch_oihw

PADDING_MODES = ["zeros", "reflect", "replicate", "circular"]


def _torch_conv2d(torch, x, w, b, *, stride, padding, dilation, groups, padding_mode):
    """The reference: torch's functional conv, with nn.Conv2d's padding_mode emulation.

    torch.nn.Conv2d implements non-zero padding modes as F.pad followed by an unpadded
    convolution; F.pad takes (left, right, top, bottom).
    """
    F = torch.nn.functional
    xt = to_torch_nchw(torch, x)
    wt = to_torch_oihw(torch, w)
    bt = None if b is None else torch.from_numpy(np.asarray(b))
    if padding_mode != "zeros":
        (top, bottom), (left, right) = padding
        xt = F.pad(xt, (left, right, top, bottom), mode=padding_mode)
        padding = 0
    elif isinstance(padding, tuple) and isinstance(padding[0], tuple):
        # torch's conv2d only pads symmetrically: pad explicitly for the asymmetric case.
        (top, bottom), (left, right) = padding
        xt = F.pad(xt, (left, right, top, bottom))
        padding = 0
    y = F.conv2d(xt, wt, bt, stride=stride, padding=padding, dilation=dilation, groups=groups)
    return from_torch_nchw(y)


# (N, H, W, C_in, C_out, groups, kernel, stride, padding, dilation): odd and non-square sizes,
# grouped and depthwise convolutions, and the classic layers (LeNet 5x5, AlexNet 11x11/4).
SWEEP = [
    (2, 7, 9, 3, 4, 1, 3, 1, 1, 1),
    (1, 13, 11, 4, 6, 2, (3, 5), (2, 1), (1, 2), 1),
    (2, 9, 9, 6, 6, 6, 3, 1, 1, 1),  # depthwise
    (1, 10, 12, 4, 8, 4, 3, 2, 2, (2, 1)),  # depthwise multiplier 2, dilated
    (2, 32, 32, 1, 6, 1, 5, 1, 0, 1),  # LeNet C1
    (1, 35, 35, 3, 8, 1, 11, 4, 2, 1),  # AlexNet conv1 geometry, smaller image
    (1, 8, 6, 5, 3, 1, (1, 1), 1, 0, 1),  # 1x1
    (1, 11, 13, 4, 4, 2, 3, 3, ((2, 0), (1, 3)), 2),  # asymmetric padding, stride 3
    (3, 5, 5, 2, 2, 1, 5, 1, 2, 1),  # kernel as large as the input
]


def _case(rng, n, h, w, cin, cout, groups, kernel, dtype):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.standard_normal((n, h, w, cin)).astype(dtype)
    wk = rng.standard_normal((kh, kw, cin // groups, cout)).astype(dtype)
    b = rng.standard_normal((cout,)).astype(dtype)
    return x, wk, b


def _explicit(padding):
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    if isinstance(padding[0], int):
        return ((padding[0], padding[0]), (padding[1], padding[1]))
    return padding


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: "x".join(map(str, c[:5])))
def test_conv2d_matches_torch_float64(x64, torch, case, padding_mode):
    n, h, w, cin, cout, groups, kernel, stride, padding, dilation = case
    pads = _explicit(padding)
    if padding_mode == "reflect" and max(max(p) for p in pads) >= min(h, w):
        pytest.skip("reflect padding must be smaller than the input (torch rule too)")
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()))
    x, wk, b = _case(rng, n, h, w, cin, cout, groups, kernel, np.float64)
    y = ops.conv2d(
        jnp.asarray(x),
        jnp.asarray(wk),
        jnp.asarray(b),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    )
    ref = _torch_conv2d(
        torch,
        x,
        wk,
        b,
        stride=stride,
        padding=pads if padding_mode != "zeros" else padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    )
    assert y.shape == ref.shape
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", SWEEP[:4], ids=lambda c: "x".join(map(str, c[:5])))
def test_conv2d_matches_torch_float32(torch, case):
    n, h, w, cin, cout, groups, kernel, stride, padding, dilation = case
    rng = np.random.default_rng(1)
    x, wk, b = _case(rng, n, h, w, cin, cout, groups, kernel, np.float32)
    y = ops.conv2d(
        jnp.asarray(x),
        jnp.asarray(wk),
        jnp.asarray(b),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
    )
    ref = _torch_conv2d(
        torch,
        x,
        wk,
        b,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode="zeros",
    )
    assert y.dtype == jnp.float32
    # Sums of <= 100 products of N(0, 1) values: float32 reassociation error is ~1e-6.
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel,dilation", [(3, 1), (4, 1), ((2, 5), 1), (3, 2), ((4, 3), (3, 2))])
def test_same_padding_matches_torch(x64, torch, kernel, dilation):
    rng = np.random.default_rng(2)
    x, wk, _b = _case(rng, 2, 9, 8, 3, 4, 1, kernel, np.float64)
    y = ops.conv2d(jnp.asarray(x), jnp.asarray(wk), padding="same", dilation=dilation)
    ref = from_torch_nchw(
        torch.nn.functional.conv2d(
            to_torch_nchw(torch, x), to_torch_oihw(torch, wk), padding="same", dilation=dilation
        )
    )
    assert y.shape == (2, 9, 8, 4)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-12, atol=1e-12)


def test_valid_padding_is_no_padding():
    rng = np.random.default_rng(3)
    x, wk, _ = _case(rng, 1, 8, 8, 2, 3, 1, 3, np.float32)
    np.testing.assert_array_equal(
        ops.conv2d(jnp.asarray(x), jnp.asarray(wk), padding="valid"),
        ops.conv2d(jnp.asarray(x), jnp.asarray(wk), padding=0),
    )
    assert ops.conv2d(jnp.asarray(x), jnp.asarray(wk), padding="VALID").shape == (1, 6, 6, 3)


def test_cross_correlation_by_hand():
    """The definition itself, on numbers small enough to check on paper."""
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    w = jnp.array([[1.0, 0.0], [0.0, -1.0]]).reshape(2, 2, 1, 1)
    y = ops.conv2d(x, w)
    # y[i, j] = x[i, j] - x[i + 1, j + 1] = -5 everywhere: no kernel flip (cross-correlation).
    np.testing.assert_array_equal(y, jnp.full((1, 3, 3, 1), -5.0))
    y = ops.conv2d(x, w, stride=2, padding=1)
    # Output positions start at padded (0, 0): top-left sees only x[0, 0] under the -1 tap.
    assert y.shape == (1, 3, 3, 1)
    assert float(y[0, 0, 0, 0]) == -0.0
    assert float(y[0, 1, 1, 0]) == x[0, 1, 1, 0] - x[0, 2, 2, 0]


def test_bias_dtype_and_jit():
    rng = np.random.default_rng(4)
    x, wk, b = _case(rng, 2, 6, 6, 3, 5, 1, 3, np.float32)
    f = jax.jit(functools.partial(ops.conv2d, stride=2, padding=1, padding_mode="reflect"))
    y = f(jnp.asarray(x), jnp.asarray(wk), jnp.asarray(b))
    ref = ops.conv2d(
        jnp.asarray(x), jnp.asarray(wk), stride=2, padding=1, padding_mode="reflect"
    ) + jnp.asarray(b).reshape(1, 1, 1, -1)
    np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
    # bfloat16 activations keep their dtype (weights are cast to the input's dtype).
    yb = ops.conv2d(jnp.asarray(x, jnp.bfloat16), jnp.asarray(wk))
    assert yb.dtype == jnp.bfloat16


@pytest.mark.parametrize("padding_mode", PADDING_MODES)
@pytest.mark.parametrize(
    "stride,padding,dilation,groups", [(1, 1, 1, 1), (2, 1, 1, 2), (1, 2, 2, 1), (2, 0, 1, 4)]
)
def test_conv2d_gradients_finite_differences(x64, padding_mode, stride, padding, dilation, groups):
    rng = np.random.default_rng(5)
    x, wk, b = _case(rng, 1, 5, 6, 4, 4, groups, 3, np.float64)
    f = functools.partial(
        ops.conv2d,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
    )
    fd_check(f, (x, wk, b), argnums=(0, 1, 2))


def test_conv2d_gradients_match_torch(x64, torch):
    rng = np.random.default_rng(6)
    x, wk, b = _case(rng, 2, 7, 6, 4, 6, 2, (3, 2), np.float64)
    kw = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    ct = rng.standard_normal(ops.conv2d(jnp.asarray(x), jnp.asarray(wk), **kw).shape)

    gx, gw, gb = jax.grad(
        lambda x, w, b: jnp.sum(ops.conv2d(x, w, b, **kw) * ct), argnums=(0, 1, 2)
    )(jnp.asarray(x), jnp.asarray(wk), jnp.asarray(b))

    xt = to_torch_nchw(torch, x).requires_grad_()
    wt = to_torch_oihw(torch, wk).requires_grad_()
    bt = torch.from_numpy(b).requires_grad_()
    yt = torch.nn.functional.conv2d(xt, wt, bt, **kw)
    (yt * to_torch_nchw(torch, ct)).sum().backward()
    np.testing.assert_allclose(gx, from_torch_nchw(xt.grad), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-12, atol=1e-12)


def test_conv2d_second_order(x64):
    rng = np.random.default_rng(7)
    x, wk, b = _case(rng, 1, 5, 5, 2, 3, 1, 3, np.float64)
    f = functools.partial(ops.conv2d, stride=2, padding=1, padding_mode="circular")
    check_grads(f, (x, wk, b), order=2, modes=["fwd", "rev"])


# ---------------------------------------------------------------------- output-size formula


@pytest.mark.parametrize(
    "size,k,s,p,d,ceil,expected",
    [
        (32, 5, 1, 0, 1, False, 28),  # LeNet C1
        (224, 11, 4, 2, 1, False, 55),  # AlexNet conv1 (torchvision)
        (227, 11, 4, 0, 1, False, 55),  # AlexNet conv1 (paper's 227)
        (55, 3, 2, 0, 1, False, 27),  # AlexNet overlapping max-pool
        (224, 7, 2, 3, 1, False, 112),  # ResNet stem
        (112, 3, 2, 0, 1, True, 56),  # GoogLeNet max-pool with ceil_mode
        (112, 3, 2, 0, 1, False, 55),
        (5, 2, 2, 1, 1, True, 3),  # ceil_mode window would start in the padding: dropped
        (10, 3, 1, 2, 2, False, 10),  # dilated "same": 10 + 4 - 4 - 1 + 1
        (7, 3, 2, (0, 1), 1, False, 3),  # asymmetric padding: floor((7 + 1 - 3) / 2) + 1
    ],
)
def test_conv_output_size(size, k, s, p, d, ceil, expected):
    assert ops.conv_output_size(size, k, s, p, d, ceil_mode=ceil) == expected


def test_conv_output_size_agrees_with_conv2d_and_torch_pooling(torch):
    """The formula equals the shapes conv2d and torch's max_pool2d produce (incl. ceil_mode),
    and rejects exactly the sizes torch rejects, including inputs smaller than the window."""
    rng = np.random.default_rng(8)
    checked_small = 0
    for _ in range(120):
        size, k = int(rng.integers(1, 20)), int(rng.integers(1, 6))
        s, d = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        p = int(rng.integers(0, k // 2 + 1))
        fits = size + 2 * p >= d * (k - 1) + 1
        if fits:
            y = ops.conv2d(
                jnp.ones((1, size, 3, 1)),
                jnp.ones((k, 1, 1, 1)),
                stride=(s, 1),
                padding=(p, 0),
                dilation=(d, 1),
            )
            assert y.shape[1] == ops.conv_output_size(size, k, s, p, d)
        for ceil in (False, True):
            try:
                ref = torch.nn.functional.max_pool2d(
                    torch.ones(1, 1, size, 1), (k, 1), (s, 1), (p, 0), (d, 1), ceil_mode=ceil
                ).shape[2]
            except RuntimeError:  # torch: "Output size is too small"
                with pytest.raises(ValueError, match="output would be empty"):
                    ops.conv_output_size(size, k, s, p, d, ceil_mode=ceil)
                continue
            assert ops.conv_output_size(size, k, s, p, d, ceil_mode=ceil) == ref
            checked_small += not fits
    assert checked_small > 0  # ceil_mode windows hanging past a too-small input were covered


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_ceil_mode_window_may_hang_past_a_small_input(x64, torch, count_include_pad):
    """kernel 3, stride 2, ceil_mode on a 2x2 input: torch gives one (partial) window."""
    x = np.random.default_rng(9).standard_normal((1, 2, 2, 3))
    xt = to_torch_nchw(torch, x)
    F = torch.nn.functional
    mx = ops.max_pool2d(jnp.asarray(x), 3, 2, ceil_mode=True)
    np.testing.assert_array_equal(mx, from_torch_nchw(F.max_pool2d(xt, 3, 2, ceil_mode=True)))
    av = ops.avg_pool2d(jnp.asarray(x), 3, 2, ceil_mode=True, count_include_pad=count_include_pad)
    ref = F.avg_pool2d(xt, 3, 2, ceil_mode=True, count_include_pad=count_include_pad)
    assert av.shape == (1, 1, 1, 3)
    np.testing.assert_allclose(av, from_torch_nchw(ref), rtol=1e-12)
    with pytest.raises(
        ValueError,
        match=r"smallest valid input has spatial size \(H, W\) >= "
        r"\(2, 2\)",
    ):
        ops.max_pool2d(jnp.ones((1, 1, 1, 3)), 3, 2, ceil_mode=True)


# --------------------------------------------------------------------------- error paths


def _x(shape=(1, 8, 8, 4)):
    return jnp.zeros(shape, jnp.float32)


def _w(shape=(3, 3, 4, 2)):
    return jnp.zeros(shape, jnp.float32)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(x=_x((8, 8, 4))), ValueError, r"`x` must have rank 4.*single image"),
        (dict(x=_x((1, 1, 8, 8, 4))), ValueError, r"`x` must have rank 4"),
        (dict(x=jnp.zeros((1, 8, 8, 4), jnp.int32)), TypeError, r"floating dtype"),
        (dict(w=_w((3, 3, 4))), ValueError, r"`w` must have rank 4"),
        (dict(w=_w((3, 3, 3, 2))), ValueError, r"channel mismatch.*C_in=4.*\(kh, kw, 4, C_out\)"),
        (dict(groups=3), ValueError, r"C_in=4.*divisible by groups=3"),
        (dict(w=_w((3, 3, 2, 3)), groups=2), ValueError, r"C_out=3.*divisible by groups=2"),
        (dict(groups=0), ValueError, r"`groups` must be a positive int"),
        (dict(b=jnp.zeros(3)), ValueError, r"`b` must have shape \(C_out,\) = \(2,\)"),
        (dict(stride=0), ValueError, r"`stride` must be >= 1"),
        (dict(stride=(1, 2, 3)), TypeError, r"`stride` must be an int or a pair"),
        (dict(dilation=-1), ValueError, r"`dilation` must be >= 1"),
        (dict(padding=-1), ValueError, r"`padding` must be non-negative"),
        (dict(padding="full"), ValueError, r"padding string must be 'valid' or 'same'"),
        (dict(padding=1.5), TypeError, r"`padding` must be an int"),
        (dict(padding="same", stride=2), ValueError, r"padding='same' needs stride=1"),
        (dict(padding_mode="mirror"), ValueError, r"`padding_mode` must be one of"),
        (dict(algorithm="direct"), ValueError, r"`algorithm` must be one of"),
        (
            dict(x=_x((1, 2, 8, 4))),
            ValueError,
            r"too small.*smallest valid input has spatial size \(H, W\) >= \(3, 3\)",
        ),
        (
            dict(x=_x((1, 4, 8, 4)), dilation=2),
            ValueError,
            r"kernel is larger than the padded input.*>= \(5, 5\)",
        ),
        (
            dict(x=_x((1, 3, 8, 4)), padding=3, padding_mode="reflect"),
            ValueError,
            r"padding_mode='reflect' needs padding < input size.*H=3",
        ),
        (
            dict(x=_x((1, 3, 8, 4)), padding=4, padding_mode="circular"),
            ValueError,
            r"padding_mode='circular' needs padding <= input size",
        ),
    ],
)
def test_conv2d_errors(kwargs, exc, match):
    args = dict(x=_x(), w=_w(), b=None)
    args.update(kwargs)
    x, w, b = args.pop("x"), args.pop("w"), args.pop("b")
    with pytest.raises(exc, match=match):
        ops.conv2d(x, w, b, **args)


@pytest.mark.parametrize(
    "args,match",
    [
        (dict(size=0, kernel_size=3), r"`size` must be a positive int"),
        (dict(size=5, kernel_size=0), r"`kernel_size` must be a positive int"),
        (dict(size=5, kernel_size=3, stride=0), r"`stride` must be a positive int"),
        (dict(size=5, kernel_size=3, padding=-1), r"`padding` must be non-negative"),
        (dict(size=5, kernel_size=3, padding="same"), r"`padding` must be an int"),
        (dict(size=2, kernel_size=5, padding=1), r"output would be empty.*Smallest valid size: 3"),
    ],
)
def test_conv_output_size_errors(args, match):
    with pytest.raises(ValueError, match=match):
        ops.conv_output_size(**args)
