"""conv2d's algorithms ("im2col", "winograd*", "fft") against "xla", torch and finite differences.

The algorithms compute the same function in different arithmetic, so they are compared to the
direct "xla" convolution twice: in float32 with a stated tolerance per algorithm (how close
they are in practice), and in float64 with a tight one (rounding error only, ~1e-14: the
algorithm is exact, not approximately right). Comparisons run under `jax.jit`, as layers
run them, which also checks that every algorithm traces with abstract values.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxcnn import ops
from jaxcnn.ops.fft import _fast_fft_size
from jaxcnn.ops.winograd import TRANSFORMS, winograd_conv
from tests.helpers import fd_check, from_torch_nchw, to_torch_nchw, to_torch_oihw

WINOGRAD = ("winograd", "winograd_f2", "winograd_f4")
# "winograd" is an alias of "winograd_f4" (test_winograd_is_f4); the heavy tests run each
# distinct computation once.
ALGORITHMS = ("im2col", "winograd_f2", "winograd_f4", "fft")

# float32 tolerance (atol = rtol) against "xla" for outputs of unit scale (x ~ N(0, 1),
# w ~ N(0, 1 / fan_in), b ~ N(0, 1)). Both sides are rounded, differently, so this bounds the
# difference of two float32 results; each is ~10x the largest |y - ref| / (1 + |ref|)
# measured on the sweep below: 8e-7 for im2col, 1.0e-6 for F(2x2), 6e-7 for the FFT (other
# summation orders than XLA's), and 5e-6 for F(4x4), whose transforms (entries up to 8)
# amplify rounding; see jaxcnn/ops/winograd.py.
F32_TOL = {
    "im2col": 1e-5,
    "winograd_f2": 1e-5,
    "winograd_f4": 5e-5,
    "fft": 1e-5,
}
# float64: measured differences are at most 2e-15 (1.5e-14 for F(4x4)), i.e. rounding only;
# a wrong tap, tile or group would be off by O(1).
F64_TOL = 1e-12


class Case(NamedTuple):
    n: int
    h: int
    w: int
    c_in: int
    c_out: int
    kernel: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: object = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    mode: str = "zeros"  # padding_mode
    bias: bool = True

    def kwargs(self, algorithm):
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.mode,
            algorithm=algorithm,
        )


# 3x3, stride 1, dilation 1: what every algorithm (Winograd included) supports. Odd sizes so
# output tiles do not divide the output, plus one (8 x 12) that F(4x4) tiles exactly.
CASES_3X3 = [
    Case(2, 7, 9, 3, 4, 3, padding=1),
    Case(1, 13, 11, 8, 6, 3, padding="same", groups=2, mode="reflect"),
    Case(2, 5, 5, 4, 8, 3, padding=0, groups=4, bias=False),  # depthwise, multiplier 2
    Case(1, 3, 3, 1, 1, 3, padding=0),  # a single output pixel
    Case(2, 8, 12, 16, 16, 3, padding=1, mode="circular"),
    Case(1, 9, 7, 6, 6, 3, padding=((2, 0), (1, 3)), groups=6, mode="replicate"),
]
# Everything else, for the algorithms that take any kernel, stride and dilation.
CASES_GENERAL = [
    Case(2, 7, 9, 4, 6, 1, stride=2),  # 1x1
    Case(1, 13, 11, 4, 6, 5, stride=2, padding=2, dilation=2, groups=2, mode="reflect"),
    # AlexNet-like 11x11, strided; the padded 25 x 23 input has FFT size 25 x 24.
    Case(2, 15, 13, 3, 8, 11, stride=2, padding=5, bias=False),
    Case(1, 9, 8, 6, 6, 3, padding="same", dilation=2, groups=6, mode="replicate"),
    Case(1, 10, 9, 4, 4, (3, 5), stride=(1, 2), padding=(2, 1), dilation=(2, 1), mode="circular"),
    Case(1, 5, 5, 2, 3, 5),  # kernel as large as the input
]


def _supports(algorithm, case):
    return not algorithm.startswith("winograd") or case in CASES_3X3


SWEEP = [
    pytest.param(alg, case, id=f"{alg}-{i}")
    for alg in ALGORITHMS
    for i, case in enumerate(CASES_3X3 + CASES_GENERAL)
    if _supports(alg, case)
]


def _data(case, dtype, seed=0):
    """x ~ N(0, 1), w ~ N(0, 1 / fan_in), b ~ N(0, 1): outputs of unit scale."""
    rng = np.random.default_rng(seed)
    kh, kw = (case.kernel, case.kernel) if isinstance(case.kernel, int) else case.kernel
    cin_g = case.c_in // case.groups
    x = rng.standard_normal((case.n, case.h, case.w, case.c_in))
    w = rng.standard_normal((kh, kw, cin_g, case.c_out)) / np.sqrt(kh * kw * cin_g)
    b = rng.standard_normal(case.c_out) if case.bias else None
    cast = functools.partial(jnp.asarray, dtype=dtype)
    return cast(x), cast(w), None if b is None else cast(b)


def _conv(case, algorithm):
    """conv2d for `case`, jitted: the way layers run it (and one compilation per case)."""
    return jax.jit(functools.partial(ops.conv2d, **case.kwargs(algorithm)))


@functools.cache
def _xla_reference(case, dtype):
    """The "xla" output for `case`, computed once and shared by every algorithm's test."""
    return np.asarray(_conv(case, "xla")(*_data(case, dtype)))


