"""Thin Flax linen wrappers over `jaxcnn.ops` that the models share.

Conventions that make PyTorch weights drop in (see `jaxcnn.convert`):

* A layer's Flax name is the dotted path of the same layer in the torchvision (or timm)
  model, e.g. ``Conv(64, 11, name="features.0")``, so a torch key ``features.0.weight`` is
  the Flax path ``("features.0", "kernel")`` and conversion needs no per-model tables.
* `Conv` holds ``kernel`` (kh, kw, C_in // groups, C_out) and ``bias``; `Dense` holds
  ``kernel`` (in, out) and ``bias``; `BatchNorm` holds ``scale``/``bias`` params and
  ``mean``/``var``/``num_batches_tracked`` in the ``batch_stats`` collection, with PyTorch's
  update rule (momentum 0.1, unbiased running variance).
* `flatten_chw` flattens in PyTorch's (C, H, W) order, so the first fully connected layer
  after a flatten takes torchvision's weights without a permutation.
* Default initialisers are PyTorch's defaults; models override them as torchvision does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from . import ops

Dtype = Any
Initializer = Callable[..., jax.Array]

# PyTorch's default for Conv2d and Linear weights: kaiming_uniform(a=sqrt(5)), which is
# U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Flax's fan_in for HWIO / (in, out) kernels is the
# product of all but the last axis, as torch's for (out, in, kh, kw).
torch_default_kernel_init: Initializer = nn.initializers.variance_scaling(
    1.0 / 3.0, "fan_in", "uniform"
)
# torchvision's ResNet/VGG convolutions: kaiming_normal(mode="fan_out", nonlinearity="relu").
kaiming_normal_fan_out: Initializer = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def torch_trunc_normal(std: float, a: float = -2.0, b: float = 2.0) -> Initializer:
    """PyTorch's `trunc_normal_(std=std, a=a, b=b)`: truncated at a and b in absolute units.

    Flax's truncation bounds are in units of `std`, so torchvision's usual (a, b) = (-2, 2)
    with std 0.01 means +-200 std: in effect an untruncated normal.
    """
    return nn.initializers.truncated_normal(stddev=std, lower=a / std, upper=b / std)


def _torch_default_bias_init(fan_in: int) -> Initializer:
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


class Conv(nn.Module):
    """2-D convolution over NHWC input (`ops.conv2d`); parameters ``kernel`` and ``bias``."""

    features: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: Any = 0
    dilation: int | tuple[int, int] = 1
    groups: int = 1
    use_bias: bool = True
    padding_mode: str = "zeros"
    algorithm: str = "xla"
    kernel_init: Initializer = torch_default_kernel_init
    bias_init: Initializer | None = None  # None: PyTorch's U(+-1/sqrt(fan_in))
    dtype: Dtype | None = None  # computation dtype; None: the input's
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = (
            (self.kernel_size, self.kernel_size)
            if isinstance(self.kernel_size, int)
            else tuple(self.kernel_size)
        )
        c_in = x.shape[-1]
        if c_in % self.groups:
            raise ValueError(
                f"Conv {self.name}: input channels {c_in} (x.shape={tuple(x.shape)}) must be "
                f"divisible by groups={self.groups}"
            )
        shape = (kh, kw, c_in // self.groups, self.features)
        kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype)
        bias = None
        if self.use_bias:
            init = self.bias_init or _torch_default_bias_init(kh * kw * (c_in // self.groups))
            bias = self.param("bias", init, (self.features,), self.param_dtype)
        dtype = self.dtype or x.dtype
        return ops.conv2d(
            x.astype(dtype),
            kernel.astype(dtype),
            None if bias is None else bias.astype(dtype),
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
            algorithm=self.algorithm,
        )


class Dense(nn.Module):
    """Fully connected layer ``x @ kernel + bias``, PyTorch's default initialisation."""

    features: int
    use_bias: bool = True
    kernel_init: Initializer = torch_default_kernel_init
    bias_init: Initializer | None = None  # None: PyTorch's U(+-1/sqrt(fan_in))
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        fan_in = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (fan_in, self.features), self.param_dtype)
        dtype = self.dtype or x.dtype
        y = jnp.dot(x.astype(dtype), kernel.astype(dtype))
        if self.use_bias:
            init = self.bias_init or _torch_default_bias_init(fan_in)
            bias = self.param("bias", init, (self.features,), self.param_dtype)
            y = ops.add_bias(y, bias.astype(y.dtype))
        return y


