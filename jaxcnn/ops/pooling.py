"""Spatial and channel pooling with the semantics of `torch.nn.functional`, in NHWC layout.

Sliding-window pools (`max_pool2d`, `avg_pool2d`, `sum_pool2d`) share PyTorch's geometry:

    H_out = floor((H + 2 * padding - dilation * (kernel - 1) - 1) / stride) + 1

or the ceiling with `ceil_mode`, in which case a last window that would start in the bottom
(right) padding is dropped. PyTorch also requires padding <= kernel_size // 2 per axis;
these functions enforce the same rule.

Adaptive pools split each axis into `output_size` bins, bin i covering
[floor(i * H / H_out), ceil((i + 1) * H / H_out)), so bins may differ in size by one and
overlap when H is not a multiple of H_out.

Max-type pools route each output's gradient to exactly one input, the one PyTorch's CPU
kernels select, so a ported network trains identically even on inputs with ties (ReLU
outputs are full of zeros, so ties are the rule, not the exception):

  * the FIRST maximum of the window in row-major order (PyTorch scans the window and
    replaces its running maximum only when `val > maxval`);
  * if the window holds a NaN, the output is NaN and the gradient goes to the LAST NaN in
    row-major order (PyTorch's scan also replaces the maximum whenever `isnan(val)`).

`channel_pool` with mode "max" instead follows `torch.max(dim)` (what a PyTorch maxout layer
calls): first maximum, and the FIRST NaN.

Dtypes: max and sum pools accept integer inputs and compute them in integer arithmetic;
averaging pools need a floating dtype (PyTorch's integer averages truncate, which is rarely
what anyone wants: cast first).
"""

from __future__ import annotations

import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.interpreters import ad

from ._args import PadPairs, Pair, check_float, check_nhwc, output_hw, pair
from ._platform import batch_leading, platform_op
from .im2col import extract_patches, scatter_windows

CHANNEL_POOL_MODES = ("max", "sum", "avg")


# ----------------------------------------------------------------------------- validation


def _check_real(x, op: str) -> None:
    """Raise unless `x` has an integer or floating dtype (bool and complex have no order)."""
    dt = x.dtype
    if not (jnp.issubdtype(dt, jnp.integer) or jnp.issubdtype(dt, jnp.floating)):
        raise TypeError(f"{op}: `x` must have an integer or floating dtype; got {dt}")


def _check_bool(value, name: str, op: str) -> None:
    # A stray int here usually means positional arguments were shifted by one.
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{op}: `{name}` must be a bool; got {value!r}")


class _Window(NamedTuple):
    """Static geometry of a sliding-window pool; hashable, so it can be a nondiff argument.

    `pads` is what the input is padded by before the windows are taken: the symmetric
    `padding` on top/left, and on bottom/right whatever the last (ceil_mode) window needs.
    """

    in_hw: Pair
    kernel: Pair
    stride: Pair
    dilation: Pair
    pads: PadPairs
    out_hw: Pair