@pytest.mark.parametrize(("algorithm", "case"), SWEEP)
def test_matches_xla_float32(algorithm, case):
    y = _conv(case, algorithm)(*_data(case, jnp.float32))
    ref = _xla_reference(case, jnp.float32)
    assert y.dtype == jnp.float32 and y.shape == ref.shape
    tol = F32_TOL[algorithm]
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize(("algorithm", "case"), SWEEP)
def test_matches_xla_float64(x64, algorithm, case):
    y = _conv(case, algorithm)(*_data(case, jnp.float64))
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, _xla_reference(case, jnp.float64), rtol=F64_TOL, atol=F64_TOL)


def _explicit_padding(padding):
    """Numeric `padding` as ((top, bottom), (left, right))."""
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    if isinstance(padding[0], int):
        return ((padding[0], padding[0]), (padding[1], padding[1]))
    return padding


def _torch_conv(torch, case, x, w, b):
    """torch.nn.functional.conv2d, with nn.Conv2d's padding_mode done as F.pad + unpadded conv.

    F.pad also gives the asymmetric zero padding F.conv2d lacks; F.pad takes (left, right,
    top, bottom) and calls zero padding "constant".
    """
    F = torch.nn.functional
    xt = to_torch_nchw(torch, x)
    bt = None if b is None else torch.from_numpy(np.array(b))
    (top, bottom), (left, right) = _explicit_padding(case.padding)
    mode = "constant" if case.mode == "zeros" else case.mode
    xt = F.pad(xt, (left, right, top, bottom), mode=mode)
    y = F.conv2d(
        xt,
        to_torch_oihw(torch, w),
        bt,
        stride=case.stride,
        dilation=case.dilation,
        groups=case.groups,
    )
    return from_torch_nchw(y)


# Explicit paddings (torch's own "same" has no padding_mode), every padding mode per algorithm.
TORCH_CASES = [
    Case(2, 7, 9, 3, 4, 3, padding=1, mode="reflect"),
    Case(1, 9, 7, 6, 6, 3, padding=((2, 0), (1, 3)), groups=3, mode="zeros"),
    Case(1, 6, 11, 4, 2, 3, padding=(1, 2), mode="circular", bias=False),
    Case(1, 12, 10, 2, 3, 5, stride=2, padding=3, dilation=2, mode="replicate"),
    Case(1, 16, 14, 3, 2, 11, stride=2, padding=(2, 4), mode="circular"),
]


