"""Residual networks: He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition"
(CVPR 2016, arXiv:1512.03385).

Two families from the paper:

* ImageNet ResNets (paper Table 1), exactly as `torchvision.models.ResNet`, so torchvision's
  weights load with `jaxcnn.convert.from_torch` and give the same logits:
  ``resnet18``, ``resnet34`` (`BasicBlock`) and ``resnet50``, ``resnet101``, ``resnet152``
  (`Bottleneck`). Stem: 7x7/2 convolution, BatchNorm, ReLU, 3x3/2 max pool; four stages of
  64, 128, 256, 512 bottleneck widths, the last three starting with stride 2; global
  average pool; a fully connected classifier. Shortcuts are identities, except a 1x1
  convolution + BatchNorm projection where the shape changes (the paper's option B).
* CIFAR-10 ResNets (paper Section 4.2): ``resnet20``, ``resnet32``, ``resnet44``,
  ``resnet56``, ``resnet110`` = `CifarResNet` with n = 3, 5, 7, 9, 18 basic blocks per stage.
  Stem: 3x3 convolution to 16 channels; three stages of 16, 32, 64 channels on 32x32, 16x16,
  8x8 maps; global average pool; a 10-way classifier; 6n + 2 weighted layers. Every shortcut
  is parameter-free (option A, `zero_pad_shortcut`). The paper is the only reference (no
  torchvision model), so the layers are named by torchvision's conventions.

Deviation of torchvision (and so of jaxcnn's ImageNet models) from the paper: `Bottleneck`
puts the stride-2 downsampling on its 3x3 convolution ``conv2`` (torchvision's "ResNet V1.5",
as in Facebook's fb.resnet.torch), where the paper (and its released Caffe models) puts it on
the first 1x1 convolution ``conv1``. Parameter counts are equal; outputs and MACs differ.

Activations are NHWC; every layer is named by its path in torchvision's ``state_dict()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import linen as nn

from .. import layers
from .registry import CheckpointDialect, register

# torchvision's ResNet init: kaiming_normal_(mode="fan_out", nonlinearity="relu") for convs.
_TORCHVISION_CONV_INIT = layers.kaiming_normal_fan_out
# The CIFAR ResNets are initialised "as in [13]" (He et al., 2015, "Delving Deep into
# Rectifiers"): N(0, 2 / n) with n = k * k * C_in, i.e. torch's kaiming_normal_ default
# (fan_in). A plain normal: jax's he_normal would truncate it.
_HE_FAN_IN_INIT = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
_BN_EPS = 1e-5  # torch.nn.BatchNorm2d's default, which torchvision's ResNet uses


PAD_LAYOUTS = ("end", "both")


def zero_pad_shortcut(x: jax.Array, features: int, stride: int, layout: str = "end") -> jax.Array:
    """The paper's parameter-free shortcut for increasing dimensions (option A).

    Identity on the existing channels, subsampled by `stride` (``x[:, ::s, ::s, :]``, the
    pixels a stride-`s` 3x3 convolution with padding 1 is centred on), with zero channels
    added up to `features`. Both layouts are the paper's option A; they differ in where the
    identity channels land, so weights trained with one give wrong outputs with the other:

    * "end": the zeros appended after the input channels (jaxcnn's default);
    * "both": half of them before and half after (``(features - C) // 2`` first), as the
      widely used PyTorch port akamaster/pytorch_resnet_cifar10 pads ``planes // 4`` on each
      side.

    Args:
      x: (N, H, W, C) activations.
      features: output channels, >= C.
      stride: spatial subsampling factor.
      layout: "end" or "both".

    Returns:
      (N, ceil(H / stride), ceil(W / stride), features).
    """
    c = x.shape[-1]
    if features < c:
        raise ValueError(
            f"zero_pad_shortcut: `features` ({features}) must be >= the input channels "
            f"({c}, x.shape={tuple(x.shape)})"
        )
    if layout not in PAD_LAYOUTS:
        raise ValueError(
            f"zero_pad_shortcut: `layout` must be one of {PAD_LAYOUTS}; got {layout!r}"
        )
    before = (features - c) // 2 if layout == "both" else 0
    x = x[:, ::stride, ::stride, :]
    return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (before, features - c - before)))


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (paper Figure 2 / Figure 5 left).

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``conv1`` carries the stride.

    Attributes:
      planes: output channels (`expansion` = 1).
      stride: stride of ``conv1`` and of the shortcut.
      shortcut: how the shortcut matches a changed shape (stride != 1 or new channel
        count): "projection", a 1x1 convolution ``downsample.0`` + BatchNorm
        ``downsample.1`` (option B; torchvision), or "zero_pad", `zero_pad_shortcut`
        (option A; the CIFAR models). Unchanged shapes always use the identity.
      pad_layout: where "zero_pad" puts the zero channels: "end" or "both" (see
        `zero_pad_shortcut`).
      conv_init: initialiser of the convolution kernels.
      zero_init_residual: initialise ``bn2``'s scale to zero, so that the residual branch
        starts at zero and an identity-shortcut block as the identity (Goyal et al., 2017).
      dtype: computation dtype.
      bn_axis_name, frozen_batch_norms: given to every BatchNorm of the block (see `ResNet`).
    """

    expansion: ClassVar[int] = 1
    convs_per_block: ClassVar[int] = 2

    planes: int
    stride: int = 1
    shortcut: str = "projection"
    pad_layout: str = "end"
    conv_init: layers.Initializer = _TORCHVISION_CONV_INIT
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """(N, H, W, C) -> (N, ceil(H / stride), ceil(W / stride), planes)."""
        _check_shortcut(self)
        conv = partial(layers.Conv, use_bias=False, kernel_init=self.conv_init, dtype=self.dtype)
        bn = _batch_norm(self)
        last_scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones

        y = conv(self.planes, 3, stride=self.stride, padding=1, name="conv1")(x)
        y = nn.relu(bn(name="bn1")(y, train=train))
        y = conv(self.planes, 3, padding=1, name="conv2")(y)
        y = bn(scale_init=last_scale_init, name="bn2")(y, train=train)
        return nn.relu(y + _shortcut(self, x, conv, bn, train))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a shortcut (paper Figure 5 right).

    ``relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x)))))))) + shortcut(x))``. The stride
    is on the 3x3 ``conv2`` as in torchvision ("ResNet V1.5"); the paper puts it on the
    1x1 ``conv1``.

    Attributes:
      planes: width of the 1x1 and 3x3 convolutions; the block outputs
        ``planes * expansion`` (= 4 * planes) channels.
      stride: stride of ``conv2`` and of the shortcut.
      shortcut: "projection" (option B, torchvision) or "zero_pad" (option A); see
        `BasicBlock`.
      pad_layout: where "zero_pad" puts the zero channels ("end" or "both").
      conv_init: initialiser of the convolution kernels.
      zero_init_residual: initialise ``bn3``'s scale to zero (the residual branch starts
        at zero).
      dtype: computation dtype.
      bn_axis_name, frozen_batch_norms: given to every BatchNorm of the block (see `ResNet`).
    """

    expansion: ClassVar[int] = 4
    convs_per_block: ClassVar[int] = 3

    planes: int
    stride: int = 1
    shortcut: str = "projection"
    pad_layout: str = "end"
    conv_init: layers.Initializer = _TORCHVISION_CONV_INIT
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """(N, H, W, C) -> (N, ceil(H / stride), ceil(W / stride), 4 * planes)."""
        _check_shortcut(self)
        conv = partial(layers.Conv, use_bias=False, kernel_init=self.conv_init, dtype=self.dtype)
        bn = _batch_norm(self)
        last_scale_init = nn.initializers.zeros if self.zero_init_residual else nn.initializers.ones

        y = conv(self.planes, 1, name="conv1")(x)
        y = nn.relu(bn(name="bn1")(y, train=train))
        y = conv(self.planes, 3, stride=self.stride, padding=1, name="conv2")(y)
        y = nn.relu(bn(name="bn2")(y, train=train))
        y = conv(self.planes * self.expansion, 1, name="conv3")(y)
        y = bn(scale_init=last_scale_init, name="bn3")(y, train=train)
        return nn.relu(y + _shortcut(self, x, conv, bn, train))


def _batch_norm(m: Any) -> partial[layers.BatchNorm]:
    """The BatchNorm of module `m` (a block or a model), with `m`'s BatchNorm options."""
    return partial(
        layers.BatchNorm,
        epsilon=_BN_EPS,
        axis_name=m.bn_axis_name,
        frozen_paths=m.frozen_batch_norms,
        dtype=m.dtype,
    )


