"""AlexNet (Krizhevsky, Sutskever and Hinton, 2012): torchvision's variant and the paper's.

A. Krizhevsky, I. Sutskever and G. E. Hinton, "ImageNet classification with deep
convolutional neural networks", NeurIPS 2012.

* `alexnet`: torchvision's `alexnet`, 61,100,840 parameters, weight-compatible with it. It
  follows the single-GPU variant of Krizhevsky's "One weird trick for parallelizing
  convolutional neural networks" (2014), not the 2012 paper: 64-192-384-256-256 filters,
  no grouped convolutions, no local response normalisation, and an adaptive 6x6 average
  pool before the classifier, so it accepts any input from 63x63 up.
* `alexnet_2012`: the 2012 paper's network, 60,965,224 parameters: 96-256-384-384-256
  filters, the two-GPU split as grouped convolutions, LRN, and the paper's initialisation.
  No torch reference.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from .. import layers
from .registry import register

# Smallest input of torchvision's AlexNet. conv 11x11/4 pad 2 gives (H - 7) // 4 + 1; each of
# the three 3x3/2 max-pools needs at least 3 rows (the convolutions between them keep the
# size): the last pool needs 3 -> the second pool's input >= 7 -> conv1's output >= 15 ->
# (H - 7) // 4 >= 14 -> H >= 63.
_ALEXNET_MIN_SIZE = (63, 63)

# alexnet_2012 has no adaptive pool: its fc6 takes exactly 256x6x6 features. With conv1
# 11x11/4 pad 2 and three 3x3/2 pools the last map is 6x6 exactly for 223 <= H, W <= 254
# (conv1's output is 55..62, pool1's 27..30, pool2's 13..14).
_ALEXNET_2012_MIN_SIZE = (223, 223)
_ALEXNET_2012_MAX_SIZE = (254, 254)

# The paper's weight initialisation, N(0, 0.01^2), for every layer.
_WEIGHT_INIT = nn.initializers.normal(stddev=0.01)
# The paper's LRN hyper-parameters (k=2, n=5, alpha=1e-4, beta=0.75) in PyTorch's convention,
# which divides the sum of squares by the window size: alpha_torch = 5 * 1e-4.
PAPER_LRN = {"size": 5, "alpha": 5e-4, "beta": 0.75, "k": 2.0}


class AlexNet(nn.Module):
    """torchvision's AlexNet (`torchvision.models.alexnet`).

    features: conv 64@11x11/4 pad 2 -> ReLU -> max-pool 3/2 -> conv 192@5x5 pad 2 -> ReLU ->
    max-pool 3/2 -> conv 384@3x3 -> ReLU -> conv 256@3x3 -> ReLU -> conv 256@3x3 -> ReLU ->
    max-pool 3/2; adaptive average pool to 6x6; classifier: dropout -> fc 4096 -> ReLU ->
    dropout -> fc 4096 -> ReLU -> fc num_classes.

    Deviations from the 2012 paper (see `AlexNet2012` for the paper's network): the filter
    counts (64, 192 instead of 96, 256 in conv1/conv2; 256 instead of 384 in conv4), one
    tower instead of two GPU groups, no LRN, the adaptive pool, dropout placed before the
    fully connected layers, and PyTorch's default initialisation (torchvision has no
    AlexNet-specific init).

    Attributes:
      num_classes: classifier outputs.
      dropout_rate: dropout probability in the classifier (torchvision's `dropout`).

    Input (N, H >= 63, W >= 63, 3) float -> (N, num_classes) float32 logits.
    """

    num_classes: int = 1000
    dtype: Any = jnp.float32
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(x, "alexnet", channels=3, min_size=_ALEXNET_MIN_SIZE)
        d = self.dtype
        x = nn.relu(layers.Conv(64, 11, stride=4, padding=2, dtype=d, name="features.0")(x))
        x = layers.MaxPool(3, 2, name="features.2")(x)
        x = nn.relu(layers.Conv(192, 5, padding=2, dtype=d, name="features.3")(x))
        x = layers.MaxPool(3, 2, name="features.5")(x)
        x = nn.relu(layers.Conv(384, 3, padding=1, dtype=d, name="features.6")(x))
        x = nn.relu(layers.Conv(256, 3, padding=1, dtype=d, name="features.8")(x))
        x = nn.relu(layers.Conv(256, 3, padding=1, dtype=d, name="features.10")(x))
        x = layers.MaxPool(3, 2, name="features.12")(x)
        x = layers.AdaptiveAvgPool((6, 6), name="avgpool")(x)
        x = layers.flatten_chw(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier.0")(x)
        x = nn.relu(layers.Dense(4096, dtype=d, name="classifier.1")(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="classifier.3")(x)
        x = nn.relu(layers.Dense(4096, dtype=d, name="classifier.4")(x))
        x = layers.Dense(self.num_classes, dtype=d, name="classifier.6")(x)
        return x.astype(jnp.float32)


class AlexNet2012(nn.Module):
    """The network of Krizhevsky, Sutskever and Hinton (2012), Section 3 and Figure 2.

    conv1 96@11x11/4 pad 2 -> ReLU -> LRN -> max-pool 3/2 (overlapping) ->
    conv2 256@5x5 pad 2, 2 groups -> ReLU -> LRN -> max-pool 3/2 ->
    conv3 384@3x3 pad 1 (connected across both groups) -> ReLU ->
    conv4 384@3x3 pad 1, 2 groups -> ReLU -> conv5 256@3x3 pad 1, 2 groups -> ReLU ->
    max-pool 3/2 -> flatten (256x6x6) -> fc6 4096 -> ReLU -> dropout ->
    fc7 4096 -> ReLU -> dropout -> fc8 num_classes.

    60,965,224 parameters at 1000 classes. The paper's two GPUs become `groups=2`: conv2,
    conv4 and conv5 see only the maps "on their GPU" (their own half of the channels);
    conv1, conv3 and the fully connected layers see everything.

    Input size: the paper says 224x224 but a 11x11/4 convolution without padding maps 224
    to 54, not the 55 of its Figure 2 (and of the 256x6x6 = 9216 inputs of fc6); Caffe's
    replication uses 227 instead. We keep the stated 224 and pad conv1 by 2, as torchvision
    does, which gives the paper's 55x55x96; and since fc6 is fixed at 9216 inputs, the
    model then accepts exactly 223 <= H, W <= 254 (227 included).

    LRN: ``b = a / (k + alpha * sum over 5 neighbouring maps of a^2) ^ beta`` with the
    paper's k=2, n=5, alpha=1e-4, beta=0.75, i.e. PyTorch-convention alpha = 5e-4 (PyTorch
    averages over the window instead of summing; see `ops.local_response_norm`). It is
    applied after the ReLU, before the pooling, as in the paper.

    Other deviations: the LRN window runs over all 96 (256) maps, while on the paper's two
    GPUs it could only see the maps of one GPU, which changes the two maps on either side
    of the split; dropout is applied to the outputs of fc6 and fc7 (the paper: "dropout in
    the first two fully-connected layers"), as in Caffe. The paper's softmax is left to the
    loss (logits are returned).

    Initialisation (Section 5): every weight N(0, 0.01); biases 1 in conv2, conv4, conv5,
    fc6 and fc7 (to give the ReLUs positive inputs early on), 0 elsewhere.

    Attributes:
      num_classes: classifier outputs.
      dropout_rate: dropout probability after fc6 and fc7.

    Input (N, 223..254, 223..254, 3) float -> (N, num_classes) float32 logits.
    """

    num_classes: int = 1000
    dtype: Any = jnp.float32
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(
            x,
            "alexnet_2012",
            channels=3,
            min_size=_ALEXNET_2012_MIN_SIZE,
            max_size=_ALEXNET_2012_MAX_SIZE,
            why_max="fc6 expects a 6x6 feature map (designed for 224x224: crop or resize)",
        )

        def conv(features, kernel, name, *, bias, stride=1, padding=1, groups=1):
            return layers.Conv(
                features,
                kernel,
                stride=stride,
                padding=padding,
                groups=groups,
                kernel_init=_WEIGHT_INIT,
                bias_init=bias,
                dtype=self.dtype,
                name=name,
            )

        def dense(features, name, *, bias):
            return layers.Dense(
                features, kernel_init=_WEIGHT_INIT, bias_init=bias, dtype=self.dtype, name=name
            )

        zeros, ones = nn.initializers.zeros, nn.initializers.ones
        x = nn.relu(conv(96, 11, "conv1", bias=zeros, stride=4, padding=2)(x))
        x = layers.LocalResponseNorm(**PAPER_LRN, name="norm1")(x)
        x = layers.MaxPool(3, 2, name="pool1")(x)
        x = nn.relu(conv(256, 5, "conv2", bias=ones, padding=2, groups=2)(x))
        x = layers.LocalResponseNorm(**PAPER_LRN, name="norm2")(x)
        x = layers.MaxPool(3, 2, name="pool2")(x)
        x = nn.relu(conv(384, 3, "conv3", bias=zeros)(x))
        x = nn.relu(conv(384, 3, "conv4", bias=ones, groups=2)(x))
        x = nn.relu(conv(256, 3, "conv5", bias=ones, groups=2)(x))
        x = layers.MaxPool(3, 2, name="pool5")(x)
        x = layers.flatten_chw(x)
        x = nn.relu(dense(4096, "fc6", bias=ones)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="drop6")(x)
        x = nn.relu(dense(4096, "fc7", bias=ones)(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="drop7")(x)
        x = dense(self.num_classes, "fc8", bias=zeros)(x)
        return x.astype(jnp.float32)


@register(
    "alexnet",
    input_size=(224, 224, 3),
    min_input_size=_ALEXNET_MIN_SIZE,
    num_params=61_100_840,
    num_classes=1000,
    reference="torchvision",
    reference_name="alexnet",
)
def alexnet(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> AlexNet:
    """torchvision's AlexNet; see `AlexNet`."""
    return AlexNet(num_classes=num_classes, dtype=dtype, **kw)


@register(
    "alexnet_2012",
    input_size=(224, 224, 3),
    min_input_size=_ALEXNET_2012_MIN_SIZE,
    num_params=60_965_224,
    num_classes=1000,
    reference=None,
)
def alexnet_2012(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> AlexNet2012:
    """AlexNet as in Krizhevsky et al. (2012), two GPU towers as groups; see `AlexNet2012`."""
    return AlexNet2012(num_classes=num_classes, dtype=dtype, **kw)
