"""Argument normalisation and validation shared by every op.

Everything here runs at trace time on static Python values (shapes, ints, strings), so the
checks cost nothing inside `jit`. Messages follow one pattern: which op, which argument,
what was expected, what was given and, for shapes, the smallest input that would work.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

Pair = tuple[int, int]
PadPairs = tuple[tuple[int, int], tuple[int, int]]


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def pair(value, name: str, op: str, *, minimum: int = 1) -> Pair:
    """`value` as an (h, w) pair of ints, each >= `minimum`.

    Accepts an int (used for both dimensions) or a length-2 sequence of ints.
    """
    if isinstance(value, np.ndarray):  # e.g. np.array([2, 2]) from a shape computation
        value = value.tolist()
    if _is_int(value):
        out = (int(value), int(value))
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(_is_int(v) for v in value)
    ):
        out = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{op}: `{name}` must be an int or a pair of ints (h, w); got {value!r}")
    if min(out) < minimum:
        raise ValueError(f"{op}: `{name}` must be >= {minimum} in each dimension; got {value!r}")
    return out


def check_nhwc(x, op: str, name: str = "x") -> None:
    """Raise unless `x` is a rank-4 (N, H, W, C) array."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{op}: `{name}` must be an array of shape (N, H, W, C); got {type(x)}")
    if len(shape) != 4:
        hint = ""
        if len(shape) == 3:
            hint = " (a single image? add a batch axis: x[None])"
        raise ValueError(
            f"{op}: `{name}` must have rank 4, (N, H, W, C) (NHWC layout); "
            f"got shape {tuple(shape)}{hint}"
        )


def check_float(x, op: str, name: str = "x") -> None:
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{op}: `{name}` must have a floating dtype; got {x.dtype}")


def explicit_padding(padding, op: str, name: str = "padding") -> PadPairs:
    """Numeric `padding` as ((top, bottom), (left, right)) of non-negative ints.

    Accepts an int, an (ph, pw) pair, or explicit ((top, bottom), (left, right)) pairs.
    """
    if _is_int(padding):
        p = int(padding)
        out = ((p, p), (p, p))
    elif isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == 2:
        a, b = padding
        if _is_int(a) and _is_int(b):
            out = ((int(a), int(a)), (int(b), int(b)))
        elif all(
            isinstance(v, Sequence) and len(v) == 2 and all(_is_int(u) for u in v) for v in (a, b)
        ):
            out = ((int(a[0]), int(a[1])), (int(b[0]), int(b[1])))
        else:
            raise TypeError(
                f"{op}: `{name}` must be an int, a pair (ph, pw) or pairs "
                f"((top, bottom), (left, right)); got {padding!r}"
            )
    else:
        raise TypeError(
            f"{op}: `{name}` must be an int, a pair (ph, pw) or pairs "
            f"((top, bottom), (left, right)); got {padding!r}"
        )
    if min(min(p) for p in out) < 0:
        raise ValueError(f"{op}: `{name}` must be non-negative; got {padding!r}")
    return out


def window_output_size(
    size: int,
    kernel: int,
    stride: int,
    pad_lo: int,
    pad_hi: int,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Number of window positions along one axis (PyTorch's formula, incl. ceil_mode).

    floor((size + pad_lo + pad_hi - dilation * (kernel - 1) - 1) / stride) + 1, or ceil(...)
    with `ceil_mode`, in which case a last window that would start in the right padding (or
    beyond) is dropped, exactly as PyTorch's pooling does. May return <= 0; callers decide
    how to report that.
    """
    span = size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    if ceil_mode:
        # ceil(span / stride), also for a negative span: like PyTorch (and Caffe), ceil_mode
        # admits a window that hangs past the bottom/right edge of a too-small input.
        out = -(-span // stride) + 1
        # PyTorch: the last pooling window must start inside the input or the left padding.
        if (out - 1) * stride >= size + pad_lo:
            out -= 1
    else:
        out = span // stride + 1
    return max(out, 0)


def smallest_valid_input(
    kernel: int, dilation: int, pad_lo: int, pad_hi: int, stride: int = 1, ceil_mode=False
) -> int:
    """Smallest input size along an axis that gives a non-empty output (at least 1)."""
    size = 1
    while window_output_size(size, kernel, stride, pad_lo, pad_hi, dilation, ceil_mode) <= 0:
        size += 1
    return size


def output_hw(
    op: str,
    in_hw: Pair,
    kernel: Pair,
    stride: Pair,
    pads: PadPairs,
    dilation: Pair = (1, 1),
    ceil_mode: bool = False,
    x_shape: tuple | None = None,
) -> Pair:
    """(H_out, W_out) for a sliding window; raises a ValueError naming the smallest input."""
    out = tuple(
        window_output_size(in_hw[i], kernel[i], stride[i], *pads[i], dilation[i], ceil_mode)
        for i in range(2)
    )
    if min(out) <= 0:
        smallest = tuple(
            smallest_valid_input(kernel[i], dilation[i], *pads[i], stride[i], ceil_mode)
            for i in range(2)
        )
        shape = f" (x.shape={tuple(x_shape)})" if x_shape is not None else ""
        raise ValueError(
            f"{op}: input of spatial size {tuple(in_hw)}{shape} is too small for kernel_size="
            f"{kernel}, dilation={dilation}, padding={pads}: the (dilated) kernel is larger than "
            f"the padded input and the output size would be {out}. The smallest valid input "
            f"has spatial size (H, W) >= {smallest}."
        )
    return out  # type: ignore[return-value]
