"""LeNet-5 (LeCun, Bottou, Bengio and Haffner, 1998), as commonly taught and as published.

Y. LeCun, L. Bottou, Y. Bengio and P. Haffner, "Gradient-based learning applied to document
recognition", Proc. IEEE 86(11), 1998.

Two models, both on 32x32 grey images (the paper pads 28x28 MNIST digits to 32x32 so that
stroke ends can reach the centre of the top feature detectors' receptive fields):

* `lenet5`: the "modern" LeNet-5 of courses and textbooks. tanh, 2x2 average pooling, C3
  connected to all six maps, a linear 10-way output. 61,706 parameters.
* `lenet5_1998`: the paper's network: scaled tanh, trainable subsampling, C3's sparse
  connection table, and the paper's initialisation. 60,850 parameters.

Neither has a torchvision or timm counterpart (reference=None).

Both classifiers are sized for a 16x5x5 feature map (the flatten's 400 features in
`lenet5`, C5's 5x5 kernels in `lenet5_1998`). From the layer geometry (5x5 valid
convolutions, 2x2 pools), that map is 5x5 iff ``((H - 4) // 2 - 4) // 2 == 5``, i.e. for
exactly 32 <= H, W <= 35; other sizes raise a ValueError rather than silently building a
classifier of another size.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from .. import layers, ops
from .registry import register

# Inputs whose feature map is 5x5 at the classifier, for both models.
_MIN_SIZE = (32, 32)
_MAX_SIZE = (35, 35)
_WHY_MAX = "the classifier expects a 5x5 feature map (designed for 32x32: resize or pad)"

# Table I of LeCun et al. (1998): the S2 maps that each of the 16 C3 maps combines. Maps 0-5
# see three contiguous S2 maps, 6-11 four contiguous ones, 12-14 four non-contiguous ones
# and 15 all six (indices wrap around modulo 6). The paper breaks the symmetry on purpose so
# that different C3 maps are forced to extract different features.
C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2),
    (1, 2, 3),
    (2, 3, 4),
    (3, 4, 5),
    (0, 4, 5),
    (0, 1, 5),
    (0, 1, 2, 3),
    (1, 2, 3, 4),
    (2, 3, 4, 5),
    (0, 3, 4, 5),
    (0, 1, 4, 5),
    (0, 1, 2, 5),
    (0, 1, 3, 4),
    (1, 2, 4, 5),
    (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def squash(a: jax.Array) -> jax.Array:
    """LeCun's scaled tanh ``f(a) = 1.7159 tanh(2a / 3)`` (1998, Appendix A).

    Chosen so that f(1) = 1 and f(-1) = -1, and the second derivative is largest at +-1, so
    targets of +-1 sit where the function still has curvature.
    """
    return 1.7159 * jnp.tanh(a * (2.0 / 3.0))


def lecun_uniform_1998(fan_in) -> layers.Initializer:
    """The paper's initialiser: U(-2.4 / F, 2.4 / F), F the fan-in of the unit (Appendix A).

    Args:
      fan_in: a number, or a numpy array broadcastable to the parameter's shape (for layers
        whose units have different fan-ins, such as C3).
    """
    bound = 2.4 / np.asarray(fan_in, np.float32)

    def init(key, shape, dtype=jnp.float32):
        u = jax.random.uniform(key, shape, dtype, -1.0, 1.0)
        return u * jnp.broadcast_to(jnp.asarray(bound, dtype), shape)

    return init


class Subsampling(nn.Module):
    """LeNet-5's S2/S4: each map's 2x2 window sum times a trainable coefficient, plus a bias.

    ``y[..., c] = scale[c] * sum_window(x[..., c]) + bias[c]`` (no squashing here; the model
    applies it). Two parameters per map, ``scale`` and ``bias``, initialised with the
    paper's U(+-2.4 / 4): each unit has 4 inputs.

    Input (N, H, W, C) -> (N, H // 2, W // 2, C).
    """

    window: int = 2
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = x.shape[-1]
        init = lecun_uniform_1998(self.window * self.window)
        scale = self.param("scale", init, (c,), self.param_dtype)
        bias = self.param("bias", init, (c,), self.param_dtype)
        dtype = self.dtype or x.dtype
        s = ops.sum_pool2d(x.astype(dtype), self.window)
        return s * scale.astype(dtype).reshape(1, 1, 1, c) + bias.astype(dtype).reshape(1, 1, 1, c)


class TableConv(nn.Module):
    """A convolution in which output map j sees only the input maps listed in `table[j]`.

    Only the connected weights are parameters: ``kernel`` has shape
    (kh, kw, sum(len(t) for t in table)), the kernels of output map 0's inputs first, then
    map 1's, and so on. Output maps with the same number of inputs g are computed together as
    one grouped convolution (groups = number of such maps, g channels each) over their input
    maps gathered side by side, so only connected weights are multiplied (C3: 60 kernels, not
    96) and the output of map j does not depend on unlisted inputs. Weights and biases are
    initialised with U(+-2.4 / F_j), F_j = kh * kw * len(table[j]).

    Attributes:
      table: for each output map, the input maps it is connected to.
      kernel_size: kh = kw.
    """

    table: tuple[tuple[int, ...], ...]
    kernel_size: int
    dtype: Any = None
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c_in = x.shape[-1]
        if any(not 0 <= i < c_in for ins in self.table for i in ins):
            raise ValueError(
                f"TableConv {self.name}: connection table refers to input maps outside "
                f"[0, {c_in}) (x.shape={tuple(x.shape)})"
            )
        k = self.kernel_size
        fan_in = np.array([k * k * len(ins) for ins in self.table])
        out_idx = np.array([j for j, ins in enumerate(self.table) for _ in ins])
        kernel = self.param(
            "kernel", lecun_uniform_1998(fan_in[out_idx]), (k, k, len(out_idx)), self.param_dtype
        )
        bias = self.param("bias", lecun_uniform_1998(fan_in), (len(self.table),), self.param_dtype)
        dtype = self.dtype or x.dtype
        x, kernel = x.astype(dtype), kernel.astype(dtype)
        offsets = np.cumsum([0] + [len(ins) for ins in self.table])
        outputs, order = [], []
        for g in sorted({len(ins) for ins in self.table}):
            maps = [j for j, ins in enumerate(self.table) if len(ins) == g]
            # Channel slices + concatenation (not a gather): the result stays a sliding window
            # of the input, which `jaxcnn.summary` follows for receptive fields.
            xg = jnp.concatenate([x[..., i : i + 1] for j in maps for i in self.table[j]], -1)
            cols = np.array([offsets[j] + t for j in maps for t in range(g)])
            kg = kernel[:, :, cols].reshape(k, k, len(maps), g).transpose(0, 1, 3, 2)
            outputs.append(ops.conv2d(xg, kg, groups=len(maps)))
            order += maps
        y = jnp.concatenate(outputs, -1)
        if order != sorted(order):  # back to the table's map order
            inv = np.argsort(order)
            y = jnp.concatenate([y[..., i : i + 1] for i in inv], -1)
        return y + bias.astype(dtype).reshape(1, 1, 1, -1)


class LeNet5(nn.Module):
    """The modern LeNet-5: conv-tanh-avgpool twice, then three fully connected layers.

    conv1 6@5x5 -> tanh -> avg pool 2x2 -> conv2 16@5x5 (all 6 input maps) -> tanh ->
    avg pool 2x2 -> flatten (16x5x5) -> fc1 120 -> tanh -> fc2 84 -> tanh -> fc3 num_classes.

    Deviations from LeCun et al. (1998), as in most textbooks: plain tanh instead of the
    scaled tanh, parameter-free average pooling instead of trainable subsampling, conv2 fully
    connected instead of Table I, a linear output instead of Euclidean RBF units, and
    PyTorch's default initialisation. `lenet5_1998` is the paper's version.

    Input (N, 32..35, 32..35, 1) float -> (N, num_classes) float32 logits.
    """

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(x, "lenet5", channels=1, min_size=_MIN_SIZE, max_size=_MAX_SIZE,
                           why_max=_WHY_MAX)  # fmt: skip
        x = jnp.tanh(layers.Conv(6, 5, dtype=self.dtype, name="conv1")(x))
        x = layers.AvgPool(2, name="pool1")(x)
        x = jnp.tanh(layers.Conv(16, 5, dtype=self.dtype, name="conv2")(x))
        x = layers.AvgPool(2, name="pool2")(x)
        x = layers.flatten_chw(x)
        x = jnp.tanh(layers.Dense(120, dtype=self.dtype, name="fc1")(x))
        x = jnp.tanh(layers.Dense(84, dtype=self.dtype, name="fc2")(x))
        x = layers.Dense(self.num_classes, dtype=self.dtype, name="fc3")(x)
        return x.astype(jnp.float32)


class LeNet5_1998(nn.Module):
    """LeNet-5 as published by LeCun et al. (1998), with a linear output layer.

    Layers (names as in the paper), every one but the output followed by the squashing
    function `squash` (f(a) = 1.7159 tanh(2a/3)), since the paper squashes the weighted sum
    of every unit "up to F6":

      c1      6@5x5 convolution                      32x32x1 -> 28x28x6     156 params
      s2      `Subsampling` (2x2 sum * coef + bias)          -> 14x14x6      12
      c3      16@5x5 convolution, Table I (`C3_TABLE`)       -> 10x10x16  1,516
      s4      `Subsampling`                                  -> 5x5x16       32
      c5      120@5x5 convolution                            -> 1x1x120  48,120
      f6      84 units, fully connected                      -> 84       10,164
      output  num_classes units, fully connected, linear     -> 10          850

    C5 is a convolution, as in the paper (on a larger input it would slide), here always
    over a 5x5 map.

    Total 60,850 parameters at num_classes=10 (C3's 1,516 = 60 connected 5x5 kernels + 16
    biases; the 36 unconnected map pairs of Table I have no weights, see `TableConv`).

    Deviations from the paper:
      * The output layer is linear (84 * 10 + 10 = 850 parameters) and returns logits for a
        softmax cross-entropy, instead of the paper's Euclidean RBF units with fixed
        +-1 "stylised character" codes and its MAP criterion.
      * F6 keeps the paper's 84 units (a 7x12 bitmap in the paper's RBF code), although a
        linear output does not need that number.
      * The input normalisation (background -0.1, foreground 1.175) is left to the data
        pipeline.
    Initialisation follows the paper: every weight and bias U(-2.4/F, 2.4/F) with F the
    number of inputs of its unit (25 for C1, 4 for the subsampling coefficients, 75/100/150
    for C3 by map, 400 for C5, 120 for F6, 84 for the output).

    Input (N, 32..35, 32..35, 1) float -> (N, num_classes) float32 logits.
    """

    num_classes: int = 10
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        layers.check_input(x, "lenet5_1998", channels=1, min_size=_MIN_SIZE, max_size=_MAX_SIZE,
                           why_max=_WHY_MAX)  # fmt: skip
        x = squash(self._conv(6, 5 * 5 * 1, "c1")(x))
        x = squash(Subsampling(dtype=self.dtype, name="s2")(x))
        x = squash(TableConv(C3_TABLE, 5, dtype=self.dtype, name="c3")(x))
        x = squash(Subsampling(dtype=self.dtype, name="s4")(x))
        x = squash(self._conv(120, 5 * 5 * 16, "c5")(x))
        x = x.reshape(x.shape[0], -1)  # the 1x1x120 map of C5
        x = squash(self._dense(84, 120, "f6")(x))
        x = self._dense(self.num_classes, 84, "output")(x)
        return x.astype(jnp.float32)

    def _conv(self, features: int, fan_in: int, name: str) -> layers.Conv:
        init = lecun_uniform_1998(fan_in)
        return layers.Conv(
            features, 5, kernel_init=init, bias_init=init, dtype=self.dtype, name=name
        )

    def _dense(self, features: int, fan_in: int, name: str) -> layers.Dense:
        init = lecun_uniform_1998(fan_in)
        return layers.Dense(features, kernel_init=init, bias_init=init, dtype=self.dtype, name=name)


@register(
    "lenet5",
    input_size=(32, 32, 1),
    min_input_size=_MIN_SIZE,
    num_params=61_706,
    num_classes=10,
    reference=None,
)
def lenet5(*, num_classes: int = 10, dtype=jnp.float32, **kw) -> LeNet5:
    """The modern LeNet-5 (tanh, average pooling, full C3); see `LeNet5`."""
    return LeNet5(num_classes=num_classes, dtype=dtype, **kw)


@register(
    "lenet5_1998",
    input_size=(32, 32, 1),
    min_input_size=_MIN_SIZE,
    num_params=60_850,
    num_classes=10,
    reference=None,
)
def lenet5_1998(*, num_classes: int = 10, dtype=jnp.float32, **kw) -> LeNet5_1998:
    """LeNet-5 as in LeCun et al. (1998), with a linear output; see `LeNet5_1998`."""
    return LeNet5_1998(num_classes=num_classes, dtype=dtype, **kw)
