"""VGG (Simonyan and Zisserman, 2014), torchvision's variants, with and without BatchNorm.

K. Simonyan and A. Zisserman, "Very deep convolutional networks for large-scale image
recognition", ICLR 2015 (arXiv:1409.1556, 2014).

The variants are rows of a data table, `CFGS`: the paper's configurations A (11 weight
layers), B (13), D (16) and E (19) of its Table 1, as in torchvision. Every model is
weight-compatible with `torchvision.models.<name>`.

Deviations of torchvision (and so of these models) from the paper:
  * an adaptive 7x7 average pool before the classifier, so inputs of any size from 32x32
    work (the paper trains at 224x224 and evaluates larger images "densely", with the fully
    connected layers turned into convolutions);
  * the `_bn` variants (BatchNorm after every convolution) are not in the paper, which
    predates BatchNorm;
  * initialisation: Kaiming-normal (fan_out, ReLU gain) convolutions, N(0, 0.01) fully
    connected weights, zero biases, where the paper drew N(0, 0.01) everywhere for A and
    initialised the deeper nets' first four convolutions and last three fully connected
    layers from a trained A;
  * the paper's A-LRN and C (with 1x1 convolutions) configurations are not provided.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from .. import layers
from .registry import register

# Table 1 of the paper (torchvision's `cfgs`): output channels of each 3x3 convolution
# (stride 1, padding 1), "M" for a 2x2/2 max-pool.
CFGS: dict[str, tuple[int | str, ...]] = {
    "A": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "B": (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "D": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
    "E": (
        *(64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M"),
        *(512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
    ),
}

# Convolutions keep the size, and each of the five 2x2/2 max-pools needs at least 2 rows: the
# fifth one's input is H // 16, so H // 16 >= 2, i.e. H >= 32.
_MIN_SIZE = (32, 32)

# torchvision's VGG._initialize_weights.
_CONV_INIT = layers.kaiming_normal_fan_out
_LINEAR_INIT = nn.initializers.normal(stddev=0.01)
_ZEROS = nn.initializers.zeros


class VGG(nn.Module):
    """torchvision's VGG (`torchvision.models.vgg11` ... `vgg19_bn`).

    features: the convolutions of `cfg` (3x3, padding 1, each followed by BatchNorm if
    `batch_norm`, then ReLU) and its 2x2/2 max-pools; adaptive average pool to 7x7;
    classifier: fc 4096 -> ReLU -> dropout -> fc 4096 -> ReLU -> dropout -> fc num_classes.

    Layer names are torchvision's `features.<i>` (a Sequential index counting convolutions,
    BatchNorms, ReLUs and pools), `avgpool` and `classifier.0/3/6`.

    Attributes:
      num_classes: classifier outputs.
      cfg: a row of `CFGS`.
      batch_norm: BatchNorm (eps 1e-5, momentum 0.1) after every convolution.
      dropout_rate: dropout probability in the classifier (torchvision's `dropout`).
      registry_name: the model's name in error messages.

    Input (N, H >= 32, W >= 32, 3) float -> (N, num_classes) float32 logits.
    """

    num_classes: int = 1000
    dtype: Any = jnp.float32
    cfg: tuple[int | str, ...] = CFGS["D"]
    batch_norm: bool = False
    dropout_rate: float = 0.5
    registry_name: str = "vgg"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(x, self.registry_name, channels=3, min_size=_MIN_SIZE)
        i = 0  # index in torchvision's `features` Sequential
        for v in self.cfg:
            if v == "M":
                x = layers.MaxPool(2, 2, name=f"features.{i}")(x)
                i += 1
                continue
            x = layers.Conv(
                v,
                3,
                padding=1,
                kernel_init=_CONV_INIT,
                bias_init=_ZEROS,
                dtype=self.dtype,
                name=f"features.{i}",
            )(x)
            if self.batch_norm:
                x = layers.BatchNorm(
                    epsilon=1e-5,
                    dtype=self.dtype,
                    name=f"features.{i + 1}",
                )(x, train=train)
            x = nn.relu(x)
            i += 3 if self.batch_norm else 2
        x = layers.AdaptiveAvgPool((7, 7), name="avgpool")(x)
        x = layers.flatten_chw(x)
        for j in (0, 3):
            x = layers.Dense(
                4096,
                kernel_init=_LINEAR_INIT,
                bias_init=_ZEROS,
                dtype=self.dtype,
                name=f"classifier.{j}",
            )(x)
            x = nn.relu(x)
            x = nn.Dropout(self.dropout_rate, deterministic=not train, name=f"classifier.{j + 2}")(
                x
            )
        x = layers.Dense(
            self.num_classes,
            kernel_init=_LINEAR_INIT,
            bias_init=_ZEROS,
            dtype=self.dtype,
            name="classifier.6",
        )(x)
        return x.astype(jnp.float32)


def _vgg(name: str, cfg: str, batch_norm: bool, num_classes: int, dtype, kw) -> VGG:
    return VGG(
        num_classes=num_classes,
        dtype=dtype,
        cfg=CFGS[cfg],
        batch_norm=batch_norm,
        registry_name=name,
        **kw,
    )


# The parameter counts are torchvision's, at 1000 classes.


@register(
    "vgg11",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=132_863_336,
    reference="torchvision",
    reference_name="vgg11",
)
def vgg11(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg11: VGG configuration A; see `VGG`."""
    return _vgg("vgg11", "A", False, num_classes, dtype, kw)


@register(
    "vgg11_bn",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=132_868_840,
    reference="torchvision",
    reference_name="vgg11_bn",
)
def vgg11_bn(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg11_bn: VGG configuration A with BatchNorm; see `VGG`."""
    return _vgg("vgg11_bn", "A", True, num_classes, dtype, kw)


@register(
    "vgg13",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=133_047_848,
    reference="torchvision",
    reference_name="vgg13",
)
def vgg13(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg13: VGG configuration B; see `VGG`."""
    return _vgg("vgg13", "B", False, num_classes, dtype, kw)


@register(
    "vgg13_bn",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=133_053_736,
    reference="torchvision",
    reference_name="vgg13_bn",
)
def vgg13_bn(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg13_bn: VGG configuration B with BatchNorm; see `VGG`."""
    return _vgg("vgg13_bn", "B", True, num_classes, dtype, kw)


@register(
    "vgg16",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=138_357_544,
    reference="torchvision",
    reference_name="vgg16",
)
def vgg16(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg16: VGG configuration D; see `VGG`."""
    return _vgg("vgg16", "D", False, num_classes, dtype, kw)


@register(
    "vgg16_bn",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=138_365_992,
    reference="torchvision",
    reference_name="vgg16_bn",
)
def vgg16_bn(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg16_bn: VGG configuration D with BatchNorm; see `VGG`."""
    return _vgg("vgg16_bn", "D", True, num_classes, dtype, kw)


@register(
    "vgg19",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=143_667_240,
    reference="torchvision",
    reference_name="vgg19",
)
def vgg19(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg19: VGG configuration E; see `VGG`."""
    return _vgg("vgg19", "E", False, num_classes, dtype, kw)


@register(
    "vgg19_bn",
    input_size=(224, 224, 3),
    min_input_size=_MIN_SIZE,
    num_params=143_678_248,
    reference="torchvision",
    reference_name="vgg19_bn",
)
def vgg19_bn(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
    """torchvision's vgg19_bn: VGG configuration E with BatchNorm; see `VGG`."""
    return _vgg("vgg19_bn", "E", True, num_classes, dtype, kw)
