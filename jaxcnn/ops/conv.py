"""2-D convolution (cross-correlation, as in every deep-learning library) with four algorithms.

Semantics are those of `torch.nn.functional.conv2d` (plus `torch.nn.Conv2d`'s `padding_mode`),
in NHWC / HWIO layout:

    y[n, oh, ow, o] = b[o] + sum_{i,j,c} xp[n, oh*sh + i*dh, ow*sw + j*dw, g*Cg + c] w[i,j,c,o]

where xp is the padded input, g = o // (C_out // groups) the group of output channel o and
Cg = C_in // groups. Output size per axis (the "output-size formula"):

    H_out = floor((H + pad_top + pad_bottom - dilation * (kh - 1) - 1) / stride) + 1

All four algorithms compute the same function and are differentiable (their gradients come
from JAX's autodiff of the code below; the tests check them against finite differences):

  * "xla":      `lax.conv_general_dilated`; the default and usually the fastest.
  * "im2col":   patches + one matrix multiply (`jaxcnn.ops.im2col`); any stride, dilation, groups.
                The patch matrix holds kh * kw copies of the input: large kernels cost memory.
  * "winograd": F(m x m, 3 x 3) minimal filtering (`jaxcnn.ops.winograd`); 3x3 kernels,
                stride 1, dilation 1. "winograd" is F(4x4, 3x3); "winograd_f2" / "winograd_f4"
                pick the tile explicitly.
  * "fft":      products in the Fourier domain (`jaxcnn.ops.fft`); pays for large kernels.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._args import (
    PadPairs,
    _is_int,
    check_float,
    check_nhwc,
    explicit_padding,
    output_hw,
    pair,
    smallest_valid_input,
    window_output_size,
)
from .fft import fft_conv
from .im2col import im2col_conv
from .reduction import add_bias
from .winograd import check_supported as check_winograd_supported
from .winograd import winograd_conv

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
ALGORITHMS = ("xla", "im2col", "winograd", "winograd_f2", "winograd_f4", "fft")
_WINOGRAD_TILE = {"winograd": 4, "winograd_f2": 2, "winograd_f4": 4}
_JNP_PAD_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def resolve_padding(padding, kernel, stride, dilation, op: str = "conv2d") -> PadPairs:
    """Any accepted `padding` value as ((top, bottom), (left, right)).

    "valid" is no padding. "same" pads by dilation * (k - 1) in total per axis, the smaller
    half before (top/left) and the larger after, as PyTorch does; like PyTorch it requires
    stride 1, because with a stride no padding makes the output the same size as the input.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            if stride != (1, 1):
                raise ValueError(
                    f"{op}: padding='same' needs stride=1 (as in PyTorch); got stride={stride}. "
                    "Give the padding explicitly for strided convolutions."
                )
            pads = []
            for k, d in zip(kernel, dilation, strict=True):
                total = d * (k - 1)
                pads.append((total // 2, total - total // 2))
            return (pads[0], pads[1])
        raise ValueError(f"{op}: padding string must be 'valid' or 'same'; got {padding!r}")
    return explicit_padding(padding, op)


def pad_input(x: jax.Array, pads: PadPairs, padding_mode: str, op: str = "conv2d") -> jax.Array:
    """Pad the spatial axes of NHWC `x` with `padding_mode` (torch's names)."""
    _check_padding_mode(padding_mode, op)
    if pads == ((0, 0), (0, 0)):
        return x
    h, w = x.shape[1], x.shape[2]
    if padding_mode == "reflect":
        # Reflection excludes the edge pixel, so each pad must be smaller than the axis.
        for size, (lo, hi), axis in ((h, pads[0], "H"), (w, pads[1], "W")):
            if max(lo, hi) >= size:
                raise ValueError(
                    f"{op}: padding_mode='reflect' needs padding < input size on each axis; "
                    f"got padding {(lo, hi)} on {axis}={size}. Smallest valid {axis}: "
                    f"{max(lo, hi) + 1}."
                )
    if padding_mode == "circular":
        for size, (lo, hi), axis in ((h, pads[0], "H"), (w, pads[1], "W")):
            if max(lo, hi) > size:
                raise ValueError(
                    f"{op}: padding_mode='circular' needs padding <= input size on each axis; "
                    f"got padding {(lo, hi)} on {axis}={size}. Smallest valid {axis}: "
                    f"{max(lo, hi)}."
                )
    widths = ((0, 0), pads[0], pads[1], (0, 0))
    if padding_mode == "zeros":
        return jnp.pad(x, widths)
    return jnp.pad(x, widths, mode=_JNP_PAD_MODE[padding_mode])


def _check_padding_mode(padding_mode, op):
    if padding_mode not in PADDING_MODES:
        raise ValueError(
            f"{op}: `padding_mode` must be one of {PADDING_MODES}; got {padding_mode!r}"
        )


def _check_conv_args(x, w, b, groups, op):
    check_nhwc(x, op)
    check_float(x, op)
    if getattr(w, "ndim", None) != 4:
        raise ValueError(
            f"{op}: `w` must have rank 4, (kh, kw, C_in // groups, C_out) (HWIO layout); "
            f"got shape {getattr(w, 'shape', type(w))}"
        )
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"{op}: `groups` must be a positive int; got {groups!r}")
    c_in = x.shape[-1]
    kh, kw, cin_g, c_out = w.shape
    if min(kh, kw) < 1:  # XLA would fail later with a verifier error, im2col with another
        raise ValueError(
            f"{op}: the kernel size (kh, kw) of `w` must be >= 1 in each dimension; got "
            f"w.shape={tuple(w.shape)}, (kh, kw, C_in // groups, C_out)"
        )
    if c_in % groups:
        raise ValueError(
            f"{op}: input channels C_in={c_in} (x.shape={tuple(x.shape)}) must be divisible by "
            f"groups={groups}"
        )
    if c_out % groups:
        raise ValueError(
            f"{op}: output channels C_out={c_out} (w.shape={tuple(w.shape)}) must be divisible "
            f"by groups={groups}"
        )
    if cin_g * groups != c_in:
        raise ValueError(
            f"{op}: channel mismatch: x has C_in={c_in} channels (x.shape={tuple(x.shape)}), "
            f"so with groups={groups} w must have shape (kh, kw, {c_in // groups}, C_out); "
            f"got w.shape={tuple(w.shape)}"
        )
    if b is not None and tuple(getattr(b, "shape", ())) != (c_out,):
        raise ValueError(
            f"{op}: `b` must have shape (C_out,) = ({c_out},); got {getattr(b, 'shape', type(b))}"
        )
    return (kh, kw)


def conv2d(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] | tuple[tuple[int, int], tuple[int, int]] | str = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "xla",
) -> jax.Array:
    """2-D cross-correlation, `torch.nn.functional.conv2d` semantics in NHWC layout.

    Args:
      x: (N, H, W, C_in) float input.
      w: (kh, kw, C_in // groups, C_out) kernel (HWIO). A torch weight `wt` of shape
        (C_out, C_in // groups, kh, kw) maps to `wt.permute(2, 3, 1, 0)`.
      b: optional (C_out,) bias.
        `w` and `b` are cast to x's dtype, so float32 parameters with bfloat16 activations
        compute in bfloat16 (mixed precision), where torch would raise instead.
      stride: int or (sh, sw), >= 1.
      padding: int, (ph, pw), ((top, bottom), (left, right)), "valid" or "same"
        ("same" requires stride 1 and puts the odd pixel bottom/right, as torch).
      dilation: int or (dh, dw), >= 1; spacing between kernel taps.
      groups: split channels into this many independent groups; `groups == C_in` with
        C_out a multiple of it is a depthwise convolution.
      padding_mode: how padded pixels are filled: "zeros", "reflect" (mirror, edge not
        repeated), "replicate" (repeat the edge) or "circular" (wrap around).
      algorithm: "xla", "im2col", "winograd" (= "winograd_f4"), "winograd_f2", "winograd_f4"
        or "fft"; see the module docstring. A combination an algorithm cannot compute (e.g.
        Winograd with a 5x5 kernel) raises ValueError rather than silently falling back.

    Returns:
      (N, H_out, W_out, C_out), H_out = floor((H + pt + pb - dh * (kh - 1) - 1) / sh) + 1.
    """
    op = "conv2d"
    kernel = _check_conv_args(x, w, b, groups, op)
    stride = pair(stride, "stride", op)
    dilation = pair(dilation, "dilation", op)
    pads = resolve_padding(padding, kernel, stride, dilation, op)
    if algorithm not in ALGORITHMS:
        raise ValueError(f"{op}: `algorithm` must be one of {ALGORITHMS}; got {algorithm!r}")
    _check_padding_mode(padding_mode, op)
    if algorithm.startswith("winograd"):
        # Before any padded copy is made, and naming the function the user called.
        check_winograd_supported(kernel, stride, dilation, _WINOGRAD_TILE[algorithm], op)
    in_hw = (x.shape[1], x.shape[2])
    out_hw = output_hw(op, in_hw, kernel, stride, pads, dilation, x_shape=x.shape)
    w = w.astype(x.dtype)

    if algorithm == "xla" and padding_mode == "zeros":
        # Let XLA pad implicitly: no padded copy of x is materialised.
        y = lax.conv_general_dilated(
            x,
            w,
            window_strides=stride,
            padding=pads,
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
    else:
        xp = pad_input(x, pads, padding_mode, op)
        y = _valid_conv(xp, w, stride, dilation, groups, out_hw, algorithm, op)
    if b is not None:
        y = add_bias(y, b.astype(y.dtype))
    return y


def _valid_conv(xp, w, stride, dilation, groups, out_hw, algorithm, op):
    """Unpadded convolution of an already padded input with the chosen algorithm."""
    if algorithm == "xla":
        return lax.conv_general_dilated(
            xp,
            w,
            window_strides=stride,
            padding="VALID",
            rhs_dilation=dilation,
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )
    if algorithm == "im2col":
        return im2col_conv(xp, w, stride=stride, dilation=dilation, groups=groups, out_hw=out_hw)
    if algorithm in _WINOGRAD_TILE:
        return winograd_conv(
            xp,
            w,
            stride=stride,
            dilation=dilation,
            groups=groups,
            out_hw=out_hw,
            tile=_WINOGRAD_TILE[algorithm],
        )
    if algorithm == "fft":
        return fft_conv(xp, w, stride=stride, dilation=dilation, groups=groups, out_hw=out_hw)
    raise AssertionError(f"{op}: algorithm {algorithm!r} is listed but not dispatched")


def conv_output_size(
    size: int,
    kernel_size: int,
    stride: int = 1,
    padding=0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length along one axis of a convolution or pooling window.

        floor((size + 2 * padding - dilation * (kernel_size - 1) - 1) / stride) + 1

    With `ceil_mode` (pooling only) the division rounds up, and a last window that would
    start in the right padding is dropped, as in PyTorch.

    Args:
      size: input length (>= 1).
      kernel_size, stride, dilation: positive ints.
      padding: int (each side) or (before, after).
      ceil_mode: round up instead of down.

    Raises:
      ValueError: if an argument is out of range or the output would be empty; the message
        states the smallest valid `size`.
    """
    op = "conv_output_size"
    for name, v in (
        ("size", size),
        ("kernel_size", kernel_size),
        ("stride", stride),
        ("dilation", dilation),
    ):
        if not _is_int(v) or v < 1:
            raise ValueError(f"{op}: `{name}` must be a positive int; got {v!r}")
    if _is_int(padding):
        lo = hi = int(padding)
    elif (
        isinstance(padding, tuple | list) and len(padding) == 2 and all(_is_int(p) for p in padding)
    ):
        lo, hi = int(padding[0]), int(padding[1])
    else:
        raise ValueError(f"{op}: `padding` must be an int or (before, after); got {padding!r}")
    if min(lo, hi) < 0:
        raise ValueError(f"{op}: `padding` must be non-negative; got {padding!r}")
    out = window_output_size(size, kernel_size, stride, lo, hi, dilation, ceil_mode)
    if out <= 0:
        raise ValueError(
            f"{op}: size={size} is too small for kernel_size={kernel_size}, "
            f"dilation={dilation}, padding={padding}: the output would be empty. Smallest "
            f"valid size: {smallest_valid_input(kernel_size, dilation, lo, hi, stride, ceil_mode)}."
        )
    return out