def _window(op, x, kernel_size, stride, padding, dilation, ceil_mode) -> _Window:
    check_nhwc(x, op)
    _check_real(x, op)
    kernel = pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else pair(stride, "stride", op)
    dilation = pair(dilation, "dilation", op)
    padding = pair(padding, "padding", op, minimum=0)
    _check_bool(ceil_mode, "ceil_mode", op)
    if any(p > k // 2 for p, k in zip(padding, kernel, strict=True)):
        raise ValueError(
            f"{op}: `padding` must be at most half of `kernel_size` in each dimension "
            f"(padding <= kernel_size // 2, as in PyTorch); got padding={padding} with "
            f"kernel_size={kernel}"
        )
    in_hw = (int(x.shape[1]), int(x.shape[2]))
    sym = ((padding[0], padding[0]), (padding[1], padding[1]))
    out_hw = output_hw(op, in_hw, kernel, stride, sym, dilation, ceil_mode, x_shape=x.shape)
    pads = []
    for size, k, s, d, p, o in zip(in_hw, kernel, stride, dilation, padding, out_hw, strict=True):
        needed = (o - 1) * s + d * (k - 1) + 1  # padded length the last window reaches
        pads.append((p, max(p, needed - size - p)))
    return _Window(in_hw, kernel, stride, dilation, (pads[0], pads[1]), out_hw)


def _tap_positions(win: _Window, axis: int):
    """(out, kernel) numpy array: the input coordinate each window tap reads along spatial
    `axis` (0 for H, 1 for W); negative or >= the input size where it reads padding."""
    k, s, d, o = win.kernel[axis], win.stride[axis], win.dilation[axis], win.out_hw[axis]
    return np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - win.pads[axis][0]


def _lowest(dtype):
    """The identity of `max` for `dtype`: -inf for floats, the most negative integer else."""
    if jnp.issubdtype(dtype, jnp.floating):
        return np.array(-np.inf, dtype)
    return np.array(np.iinfo(dtype).min, dtype)


# ----------------------------------------------------------------- torch's argmax selection


def _torch_argmax(v: jax.Array, valid, axis: int) -> jax.Array:
    """Index along `axis` of the element PyTorch's CPU max-pooling kernels select.

    That is the first maximum among the `valid` entries, unless a valid entry is NaN, in
    which case it is the last NaN. `valid` (broadcastable to `v`) marks real input cells;
    it matters when every real cell of a window is -inf: PyTorch then picks the first real
    cell, whereas a plain argmax could pick a -inf padding cell and drop the gradient.
    """
    m = jnp.max(jnp.where(valid, v, _lowest(v.dtype)), axis=axis, keepdims=True)
    first_max = jnp.argmax((v == m) & valid, axis=axis)
    if not jnp.issubdtype(v.dtype, jnp.floating):
        return first_max
    nan = jnp.isnan(v) & valid
    last_nan = v.shape[axis] - 1 - jnp.argmax(jnp.flip(nan, axis=axis), axis=axis)
    return jnp.where(jnp.any(nan, axis=axis), last_nan, first_max)


# ------------------------------------------------------------------------------ max_pool2d


def _reduce_window(x, init, computation, win: _Window):
    return lax.reduce_window(
        x,
        init,
        computation,
        (1, *win.kernel, 1),
        (1, *win.stride, 1),
        ((0, 0), *win.pads, (0, 0)),
        window_dilation=(1, *win.dilation, 1),
    )


def _padded_patches(x, win: _Window):
    xp = jnp.pad(x, ((0, 0), *win.pads, (0, 0)), constant_values=_lowest(x.dtype))
    return xp, extract_patches(xp, win.kernel, win.stride, win.dilation, win.out_hw)


def _torch_choice(x, win: _Window):
    """(N, H_out, W_out, C) tap index (row-major in the window) of the cell `_torch_argmax`
    selects, and the padded input's shape."""
    h, w = win.in_hw
    xp, patches = _padded_patches(x, win)
    pos_h, pos_w = _tap_positions(win, 0), _tap_positions(win, 1)
    valid_h = (pos_h >= 0) & (pos_h < h)  # (H_out, kh)
    valid_w = (pos_w >= 0) & (pos_w < w)  # (W_out, kw)
    valid = valid_h[:, None, :, None] & valid_w[None, :, None, :]  # (H_out, W_out, kh, kw)
    valid = valid.reshape(1, *win.out_hw, -1, 1)  # tap axis in row-major (i * kw + j) order
    return _torch_argmax(patches, valid, axis=3), xp.shape


# The two linear maps a max pool's derivatives are made of, for a fixed input x:
#   select(x, t)  (N, H, W, C) -> (N, H_out, W_out, C): t at the cell each window selects
#                 (the JVP of the pool);
#   route(x, g)   (N, H_out, W_out, C) -> (N, H, W, C): g sent to those cells, summed where
#                 windows overlap (the gradient; select's transpose).
# The selected cell is PyTorch's (first maximum, last NaN, never a padding cell), found from
# the stacked window taps. The gradient, the hot path of training, has a second form for GPU
# and TPU: XLA's own rule for the gradient of a max reduce_window (select-and-scatter with
# >=, which scans each window in order and so also keeps the first maximum): one fused
# kernel instead of kh * kw stacked taps, but a NaN is compared like a number. XLA has no
# such rule for dilated windows, so those take PyTorch's rule everywhere.
def _select_torch(x, t, *, win: _Window):
    idx, _ = _torch_choice(x, win)
    _, patches = _padded_patches(t.astype(x.dtype), win)
    return jnp.take_along_axis(patches, idx[:, :, :, None, :], axis=3)[:, :, :, 0, :]


def _route_torch(x, g, *, win: _Window):
    (pt, _), (pl, _) = win.pads
    h, w = win.in_hw
    idx, padded_shape = _torch_choice(x, win)
    taps = [jnp.where(idx == t, g, 0) for t in range(win.kernel[0] * win.kernel[1])]
    gp = scatter_windows(taps, padded_shape, win.kernel, win.stride, win.dilation)
    return gp[:, pt : pt + h, pl : pl + w, :]


def _route_xla(x, g, *, win: _Window):
    if win.dilation != (1, 1):
        return _route_torch(x, g, win=win)
    _, vjp = jax.vjp(lambda x: _reduce_window(x, _lowest(x.dtype), lax.max, win), x)
    return vjp(g.astype(x.dtype))[0]


# select is the cold path (forward mode, and grad of grad): PyTorch's rule everywhere. XLA's
# own JVP of a max reduce_window reduces the window as a tree, which on ties need not pick
# the cell its select-and-scatter picks.
_select_p = platform_op("max_pool_select", cpu=_select_torch, default=_select_torch)
_route_p = platform_op("max_pool_route", cpu=_route_torch, default=_route_xla)


def _linear_in_second(prim, transpose_prim):
    """`prim(x, v)` is linear in v and piecewise constant in x: its JVP is prim(x, dv), its
    transpose in v is `transpose_prim(x, ct)`."""

    def jvp(primals, tangents, *, win):
        x, v = primals
        dv = tangents[1]
        out = prim.bind(x, v, win=win)
        if type(dv) is ad.Zero:
            return out, jnp.zeros_like(out)
        return out, prim.bind(x, dv, win=win)

    def transpose(ct, x, v, *, win):
        if type(ct) is ad.Zero:
            return [None, ad.Zero(v.aval)]
        return [None, transpose_prim.bind(x, ct, win=win)]

    ad.primitive_jvps[prim] = jvp
    ad.primitive_transposes[prim] = transpose

    def fold(args, size, *, win):
        return [a.reshape(-1, *a.shape[2:]) for a in args], {"win": win}

    batch_leading(prim, fold, lambda out, size, *, win: out.reshape(size, -1, *out.shape[1:]))


_linear_in_second(_select_p, _route_p)
_linear_in_second(_route_p, _select_p)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x, win: _Window):
    return _reduce_window(x, _lowest(x.dtype), lax.max, win)


