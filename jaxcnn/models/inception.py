"""Inception-v3, Inception-v4 and Inception-ResNet-v2: the BatchNorm and residual generation.

* `InceptionV3` — Szegedy, Vanhoucke, Ioffe, Shlens & Wojna (2016), "Rethinking the Inception
  Architecture for Computer Vision": factorised convolutions (n x n -> 1 x n then n x 1),
  BatchNorm after every convolution, an auxiliary classifier. Exactly
  `torchvision.models.Inception3`.
* `InceptionV4` and `InceptionResNetV2` — Szegedy, Ioffe, Vanhoucke & Alemi (2017),
  "Inception-v4, Inception-ResNet and the Impact of Residual Connections on Learning"
  (AAAI; arXiv 2016): a uniform pure-Inception network, and Inception blocks wrapped in scaled
  residual connections. Exactly timm 1.0.29's `inception_v4` and `inception_resnet_v2`, which
  port Google's released TensorFlow-slim models.

Every convolution outside the residual up-projections is conv (no bias) -> BatchNorm
(eps 1e-3, TensorFlow's) -> ReLU (`ConvBN`), named as torchvision's `BasicConv2d` and timm's
`ConvNormAct` are: children "conv" and "bn".

Input: (N, H, W, 3) float, designed for 299 x 299; the smallest is 75 x 75, except for
Inception-v3 with its auxiliary head (the default), which needs 299 x 299. Output:
(N, num_classes) float32 logits.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from .. import layers, ops
from .registry import register

# A 75 x 75 input leaves a 3 x 3 map for the last stride-2, unpadded 3 x 3 reduction in all
# three networks; 74 leaves 2 x 2 (derivation in `InceptionV3`'s docstring).
MIN_SIZE = (75, 75)
# Inception-v3's auxiliary head needs a 17 x 17 grid after Mixed_6e, which only a 299 x 299
# input gives.
V3_AUX_MIN_SIZE = (299, 299)
_BN_EPS = 1e-3  # TensorFlow's default, kept by torchvision and timm for these ports


_trunc_normal = layers.torch_trunc_normal
ConvBN = functools.partial(layers.ConvBN, epsilon=_BN_EPS)
# Every module below hands its `bn_axis_name` and `frozen_batch_norms` to its children.
_bn_options = layers.batch_norm_options


def _cat(*xs: jax.Array) -> jax.Array:
    return jnp.concatenate(xs, axis=-1)


# ================================================================================ Inception-v3
# torchvision initialises every Conv2d and Linear with trunc_normal(std=0.1) unless the module
# itself carries a `stddev` attribute; only AuxLogits.fc does (0.001). InceptionAux sets
# `conv1.stddev = 0.01` on the BasicConv2d wrapper, not on its Conv2d, so torchvision's
# AuxLogits.conv1.conv is drawn with std 0.1 like the rest; we reproduce what torchvision does.
_V3_INIT = _trunc_normal(0.1)
_V3_AUX_FC_INIT = _trunc_normal(0.001)


class InceptionOutputs(NamedTuple):
    """Inception-v3's training-mode output with the auxiliary head (torchvision's namesake).

    Attributes:
      logits: (N, num_classes) float32, the main classifier.
      aux_logits: (N, num_classes) float32, the auxiliary classifier after Mixed_6e.
    """

    logits: jax.Array
    aux_logits: jax.Array


class InceptionA(nn.Module):
    """35 x 35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1 (224 + pool_features ch)."""

    pool_features: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(
            ConvBN, kernel_init=_V3_INIT, dtype=self.dtype, **_bn_options(self)
        )
        b1 = conv(64, 1, name="branch1x1")(x, train)
        b5 = conv(48, 1, name="branch5x5_1")(x, train)
        b5 = conv(64, 5, padding=2, name="branch5x5_2")(b5, train)
        b3 = conv(64, 1, name="branch3x3dbl_1")(x, train)
        b3 = conv(96, 3, padding=1, name="branch3x3dbl_2")(b3, train)
        b3 = conv(96, 3, padding=1, name="branch3x3dbl_3")(b3, train)
        # torchvision's functional F.avg_pool2d: no module, and padding counts in the mean.
        bp = ops.avg_pool2d(x, 3, stride=1, padding=1)
        bp = conv(self.pool_features, 1, name="branch_pool")(bp, train)
        return _cat(b1, b5, b3, bp)


class InceptionB(nn.Module):
    """35 -> 17 grid reduction: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 (768 channels from 288)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(
            ConvBN, kernel_init=_V3_INIT, dtype=self.dtype, **_bn_options(self)
        )
        b3 = conv(384, 3, stride=2, name="branch3x3")(x, train)
        bd = conv(64, 1, name="branch3x3dbl_1")(x, train)
        bd = conv(96, 3, padding=1, name="branch3x3dbl_2")(bd, train)
        bd = conv(96, 3, stride=2, name="branch3x3dbl_3")(bd, train)
        bp = ops.max_pool2d(x, 3, stride=2)
        return _cat(b3, bd, bp)


