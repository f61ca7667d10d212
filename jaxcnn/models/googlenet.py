"""GoogLeNet (Inception v1): torchvision's version and the 2014 paper's.

Szegedy, Liu, Jia, Sermanet, Reed, Anguelov, Erhan, Vanhoucke and Rabinovich, 2014, "Going
deeper with convolutions" (arXiv:1409.4842). Table 1 of the paper lists the network; an
Inception module concatenates four branches on the channel axis:

    branch1  1x1 conv                          (#1x1)
    branch2  1x1 conv (#3x3 reduce), 3x3 conv  (#3x3)
    branch3  1x1 conv (#5x5 reduce), 5x5 conv  (#5x5)
    branch4  3x3/1 max pool, 1x1 conv          (pool proj)

Two models:

* ``googlenet``: `torchvision.models.GoogLeNet`, layer for layer. It departs from the paper:
  every convolution is followed by BatchNorm (eps 0.001) instead of having a bias, there is no
  LRN, branch3's second convolution is 3x3, not 5x5 (a known torchvision bug kept for weight
  compatibility, pytorch/vision#906), the max pool after inception4e is 2x2/2 rather than
  3x3/2, the auxiliary heads pool adaptively to 4x4 instead of 5x5/3, and the classifier
  dropout is 0.2 rather than 0.4.
* ``googlenet_2014``: the paper's network, as Caffe's ``bvlc_googlenet`` reproduces it
  (convolutions with bias + ReLU, LRN, 5x5 convolutions in branch3, ceil-mode pools).

Both return, in training mode with ``aux_logits=True``, a `GoogLeNetOutputs` named tuple
``(logits, aux_logits2, aux_logits1)`` (torchvision's order: the head after inception4d,
then the one after inception4a); otherwise just the logits. Weighting the auxiliary losses
(0.3 in the paper) is the training engine's business.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import linen as nn

from .. import layers
from .registry import register

_trunc_normal = layers.torch_trunc_normal(0.01)  # torchvision's init_weights
# Caffe's bvlc_googlenet (no init is given in the paper): "xavier" weights, which in Caffe
# means U(+-sqrt(3 / fan_in)), and constant 0.2 biases except on the classifiers (0).
_caffe_xavier = nn.initializers.variance_scaling(1.0, "fan_in", "uniform")
_caffe_bias = nn.initializers.constant(0.2)

# Smallest inputs. conv1 (7x7/2 pad 3) maps h -> floor((h - 1) / 2) + 1; a ceil-mode k x k/2
# max pool maps h -> ceil((h - k) / 2) + 1, which is 1 already for h = k - 1 (like PyTorch,
# ceil mode lets a window hang past the edge of an input smaller than the kernel).
# googlenet: maxpool4 (2x2/2) needs 1, maxpool3 (3x3/2) 2, maxpool2 4, maxpool1 8, conv1 15.
# googlenet_2014 ends in a 3x3/2 max pool instead: 2 <- 4 <- 8 <- 16 <- 31.
_MIN_SIZE = (15, 15)
_MIN_SIZE_2014 = (31, 31)
# googlenet_2014's auxiliary heads pool 5x5/3 (ceil mode) to the 4x4 that their fc1 (2048 =
# 128 * 4 * 4 inputs) expects, so the inception4a/4d maps must be 12 to 14 pixels: inputs of
# 191 to 238 pixels (224 gives 14).
_AUX_SIZE_2014 = (191, 238)

# (#1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj) per module: Table 1 of the paper,
# which torchvision's GoogLeNet uses too.
_INCEPTION = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}


class GoogLeNetOutputs(NamedTuple):
    """Training-mode outputs with auxiliary heads, in torchvision's `GoogLeNetOutputs` order.

    Attributes:
      logits: (N, num_classes) float32, the main classifier.
      aux_logits2: (N, num_classes) float32, the head on inception4d's output.
      aux_logits1: (N, num_classes) float32, the head on inception4a's output.
    """

    logits: jax.Array
    aux_logits2: jax.Array
    aux_logits1: jax.Array


def _conv_relu(
    x, features, kernel_size, *, paper, dtype, name, train, stride=1, padding=0, bn=None
):
    """A convolution unit called `name`: torchvision's BasicConv2d, or the paper's conv + ReLU.

    Must be called inside a compact method; the layers it creates belong to that module.
    `bn`: the BasicConv2d's BatchNorm options (`layers.batch_norm_options`), if any.
    """
    if not paper:
        basic = layers.ConvBN(
            features,
            kernel_size,
            stride,
            padding,
            kernel_init=_trunc_normal,
            dtype=dtype,
            **(bn or {}),
            name=name,
        )
        return basic(x, train)
    conv = layers.Conv(
        features,
        kernel_size,
        stride,
        padding,
        kernel_init=_caffe_xavier,
        bias_init=_caffe_bias,
        dtype=dtype,
        name=name,
    )
    return nn.relu(conv(x))


class Inception(nn.Module):
    """An Inception module: four branches concatenated on the channel axis.

    Attributes:
      ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj: the columns of the paper's Table 1.
      paper: False for torchvision's module (BasicConv2d units, 3x3 convolution in branch3);
        True for the paper's (convolutions with bias + ReLU, 5x5 convolution in branch3).
      bn_axis_name, frozen_batch_norms: given to every BatchNorm of the module (see
        `GoogLeNet`); the paper's module has none.
    """

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    paper: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, H, W, C) -> (N, H, W, ch1x1 + ch3x3 + ch5x5 + pool_proj)."""

        def unit(y, features, kernel_size, name, padding=0):
            return _conv_relu(
                y,
                features,
                kernel_size,
                paper=self.paper,
                dtype=self.dtype,
                name=name,
                train=train,
                padding=padding,
                bn=layers.batch_norm_options(self),
            )

        b1 = unit(x, self.ch1x1, 1, "branch1")
        b2 = unit(x, self.ch3x3red, 1, "branch2.0")
        b2 = unit(b2, self.ch3x3, 3, "branch2.1", padding=1)
        b3 = unit(x, self.ch5x5red, 1, "branch3.0")
        # torchvision's 3x3 here is a deviation from the paper's 5x5 (pytorch/vision#906).
        k3 = 5 if self.paper else 3
        b3 = unit(b3, self.ch5x5, k3, "branch3.1", padding=k3 // 2)
        b4 = layers.MaxPool(3, 1, 1, ceil_mode=True, name="branch4.0")(x)
        b4 = unit(b4, self.pool_proj, 1, "branch4.1")
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


class InceptionAux(nn.Module):
    """An auxiliary classifier: pool to 4x4, 1x1 conv to 128, fc1 1024 + ReLU, dropout, fc2.

    Attributes:
      num_classes: outputs of fc2.
      dropout_rate: dropout before fc2 (0.7 in the paper and torchvision).
      paper: False for torchvision's head (adaptive average pool to 4x4, BasicConv2d);
        True for the paper's (5x5/3 average pool, which gives 4x4 only from 12 to 14 pixel
        maps, convolution with bias + ReLU, Caffe's initialisation).
      bn_axis_name, frozen_batch_norms: given to the BatchNorm of "conv" (see `GoogLeNet`);
        the paper's head has none.
    """

    num_classes: int
    dropout_rate: float = 0.7
    paper: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, H, W, C) -> (N, num_classes) in the computation dtype."""
        if self.paper:
            x = layers.AvgPool(5, 3, ceil_mode=True, name="pool")(x)
        else:
            # torchvision calls F.adaptive_avg_pool2d (no module); a named layer keeps the
            # pool visible in `jaxcnn.summary`. It has no variables, so conversion ignores it.
            x = layers.AdaptiveAvgPool((4, 4), name="pool")(x)
        x = _conv_relu(
            x,
            128,
            1,
            paper=self.paper,
            dtype=self.dtype,
            name="conv",
            train=train,
            bn=layers.batch_norm_options(self),
        )
        x = layers.flatten_chw(x)
        if self.paper:
            fc1 = layers.Dense(
                1024, kernel_init=_caffe_xavier, bias_init=_caffe_bias, dtype=self.dtype, name="fc1"
            )
            fc2 = layers.Dense(
                self.num_classes,
                kernel_init=_caffe_xavier,
                bias_init=nn.initializers.zeros,
                dtype=self.dtype,
                name="fc2",
            )
        else:
            fc1 = layers.Dense(1024, kernel_init=_trunc_normal, dtype=self.dtype, name="fc1")
            fc2 = layers.Dense(
                self.num_classes, kernel_init=_trunc_normal, dtype=self.dtype, name="fc2"
            )
        x = nn.relu(fc1(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train, name="dropout")(x)
        return fc2(x)


def _trunk(m, x: jax.Array, train: bool, *, paper: bool) -> jax.Array | GoogLeNetOutputs:
    """The network both GoogLeNets share, called from their compact `__call__` (`m`).

    Stem, nine Inception modules with max pools between the stages, the auxiliary heads on
    inception4a and inception4d, global average pooling, dropout and the classifier. The
    paper's version (`paper=True`) adds the two LRNs, ends the fourth stage with a 3x3/2 pool
    (torchvision: 2x2/2) and uses Caffe's initialisation.
    """
    run_aux = m.aux_logits and (train or m.is_initializing())
    # The paper's network has no BatchNorm (nor BatchNorm options).
    bn = {} if paper else layers.batch_norm_options(m)

    def unit(y, features, kernel_size, name, stride=1, padding=0):
        return _conv_relu(
            y, features, kernel_size, paper=paper, dtype=m.dtype, name=name, train=train,
            stride=stride, padding=padding, bn=bn,
        )  # fmt: skip

    def inception(y, key):
        block = Inception(
            *_INCEPTION[key], paper=paper, dtype=m.dtype, **bn, name=f"inception{key}"
        )
        return block(y, train)

    def aux(y, name):
        head = InceptionAux(
            m.num_classes, m.aux_dropout_rate, paper=paper, dtype=m.dtype, **bn, name=name
        )
        return head(y, train).astype(jnp.float32)

    def lrn(y, name):  # Caffe's alpha already divides by the size, as torch's does
        return (
            layers.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0, name=name)(y) if paper else y
        )

    x = unit(x, 64, 7, "conv1", stride=2, padding=3)
    x = layers.MaxPool(3, 2, ceil_mode=True, name="maxpool1")(x)
    x = lrn(x, "norm1")
    x = unit(x, 64, 1, "conv2")
    x = unit(x, 192, 3, "conv3", padding=1)
    x = lrn(x, "norm2")
    x = layers.MaxPool(3, 2, ceil_mode=True, name="maxpool2")(x)
    x = inception(x, "3a")
    x = inception(x, "3b")
    x = layers.MaxPool(3, 2, ceil_mode=True, name="maxpool3")(x)
    x = inception(x, "4a")
    aux1 = aux(x, "aux1") if run_aux else None
    x = inception(x, "4b")
    x = inception(x, "4c")
    x = inception(x, "4d")
    aux2 = aux(x, "aux2") if run_aux else None
    x = inception(x, "4e")
    x = layers.MaxPool(3 if paper else 2, 2, ceil_mode=True, name="maxpool4")(x)
    x = inception(x, "5a")
    x = inception(x, "5b")
    x = layers.AdaptiveAvgPool((1, 1), name="avgpool")(x)
    x = layers.flatten_chw(x)
    x = nn.Dropout(m.dropout_rate, deterministic=not train, name="dropout")(x)
    if paper:
        fc = layers.Dense(m.num_classes, kernel_init=_caffe_xavier,
                          bias_init=nn.initializers.zeros, dtype=m.dtype, name="fc")  # fmt: skip
    else:
        fc = layers.Dense(m.num_classes, kernel_init=_trunc_normal, dtype=m.dtype, name="fc")
    logits = fc(x).astype(jnp.float32)
    if train and aux1 is not None and aux2 is not None:  # training with aux_logits
        return GoogLeNetOutputs(logits, aux2, aux1)
    return logits


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet (Inception v1 with BatchNorm), NHWC.

    Layer names are torchvision's state-dict paths ("conv1.conv", "inception3a.branch2.1.bn",
    "aux1.fc2", "fc", ...). Deviations of torchvision's model from the paper are listed in the
    module docstring. Initialisation is torchvision's (`init_weights=True`): truncated normal
    (std 0.01) conv and linear weights, BatchNorm scale 1 and bias 0, PyTorch's default linear
    biases.

    Attributes:
      num_classes: classifier outputs.
      dtype: computation dtype; parameters stay float32, logits are returned as float32.
      aux_logits: build the auxiliary heads "aux1" (after inception4a) and "aux2" (after
        inception4d). They only run in training mode (and at `init`, to create their
        parameters), as in torchvision.
      transform_input: re-normalise inputs from ImageNet mean/std to [-1, 1] first
        (torchvision's option; its pretrained weights expect it).
      dropout_rate: dropout before "fc".
      aux_dropout_rate: dropout inside the auxiliary heads.
      bn_axis_name: the mapped axis (`jax.pmap`, `shard_map`, `jax.vmap`) over which every
        BatchNorm averages its training-mode batch statistics (synchronised BatchNorm);
        None (the default): the statistics of the batch the model sees.
      frozen_batch_norms: layer paths from the model's root ("conv1", "inception3a",
        "inception3a/branch1/bn"); every BatchNorm at or under one of them runs in inference
        mode even with ``train=True`` (running statistics, none updated). Set both with
        `jaxcnn.models.configure_batch_norm`.
    """

    num_classes: int
    dtype: Any = jnp.float32
    aux_logits: bool = False
    transform_input: bool = False
    dropout_rate: float = 0.2
    aux_dropout_rate: float = 0.7
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | GoogLeNetOutputs:
        """Classify images.

        Args:
          x: (N, H, W, 3) float, H and W >= 15.
          train: use batch statistics in BatchNorm (updating `batch_stats` when mutable),
            apply dropout (needs `rngs={"dropout": key}`) and run the auxiliary heads.

        Returns:
          (N, num_classes) float32 logits, or in training mode with `aux_logits` a
          `GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`.
        """
        layers.check_input(x, "googlenet", channels=3, min_size=_MIN_SIZE)
        if self.transform_input:
            x = layers.imagenet_to_unit_range(x)

        return _trunk(self, x, train, paper=False)


