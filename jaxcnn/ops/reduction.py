"""Per-channel sums and broadcasts, and bias adds built on them, fast on every backend.

Adding a bias over an NHWC activation, and every statistic of BatchNorm, broadcast a (C,)
vector over all axes but the channels or reduce over them; each one's gradient is the other.
XLA:CPU (jaxlib 0.10) runs those "column" reductions about 20x slower than the same sum as a
matrix-vector product with a vector of ones (8.6 ms against 0.4 ms for (8, 28, 28, 512)
float32 on 2 x86-64 cores), and ResNet-50's backward pass is made of them. So on CPU these
functions are written as products with ones, whose transposes are products again; on other
platforms they are the plain `jnp.sum` and broadcast, which XLA's GPU and TPU reductions
handle well. `lax.platform_dependent` picks the branch when the program is compiled.

No custom derivative rules: forward and reverse mode, to any order, are JAX's own.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

_HIGHEST = lax.Precision.HIGHEST


def _blocks(rows: int) -> tuple[int, int]:
    """(B, L) with B * L = rows and L the divisor of rows nearest below sqrt(rows).

    A matrix-vector product adds its rows one after another, so a sum over M rows in one
    product carries a rounding error growing like M; in two stages of B and L rows it grows
    like B + L, about 2 sqrt(M) when M has a divisor near its square root (N * H * W of a
    convolution's output does; a prime M leaves one stage of M rows).
    """
    best = 1
    for d in range(1, math.isqrt(rows) + 1):
        if rows % d == 0:
            best = d
    return rows // best, best


def _ones(n: int, dtype) -> jax.Array:
    return jnp.ones((n,), dtype)


def channel_sum(x: jax.Array) -> jax.Array:
    """Sum over every axis but the last: (..., C) -> (C,), in x's dtype (integers do not
    promote, on every platform)."""
    if x.ndim < 1 or not (
        jnp.issubdtype(x.dtype, jnp.number) and not jnp.issubdtype(x.dtype, jnp.bool_)
    ):
        raise TypeError(
            f"channel_sum: x must be a numeric array of rank >= 1; got {x.dtype} of shape "
            f"{getattr(x, 'shape', None)}"
        )
    c = x.shape[-1]
    rows = math.prod(x.shape[:-1])

    def as_products(x):
        b, l = _blocks(rows)
        partial = jnp.dot(_ones(b, x.dtype), x.reshape(b, l * c), precision=_HIGHEST)
        return jnp.dot(_ones(l, x.dtype), partial.reshape(l, c), precision=_HIGHEST)

    def plain(x):
        return jnp.sum(x.reshape(rows, c), axis=0, dtype=x.dtype)

    return lax.platform_dependent(x, cpu=as_products, default=plain)


def channel_broadcast(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """(C,) -> `shape` (..., C): `v` repeated over every axis but the last.

    The adjoint of `channel_sum`: under autodiff, the gradient of `v` is `channel_sum` of the
    cotangent (on CPU through the same two stages of products).
    """
    shape = tuple(shape)
    if v.ndim != 1 or shape[-1] != v.shape[0]:
        raise ValueError(
            f"channel_broadcast: `v` must have shape (C,) with C = shape[-1]; got v.shape="
            f"{v.shape}, shape={shape}"
        )
    rows = math.prod(shape[:-1])

    def as_products(v):
        b, l = _blocks(rows)
        tile = jnp.dot(_ones(l, v.dtype)[:, None], v[None, :], precision=_HIGHEST)
        full = jnp.dot(_ones(b, v.dtype)[:, None], tile.reshape(1, -1), precision=_HIGHEST)
        return full.reshape(shape)

    def plain(v):
        return jnp.broadcast_to(v, shape)

    return lax.platform_dependent(v, cpu=as_products, default=plain)


def add_bias(y: jax.Array, b: jax.Array) -> jax.Array:
    """``y + b`` with `b` of shape (C,) over y's last axis; b's gradient is a `channel_sum`."""
    return y + channel_broadcast(b.astype(y.dtype), y.shape)