class InceptionC(nn.Module):
    """17 x 17 module with 7x7 convolutions factorised into 1x7 and 7x1 (768 channels)."""

    channels_7x7: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(
            ConvBN, kernel_init=_V3_INIT, dtype=self.dtype, **_bn_options(self)
        )
        c7 = self.channels_7x7
        b1 = conv(192, 1, name="branch1x1")(x, train)
        b7 = conv(c7, 1, name="branch7x7_1")(x, train)
        b7 = conv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(b7, train)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(b7, train)
        bd = conv(c7, 1, name="branch7x7dbl_1")(x, train)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(bd, train)
        bd = conv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(bd, train)
        bd = conv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(bd, train)
        bd = conv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(bd, train)
        bp = ops.avg_pool2d(x, 3, stride=1, padding=1)
        bp = conv(192, 1, name="branch_pool")(bp, train)
        return _cat(b1, b7, bd, bp)


class InceptionD(nn.Module):
    """17 -> 8 grid reduction: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 (1280 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(
            ConvBN, kernel_init=_V3_INIT, dtype=self.dtype, **_bn_options(self)
        )
        b3 = conv(192, 1, name="branch3x3_1")(x, train)
        b3 = conv(320, 3, stride=2, name="branch3x3_2")(b3, train)
        b7 = conv(192, 1, name="branch7x7x3_1")(x, train)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7, train)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7, train)
        b7 = conv(192, 3, stride=2, name="branch7x7x3_4")(b7, train)
        bp = ops.max_pool2d(x, 3, stride=2)
        return _cat(b3, b7, bp)


class InceptionE(nn.Module):
    """8 x 8 module with expanded filter banks (1x3 and 3x1 side by side; 2048 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(
            ConvBN, kernel_init=_V3_INIT, dtype=self.dtype, **_bn_options(self)
        )
        b1 = conv(320, 1, name="branch1x1")(x, train)
        b3 = conv(384, 1, name="branch3x3_1")(x, train)
        b3 = _cat(
            conv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(b3, train),
            conv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(b3, train),
        )
        bd = conv(448, 1, name="branch3x3dbl_1")(x, train)
        bd = conv(384, 3, padding=1, name="branch3x3dbl_2")(bd, train)
        bd = _cat(
            conv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(bd, train),
            conv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(bd, train),
        )
        bp = ops.avg_pool2d(x, 3, stride=1, padding=1)
        bp = conv(192, 1, name="branch_pool")(bp, train)
        return _cat(b1, b3, bd, bp)


class InceptionAux(nn.Module):
    """Auxiliary classifier on the 17 x 17 grid: avgpool 5/3 -> 1x1 128 -> 5x5 768 -> fc.

    x: (N, H, W, 768) with H, W >= 17 -> (N, num_classes).
    """

    num_classes: int
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(
            ConvBN, kernel_init=_V3_INIT, dtype=self.dtype, **_bn_options(self)
        )
        x = ops.avg_pool2d(x, 5, stride=3)
        x = conv(128, 1, name="conv0")(x, train)
        x = conv(768, 5, name="conv1")(x, train)
        x = layers.flatten_chw(ops.adaptive_avg_pool2d(x, (1, 1)))
        return layers.Dense(
            self.num_classes, kernel_init=_V3_AUX_FC_INIT, dtype=self.dtype, name="fc"
        )(x)


class InceptionV3(nn.Module):
    """Inception-v3 (Szegedy et al., 2016), exactly `torchvision.models.Inception3`.

    Stem (3x3/2, 3x3, 3x3 padded, maxpool, 1x1 80, 3x3 192, maxpool), three 35 x 35
    modules (Mixed_5b-d), a grid reduction (Mixed_6a), four 17 x 17 modules with factorised
    7 x 7 convolutions (Mixed_6b-e), a grid reduction (Mixed_7a), two 8 x 8 modules
    (Mixed_7b-c), global average pooling, dropout and a linear classifier. In training an
    auxiliary classifier on Mixed_6e's output is returned too (`aux_logits`).

    Deviations of torchvision (which follows Google's released TensorFlow model) from the
    paper: the paper's Table 1 lists the stem's last layers as 3x3 80, 3x3/2 192, 3x3 288,
    where the released model has 1x1 80, 3x3 192 and a max pool; the paper's Inception-v3
    ("BN-auxiliary") also batch-normalises the auxiliary classifier's fully connected layer,
    where torchvision's `AuxLogits.fc` is a plain linear layer. The paper's label smoothing
    and RMSProp recipe are training choices, not part of the module.

    Smallest input: every spatial step is floor((n - k + 2p) / s) + 1. Mixed_7a needs a
    3 x 3 map, so Mixed_6a needs 7, maxpool2 15, Conv2d_4a_3x3 17, maxpool1 35, Conv2d_2a_3x3
    37 and Conv2d_1a_3x3 75: 75 x 75 (torchvision's documented `min_size`) without the
    auxiliary head. The head's 5/3 average pool and unpadded 5 x 5 convolution need a
    17 x 17 grid after Mixed_6e, i.e. 35 before Mixed_6a, 71 before maxpool2, 73, 147, 149
    and a 299 x 299 input, exactly the design size. With `aux_logits` the model asks for
    299 x 299 in evaluation too, although only training runs the head (torchvision evaluates
    such a model down to 75 and fails only in training): a configuration that evaluates
    also trains. Use `aux_logits=False` for inputs from 75 x 75 up.

    Attributes:
      num_classes: classifier outputs.
      aux_logits: build the auxiliary classifier ("AuxLogits"); its parameters exist
        whatever the mode (as in torchvision's state dict) but its output is only computed
        in training. Raises the smallest input from 75 x 75 to 299 x 299.
      transform_input: map ImageNet-standardised input to the [-1, 1] scaling the ported
        Google weights expect (torchvision sets this when loading its pretrained weights).
      dropout_rate: dropout before the classifier (torchvision's `dropout`).
      dtype: computation dtype; parameters stay float32.
      bn_axis_name: the mapped axis (`jax.pmap`, `shard_map`, `jax.vmap`) over which every
        BatchNorm averages its training-mode batch statistics (synchronised BatchNorm);
        None (the default): the statistics of the batch the model sees.
      frozen_batch_norms: layer paths from the model's root ("Conv2d_1a_3x3", "Mixed_5b",
        "Mixed_5b/branch1x1/bn"); every BatchNorm at or under one of them runs in inference
        mode even with ``train=True`` (running statistics, none updated). Set both with
        `jaxcnn.models.configure_batch_norm`.

    Call:
      x: (N, H, W, 3) float; H, W >= 299 with `aux_logits`, >= 75 without.
      train: batch statistics, dropout (needs the "dropout" RNG) and the auxiliary head.

    Returns:
      (N, num_classes) float32 logits; in training with `aux_logits`, an `InceptionOutputs`
      (logits, aux_logits) of two such arrays.
    """

    num_classes: int
    aux_logits: bool = True
    transform_input: bool = False
    dropout_rate: float = 0.5
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | InceptionOutputs:
        layers.check_input(
            x,
            "inception_v3",
            channels=3,
            min_size=V3_AUX_MIN_SIZE if self.aux_logits else MIN_SIZE,
        )
        if self.transform_input:
            x = layers.imagenet_to_unit_range(x)
        bn = _bn_options(self)
        conv = functools.partial(ConvBN, kernel_init=_V3_INIT, dtype=self.dtype, **bn)
        x = conv(32, 3, stride=2, name="Conv2d_1a_3x3")(x, train)
        x = conv(32, 3, name="Conv2d_2a_3x3")(x, train)
        x = conv(64, 3, padding=1, name="Conv2d_2b_3x3")(x, train)
        x = layers.MaxPool(3, stride=2, name="maxpool1")(x)
        x = conv(80, 1, name="Conv2d_3b_1x1")(x, train)
        x = conv(192, 3, name="Conv2d_4a_3x3")(x, train)
        x = layers.MaxPool(3, stride=2, name="maxpool2")(x)
        x = InceptionA(32, dtype=self.dtype, **bn, name="Mixed_5b")(x, train)
        x = InceptionA(64, dtype=self.dtype, **bn, name="Mixed_5c")(x, train)
        x = InceptionA(64, dtype=self.dtype, **bn, name="Mixed_5d")(x, train)
        x = InceptionB(dtype=self.dtype, **bn, name="Mixed_6a")(x, train)
        x = InceptionC(128, dtype=self.dtype, **bn, name="Mixed_6b")(x, train)
        x = InceptionC(160, dtype=self.dtype, **bn, name="Mixed_6c")(x, train)
        x = InceptionC(160, dtype=self.dtype, **bn, name="Mixed_6d")(x, train)
        x = InceptionC(192, dtype=self.dtype, **bn, name="Mixed_6e")(x, train)
        aux = None
        # Evaluation skips the auxiliary head, but its variables must exist in either mode
        # (torchvision's state dict has them), so eval-mode init runs it too.
        if self.aux_logits and (train or self.is_initializing()):
            aux = InceptionAux(self.num_classes, dtype=self.dtype, **bn, name="AuxLogits")(x, train)
        x = InceptionD(dtype=self.dtype, **bn, name="Mixed_7a")(x, train)
        x = InceptionE(dtype=self.dtype, **bn, name="Mixed_7b")(x, train)
        x = InceptionE(dtype=self.dtype, **bn, name="Mixed_7c")(x, train)
        x = layers.AdaptiveAvgPool((1, 1), name="avgpool")(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
        x = layers.Dense(self.num_classes, kernel_init=_V3_INIT, dtype=self.dtype, name="fc")(
            layers.flatten_chw(x)
        )
        logits = x.astype(jnp.float32)
        if train and aux is not None:
            return InceptionOutputs(logits, aux.astype(jnp.float32))
        return logits


# ====================================================================== Inception-v4 (timm)
# timm's modules keep PyTorch's default initialisation (no init code in these files), which
# is `ConvBN`'s and the layers' default. Sequential branches are named "<branch>.<index>".


class Mixed3a(nn.Module):
    """Stem split: maxpool/2 | 3x3/2 96 (64 -> 160 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x0 = layers.MaxPool(3, stride=2, name="maxpool")(x)
        x1 = ConvBN(96, 3, stride=2, dtype=self.dtype, **_bn_options(self), name="conv")(x, train)
        return _cat(x0, x1)


class Mixed4a(nn.Module):
    """Stem split: 1x1-3x3 | 1x1-1x7-7x1-3x3, both unpadded at the end (160 -> 192)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(64, 1, name="branch0.0")(x, train)
        x0 = conv(96, 3, name="branch0.1")(x0, train)
        x1 = conv(64, 1, name="branch1.0")(x, train)
        x1 = conv(64, (1, 7), padding=(0, 3), name="branch1.1")(x1, train)
        x1 = conv(64, (7, 1), padding=(3, 0), name="branch1.2")(x1, train)
        x1 = conv(96, 3, name="branch1.3")(x1, train)
        return _cat(x0, x1)


class Mixed5a(nn.Module):
    """Stem split: 3x3/2 192 | maxpool/2 (192 -> 384 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x0 = ConvBN(192, 3, stride=2, dtype=self.dtype, **_bn_options(self), name="conv")(x, train)
        x1 = layers.MaxPool(3, stride=2, name="maxpool")(x)
        return _cat(x0, x1)


class InceptionV4A(nn.Module):
    """Inception-A, 35 x 35: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | avgpool-1x1 (384 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(96, 1, name="branch0")(x, train)
        x1 = conv(64, 1, name="branch1.0")(x, train)
        x1 = conv(96, 3, padding=1, name="branch1.1")(x1, train)
        x2 = conv(64, 1, name="branch2.0")(x, train)
        x2 = conv(96, 3, padding=1, name="branch2.1")(x2, train)
        x2 = conv(96, 3, padding=1, name="branch2.2")(x2, train)
        # TensorFlow's "SAME" average pool: padding is left out of the mean.
        x3 = layers.AvgPool(3, stride=1, padding=1, count_include_pad=False, name="branch3.0")(x)
        x3 = conv(96, 1, name="branch3.1")(x3, train)
        return _cat(x0, x1, x2, x3)


class ReductionA(nn.Module):
    """Reduction-A, 35 -> 17: 3x3/2 384 | 1x1 192-3x3 224-3x3/2 256 | maxpool (1024)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(384, 3, stride=2, name="branch0")(x, train)
        x1 = conv(192, 1, name="branch1.0")(x, train)
        x1 = conv(224, 3, padding=1, name="branch1.1")(x1, train)
        x1 = conv(256, 3, stride=2, name="branch1.2")(x1, train)
        x2 = layers.MaxPool(3, stride=2, name="branch2")(x)
        return _cat(x0, x1, x2)


class InceptionV4B(nn.Module):
    """Inception-B, 17 x 17, factorised 7 x 7 convolutions (1024 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(384, 1, name="branch0")(x, train)
        x1 = conv(192, 1, name="branch1.0")(x, train)
        x1 = conv(224, (1, 7), padding=(0, 3), name="branch1.1")(x1, train)
        x1 = conv(256, (7, 1), padding=(3, 0), name="branch1.2")(x1, train)
        x2 = conv(192, 1, name="branch2.0")(x, train)
        x2 = conv(192, (7, 1), padding=(3, 0), name="branch2.1")(x2, train)
        x2 = conv(224, (1, 7), padding=(0, 3), name="branch2.2")(x2, train)
        x2 = conv(224, (7, 1), padding=(3, 0), name="branch2.3")(x2, train)
        x2 = conv(256, (1, 7), padding=(0, 3), name="branch2.4")(x2, train)
        x3 = layers.AvgPool(3, stride=1, padding=1, count_include_pad=False, name="branch3.0")(x)
        x3 = conv(128, 1, name="branch3.1")(x3, train)
        return _cat(x0, x1, x2, x3)


class ReductionB(nn.Module):
    """Reduction-B, 17 -> 8: 1x1-3x3/2 192 | 1x1-1x7-7x1-3x3/2 320 | maxpool (1536)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(192, 1, name="branch0.0")(x, train)
        x0 = conv(192, 3, stride=2, name="branch0.1")(x0, train)
        x1 = conv(256, 1, name="branch1.0")(x, train)
        x1 = conv(256, (1, 7), padding=(0, 3), name="branch1.1")(x1, train)
        x1 = conv(320, (7, 1), padding=(3, 0), name="branch1.2")(x1, train)
        x1 = conv(320, 3, stride=2, name="branch1.3")(x1, train)
        x2 = layers.MaxPool(3, stride=2, name="branch2")(x)
        return _cat(x0, x1, x2)


class InceptionV4C(nn.Module):
    """Inception-C, 8 x 8, with 1x3 / 3x1 pairs side by side (1536 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(256, 1, name="branch0")(x, train)
        x1 = conv(384, 1, name="branch1_0")(x, train)
        x1 = _cat(
            conv(256, (1, 3), padding=(0, 1), name="branch1_1a")(x1, train),
            conv(256, (3, 1), padding=(1, 0), name="branch1_1b")(x1, train),
        )
        x2 = conv(384, 1, name="branch2_0")(x, train)
        x2 = conv(448, (3, 1), padding=(1, 0), name="branch2_1")(x2, train)
        x2 = conv(512, (1, 3), padding=(0, 1), name="branch2_2")(x2, train)
        x2 = _cat(
            conv(256, (1, 3), padding=(0, 1), name="branch2_3a")(x2, train),
            conv(256, (3, 1), padding=(1, 0), name="branch2_3b")(x2, train),
        )
        x3 = layers.AvgPool(3, stride=1, padding=1, count_include_pad=False, name="branch3.0")(x)
        x3 = conv(256, 1, name="branch3.1")(x3, train)
        return _cat(x0, x1, x2, x3)


def _timm_head(
    x: jax.Array, num_classes: int, dropout_rate: float, train: bool, dtype: Any, fc_name: str
) -> jax.Array:
    """timm's classifier: global average pool -> dropout ("head_drop") -> linear."""
    x = layers.flatten_chw(layers.AdaptiveAvgPool((1, 1), name="global_pool")(x))
    x = nn.Dropout(dropout_rate, deterministic=not train, name="head_drop")(x)
    return layers.Dense(num_classes, dtype=dtype, name=fc_name)(x).astype(jnp.float32)


class InceptionV4(nn.Module):
    """Inception-v4 (Szegedy et al., 2017), exactly timm's `inception_v4`.

    A pure Inception network (no residuals) with a uniform design: the stem (three
    convolutions, then Mixed3a/4a/5a, each concatenating a pooled or convolved split),
    4 x Inception-A, Reduction-A, 7 x Inception-B, Reduction-B, 3 x Inception-C, global
    average pooling and a linear classifier, all in `features.0` ... `features.21` as timm
    has them. Every convolution is conv -> BN (eps 1e-3) -> ReLU.

    Deviations from the paper: timm (porting Google's TF-slim model) has no auxiliary
    classifier (TF-slim's model does), and its head dropout defaults to 0 where the paper
    keeps 0.8 of the activations (`dropout_rate=0.2` restores that).

    Smallest input: as for Inception-v3, the last stride-2 unpadded 3 x 3 reduction
    (Reduction-B) needs a 3 x 3 map, which traces back through Reduction-A (7), Mixed5a (15),
    Mixed4a's unpadded 3 x 3 (17), Mixed3a (35), features.1 (37) and features.0: 75 x 75.

    Attributes:
      num_classes: classifier outputs.
      dropout_rate: dropout before the classifier (timm's `drop_rate`, default 0).
      dtype: computation dtype; parameters stay float32.
      bn_axis_name, frozen_batch_norms: synchronised and frozen BatchNorms, as in
        `InceptionV3` (layer paths such as "repeat.0" or "repeat.0/branch0/bn").
      bn_axis_name, frozen_batch_norms: synchronised and frozen BatchNorms, as in
        `InceptionV3` (layer paths such as "features.6" or "features.6/branch0/bn").

    Call:
      x: (N, H, W, 3) float, H, W >= 75 (designed for 299).

    Returns:
      (N, num_classes) float32 logits.
    """

    num_classes: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(x, "inception_v4", channels=3, min_size=MIN_SIZE)
        bn = _bn_options(self)
        conv = functools.partial(ConvBN, dtype=self.dtype, **bn)
        x = conv(32, 3, stride=2, name="features.0")(x, train)
        x = conv(32, 3, name="features.1")(x, train)
        x = conv(64, 3, padding=1, name="features.2")(x, train)
        x = Mixed3a(dtype=self.dtype, **bn, name="features.3")(x, train)
        x = Mixed4a(dtype=self.dtype, **bn, name="features.4")(x, train)
        x = Mixed5a(dtype=self.dtype, **bn, name="features.5")(x, train)
        blocks = [InceptionV4A] * 4 + [ReductionA] + [InceptionV4B] * 7 + [ReductionB]
        blocks += [InceptionV4C] * 3
        for i, block in enumerate(blocks, start=6):
            x = block(dtype=self.dtype, **bn, name=f"features.{i}")(x, train)
        return _timm_head(
            x, self.num_classes, self.dropout_rate, train, self.dtype, fc_name="last_linear"
        )


# =============================================================== Inception-ResNet-v2 (timm)


class Mixed5b(nn.Module):
    """Inception-A-like module closing the stem: 96 + 64 + 96 + 64 = 320 channels."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(96, 1, name="branch0")(x, train)
        x1 = conv(48, 1, name="branch1.0")(x, train)
        x1 = conv(64, 5, padding=2, name="branch1.1")(x1, train)
        x2 = conv(64, 1, name="branch2.0")(x, train)
        x2 = conv(96, 3, padding=1, name="branch2.1")(x2, train)
        x2 = conv(96, 3, padding=1, name="branch2.2")(x2, train)
        x3 = layers.AvgPool(3, stride=1, padding=1, count_include_pad=False, name="branch3.0")(x)
        x3 = conv(64, 1, name="branch3.1")(x3, train)
        return _cat(x0, x1, x2, x3)


class Block35(nn.Module):
    """Inception-ResNet-A, 35 x 35: relu(x + scale * conv1x1(branches)), 320 channels.

    The 1x1 up-projection ("conv2d") is linear and has a bias but no BatchNorm: the paper
    puts BatchNorm on the branches only, not on the residual sums.
    """

    scale: float = 1.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(32, 1, name="branch0")(x, train)
        x1 = conv(32, 1, name="branch1.0")(x, train)
        x1 = conv(32, 3, padding=1, name="branch1.1")(x1, train)
        x2 = conv(32, 1, name="branch2.0")(x, train)
        x2 = conv(48, 3, padding=1, name="branch2.1")(x2, train)
        x2 = conv(64, 3, padding=1, name="branch2.2")(x2, train)
        out = layers.Conv(320, 1, dtype=self.dtype, name="conv2d")(_cat(x0, x1, x2))
        return nn.relu(out * self.scale + x)


class Mixed6a(nn.Module):
    """Reduction-A, 35 -> 17: 3x3/2 384 | 1x1 256-3x3 256-3x3/2 384 | maxpool (1088)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(384, 3, stride=2, name="branch0")(x, train)
        x1 = conv(256, 1, name="branch1.0")(x, train)
        x1 = conv(256, 3, padding=1, name="branch1.1")(x1, train)
        x1 = conv(384, 3, stride=2, name="branch1.2")(x1, train)
        x2 = layers.MaxPool(3, stride=2, name="branch2")(x)
        return _cat(x0, x1, x2)


class Block17(nn.Module):
    """Inception-ResNet-B, 17 x 17: 1x1 | 1x1-1x7-7x1, linear 1x1 to 1088, scaled residual."""

    scale: float = 1.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(192, 1, name="branch0")(x, train)
        x1 = conv(128, 1, name="branch1.0")(x, train)
        x1 = conv(160, (1, 7), padding=(0, 3), name="branch1.1")(x1, train)
        x1 = conv(192, (7, 1), padding=(3, 0), name="branch1.2")(x1, train)
        out = layers.Conv(1088, 1, dtype=self.dtype, name="conv2d")(_cat(x0, x1))
        return nn.relu(out * self.scale + x)


class Mixed7a(nn.Module):
    """Reduction-B, 17 -> 8: three 1x1-then-3x3/2 branches | maxpool (2080 channels)."""

    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(256, 1, name="branch0.0")(x, train)
        x0 = conv(384, 3, stride=2, name="branch0.1")(x0, train)
        x1 = conv(256, 1, name="branch1.0")(x, train)
        x1 = conv(288, 3, stride=2, name="branch1.1")(x1, train)
        x2 = conv(256, 1, name="branch2.0")(x, train)
        x2 = conv(288, 3, padding=1, name="branch2.1")(x2, train)
        x2 = conv(320, 3, stride=2, name="branch2.2")(x2, train)
        x3 = layers.MaxPool(3, stride=2, name="branch3")(x)
        return _cat(x0, x1, x2, x3)


class Block8(nn.Module):
    """Inception-ResNet-C, 8 x 8: 1x1 | 1x1-1x3-3x1, linear 1x1 to 2080, scaled residual.

    Attributes:
      scale: residual scale.
      no_relu: leave out the ReLU after the sum (the network's last block).
    """

    scale: float = 1.0
    no_relu: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        conv = functools.partial(ConvBN, dtype=self.dtype, **_bn_options(self))
        x0 = conv(192, 1, name="branch0")(x, train)
        x1 = conv(192, 1, name="branch1.0")(x, train)
        x1 = conv(224, (1, 3), padding=(0, 1), name="branch1.1")(x1, train)
        x1 = conv(256, (3, 1), padding=(1, 0), name="branch1.2")(x1, train)
        out = layers.Conv(2080, 1, dtype=self.dtype, name="conv2d")(_cat(x0, x1))
        out = out * self.scale + x
        return out if self.no_relu else nn.relu(out)


class InceptionResNetV2(nn.Module):
    """Inception-ResNet-v2 (Szegedy et al., 2017), exactly timm's `inception_resnet_v2`.

    Stem (3x3/2, 3x3, 3x3 padded, maxpool, 1x1 80, 3x3 192, maxpool, Mixed_5b to 320
    channels), 10 x Block35 (residual scale 0.17), Mixed_6a, 20 x Block17 (0.10), Mixed_7a,
    9 x Block8 (0.20), a last Block8 with scale 1 and no ReLU after its sum, a 1x1 conv to
    1536 channels, global average pooling and a linear classifier. Each residual block adds
    a scaled, linear 1x1 projection of its concatenated branches to its input; the scaling
    (the paper suggests 0.1-0.3) keeps very wide residual Inception networks from dying early
    in training.

    Deviations of timm (a port of Google's released TF-slim model) from the paper: the stem
    is the Inception-v3-like one above plus Mixed_5b, not the paper's Inception-v4 stem
    (its Fig. 3); the block counts are 10 / 20 / 10 where the paper's Fig. 15 shows 5 / 10 / 5;
    the widths after the residual projections are 320 / 1088 / 2080 where the paper's figures
    give 384 / 1154 / 2048; there is no auxiliary classifier (TF-slim's model has one); and
    the head dropout defaults to 0 where the paper keeps 0.8 (`dropout_rate=0.2`).

    Smallest input: the stem has Inception-v3's geometry and Mixed_6a / Mixed_7a are its
    stride-2 unpadded 3 x 3 reductions, so, as there, 75 x 75.

    Attributes:
      num_classes: classifier outputs.
      dropout_rate: dropout before the classifier (timm's `drop_rate`, default 0).
      dtype: computation dtype; parameters stay float32.

    Call:
      x: (N, H, W, 3) float, H, W >= 75 (designed for 299).

    Returns:
      (N, num_classes) float32 logits.
    """

    num_classes: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(x, "inception_resnet_v2", channels=3, min_size=MIN_SIZE)
        bn = _bn_options(self)
        conv = functools.partial(ConvBN, dtype=self.dtype, **bn)
        x = conv(32, 3, stride=2, name="conv2d_1a")(x, train)
        x = conv(32, 3, name="conv2d_2a")(x, train)
        x = conv(64, 3, padding=1, name="conv2d_2b")(x, train)
        x = layers.MaxPool(3, stride=2, name="maxpool_3a")(x)
        x = conv(80, 1, name="conv2d_3b")(x, train)
        x = conv(192, 3, name="conv2d_4a")(x, train)
        x = layers.MaxPool(3, stride=2, name="maxpool_5a")(x)
        x = Mixed5b(dtype=self.dtype, **bn, name="mixed_5b")(x, train)
        for i in range(10):
            x = Block35(0.17, dtype=self.dtype, **bn, name=f"repeat.{i}")(x, train)
        x = Mixed6a(dtype=self.dtype, **bn, name="mixed_6a")(x, train)
        for i in range(20):
            x = Block17(0.10, dtype=self.dtype, **bn, name=f"repeat_1.{i}")(x, train)
        x = Mixed7a(dtype=self.dtype, **bn, name="mixed_7a")(x, train)
        for i in range(9):
            x = Block8(0.20, dtype=self.dtype, **bn, name=f"repeat_2.{i}")(x, train)
        x = Block8(no_relu=True, dtype=self.dtype, **bn, name="block8")(x, train)
        x = conv(1536, 1, name="conv2d_7b")(x, train)
        return _timm_head(
            x, self.num_classes, self.dropout_rate, train, self.dtype, fc_name="classif"
        )


# ==================================================================================== registry


@register(
    "inception_v3",
    input_size=(299, 299, 3),
    min_input_size=V3_AUX_MIN_SIZE,
    num_params=27_161_264,
    num_classes=1000,
    reference="torchvision",
    reference_name="inception_v3",
    reference_kwargs={"aux_logits": True, "init_weights": True, "transform_input": False},
)
def inception_v3(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> InceptionV3:
    """Inception-v3 with its auxiliary head (27,161,264 parameters; 23,834,568 without).

    The auxiliary head needs 299 x 299 inputs (`min_input_size`); `aux_logits=False` admits
    75 x 75 (see `InceptionV3`).
    """
    return InceptionV3(num_classes=num_classes, dtype=dtype, **kw)


@register(
    "inception_v4",
    input_size=(299, 299, 3),
    min_input_size=MIN_SIZE,
    num_params=42_679_816,
    num_classes=1000,
    reference="timm",
    reference_name="inception_v4",
)
def inception_v4(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> InceptionV4:
    """Inception-v4 as timm defines it (42,679,816 parameters)."""
    return InceptionV4(num_classes=num_classes, dtype=dtype, **kw)


@register(
    "inception_resnet_v2",
    input_size=(299, 299, 3),
    min_input_size=MIN_SIZE,
    num_params=55_843_464,
    num_classes=1000,
    reference="timm",
    reference_name="inception_resnet_v2",
)
def inception_resnet_v2(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> InceptionResNetV2:
    """Inception-ResNet-v2 as timm defines it (55,843,464 parameters)."""
    return InceptionResNetV2(num_classes=num_classes, dtype=dtype, **kw)