def _check_shortcut(block: BasicBlock | Bottleneck) -> None:
    """Reject an unknown `shortcut` before any parameter is created."""
    if block.shortcut not in ("projection", "zero_pad"):
        raise ValueError(
            f"{type(block).__name__}: `shortcut` must be 'projection' or 'zero_pad'; "
            f"got {block.shortcut!r}"
        )


def _shortcut(block: BasicBlock | Bottleneck, x, conv, bn, train: bool) -> jax.Array:
    """The block's shortcut branch; called inside the block's compact `__call__`."""
    features = block.planes * block.expansion
    if block.stride == 1 and x.shape[-1] == features:
        return x
    if block.shortcut == "zero_pad":
        return zero_pad_shortcut(x, features, block.stride, block.pad_layout)
    x = conv(features, 1, stride=block.stride, name="downsample.0")(x)
    return bn(name="downsample.1")(x, train=train)


class ResNet(nn.Module):
    """ImageNet ResNet (paper Table 1) as `torchvision.models.ResNet`.

    Shapes for a 224x224 input: stem 112x112x64 -> max pool 56x56 -> layer1 56x56,
    layer2 28x28, layer3 14x14, layer4 7x7 (x 64, 128, 256, 512 times the block's
    expansion) -> average pool -> (N, num_classes). Any input from 1x1 up works: every
    stride-2 stage maps H to ceil(H / 2) >= 1, and the adaptive pool takes whatever
    remains.

    Init as torchvision: convolutions kaiming_normal (fan_out, ReLU gain), BatchNorm
    scale 1 / bias 0, the classifier PyTorch's default Linear init.

    Attributes:
      stage_sizes: blocks per stage (layer1..layer4), e.g. (3, 4, 6, 3) for ResNet-50.
      block_cls: `BasicBlock` or `Bottleneck`.
      num_classes: classifier outputs.
      zero_init_residual: zero the last BatchNorm scale of every block (``bn2`` of
        `BasicBlock`, ``bn3`` of `Bottleneck`), torchvision's option of the same name.
      dtype: computation dtype; parameters stay float32 and logits are float32.
      bn_axis_name: the mapped axis (`jax.pmap`, `shard_map`, `jax.vmap`) over which every
        BatchNorm averages its training-mode batch statistics (synchronised BatchNorm);
        None (the default): the statistics of the batch the model sees.
      frozen_batch_norms: layer paths from the model's root ("bn1", "layer1.0",
        "layer1.0/bn1"); every BatchNorm at or under one of them runs in inference mode even
        with ``train=True`` (running statistics, none updated). Set both with
        `jaxcnn.models.configure_batch_norm`.
    """

    stage_sizes: Sequence[int]
    block_cls: type[BasicBlock] | type[Bottleneck]
    num_classes: int
    zero_init_residual: bool = False
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, H, W, 3) float, H, W >= 1 -> (N, num_classes) float32 logits."""
        # The paper names a ResNet by its weighted layers: blocks x convs + stem + classifier.
        depth = self.block_cls.convs_per_block * sum(self.stage_sizes) + 2
        layers.check_input(x, f"resnet{depth}", channels=3, min_size=(1, 1))
        x = layers.Conv(
            64,
            7,
            stride=2,
            padding=3,
            use_bias=False,
            kernel_init=_TORCHVISION_CONV_INIT,
            dtype=self.dtype,
            name="conv1",
        )(x)
        x = _batch_norm(self)(name="bn1")(x, train=train)
        x = nn.relu(x)
        x = layers.MaxPool(3, stride=2, padding=1, name="maxpool")(x)
        for i, num_blocks in enumerate(self.stage_sizes):
            for j in range(num_blocks):
                x = self.block_cls(
                    planes=64 * 2**i,
                    stride=2 if i > 0 and j == 0 else 1,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    **layers.batch_norm_options(self),
                    name=f"layer{i + 1}.{j}",
                )(x, train=train)
        x = layers.AdaptiveAvgPool((1, 1), name="avgpool")(x)
        x = layers.Dense(self.num_classes, dtype=self.dtype, name="fc")(layers.flatten_chw(x))
        return x.astype(jnp.float32)


class CifarResNet(nn.Module):
    """CIFAR-10 ResNet of the paper's Section 4.2: 6n + 2 weighted layers.

    Shapes: (N, 32, 32, 3) -> conv1 32x32x16 -> layer1 32x32x16 -> layer2 16x16x32 ->
    layer3 8x8x64 -> global average pool -> fc (N, num_classes). Every block is a
    `BasicBlock`; the first blocks of layer2 and layer3 halve H and W with a stride-2
    ``conv1`` and a parameter-free `zero_pad_shortcut` (option A). Any input from 1x1 up
    works (each stride-2 stage maps H to ceil(H / 2)).

    Init: convolutions N(0, 2 / fan_in) as the paper's [13]; BatchNorm 1 / 0; the
    classifier PyTorch's default Linear init (the paper does not say).

    Attributes:
      blocks_per_stage: n (3, 5, 7, 9, 18 for ResNet-20/32/44/56/110).
      num_classes: classifier outputs (10 for CIFAR-10).
      zero_init_residual: zero every block's ``bn2`` scale (not in the paper).
      shortcut_pad: where the option-A shortcuts put their zero channels: "end" (the
        default) or "both" (akamaster/pytorch_resnet_cifar10's layout; its checkpoints need
        it, and `jaxcnn.transfer.load_pretrained` sets it when it recognises one).
      dtype: computation dtype; parameters stay float32 and logits are float32.
      bn_axis_name, frozen_batch_norms: synchronised and frozen BatchNorms, as in `ResNet`.
    """

    blocks_per_stage: int
    num_classes: int
    zero_init_residual: bool = False
    shortcut_pad: str = "end"
    dtype: Any = jnp.float32
    bn_axis_name: str | None = None
    frozen_batch_norms: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """x: (N, H, W, 3) float, H, W >= 1 (32x32 by design) -> (N, num_classes) float32."""
        name = f"resnet{6 * self.blocks_per_stage + 2}"
        if self.shortcut_pad not in PAD_LAYOUTS:
            raise ValueError(
                f"{name}: `shortcut_pad` must be one of {PAD_LAYOUTS}; got {self.shortcut_pad!r}"
            )
        layers.check_input(x, name, channels=3, min_size=(1, 1))
        x = layers.Conv(
            16,
            3,
            padding=1,
            use_bias=False,
            kernel_init=_HE_FAN_IN_INIT,
            dtype=self.dtype,
            name="conv1",
        )(x)
        x = _batch_norm(self)(name="bn1")(x, train=train)
        x = nn.relu(x)
        for i in range(3):
            for j in range(self.blocks_per_stage):
                x = BasicBlock(
                    planes=16 * 2**i,
                    stride=2 if i > 0 and j == 0 else 1,
                    shortcut="zero_pad",
                    pad_layout=self.shortcut_pad,
                    conv_init=_HE_FAN_IN_INIT,
                    zero_init_residual=self.zero_init_residual,
                    dtype=self.dtype,
                    **layers.batch_norm_options(self),
                    name=f"layer{i + 1}.{j}",
                )(x, train=train)
        x = layers.AdaptiveAvgPool((1, 1), name="avgpool")(x)
        x = layers.Dense(self.num_classes, dtype=self.dtype, name="fc")(layers.flatten_chw(x))
        return x.astype(jnp.float32)


ResNet18 = partial(ResNet, stage_sizes=(2, 2, 2, 2), block_cls=BasicBlock)
ResNet34 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=BasicBlock)
ResNet50 = partial(ResNet, stage_sizes=(3, 4, 6, 3), block_cls=Bottleneck)
ResNet101 = partial(ResNet, stage_sizes=(3, 4, 23, 3), block_cls=Bottleneck)
ResNet152 = partial(ResNet, stage_sizes=(3, 8, 36, 3), block_cls=Bottleneck)

ResNet20 = partial(CifarResNet, blocks_per_stage=3)
ResNet32 = partial(CifarResNet, blocks_per_stage=5)
ResNet44 = partial(CifarResNet, blocks_per_stage=7)
ResNet56 = partial(CifarResNet, blocks_per_stage=9)
ResNet110 = partial(CifarResNet, blocks_per_stage=18)

_IMAGENET: dict[str, Any] = dict(
    input_size=(224, 224, 3), min_input_size=(1, 1), num_classes=1000, reference="torchvision"
)
# The paper's Table 6 gives 0.27M, 0.46M, 0.66M, 0.85M and 1.7M; these are the exact counts
# (convolutions without bias, BatchNorm scale and bias, fc with bias; 10 classes).
_CIFAR: dict[str, Any] = dict(
    input_size=(32, 32, 3),
    min_input_size=(1, 1),
    num_classes=10,
    reference=None,
    checkpoint_dialects=(
        # The most used PyTorch CIFAR ResNets (published test errors 8.27 / 7.37 / 6.90 /
        # 6.61 / 6.32 % for ResNet-20/32/44/56/110): classifier "linear", zeros on both sides.
        CheckpointDialect(
            name="akamaster/pytorch_resnet_cifar10",
            signature="linear.weight",
            rename=((r"^linear\.", "fc."),),
            model_kwargs={"shortcut_pad": "both"},
        ),
    ),
)


@register("resnet18", num_params=11_689_512, reference_name="resnet18", **_IMAGENET)
def resnet18(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> ResNet:
    """ResNet-18 (`BasicBlock`, 2-2-2-2), torchvision's ``resnet18``."""
    return ResNet18(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet34", num_params=21_797_672, reference_name="resnet34", **_IMAGENET)
def resnet34(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> ResNet:
    """ResNet-34 (`BasicBlock`, 3-4-6-3), torchvision's ``resnet34``."""
    return ResNet34(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet50", num_params=25_557_032, reference_name="resnet50", **_IMAGENET)
def resnet50(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> ResNet:
    """ResNet-50 (`Bottleneck`, 3-4-6-3), torchvision's ``resnet50`` (v1.5 stride)."""
    return ResNet50(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet101", num_params=44_549_160, reference_name="resnet101", **_IMAGENET)
def resnet101(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> ResNet:
    """ResNet-101 (`Bottleneck`, 3-4-23-3), torchvision's ``resnet101`` (v1.5 stride)."""
    return ResNet101(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet152", num_params=60_192_808, reference_name="resnet152", **_IMAGENET)
def resnet152(*, num_classes: int = 1000, dtype=jnp.float32, **kw) -> ResNet:
    """ResNet-152 (`Bottleneck`, 3-8-36-3), torchvision's ``resnet152`` (v1.5 stride)."""
    return ResNet152(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet20", num_params=269_722, **_CIFAR)
def resnet20(*, num_classes: int = 10, dtype=jnp.float32, **kw) -> CifarResNet:
    """CIFAR ResNet-20 (n = 3), paper Table 6: 0.27M parameters."""
    return ResNet20(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet32", num_params=464_154, **_CIFAR)
def resnet32(*, num_classes: int = 10, dtype=jnp.float32, **kw) -> CifarResNet:
    """CIFAR ResNet-32 (n = 5), paper Table 6: 0.46M parameters."""
    return ResNet32(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet44", num_params=658_586, **_CIFAR)
def resnet44(*, num_classes: int = 10, dtype=jnp.float32, **kw) -> CifarResNet:
    """CIFAR ResNet-44 (n = 7), paper Table 6: 0.66M parameters."""
    return ResNet44(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet56", num_params=853_018, **_CIFAR)
def resnet56(*, num_classes: int = 10, dtype=jnp.float32, **kw) -> CifarResNet:
    """CIFAR ResNet-56 (n = 9), paper Table 6: 0.85M parameters."""
    return ResNet56(num_classes=num_classes, dtype=dtype, **kw)


@register("resnet110", num_params=1_727_962, **_CIFAR)
def resnet110(*, num_classes: int = 10, dtype=jnp.float32, **kw) -> CifarResNet:
    """CIFAR ResNet-110 (n = 18), paper Table 6: 1.7M parameters."""
    return ResNet110(num_classes=num_classes, dtype=dtype, **kw)