@_max_pool.defjvp
def _max_pool_jvp(win, primals, tangents):
    (x,), (t,) = primals, tangents
    return _max_pool(x, win), _select_p.bind(x, t, win=win)


def max_pool2d(
    x: jax.Array,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
) -> jax.Array:
    """2-D max pooling, `torch.nn.functional.max_pool2d` semantics in NHWC layout.

    Padding is implicit -inf (padded cells never win). The output is NaN wherever the window
    holds a NaN, as in PyTorch.

    Gradient: each output's gradient goes to one input cell of its window, summed where
    windows overlap. Ties go to the FIRST maximum in row-major window order (ReLU outputs
    tie constantly), on every backend. On CPU the rule is exactly PyTorch's CPU rule
    (`val > maxval || isnan(val)`): a window with NaNs sends its gradient to its LAST NaN,
    and a window whose real cells are all -inf to its first real cell. On GPU and TPU the
    gradient is XLA's select-and-scatter (a fused kernel, far cheaper than stacking the
    window's taps): the same cell except in those two cases, where a NaN is compared like a
    number and an all -inf window may pick a padding cell. Forward and reverse mode work to
    any order (the derivative is piecewise constant in x: second derivatives of a linear
    loss are zero).

    Args:
      x: (N, H, W, C), floating or integer (integers pool exactly, without gradient).
      kernel_size: int or (kh, kw), >= 1.
      stride: int or (sh, sw), >= 1; None (the default) means `kernel_size`.
      padding: int or (ph, pw), added on both sides; at most kernel_size // 2 per axis.
      dilation: int or (dh, dw), >= 1; spacing between the window's taps.
      ceil_mode: round the output size up instead of down (a last, partial window), but
        never start a window in the bottom/right padding.

    Returns:
      (N, H_out, W_out, C), H_out = floor((H + 2 * ph - dh * (kh - 1) - 1) / sh) + 1
      (ceil with `ceil_mode`).
    """
    win = _window("max_pool2d", x, kernel_size, stride, padding, dilation, ceil_mode)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return _reduce_window(x, _lowest(x.dtype), lax.max, win)
    return _max_pool(x, win)