def in_frozen_layer(path: Sequence[str], frozen: Collection[str]) -> bool:
    """True if the layer at `path` (module names from the model's root) is, or lies inside,
    one of `frozen` (layer paths written "a/b", e.g. "layer1.0" or "layer1.0/bn1")."""
    if isinstance(frozen, str):
        raise TypeError(
            f"in_frozen_layer: `frozen` must be a collection of layer paths; got the string "
            f"{frozen!r} (write ({frozen!r},) for one path)"
        )
    if not frozen:
        return False
    return any("/".join(path[:i]) in frozen for i in range(1, len(path) + 1))


def batch_norm_options(module: Any) -> dict[str, Any]:
    """`module`'s BatchNorm options as keyword arguments for a child that holds BatchNorms.

    Models and blocks that contain BatchNorm layers carry two attributes, ``bn_axis_name``
    (the mapped axis for synchronised batch statistics, or None) and ``frozen_batch_norms``
    (layer paths from the model's root whose BatchNorms run in inference mode), and hand
    them down explicitly: ``Block(..., **batch_norm_options(self))``, then
    ``BatchNorm(axis_name=self.bn_axis_name, frozen_paths=self.frozen_batch_norms)``.
    `jaxcnn.models.configure_batch_norm` sets them on a whole model.
    """
    return {"bn_axis_name": module.bn_axis_name, "frozen_batch_norms": module.frozen_batch_norms}