@pytest.mark.parametrize(
    ("algorithm", "case"),
    [
        pytest.param(alg, case, id=f"{alg}-{i}")
        for alg in ALGORITHMS
        for i, case in enumerate(TORCH_CASES)
        if not alg.startswith("winograd") or case.kernel == 3
    ],
)
def test_matches_torch_float64(x64, torch, algorithm, case):
    x, w, b = _data(case, jnp.float64, seed=1)
    y = _conv(case, algorithm)(x, w, b)
    np.testing.assert_allclose(y, _torch_conv(torch, case, x, w, b), rtol=F64_TOL, atol=F64_TOL)


# Small enough for elementwise finite differences of every entry of x, w and b. The Winograd
# case has a 5 x 6 output, which no tile size divides (the crop path); the other one has a
# stride, a dilation and groups.
GRAD_CASES = {
    "winograd": Case(1, 5, 6, 2, 3, 3, padding=1, mode="reflect"),
    "general": Case(1, 7, 6, 2, 4, 3, stride=2, padding=2, dilation=2, groups=2, mode="circular"),
}


def _grad_case(algorithm):
    return GRAD_CASES["winograd" if algorithm.startswith("winograd") else "general"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradients_match_finite_differences(x64, algorithm):
    case = _grad_case(algorithm)
    fd_check(_conv(case, algorithm), _data(case, jnp.float64), argnums=(0, 1, 2))


def _grads(case, algorithm):
    """jax.grad of sum(conv2d(x, w, b) * ct) w.r.t. (x, w, b) for a fixed cotangent ct."""
    x, w, b = _data(case, jnp.float64)
    ct = np.random.default_rng(2).standard_normal(_xla_reference(case, jnp.float64).shape)

    def loss(x, w, b):
        return jnp.sum(ops.conv2d(x, w, b, **case.kwargs(algorithm)) * ct)

    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(x, w, b)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_gradients_match_xla(x64, algorithm):
    case = CASES_3X3[1] if algorithm.startswith("winograd") else CASES_GENERAL[1]
    for got, want in zip(_grads(case, algorithm), _grads(case, "xla"), strict=True):
        np.testing.assert_allclose(got, want, rtol=F64_TOL, atol=F64_TOL)


# The public algorithms; "winograd_f2" is the same code as "winograd" (= F(4x4)) with other
# constant matrices, and its first-order gradients are checked above.
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["im2col", "winograd", "fft"])
def test_second_order_gradients(x64, algorithm):
    # Convolution is bilinear in (x, w), so its second derivatives (the x-w cross terms) are
    # non-zero and exactly representable: finite differences check them without truncation
    # error. The 4 x 5 output is not a whole number of 4 x 4 Winograd tiles.
    case = Case(1, 4, 5, 2, 2, 3, padding=1)
    check_grads(_conv(case, algorithm), _data(case, jnp.float64), order=2, modes=["fwd", "rev"])


def test_winograd_is_f4():
    # Also the one eager (op-by-op) run of Winograd; everything else here runs under jit.
    case = CASES_3X3[1]
    x, w, b = _data(case, jnp.float32)
    np.testing.assert_array_equal(
        ops.conv2d(x, w, b, **case.kwargs("winograd")),
        ops.conv2d(x, w, b, **case.kwargs("winograd_f4")),
    )


@pytest.mark.parametrize("tile", sorted(TRANSFORMS))
def test_transform_matrices_compute_correlation(tile):
    """1-D F(m, 3): A^T [(G g) * (B^T d)] is the valid correlation of d (m + 2) with g (3)."""
    bt, g_mat, at = TRANSFORMS[tile]
    assert bt.shape == (tile + 2, tile + 2) and g_mat.shape == (tile + 2, 3)
    assert at.shape == (tile, tile + 2)
    rng = np.random.default_rng(tile)
    for _ in range(10):
        d, g = rng.standard_normal(tile + 2), rng.standard_normal(3)
        y = at @ ((g_mat @ g) * (bt @ d))
        np.testing.assert_allclose(y, np.correlate(d, g, mode="valid"), rtol=0, atol=1e-13)


