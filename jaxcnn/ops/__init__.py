"""Pure array functions under every model: convolution, conv-transpose, pooling, LRN.

No Flax here. Layouts: activations NHWC, kernels HWIO. Each op has the semantics of the
same-named `torch.nn.functional` op, so ported weights behave identically.
"""

from .conv import conv2d, conv_output_size
from .conv_transpose import conv_transpose2d

__all__ = [
    "conv2d",
    "conv_output_size",
    "conv_transpose2d",
]
