"""Pure array functions under every model: convolution, conv-transpose, pooling, LRN,
batch norm, and the per-channel sums and broadcasts under bias adds and batch norm.

No Flax here. Layouts: activations NHWC, kernels HWIO. Each op has the semantics of the
same-named `torch.nn.functional` op, so ported weights behave identically.
"""

from .conv import conv2d, conv_output_size
from .conv_transpose import conv_transpose2d
from .normalization import batch_norm, local_response_norm
from .pooling import (
    adaptive_avg_pool2d,
    adaptive_max_pool2d,
    avg_pool2d,
    channel_pool,
    max_pool2d,
    sum_pool2d,
)
from .reduction import add_bias, channel_broadcast, channel_sum

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "add_bias",
    "avg_pool2d",
    "batch_norm",
    "channel_broadcast",
    "channel_pool",
    "channel_sum",
    "conv2d",
    "conv_output_size",
    "conv_transpose2d",
    "local_response_norm",
    "max_pool2d",
    "sum_pool2d",
]