class BatchNorm(nn.Module):
    """Batch normalisation over N, H, W with PyTorch's semantics (`torch.nn.BatchNorm2d`).

    Training normalises with the batch's mean and biased variance and updates the running
    statistics as PyTorch does: ``running = (1 - momentum) * running + momentum * batch``
    with the *unbiased* batch variance, and counts ``num_batches_tracked``. Evaluation uses
    the running statistics. Statistics are computed in float32 (float64 for float64 input)
    and stored in float32.

    A frozen BatchNorm (its path in `frozen_paths`) behaves as in evaluation even with
    ``train=True``: it normalises with the running statistics and updates none of them, while
    the rest of the model trains. This is the fine-tuning behaviour that Keras ties to
    ``trainable=False``; the training engine keeps the layer's parameters fixed itself.

    Attributes:
      momentum: PyTorch's momentum (0.1), i.e. 1 - Flax's.
      epsilon: added to the variance (PyTorch's eps).
      axis_name: if set, training-mode batch statistics are averaged over this mapped axis
        (`jax.pmap`, `shard_map` or `jax.vmap` with this `axis_name`): synchronised BatchNorm
        over the global batch. Applied with ``train=True``, the layer must then run inside
        a transform that binds the axis; `init` and ``train=False`` need none.
      frozen_paths: layer paths from the model's root, "/"-separated ("bn1", "layer1.0",
        "layer1.0/bn1"); the layer is frozen if its own path (`self.path`) is, or lies under,
        one of them. A tuple of strings, not one string.
      scale_init: initialiser of ``scale`` (zeros for the zero-init-residual trick).
    """

    momentum: float = 0.1
    epsilon: float = 1e-5
    use_scale: bool = True
    use_bias: bool = True
    axis_name: str | None = None
    frozen_paths: tuple[str, ...] = ()
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, ..., C) -> the same shape and dtype (the `dtype` attribute if set)."""
        if isinstance(self.frozen_paths, str):
            raise TypeError(
                f"BatchNorm {self.name}: `frozen_paths` must be a tuple of layer paths; got the "
                f"string {self.frozen_paths!r} (write ({self.frozen_paths!r},) for one path)"
            )
        c = x.shape[-1]
        mean_v = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        var_v = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        count_v = self.variable(
            "batch_stats", "num_batches_tracked", lambda: jnp.zeros((), jnp.int32)
        )
        # Statistics in float32 at least (bfloat16 sums lose too much), float64 if given.
        xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        bshape = (1,) * (x.ndim - 1) + (c,)  # explicit broadcasting (no rank promotion)
        if train and in_frozen_layer(self.path, self.frozen_paths):
            train = False  # a frozen layer keeps (and uses) its running statistics
        scale = bias = None
        if self.use_scale:
            scale = self.param("scale", self.scale_init, (c,), self.param_dtype)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (c,), self.param_dtype)
        if train:
            axis_name = self.axis_name
            sync = axis_name is not None and not self.is_initializing()
            # `ops.batch_norm`: both statistics in one pass over x (shifted by x's first
            # row, which keeps float32 accuracy whatever the mean); its per-channel sums are
            # matrix products on CPU. An absent scale or bias enters as a constant, so it gets
            # no parameter.
            y, mean, var = ops.batch_norm(
                xf,
                jnp.ones((c,), xf.dtype) if scale is None else scale,
                jnp.zeros((c,), xf.dtype) if bias is None else bias,
                epsilon=self.epsilon,
                axis_name=axis_name if sync else None,
            )
            if not self.is_initializing():
                mean, var = jax.lax.stop_gradient((mean, var))
                n = math.prod(x.shape[:-1])
                if sync:
                    n = n * jax.lax.psum(1, axis_name)
                unbiased = var * (n / jnp.maximum(n - 1, 1))
                m = self.momentum
                dt = mean_v.value.dtype
                mean_v.value = ((1 - m) * mean_v.value + m * mean).astype(dt)
                var_v.value = ((1 - m) * var_v.value + m * unbiased).astype(dt)
                count_v.value = count_v.value + 1
            return y.astype(self.dtype or x.dtype)
        mean, var = mean_v.value, var_v.value
        y = (xf - mean.reshape(bshape)) * jax.lax.rsqrt(var + self.epsilon).reshape(bshape)
        if scale is not None:
            y = y * scale.astype(xf.dtype).reshape(bshape)
        if bias is not None:
            y = y + bias.astype(xf.dtype).reshape(bshape)
        return y.astype(self.dtype or x.dtype)


class ConvBN(nn.Module):
    """Convolution without bias -> BatchNorm -> ReLU: torchvision's `BasicConv2d` (GoogLeNet,
    Inception-v3) and timm's `ConvNormAct` (Inception-v4, Inception-ResNet-v2).

    Children are named "conv" and "bn", as in both libraries.

    Attributes:
      features: output channels.
      kernel_size, stride, padding: as `torch.nn.Conv2d`'s.
      epsilon: BatchNorm's eps; 1e-3 in all four ports (TensorFlow's default).
      kernel_init: the convolution's initialiser.
      bn_axis_name: "bn"'s `BatchNorm.axis_name` (synchronised statistics over that axis).
      frozen_batch_norms: "bn"'s `BatchNorm.frozen_paths` (paths from the model's root).
    """

    features: int
    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] = 1
    padding: Any = 0
    epsilon: float = 1e-3
    kernel_init: Initializer = torch_default_kernel_init
    dtype: Dtype | None = None
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, H, W, C) -> (N, H', W', features)."""
        x = Conv(
            self.features,
            self.kernel_size,
            self.stride,
            self.padding,
            use_bias=False,
            kernel_init=self.kernel_init,
            dtype=self.dtype,
            name="conv",
        )(x)
        x = BatchNorm(
            epsilon=self.epsilon,
            axis_name=self.bn_axis_name,
            frozen_paths=self.frozen_batch_norms,
            dtype=self.dtype,
            name="bn",
        )(x, train=train)
        return nn.relu(x)


def imagenet_to_unit_range(x: jax.Array) -> jax.Array:
    """torchvision's `transform_input` (GoogLeNet, Inception-v3), NHWC.

    Their pretrained weights come from models trained on inputs scaled to [-1, 1]; this maps
    an input standardised as (img - mean) / std with ImageNet's mean and std to
    (img - 0.5) / 0.5, per channel.
    """
    mean = jnp.asarray([0.485, 0.456, 0.406], x.dtype).reshape(1, 1, 1, 3)
    std = jnp.asarray([0.229, 0.224, 0.225], x.dtype).reshape(1, 1, 1, 3)
    return x * (std / 0.5) + (mean - 0.5) / 0.5


