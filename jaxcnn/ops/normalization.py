"""Local response normalisation (AlexNet), `torch.nn.functional.local_response_norm` in NHWC."""

from __future__ import annotations

import numbers

import jax
import numpy as np
from jax import lax

from ._args import check_float, check_nhwc


def local_response_norm(
    x: jax.Array,
    size: int,
    alpha: float = 1e-4,
    beta: float = 0.75,
    k: float = 1.0,
) -> jax.Array:
    """Normalise each activation by the energy of its neighbours across channels.

        y[..., c] = x[..., c] / (k + alpha * a[..., c]) ** beta
        a[..., c] = (1 / size) * sum of x[..., c'] ** 2
                    over c' = c - size // 2, ..., c + (size - 1) // 2

    where channels outside [0, C) count as zeros but still count in the `1 / size` (PyTorch
    averages the zero-padded squares). These are PyTorch's semantics, with channels on the
    last axis; PyTorch also accepts inputs of other ranks, this function only NHWC.

    AlexNet (Krizhevsky et al., 2012) used size=5, alpha=1e-4, beta=0.75, k=2, but the
    paper's formula multiplies alpha by the plain sum of squares, not their mean. Convert
    with alpha_torch = alpha_paper * size: the paper's layer is
    `local_response_norm(x, 5, alpha=5e-4, beta=0.75, k=2.0)`. (Caffe's LRN already divides
    by size, so a Caffe alpha carries over unchanged; torchvision's AlexNet has no LRN.)

    Args:
      x: (N, H, W, C) float.
      size: number of channels in the window, >= 1.
      alpha: scale of the mean of squares.
      beta: exponent.
      k: additive constant; k > 0 keeps the base positive, so the op is smooth.

    Returns:
      (N, H, W, C), same dtype as `x`.
    """
    op = "local_response_norm"
    check_nhwc(x, op)
    check_float(x, op)
    if not isinstance(size, numbers.Integral) or isinstance(size, bool):
        raise TypeError(f"{op}: `size` must be a positive int; got {size!r}")
    if size < 1:
        raise ValueError(f"{op}: `size` must be a positive int; got {size!r}")
    sq = x * x
    # Windowed sum over channels, zero-padded size // 2 before and (size - 1) // 2 after.
    sums = lax.reduce_window(
        sq,
        np.array(0, sq.dtype),
        lax.add,
        (1, 1, 1, size),
        (1, 1, 1, 1),
        ((0, 0), (0, 0), (0, 0), (size // 2, (size - 1) // 2)),
    )
    return x / (k + alpha * (sums / size)) ** beta
