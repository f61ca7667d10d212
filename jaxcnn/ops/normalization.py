"""Normalisation: local response norm (AlexNet) and training-mode batch norm, in NHWC.

Both with `torch.nn.functional` semantics (`local_response_norm`, `batch_norm`).
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np
from jax import lax

from ._args import check_float, check_nhwc
from .reduction import channel_broadcast, channel_sum


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


# --------------------------------------------------------------------------- batch norm


def batch_norm(
    x: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    epsilon: float = 1e-5,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode batch normalisation over every axis but the last.

    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` with the batch's mean and biased
    variance per channel (`torch.nn.functional.batch_norm(..., training=True)`).
    Every per-channel sum and broadcast goes through `channel_sum` / `channel_broadcast`,
    and so does every one in its gradient: on CPU these are matrix products, several times
    faster than the reductions autodiff would otherwise emit (`jaxcnn.ops.reduction`).

    Args:
      x: (..., C) float (in practice (N, H, W, C) or (N, C)); statistics in x's dtype, so
        pass float32 for bfloat16 activations.
      scale, bias: (C,) of x's dtype (ones and zeros for a BatchNorm without them).
      epsilon: added to the variance.
      axis_name: a mapped axis (pmap) over which the statistics are averaged: synchronised
        BatchNorm over the global batch. The gradients of `scale` and `bias` stay this
        device's contributions, as autodiff gives them.

    Returns:
      (y, mean, var): y like x; mean and biased variance of shape (C,), as used (global with
      `axis_name`).
    """
    if x.ndim < 2:
        raise ValueError(f"batch_norm: x must be (..., C) with rank >= 2; got shape {x.shape}")
    c = x.shape[-1]
    for name, v in (("scale", scale), ("bias", bias)):
        if v.shape != (c,):
            raise ValueError(f"batch_norm: `{name}` must have shape ({c},); got {v.shape}")
    return _batch_norm(x, scale.astype(x.dtype), bias.astype(x.dtype), float(epsilon), axis_name)


def _batch_norm(x, scale, bias, epsilon, axis_name):
    n = math.prod(x.shape[:-1])
    mean = channel_sum(x) / n
    if axis_name is not None:
        mean = lax.pmean(mean, axis_name)
    # Two passes (mean, then squared deviations): E[x^2] - E[x]^2 cancels badly when the
    # mean is large against the spread.
    d = x - channel_broadcast(mean, x.shape)
    var = channel_sum(d * d) / n
    if axis_name is not None:
        var = lax.pmean(var, axis_name)
    inv = lax.rsqrt(var + epsilon)
    y = d * channel_broadcast(inv * scale, x.shape) + channel_broadcast(bias, x.shape)
    return y, mean, var