class MaxPool(nn.Module):
    """`ops.max_pool2d` as a layer (so that it appears, named, in `jaxcnn.summary`)."""

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    dilation: int | tuple[int, int] = 1
    ceil_mode: bool = False

    def __call__(self, x):
        return ops.max_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode
        )


class AvgPool(nn.Module):
    """`ops.avg_pool2d` as a layer."""

    kernel_size: int | tuple[int, int]
    stride: int | tuple[int, int] | None = None
    padding: int | tuple[int, int] = 0
    ceil_mode: bool = False
    count_include_pad: bool = True

    def __call__(self, x):
        return ops.avg_pool2d(
            x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad
        )


class AdaptiveAvgPool(nn.Module):
    """`ops.adaptive_avg_pool2d` as a layer."""

    output_size: int | tuple[int | None, int | None]

    def __call__(self, x):
        return ops.adaptive_avg_pool2d(x, self.output_size)


class AdaptiveMaxPool(nn.Module):
    """`ops.adaptive_max_pool2d` as a layer."""

    output_size: int | tuple[int | None, int | None]

    def __call__(self, x):
        return ops.adaptive_max_pool2d(x, self.output_size)


class LocalResponseNorm(nn.Module):
    """`ops.local_response_norm` as a layer (PyTorch's alpha convention)."""

    size: int
    alpha: float = 1e-4
    beta: float = 0.75
    k: float = 1.0

    def __call__(self, x):
        return ops.local_response_norm(x, self.size, self.alpha, self.beta, self.k)


def flatten_chw(x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, C * H * W) in PyTorch's (C, H, W) order.

    torchvision flattens NCHW feature maps before its classifiers; flattening in the same
    order lets the first fully connected layer use torchvision's weights as they are.
    """
    return jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)


def check_input(
    x,
    model: str,
    *,
    channels: int | None,
    min_size: tuple[int, int],
    max_size: tuple[int, int] | None = None,
    why_max: str = "",
) -> None:
    """Validate a model input: rank 4 NHWC, `channels` channels, `min_size` <= (H, W).

    Raises a ValueError naming the model, what was given and the smallest valid input, before
    any layer can fail with a less helpful shape error. Models whose classifier takes a fixed
    feature-map size also give `max_size` and, in `why_max`, the reason.
    """
    shape = tuple(getattr(x, "shape", ()))
    smallest = f"(N, {min_size[0]}, {min_size[1]}, {channels if channels else 'C'})"
    if len(shape) != 4:
        hint = " (a single image? add a batch axis: x[None])" if len(shape) == 3 else ""
        raise ValueError(
            f"{model}: input must have rank 4, (N, H, W, C) (NHWC layout); got shape "
            f"{shape}{hint}. The smallest valid input is {smallest}."
        )
    if channels is not None and shape[3] != channels:
        raise ValueError(
            f"{model}: input must have {channels} channels (NHWC: the last axis); got shape "
            f"{shape}. The smallest valid input is {smallest}."
        )
    if shape[1] < min_size[0] or shape[2] < min_size[1]:
        raise ValueError(
            f"{model}: input spatial size {shape[1:3]} is too small; the smallest valid "
            f"input is {smallest}."
        )
    if max_size is not None and (shape[1] > max_size[0] or shape[2] > max_size[1]):
        largest = f"(N, {max_size[0]}, {max_size[1]}, {channels if channels else 'C'})"
        reason = f"{why_max}, i.e. " if why_max else "valid are "
        raise ValueError(
            f"{model}: input spatial size {shape[1:3]} is too large; {reason}inputs from "
            f"{smallest} to {largest}."
        )
    if not jnp.issubdtype(np.dtype(x.dtype), jnp.floating):
        raise TypeError(f"{model}: input must have a floating dtype; got {x.dtype}")