# ---------------------------------------------------------------------- avg / sum pooling


def _window_sum(x, win: _Window):
    # reduce_window with init 0 is JAX's differentiable windowed sum (forward and reverse).
    return _reduce_window(x, np.array(0, x.dtype), lax.add, win)


def avg_pool2d(
    x: jax.Array,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> jax.Array:
    """2-D average pooling, `torch.nn.functional.avg_pool2d` semantics in NHWC layout.

    Each output is the sum of its window (padding contributes zeros) divided by:

      * with `count_include_pad` (the default): the number of window cells inside the
        symmetrically padded input, so a window over `padding` zeros still counts them,
        but the extra bottom/right cells a `ceil_mode` window hangs past the padded input
        are not counted;
      * without it: the number of window cells inside the real input.

    The divisors depend only on shapes, so they are a constant: gradients are exact and
    cheap, and any order of forward or reverse differentiation works.

    Args:
      x: (N, H, W, C) float.
      kernel_size: int or (kh, kw), >= 1.
      stride: int or (sh, sw), >= 1; None (the default) means `kernel_size`.
      padding: int or (ph, pw) zeros on both sides; at most kernel_size // 2 per axis.
      ceil_mode: round the output size up instead of down, as in `max_pool2d`.
      count_include_pad: whether the padding zeros count in the divisor (see above).

    Returns:
      (N, H_out, W_out, C), H_out = floor((H + 2 * ph - kh) / sh) + 1 (ceil with
      `ceil_mode`).
    """
    op = "avg_pool2d"
    win = _window(op, x, kernel_size, stride, padding, 1, ceil_mode)
    check_float(x, op)
    _check_bool(count_include_pad, "count_include_pad", op)
    counts = []
    for a in range(2):
        size, p, pos = win.in_hw[a], win.pads[a][0], _tap_positions(win, a)
        lo, hi = (-p, size + p) if count_include_pad else (0, size)
        counts.append(((pos >= lo) & (pos < hi)).sum(axis=1))
    # Windows are rectangles clipped to a rectangle, so their cell count is separable.
    divisor = np.outer(counts[0], counts[1]).reshape(1, *win.out_hw, 1)
    return _window_sum(x, win) / jnp.asarray(divisor, x.dtype)


def sum_pool2d(
    x: jax.Array,
    kernel_size,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
) -> jax.Array:
    """2-D sum pooling: the sum of each window's cells, padding contributing zeros.

    PyTorch has no sum pool; this equals its `avg_pool2d(..., divisor_override=1)`, with the
    same window geometry. LeNet-5's subsampling layers multiply it by a trainable
    coefficient and add a trainable bias.

    Args:
      x: (N, H, W, C), floating or integer (integers sum in their own dtype, so narrow
        ones can overflow).
      kernel_size: int or (kh, kw), >= 1.
      stride: int or (sh, sw), >= 1; None (the default) means `kernel_size`.
      padding: int or (ph, pw) zeros on both sides; at most kernel_size // 2 per axis.
      ceil_mode: round the output size up instead of down, as in `max_pool2d`.

    Returns:
      (N, H_out, W_out, C), H_out as for `avg_pool2d`.
    """
    win = _window("sum_pool2d", x, kernel_size, stride, padding, 1, ceil_mode)
    return _window_sum(x, win)


# -------------------------------------------------------------------------- adaptive pools


def _adaptive_size(output_size, x, op: str) -> Pair:
    """`output_size` as (H_out, W_out); a None entry keeps that input dimension."""
    check_nhwc(x, op)
    in_hw = (int(x.shape[1]), int(x.shape[2]))
    if min(in_hw) < 1:
        raise ValueError(
            f"{op}: `x` must have non-empty spatial dimensions; got x.shape={tuple(x.shape)}. "
            "The smallest valid input has spatial size (H, W) >= (1, 1)."
        )

    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if is_int(output_size):
        sizes = (output_size, output_size)
    elif (
        isinstance(output_size, tuple | list)
        and len(output_size) == 2
        and all(v is None or is_int(v) for v in output_size)
    ):
        sizes = tuple(output_size)
    else:
        raise TypeError(
            f"{op}: `output_size` must be an int or a pair (H_out, W_out) of ints or None; "
            f"got {output_size!r}"
        )
    out = tuple(size if v is None else int(v) for v, size in zip(sizes, in_hw, strict=True))
    if min(out) < 1:
        raise ValueError(f"{op}: `output_size` must be >= 1 in each dimension; got {output_size!r}")
    return out  # type: ignore[return-value]


def _bins(size: int, out: int):
    """PyTorch's adaptive bins along one axis: numpy (start, end), bin i = [start, end)."""
    i = np.arange(out)
    return (i * size) // out, -(-(i + 1) * size // out)


def _uniform_bins(in_hw, out_hw) -> Pair | None:
    """(kh, kw) if every adaptive bin is a kernel_size = stride = (kh, kw) window, else None.

    When H_out divides H, bin i is exactly [i * H / H_out, (i + 1) * H / H_out), so the
    adaptive pool *is* the ordinary pool with that kernel and stride (and the identity when
    the sizes are equal, as for AlexNet's 6x6 and VGG's 7x7 at 224x224). Taking that path is
    faster and keeps the layer a sliding window, whose receptive field `jaxcnn.summary` can
    follow; values and gradients (tie rule included) are the same.
    """
    if all(size % out == 0 for size, out in zip(in_hw, out_hw, strict=True)):
        return (int(in_hw[0]) // out_hw[0], int(in_hw[1]) // out_hw[1])
    return None


def adaptive_avg_pool2d(x: jax.Array, output_size) -> jax.Array:
    """Average over PyTorch's adaptive bins, `torch.nn.functional.adaptive_avg_pool2d`.

    Bin i along H covers rows [floor(i * H / H_out), ceil((i + 1) * H / H_out)). Computed as
    two contractions with constant 0/1 bin matrices followed by a division by the constant
    bin areas: exact, cheap and smooth (any order of differentiation works).

    Args:
      x: (N, H, W, C) float.
      output_size: int, or (H_out, W_out) where an entry may be None to keep that input
        dimension; each >= 1. Larger than the input is allowed (bins then overlap).

    Returns:
      (N, H_out, W_out, C).
    """
    op = "adaptive_avg_pool2d"
    out_hw = _adaptive_size(output_size, x, op)
    check_float(x, op)
    step = _uniform_bins(x.shape[1:3], out_hw)
    if step is not None:
        return avg_pool2d(x, step) if step != (1, 1) else x
    mats, counts = [], []
    for size, out in zip(x.shape[1:3], out_hw, strict=True):
        start, end = _bins(size, out)
        cols = np.arange(size)[None, :]
        mats.append(jnp.asarray((cols >= start[:, None]) & (cols < end[:, None]), x.dtype))
        counts.append(end - start)
    # HIGHEST: on TPU (and with TF32 on GPU) the default float32 matmul precision would
    # round x to bfloat16 (tf32) before summing.
    sums = jnp.einsum("ah,nhwc,bw->nabc", mats[0], x, mats[1], precision=lax.Precision.HIGHEST)
    divisor = np.outer(counts[0], counts[1]).reshape(1, *out_hw, 1)
    return sums / jnp.asarray(divisor, x.dtype)


def _adaptive_max_axis(x: jax.Array, out: int, axis: int) -> jax.Array:
    """Max over PyTorch's adaptive bins along spatial `axis` (1 or 2), torch's argmax rule."""
    size = x.shape[axis]
    start, end = _bins(size, out)
    width = int((end - start).max())
    slot = np.arange(width)
    idx = start[:, None] + slot[None, :]  # (out, width); bins narrower than `width` padded
    valid = idx < end[:, None]
    idx = np.minimum(idx, end[:, None] - 1)  # padded slots re-read a cell of their own bin
    # (N, out, width, W, C) for axis 1, (N, H, out, width, C) for axis 2.
    taps = jnp.take(x, idx, axis=axis)
    bin_shape, slot_shape = [1] * 5, [1] * 5
    bin_shape[axis], bin_shape[axis + 1] = out, width
    slot_shape[axis + 1] = width
    sel = jnp.expand_dims(_torch_argmax(taps, valid.reshape(bin_shape), axis=axis + 1), axis + 1)
    # Pick the chosen slot with a one-hot mask, not a max, so that autodiff sends the whole
    # gradient to it (a max's gradient splits ties). A chosen -0.0 comes out as +0.0.
    return jnp.sum(jnp.where(sel == slot.reshape(slot_shape), taps, 0), axis=axis + 1)


def adaptive_max_pool2d(x: jax.Array, output_size) -> jax.Array:
    """Max over PyTorch's adaptive bins, `torch.nn.functional.adaptive_max_pool2d`.

    Bins as in `adaptive_avg_pool2d`. The gradient of each output goes to one cell of its
    bin: the first maximum in row-major order, or the last NaN if the bin holds NaNs
    (PyTorch's CPU rule; see the module docstring). It is computed as a max over each bin's
    columns, row by row, then over the rows, each step selecting one element; the
    first maximum of the row maxima lies in the first row that holds the bin's maximum, at
    that row's first maximum, which is the row-major first maximum (and likewise for the
    last NaN). Ordinary autodiff, so forward mode and higher orders work.

    Args:
      x: (N, H, W, C), floating or integer (PyTorch itself has no integer version).
      output_size: int, or (H_out, W_out) where an entry may be None to keep that input
        dimension; each >= 1.

    Returns:
      (N, H_out, W_out, C).
    """
    op = "adaptive_max_pool2d"
    out_h, out_w = _adaptive_size(output_size, x, op)
    _check_real(x, op)
    step = _uniform_bins(x.shape[1:3], (out_h, out_w))
    if step is not None:
        return max_pool2d(x, step) if step != (1, 1) else x
    return _adaptive_max_axis(_adaptive_max_axis(x, out_w, axis=2), out_h, axis=1)


# ---------------------------------------------------------------------------- channel_pool


def channel_pool(x: jax.Array, group_size: int, mode: str = "max") -> jax.Array:
    """Pool consecutive groups of `group_size` channels: output c pools input channels
    [c * group_size, (c + 1) * group_size).

    mode="max" is maxout (Goodfellow et al., 2013) over channels. Its gradient goes to the
    first maximum of each group, and a NaN in a group wins (the first NaN): the rule of
    `torch.max(dim)`, which a PyTorch maxout (`x.view(N, C // g, g, H, W).max(2)`) uses.
    "sum" and "avg" are the group's sum and mean.

    Args:
      x: (N, H, W, C); floating for "avg", floating or integer for "max" and "sum".
      group_size: positive int dividing C.
      mode: "max", "sum" or "avg".

    Returns:
      (N, H, W, C // group_size).
    """
    op = "channel_pool"
    check_nhwc(x, op)
    if not isinstance(group_size, numbers.Integral) or isinstance(group_size, bool):
        raise TypeError(f"{op}: `group_size` must be a positive int; got {group_size!r}")
    if group_size < 1:
        raise ValueError(f"{op}: `group_size` must be a positive int; got {group_size!r}")
    if mode not in CHANNEL_POOL_MODES:
        raise ValueError(f"{op}: `mode` must be one of {CHANNEL_POOL_MODES}; got {mode!r}")
    if mode == "avg":
        check_float(x, op)
    else:
        _check_real(x, op)
    n, h, w, c = x.shape
    if c % group_size:
        raise ValueError(
            f"{op}: the channel count C={c} (x.shape={tuple(x.shape)}) must be divisible by "
            f"`group_size`={group_size}"
        )
    groups = jnp.reshape(x, (n, h, w, c // group_size, group_size))
    if mode == "sum":
        return jnp.sum(groups, axis=-1)
    if mode == "avg":
        return jnp.mean(groups, axis=-1)
    # jnp.argmax returns the first maximum, and the first NaN if any; gathering it routes
    # the whole gradient there (jnp.max's gradient would split ties evenly).
    idx = jnp.argmax(groups, axis=-1, keepdims=True)
    return jnp.squeeze(jnp.take_along_axis(groups, idx, axis=-1), -1)