def test_winograd_float32_error_growth():
    """The error table in jaxcnn/ops/winograd.py's docstring, re-measured with its bounds.

    F(2x2) stays within 1e-5 of the output RMS and F(4x4) within 1e-4 (measured: up to 2.7e-6
    and 3.8e-5); F(2x2) is never less accurate than F(4x4).
    """
    for c_in in (64, 256):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((2, 16, 16, c_in))
        w = rng.standard_normal((3, 3, c_in, 64))
        with jax.enable_x64(True):
            ref = np.asarray(ops.conv2d(jnp.asarray(x), jnp.asarray(w), padding=1))
        rms = np.sqrt(np.mean(ref**2))
        x32, w32 = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
        err = {}
        for alg in ("winograd_f2", "winograd_f4"):
            conv = jax.jit(functools.partial(ops.conv2d, padding=1, algorithm=alg))
            err[alg] = np.abs(np.asarray(conv(x32, w32), np.float64) - ref).max() / rms
        assert err["winograd_f2"] <= 1e-5, (c_in, err)
        assert err["winograd_f4"] <= 1e-4, (c_in, err)
        assert err["winograd_f2"] <= err["winograd_f4"], (c_in, err)


@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize(
    ("kernel", "kwargs", "match"),
    [
        (5, {}, r"`w` must be a 3x3 kernel; got kernel size \(5, 5\)"),
        ((3, 1), {}, r"`w` must be a 3x3 kernel"),
        (3, {"stride": 2}, r"`stride` must be 1; got stride=\(2, 2\)"),
        (3, {"dilation": (1, 2)}, r"`dilation` must be 1; got dilation=\(1, 2\)"),
    ],
)
def test_winograd_rejects_unsupported(algorithm, kernel, kwargs, match):
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x, w = jnp.zeros((1, 9, 9, 2)), jnp.zeros((kh, kw, 2, 2))
    with pytest.raises(ValueError, match=match) as info:
        ops.conv2d(x, w, algorithm=algorithm, **kwargs)
    # Every message says what Winograd needs and what to use instead.
    assert "needs a 3x3 kernel, stride 1 and dilation 1" in str(info.value)
    assert "algorithm='xla', 'im2col' or 'fft'" in str(info.value)


def test_winograd_rejects_tile():
    x, w = jnp.zeros((1, 6, 6, 2)), jnp.zeros((3, 3, 2, 2))
    with pytest.raises(ValueError, match=r"`tile` must be 2 .* or 4 .*; got 3"):
        winograd_conv(x, w, stride=(1, 1), dilation=(1, 1), groups=1, out_hw=(4, 4), tile=3)


def test_unknown_algorithm():
    x, w = jnp.zeros((1, 6, 6, 2)), jnp.zeros((3, 3, 2, 2))
    with pytest.raises(ValueError, match=r"`algorithm` must be one of .*; got 'winograd_f6'"):
        ops.conv2d(x, w, algorithm="winograd_f6")


@pytest.mark.parametrize(
    ("dtype", "complex_dtype"),
    [
        (jnp.float32, jnp.complex64),
        (jnp.float64, jnp.complex128),
        # XLA's FFT rejects half precision: computed in complex64, returned as bfloat16.
        (jnp.bfloat16, jnp.complex64),
    ],
)
def test_fft_precision_follows_input(x64, dtype, complex_dtype):
    case = CASES_GENERAL[1]
    x, w, b = _data(case, dtype)
    fn = functools.partial(ops.conv2d, **case.kwargs("fft"))
    assert fn(x, w, b).dtype == dtype
    jaxpr = jax.make_jaxpr(fn)(x, w, b).jaxpr
    complex_dtypes = {
        v.aval.dtype
        for eqn in jaxpr.eqns
        for v in eqn.outvars
        if jnp.issubdtype(v.aval.dtype, jnp.complexfloating)
    }
    assert complex_dtypes == {jnp.dtype(complex_dtype)}


@pytest.mark.parametrize(
    ("n", "expected"), [(1, 1), (7, 7), (11, 12), (13, 14), (97, 98), (127, 128), (211, 216)]
)
def test_fast_fft_size(n, expected):
    assert _fast_fft_size(n) == expected
