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
      bn_axis_name: with `batch_norm`, the mapped axis (`jax.pmap`, `shard_map`, `jax.vmap`)
        over which every BatchNorm averages its training-mode batch statistics (synchronised
        BatchNorm); None (the default): the statistics of the batch the model sees.
      frozen_batch_norms: with `batch_norm`, layer paths from the model's root
        ("features.1"); every BatchNorm at or under one of them runs in inference mode even
        with ``train=True`` (running statistics, none updated). Set both with
        `jaxcnn.models.configure_batch_norm`, which leaves VGGs without BatchNorm as they are.

    Input (N, H >= 32, W >= 32, 3) float -> (N, num_classes) float32 logits.
    """

    num_classes: int = 1000
    dtype: Any = jnp.float32
    cfg: tuple[int | str, ...] = CFGS["D"]
    batch_norm: bool = False
    dropout_rate: float = 0.5
    registry_name: str = "vgg"
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @property
    def has_batch_norm(self) -> bool:
        """Whether the model holds BatchNorm layers (only the `_bn` variants do)."""
        return self.batch_norm

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(x, self.registry_name, channels=3, min_size=_MIN_SIZE)
        i = 0  # index in torchvision's `features` Sequential
        for v in self.cfg:
            if v == "M":
                x = layers.MaxPool(2, 2, name=f"features.{i}")(x)
                i += 1
                continue
            if not isinstance(v, int):
                raise ValueError(
                    f"{self.registry_name}: `cfg` entries must be output channels (int) or "
                    f"'M' (max pool); got {v!r}"
                )
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
                    axis_name=self.bn_axis_name,
                    frozen_paths=self.frozen_batch_norms,
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


# name -> (configuration, torchvision's parameter count at 1000 classes).
VARIANTS = {
    "vgg11": ("A", 132_863_336),
    "vgg11_bn": ("A", 132_868_840),
    "vgg13": ("B", 133_047_848),
    "vgg13_bn": ("B", 133_053_736),
    "vgg16": ("D", 138_357_544),
    "vgg16_bn": ("D", 138_365_992),
    "vgg19": ("E", 143_667_240),
    "vgg19_bn": ("E", 143_678_248),
}


def _make_factory(name: str, cfg: str):
    batch_norm = name.endswith("_bn")

    def factory(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> VGG:
        return VGG(
            num_classes=num_classes,
            dtype=dtype,
            cfg=CFGS[cfg],
            batch_norm=batch_norm,
            registry_name=name,
            **kw,
        )

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"torchvision's {name}: VGG configuration {cfg}"
        + (" with BatchNorm" if batch_norm else "")
        + "; see `VGG`."
    )
    return factory


for _name, (_cfg, _count) in VARIANTS.items():
    globals()[_name] = register(
        _name,
        input_size=(224, 224, 3),
        min_input_size=_MIN_SIZE,
        num_params=_count,
        reference="torchvision",
        reference_name=_name,
    )(_make_factory(_name, _cfg))
