"""Normalisation: local response norm (AlexNet) and training-mode batch norm, in NHWC.

Both with `torch.nn.functional` semantics (`local_response_norm`, `batch_norm`).
"""

from __future__ import annotations

import math
import numbers
from typing import cast

import jax
import jax.numpy as jnp
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
    shift: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Training-mode batch normalisation over every axis but the last.

    ``y = (x - mean) / sqrt(var + epsilon) * scale + bias`` with the batch's mean and biased
    variance per channel (`torch.nn.functional.batch_norm(..., training=True)`).

    One pass over `x` gives both statistics: the sums of ``x - shift`` and of its square,
    which XLA fuses into one read of the activation; the gradient reads `x` and the cotangent
    twice (the sums of the scale and bias gradients, then the input gradient), as a
    hand-written BatchNorm kernel does. ``var = E[(x - s)^2] - E[x - s]^2`` loses about
    float32 epsilon times ``(mean - s)^2 / var`` of relative accuracy, so `s` must be near
    the mean on the scale of the spread: by default it is the first row of `x` (one sample
    per channel, within a few standard deviations of the mean whatever the mean is). A
    running mean is a poor choice for a fresh layer: it starts at 0 and approaches the mean
    over tens of steps. Under jit with a batch-sharded `x` the first row costs one all-reduce
    of C values. Every per-channel sum and broadcast goes through `channel_sum` /
    `channel_broadcast`, so on CPU they are matrix products (`jaxcnn.ops.reduction`).

    Args:
      x: (..., C) float (in practice (N, H, W, C) or (N, C)); statistics in x's dtype, so
        pass float32 for bfloat16 activations.
      scale, bias: (C,) of x's dtype (ones and zeros for a BatchNorm without them).
      epsilon: added to the variance.
      axis_name: a mapped axis (pmap) over which the statistics are averaged: synchronised
        BatchNorm over the global batch. The gradients of `scale` and `bias` stay this
        device's contributions, as autodiff gives them.
      shift: (C,) the constant subtracted before the sums (no gradient flows into it); it
        must be the same on every device of `axis_name`. None: the first row of `x`,
        averaged over `axis_name` if given.

    Returns:
      (y, mean, var): y like x; mean and biased variance of shape (C,), as used (global with
      `axis_name`).
    """
    if x.ndim < 2:
        raise ValueError(f"batch_norm: x must be (..., C) with rank >= 2; got shape {x.shape}")
    c = x.shape[-1]
    for name, v in (("scale", scale), ("bias", bias), ("shift", shift)):
        if v is not None and v.shape != (c,):
            raise ValueError(f"batch_norm: `{name}` must have shape ({c},); got {v.shape}")
    if shift is None:
        shift = x.reshape(-1, c)[0]
        if axis_name is not None:
            # pmean is untyped (it maps over pytrees); of an array it is an array.
            shift = cast(jax.Array, lax.pmean(shift, axis_name))
    shift = lax.stop_gradient(shift.astype(x.dtype))
    return _batch_norm(
        x, scale.astype(x.dtype), bias.astype(x.dtype), shift, float(epsilon), axis_name
    )


def _batch_norm(x, scale, bias, shift, epsilon, axis_name):
    n = math.prod(x.shape[:-1])
    xs = x - channel_broadcast(shift, x.shape)
    # Two sibling sums of one pass; XLA fuses the subtraction into both.
    m1 = channel_sum(xs) / n
    m2 = channel_sum(xs * xs) / n
    if axis_name is not None:
        m1, m2 = lax.pmean((m1, m2), axis_name)
    # max(., 0): rounding can leave a tiny negative where the variance is zero.
    var = jnp.maximum(m2 - m1 * m1, 0)
    mean = shift + m1
    a = lax.rsqrt(var + epsilon) * scale
    # y = (x - mean) * a + bias, as (x - shift) * a + (bias - m1 * a): one fused pass over x.
    y = xs * channel_broadcast(a, x.shape) + channel_broadcast(bias - m1 * a, x.shape)
    return y, mean, var
