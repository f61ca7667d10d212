"""Zero-size kernels and windows: a ValueError naming the argument, never an XLA error."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn import ops

X = jnp.ones((1, 8, 8, 3), jnp.float32)
ZERO_KERNELS = [(0, 3), (3, 0), (0, 0)]
CONV_ALGORITHMS = ["xla", "im2col", "winograd", "fft"]


@pytest.mark.parametrize("algorithm", CONV_ALGORITHMS)
@pytest.mark.parametrize("kernel", ZERO_KERNELS)
@pytest.mark.parametrize("padding", [0, 1, "same"])
def test_conv2d_zero_size_kernel(kernel, algorithm, padding):
    w = jnp.ones((*kernel, 3, 4), jnp.float32)
    match = r"conv2d: the kernel size \(kh, kw\) of `w` must be >= 1 .*w.shape=\(" + (
        f"{kernel[0]}, {kernel[1]}, 3, 4"
    )
    with pytest.raises(ValueError, match=match):
        ops.conv2d(X, w, padding=padding, algorithm=algorithm)
    with pytest.raises(ValueError, match=match):  # at trace time, inside jit too
        jax.jit(lambda x, w: ops.conv2d(x, w, padding=padding, algorithm=algorithm))(X, w)


@pytest.mark.parametrize("kernel", ZERO_KERNELS)
def test_conv_transpose2d_zero_size_kernel(kernel):
    w = jnp.ones((*kernel, 3, 4), jnp.float32)
    with pytest.raises(ValueError, match=r"conv_transpose2d: the kernel size \(kh, kw\) of `w`"):
        ops.conv_transpose2d(X, w, stride=2)


def test_other_empty_dimensions_still_compute():
    """Only the window must be non-empty: no output channels give an empty output, as before."""
    y = ops.conv2d(X, jnp.ones((3, 3, 3, 0), jnp.float32))
    assert y.shape == (1, 6, 6, 0)
    y = ops.conv2d(X, jnp.ones((1, 1, 3, 4), jnp.float32))  # the smallest kernel
    np.testing.assert_allclose(np.asarray(y), 3.0)


@pytest.mark.parametrize(
    "op", [ops.max_pool2d, ops.avg_pool2d, ops.sum_pool2d], ids=lambda f: f.__name__
)
@pytest.mark.parametrize("kernel_size", [0, (2, 0), (0, 2)])
def test_pooling_zero_kernel_size(op, kernel_size):
    with pytest.raises(ValueError, match=rf"{op.__name__}: `kernel_size` must be >= 1"):
        op(X, kernel_size)


@pytest.mark.parametrize(
    "op", [ops.adaptive_avg_pool2d, ops.adaptive_max_pool2d], ids=lambda f: f.__name__
)
def test_adaptive_pooling_zero_output_size(op):
    with pytest.raises(ValueError, match=rf"{op.__name__}: `output_size` must be >= 1"):
        op(X, (0, 2))


def test_channel_ops_and_output_size_zero_window():
    with pytest.raises(ValueError, match=r"channel_pool: `group_size` must be a positive int"):
        ops.channel_pool(X, 0)
    with pytest.raises(ValueError, match=r"local_response_norm: `size` must be a positive int"):
        ops.local_response_norm(X, 0)
    with pytest.raises(ValueError, match=r"conv_output_size: `kernel_size` must be a positive"):
        ops.conv_output_size(8, 0)