class GoogLeNet2014(nn.Module):
    """The paper's GoogLeNet (Szegedy et al., 2014, Table 1 and Figure 3), NHWC.

    Stem: 7x7/2 conv 64, 3x3/2 max pool, LRN, 1x1 conv 64, 3x3 conv 192, LRN, 3x3/2 max pool;
    then inception 3a, 3b, 3x3/2 max pool, 4a-4e, 3x3/2 max pool, 5a, 5b, average pool,
    dropout 0.4, linear. Every convolution has a bias and is followed by a ReLU; there is no
    BatchNorm (it was published a year later).

    Details the paper leaves open follow Caffe's bvlc_googlenet: max pools round up (ceil
    mode, which gives the paper's 56/28/14/7 maps at 224), LRN with size 5, alpha 1e-4,
    beta 0.75, k 1 (Caffe's alpha already divides by the size, like PyTorch's, so it is passed
    to `ops.local_response_norm` unchanged), and the initialisation: Caffe's "xavier"
    U(+-sqrt(3 / fan_in)) weights, 0.2 biases, zero classifier biases.

    Deviation: the final "avg pool 7x7/1" is a global average pool, identical on the 7x7 map
    of a 224x224 input and also valid for other sizes. The auxiliary heads keep the paper's
    5x5/3 average pool, so `aux_logits=True` needs inputs of 191 to 238 pixels in training
    mode and at `init` (a ValueError says so otherwise); evaluation works at any size.

    Layer names follow torchvision's GoogLeNet where the layer exists there ("conv1",
    "inception4a.branch3.1", "aux1.fc1", "fc"); a convolution is the layer itself, not a
    BasicConv2d, and the LRNs are "norm1" and "norm2".

    Attributes:
      num_classes: classifier outputs.
      dtype: computation dtype; parameters stay float32, logits are returned as float32.
      aux_logits: build the auxiliary heads "aux1" (after inception4a) and "aux2" (after
        inception4d); they only run in training mode (and at `init`).
      dropout_rate: dropout before "fc" (0.4 in the paper).
      aux_dropout_rate: dropout inside the auxiliary heads (0.7 in the paper).
    """

    num_classes: int
    dtype: Any = jnp.float32
    aux_logits: bool = False
    dropout_rate: float = 0.4
    aux_dropout_rate: float = 0.7

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array | GoogLeNetOutputs:
        """Classify images.

        Args:
          x: (N, H, W, 3) float, H and W >= 31 (191 to 238 to run the auxiliary heads).
          train: apply dropout (needs `rngs={"dropout": key}`) and run the auxiliary heads.

        Returns:
          (N, num_classes) float32 logits, or in training mode with `aux_logits` a
          `GoogLeNetOutputs(logits, aux_logits2, aux_logits1)`.
        """
        layers.check_input(x, "googlenet_2014", channels=3, min_size=_MIN_SIZE_2014)
        run_aux = self.aux_logits and (train or self.is_initializing())
        lo, hi = _AUX_SIZE_2014
        if run_aux and not all(lo <= s <= hi for s in x.shape[1:3]):
            raise ValueError(
                f"googlenet_2014: with aux_logits=True the auxiliary heads' 5x5/3 average pool "
                f"must give 4x4 maps, which needs H and W in [{lo}, {hi}] (e.g. 224) in "
                f"training mode and at init; got input shape {tuple(x.shape)}"
            )
        return _trunk(self, x, train, paper=True)


@register(
    "googlenet",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=6_624_904,
    num_classes=1000,
    reference="torchvision",
    reference_name="googlenet",
    reference_kwargs={"aux_logits": False, "init_weights": True, "transform_input": False},
)
def googlenet(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> GoogLeNet:
    """torchvision's GoogLeNet; 6,624,904 parameters, 13,004,888 with `aux_logits=True`.

    Keyword options: `aux_logits`, `transform_input`, `dropout_rate`, `aux_dropout_rate`
    (see `GoogLeNet`). torchvision's own default is `aux_logits=True`; here, as in
    `reference_kwargs`, it is False.
    """
    return GoogLeNet(num_classes=num_classes, dtype=dtype, **kw)


@register(
    "googlenet_2014",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE_2014,
    num_params=6_998_552,
    num_classes=1000,
    reference=None,
)
def googlenet_2014(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> GoogLeNet2014:
    """The paper's GoogLeNet (Szegedy et al., 2014); 6,998,552 parameters, 13,378,280 with
    `aux_logits=True`.

    Keyword options: `aux_logits`, `dropout_rate`, `aux_dropout_rate` (see `GoogLeNet2014`).
    """
    return GoogLeNet2014(num_classes=num_classes, dtype=dtype, **kw)
