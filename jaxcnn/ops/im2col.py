"""Convolution as one matrix multiply ("im2col"), and the window extraction it rests on.

im2col copies every receptive field of the input into a row of a matrix of shape
(N * H_out * W_out, kh * kw * C_in); the convolution is then that matrix times the kernel
reshaped to (kh * kw * C_in, C_out). It trades kh * kw times the input's memory for a single
large GEMM, which is how Caffe and early cuDNN ran convolutions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._args import Pair


def window_slices(x: jax.Array, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair):
    """The kh * kw strided views of `x` that the kernel taps see, in row-major tap order.

    Args:
      x: (N, H, W, C), already padded.
      kernel, stride, dilation: (h, w) pairs.
      out_hw: (H_out, W_out), the number of window positions.

    Returns:
      A list of kh * kw arrays of shape (N, H_out, W_out, C); entry i * kw + j holds
      x[:, i * dh + s_h * oh, j * dw + s_w * ow, :] for every output position (oh, ow).
    """
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    n, _, _, c = x.shape
    views = []
    for i in range(kh):
        for j in range(kw):
            start = (0, i * dh, j * dw, 0)
            limit = (n, i * dh + (ho - 1) * sh + 1, j * dw + (wo - 1) * sw + 1, c)
            views.append(lax.slice(x, start, limit, (1, sh, sw, 1)))
    return views


def extract_patches(x: jax.Array, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair):
    """(N, H_out, W_out, kh * kw, C): every receptive field of the padded input `x`."""
    return jnp.stack(window_slices(x, kernel, stride, dilation, out_hw), axis=3)


def scatter_windows(
    contributions, in_shape, kernel: Pair, stride: Pair, dilation: Pair
) -> jax.Array:
    """Adjoint of `window_slices`: add each tap's (N, H_out, W_out, C) array back in place.

    `contributions[i * kw + j]` is added at x[:, i*dh + sh*oh, j*dw + sw*ow, :]. Used by the
    backward passes of pooling. Implemented with `lax.pad` (interior padding = stride - 1),
    so it is a pure, differentiable function.
    """
    (_, kw), (sh, sw), (dh, dw) = kernel, stride, dilation
    _, h, w, _ = in_shape
    zero = jnp.zeros((), contributions[0].dtype)
    total = jnp.zeros(in_shape, contributions[0].dtype)
    for idx, g in enumerate(contributions):
        i, j = divmod(idx, kw)
        ho, wo = g.shape[1], g.shape[2]
        lo_h, lo_w = i * dh, j * dw
        hi_h = h - (lo_h + (ho - 1) * sh + 1)
        hi_w = w - (lo_w + (wo - 1) * sw + 1)
        # A negative high pad would make lax.pad crop silently: the caller's shape is wrong.
        assert hi_h >= 0 and hi_w >= 0, f"windows reach beyond in_shape={in_shape}"
        cfg = ((0, 0, 0), (lo_h, hi_h, sh - 1), (lo_w, hi_w, sw - 1), (0, 0, 0))
        total = total + lax.pad(g, zero, cfg)
    return total


def im2col_conv(
    x: jax.Array, w: jax.Array, *, stride: Pair, dilation: Pair, groups: int, out_hw: Pair
) -> jax.Array:
    """Valid (unpadded) cross-correlation by patches + one matmul per group.

    Args:
      x: (N, H, W, C_in), already padded.
      w: (kh, kw, C_in // groups, C_out).
    Returns:
      (N, H_out, W_out, C_out).
    """
    kh, kw, cin_g, cout = w.shape
    n = x.shape[0]
    ho, wo = out_hw
    cout_g = cout // groups
    patches = extract_patches(x, (kh, kw), stride, dilation, out_hw)  # (N, Ho, Wo, K, C)
    # Split channels into groups; the column index of a row is (tap, channel-in-group).
    patches = patches.reshape(n * ho * wo, kh * kw, groups, cin_g)
    kernel = w.reshape(kh * kw, cin_g, groups, cout_g)
    # One GEMM per group: (rows, K*cin_g) @ (K*cin_g, cout_g), batched over groups.
    out = jnp.einsum("rkgc,kcgd->rgd", patches, kernel)
    return out.reshape(n, ho, wo, cout)
