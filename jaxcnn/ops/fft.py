"""Convolution by products in the Fourier domain (the convolution theorem).

Cross-correlation with a kernel is a pointwise product with the conjugated kernel spectrum:
F(x star w) = F(x) * conj(F(w)) for real w. So a layer becomes: one real 2-D FFT per input
image-channel and per kernel channel pair, a complex channel contraction per frequency (the
same matmul shape as the convolution itself), and one inverse FFT per output image-channel.

When it pays off. Per (input channel, output channel) pair the direct method costs
O(H W k^2) multiply-adds for a k x k kernel, the FFT method O(H W) for the frequency-domain
product plus FFTs of O(H W log(H W)) that are shared across channel pairs. The constant
factors (complex arithmetic, the FFT passes, materialising the spectra) are large, so FFT
convolution only pays off for large kernels on large images: 11x11 (AlexNet's first layer)
and beyond is where it is worth trying. Measured on a 2-core CPU against "xla" (N=4, "same"
padding, float32), 128x128 images with 16 -> 16 channels: 3x3: 62 vs 5 ms, 11x11: 66 vs
51 ms, 15x15: 75 vs 91 ms, 21x21: 52 vs 179 ms; with 64x64 images and 32 channels the
break-even is past 15x15.
A stride does not make it cheaper: all stride-1 outputs are computed and then subsampled.

Accuracy. FFT rounding errors are spread over all outputs in proportion to the norms of the
whole signals, ~ eps * log2(H W) * ||x|| * ||w||, not to the size of each output. For outputs
of typical magnitude float32 FFT convolution is as accurate as direct convolution or better
(its sums have logarithmic depth). Measured against a float64 reference, N(0, 1) data,
2 x 32 x 32 x 64 input, 11x11 kernel, 64 outputs, CPU: max abs error / RMS of output 1.1e-6
for "fft" vs 2.3e-6 for "xla". But an output much smaller than the rest of the image gets
the *absolute* error of the large ones: with the right half of a 64x64 image scaled by
1e-4, the max error there relative to that half's RMS output was 5.9e-3 for "fft" vs 1.7e-6
for "xla". float64 inputs are computed in complex128 and are exact to ~1e-14 relative to
the output scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ._args import Pair


def _fast_fft_size(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3, 5 and 7."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def fft_conv(
    x: jax.Array, w: jax.Array, *, stride: Pair, dilation: Pair, groups: int, out_hw: Pair
) -> jax.Array:
    """Valid (unpadded) cross-correlation via rfft2 over the spatial axes.

    Any kernel size, stride, dilation and groups. float64 inputs are transformed in
    complex128; every other float dtype in complex64 (XLA's FFT takes only float32 and
    float64, so bfloat16/float16 are upcast), and the result is cast back to x's dtype.

    Args:
      x: (N, H, W, C_in), already padded.
      w: (kh, kw, C_in // groups, C_out).
      stride, dilation: (h, w) pairs.
      groups: channel groups; the channel contraction is block-diagonal over them.
      out_hw: (H_out, W_out), the number of strided window positions.

    Returns:
      (N, H_out, W_out, C_out) in x's dtype.
    """
    n, h, wd, _ = x.shape
    cin_g, c_out = w.shape[2], w.shape[3]
    (sh, sw), (dh, dw) = stride, dilation
    ho, wo = out_hw
    real = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    xr, wr = x.astype(real), w.astype(real)

    # A dilated kernel is an ordinary kernel with dilation - 1 zeros between its taps.
    if (dh, dw) != (1, 1):
        zero = jnp.zeros((), real)
        wr = lax.pad(wr, zero, ((0, 0, dh - 1), (0, 0, dw - 1), (0, 0, 0), (0, 0, 0)))

    # The FFT computes a *circular* correlation over the transform size L:
    #   y[i] = sum_k x[(i + k) mod L] w[k].
    # A valid output i <= H - kh_dilated only reads x[i + k] with i + k <= H - 1 < L, so with
    # L >= H no index wraps around and the valid outputs equal the linear correlation; the
    # wrapped-around garbage lands only in positions i > H - kh_dilated, which are cropped.
    # L is then rounded up to the next 2-3-5-7-smooth size: FFT libraries (XLA's CPU FFT,
    # cuFFT) are fastest for lengths with small prime factors and much slower for awkward
    # ones. Measured on CPU (N=2, 8 -> 8 channels, 11x11 kernel, 19 prime H = W from 37 to
    # 211): 384 ms in total at L = H, 171 ms rounded up (2.2x faster; e.g. H = 97 -> L = 98:
    # 12.6 -> 5.4 ms); the larger spectra cost less than the slow FFT lengths save.
    fh, fw = _fast_fft_size(h), _fast_fft_size(wd)
    xf = jnp.fft.rfft2(xr, s=(fh, fw), axes=(1, 2))  # (N, fh, fw // 2 + 1, C_in)
    wf = jnp.fft.rfft2(wr, s=(fh, fw), axes=(0, 1))  # (fh, fw // 2 + 1, C_in // groups, C_out)
    fwr = fw // 2 + 1

    # Correlation = product with the conjugate spectrum; the sum over input channels within a
    # group is a complex matmul per frequency.
    xf = xf.reshape(n, fh, fwr, groups, cin_g)
    wf = jnp.conj(wf).reshape(fh, fwr, cin_g, groups, c_out // groups)
    yf = jnp.einsum("nhwgc,hwcgo->nhwgo", xf, wf).reshape(n, fh, fwr, c_out)
    y = jnp.fft.irfft2(yf, s=(fh, fw), axes=(1, 2))

    # Keep the valid stride-1 outputs, then subsample them by the stride.
    y = y[:, : (ho - 1) * sh + 1 : sh, : (wo - 1) * sw + 1 : sw, :]
    return y.astype(x.dtype)
