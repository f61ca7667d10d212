"""Winograd minimal filtering F(m x m, 3 x 3) for 3x3, stride-1 convolutions (Lavin & Gray).

A direct 3x3 convolution spends 9 multiplications per output per channel pair. Winograd's
minimal filtering algorithm F(m, 3) computes m outputs of a 3-tap correlation from m + 2
inputs with only m + 2 multiplications, by evaluating polynomials at m + 1 points (plus the
"point at infinity"), multiplying pointwise and interpolating back (Toom-Cook). Nesting it
over both axes gives F(m x m, 3 x 3): an (m + 2) x (m + 2) input tile d and the 3x3 kernel g
produce an m x m output tile

    Y = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise)

with (m + 2)^2 multiplications instead of 9 m^2:

    direct:        9 multiplications per output
    F(2x2, 3x3):  16 / 4  = 4    (2.25x fewer)
    F(4x4, 3x3):  36 / 16 = 2.25 (4x fewer)

In a convolution layer the elementwise product is summed over input channels, so the work
becomes (m + 2)^2 independent matrix multiplies (tile positions x C_in) @ (C_in x C_out),
one per tile element, while the transforms B^T d B, G g G^T and A^T M A are cheap (linear
in the data and shared across channels). Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", CVPR 2016.

The price is accuracy: the transforms have entries larger than 1 (up to 8 in F(4x4) with the
points used here), which amplifies float rounding error. Measured float32 error against a
float64 reference (N(0, 1) input and kernel, 2 x 16 x 16 images, padding 1, 64 output
channels, jit on CPU; `test_winograd_float32_error_growth` in
tests/ops/test_conv_algorithms.py re-measures this and asserts the bounds below):

    C_in  algorithm      max abs error  max error / RMS output  RMS error / RMS output
      64  xla (direct)      7.7e-05           3.4e-06                 3.8e-07
      64  F(2x2, 3x3)       3.1e-05           1.3e-06                 2.7e-07
      64  F(4x4, 3x3)       3.6e-04           1.5e-05                 1.4e-06
     256  xla (direct)      1.1e-04           2.3e-06                 3.8e-07
     256  F(2x2, 3x3)       1.3e-04           2.7e-06                 5.0e-07
     256  F(4x4, 3x3)       1.7e-03           3.8e-05                 2.4e-06

F(2x2) is as accurate as direct convolution; F(4x4) has ~5x its typical (RMS) error and
~10x its worst-case error, i.e. a relative error of a few 1e-5 at worst: harmless for
training and inference in float32, but visible in tight comparisons. In float64 both are
exact to ~1e-13 relative to the output scale. In lower precision (bfloat16, float16, or TF32,
which GPUs may use for float32 matmuls at JAX's default precision) the same amplification
multiplies a much larger unit roundoff; prefer F(2x2) or "xla" there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._args import Pair

# Transform matrices by the Toom-Cook construction for correlation with a 3-tap filter. Pick
# m + 1 distinct points a_i and the point at infinity. With N_i(x) = prod_{j != i} (x - a_j)
# and M(x) = prod_j (x - a_j):
#   B^T row i = coefficients of N_i (ascending powers)    row "inf" = coefficients of M
#   G   row i = (1, a_i, a_i^2) / N_i(a_i)                 row "inf" = (0, 0, 1)
#   A^T column i = (1, a_i, ..., a_i^(m-1))                column "inf" = (0, ..., 0, 1)
# Linear convolution evaluates both polynomials at the points, multiplies and interpolates;
# correlation is its transpose, which swaps the roles of the evaluation (A^T) and the
# interpolation (B^T) matrices. Each of the m + 2 products may be scaled by c in one of
# B^T (row), G (row) or A^T (column) and by 1 / c in another; the choices below keep B^T and
# A^T integer and equal Lavin & Gray's published matrices (for F(2, 3) the rows for 0 and inf
# are negated, undone in G's first row and A^T's last column), so readers can cross-check.
# `test_transform_matrices_compute_correlation` checks the 1-D identity
# A^T [(G g) * (B^T d)] == correlate(d, g) for both.

# F(2, 3): points 0, 1, -1, inf.
_BT2 = np.array(
    [
        [1, 0, -1, 0],
        [0, 1, 1, 0],
        [0, -1, 1, 0],
        [0, 1, 0, -1],
    ],
    dtype=np.float64,
)
_G2 = np.array(
    [
        [1, 0, 0],
        [1 / 2, 1 / 2, 1 / 2],
        [1 / 2, -1 / 2, 1 / 2],
        [0, 0, 1],
    ],
    dtype=np.float64,
)
_AT2 = np.array(
    [
        [1, 1, 1, 0],
        [0, 1, -1, -1],
    ],
    dtype=np.float64,
)

# F(4, 3): points 0, 1, -1, 2, -2, inf. The other common choice, 0, +-1, +-1/2, inf, is the
# mirror image of this one (reciprocal points: B^T's polynomial coefficients come out
# reversed); it trades A^T's entries 2, 4, 8 for 1/2, 1/4, 1/8 and makes G's entries larger.
# Measured in float32 with this implementation (setup of the module docstring, two seeds,
# C_in = 64 and 256) the two give the same RMS error (1.4e-6 and 2.4e-6 of the output RMS);
# the max error of +-2 was 0.61x, 0.78x, 0.85x and 1.19x that of +-1/2. So +-2 stays:
# it has integer B^T and A^T and matches Lavin & Gray's matrices, which readers can check.
_BT4 = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    dtype=np.float64,
)
_G4 = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    dtype=np.float64,
)
_AT4 = np.array(
    [
        [1, 1, 1, 1, 1, 0],
        [0, 1, -1, 2, -2, 0],
        [0, 1, 1, 4, 4, 0],
        [0, 1, -1, 8, -8, 1],
    ],
    dtype=np.float64,
)

TRANSFORMS = {2: (_BT2, _G2, _AT2), 4: (_BT4, _G4, _AT4)}
"""tile m -> (B^T, G, A^T) of F(m, 3), as float64 numpy arrays."""


def check_supported(
    kernel: tuple[int, ...], stride: Pair, dilation: Pair, tile: int, op: str
) -> None:
    """Raise ValueError unless F(tile x tile, 3x3) can compute this convolution."""
    need = (
        "Winograd F(mxm, 3x3) needs a 3x3 kernel, stride 1 and dilation 1; use "
        "algorithm='xla', 'im2col' or 'fft' instead."
    )
    if tuple(kernel) != (3, 3):
        raise ValueError(f"{op}: `w` must be a 3x3 kernel; got kernel size {tuple(kernel)}. {need}")
    if tuple(stride) != (1, 1):
        raise ValueError(f"{op}: `stride` must be 1; got stride={stride}. {need}")
    if tuple(dilation) != (1, 1):
        raise ValueError(f"{op}: `dilation` must be 1; got dilation={dilation}. {need}")
    if tile not in TRANSFORMS:
        raise ValueError(
            f"{op}: `tile` must be 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)); got {tile!r}. {need}"
        )


def _overlapping_tiles(x: jax.Array, size: int, step: int, count: int, axis: int) -> jax.Array:
    """Split `axis` of `x` into `count` windows of `size` that start every `step` elements.

    Returns `x` with `axis` replaced by (count, size):
        out[..., t, a, ...] = x[..., t * step + a, ...]
    One strided slice per position inside the window (`size` of them), none per window.
    """
    views = [
        lax.slice_in_dim(x, a, a + (count - 1) * step + 1, stride=step, axis=axis)
        for a in range(size)
    ]
    return jnp.stack(views, axis=axis + 1)


def winograd_conv(
    x: jax.Array,
    w: jax.Array,
    *,
    stride: Pair,
    dilation: Pair,
    groups: int,
    out_hw: Pair,
    tile: int,
) -> jax.Array:
    """Valid (unpadded) 3x3 cross-correlation by Winograd's F(m x m, 3 x 3), m = `tile`.

    Args:
      x: (N, H, W, C_in), already padded; H, W >= 3.
      w: (3, 3, C_in // groups, C_out).
      stride, dilation: must be (1, 1).
      groups: channel groups; the channel contraction is block-diagonal over them.
      out_hw: (H_out, W_out) = (H - 2, W - 2).
      tile: m, 2 or 4: each output tile is m x m.

    Returns:
      (N, H_out, W_out, C_out) in x's dtype.

    Raises:
      ValueError: for a kernel other than 3x3, a stride or dilation other than 1, or a tile
        other than 2 or 4.
    """
    check_supported(w.shape[:2], stride, dilation, tile, "winograd_conv")
    bt, g, at = (jnp.asarray(t, x.dtype) for t in TRANSFORMS[tile])
    m, alpha = tile, tile + 2
    n, h, wd, _ = x.shape
    cin_g, c_out = w.shape[2], w.shape[3]
    ho, wo = out_hw
    th, tw = -(-ho // m), -(-wo // m)  # tiles per axis, rounded up

    # Whole tiles need th * m + 2 rows and tw * m + 2 columns. The extra zero rows/columns
    # only feed output positions beyond (H_out, W_out), which are cropped at the end.
    x = jnp.pad(x, ((0, 0), (0, th * m + 2 - h), (0, tw * m + 2 - wd), (0, 0)))
    d = _overlapping_tiles(x, alpha, m, th, axis=1)  # (N, th, alpha, W', C)
    d = _overlapping_tiles(d, alpha, m, tw, axis=3)  # (N, th, alpha, tw, alpha, C)

    # Input transform V = B^T d B, one axis at a time (2 * alpha instead of alpha^2 terms
    # per element). Tile elements (k, l) go first: they index the independent matmuls below.
    v = jnp.einsum("ka,nsatbc->knstbc", bt, d)
    v = jnp.einsum("lb,knstbc->klnstc", bt, v)
    v = v.reshape(alpha, alpha, n * th * tw, groups, cin_g)

    # Kernel transform U = G g G^T. Recomputed per call (it is tiny next to the rest) so
    # that gradients flow to `w` like any other op.
    u = jnp.einsum("ki,lj,ijco->klco", g, g, w)
    u = u.reshape(alpha, alpha, cin_g, groups, c_out // groups)

    # The elementwise stage summed over input channels: alpha^2 * groups matmuls of
    # (tiles, C_in // groups) @ (C_in // groups, C_out // groups).
    mm = jnp.einsum("klpgc,klcgo->klpgo", v, u)
    mm = mm.reshape(alpha, alpha, n, th, tw, c_out)

    # Output transform Y = A^T M A, then the tiles back into an image, cropped.
    y = jnp.einsum("ik,klnsto->inslto", at, mm)
    y = jnp.einsum("jl,inslto->nsitjo", at, y)
    y = y.reshape(n, th * m, tw * m, c_out)
    return y[:, :ho, :wo, :]
