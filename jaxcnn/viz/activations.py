"""Layers by name: their activations, output shapes and receptive fields.

A layer is any Flax module the evaluation forward pass calls, named by its dotted module path,
which for ported models is the torchvision state-dict prefix: ``"conv1"`` (LeNet-5),
``"features.3"`` (AlexNet, VGG), ``"layer2.1.conv2"`` (a ResNet convolution), ``"layer2.1"``
(the whole residual block, i.e. its output after the addition and ReLU).

Activations are read with `flax.linen.intercept_methods`: an interceptor sees every module
call of an ordinary ``model.apply(variables, x, train=False)``, records the output of the one
named, and may add a perturbation to it (what Grad-CAM differentiates with respect to). No
module is rewritten and the model's code does not have to cooperate.

Note that a layer's output is what its module returns: a `Conv`'s output is before the
nonlinearity that the parent applies to it (``features.3`` of AlexNet is pre-ReLU), while a
block's or a pool's output is after it. For ranking units (top patches) this makes no
difference, since ReLU and tanh are increasing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ..analysis import Geometry

__all__ = ["feature_maps", "layer_shapes", "receptive_field"]


def _name(module: nn.Module) -> str:
    return ".".join(module.path)


def unknown_layer(fn: str, model: nn.Module, layer: Any, valid: Sequence[str]) -> ValueError:
    """The error every viz function raises for a layer name the model does not have."""
    return ValueError(
        f"{fn}: {type(model).__name__} has no layer {layer!r}; `layer` must be one of its "
        f"module paths, in call order: {', '.join(valid)}"
    )


def check_images(x: Any, fn: str, name: str = "x") -> jax.Array:
    """`x` as a float (N, H, W, C) array, or a ValueError/TypeError naming `name`."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 4:
        hint = " (a single image? add a batch axis: x[None])" if len(shape) == 3 else ""
        raise ValueError(
            f"{fn}: `{name}` must be a batch of images (N, H, W, C); got shape {shape}{hint}"
        )
    if not jnp.issubdtype(np.dtype(x.dtype), jnp.floating):
        raise TypeError(f"{fn}: `{name}` must have a floating dtype; got {x.dtype}")
    return jnp.asarray(x)


def check_layer_name(layer: Any, fn: str) -> str:
    if not isinstance(layer, str):
        raise TypeError(f"{fn}: `layer` must be a module path (str), e.g. 'conv1'; got {layer!r}")
    return layer


def forward(
    model: nn.Module,
    variables,
    x: jax.Array,
    layer: str | None,
    delta: jax.Array | None = None,
    fn: str = "forward",
) -> tuple[jax.Array, jax.Array | None]:
    """Evaluation-mode logits and the output of `layer` (its first call), optionally perturbed.

    Args:
      model, variables: a linen Module taking ``(x, train=False)`` and its variables.
      x: (N, H, W, C) input.
      layer: module path whose output to return; None for none.
      delta: added to the layer's output before the rest of the network sees it (zeros of the
        output's shape, to differentiate the logits with respect to the activation).
      fn: the public function's name, for the error message.

    Returns:
      (logits, activation): (N, num_classes) and the layer's output (None if `layer` is None).

    Raises:
      ValueError: the forward pass never calls a module named `layer`; lists those it calls.
    """
    found: list[jax.Array] = []
    seen: dict[str, None] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__" or not context.module.path:
            return out
        name = _name(context.module)
        if not hasattr(out, "shape"):  # a module returning a tuple is not a layer here
            return out
        seen.setdefault(name, None)
        if name == layer and not found:
            if delta is not None:
                out = out + delta
            found.append(out)
        return out

    with nn.intercept_methods(interceptor):
        # Without `mutable`, apply returns the output alone (its annotation also allows the
        # (output, updated variables) pair of a mutable call).
        logits = cast(jax.Array, model.apply(variables, x, train=False))
    if layer is None:
        return logits, None
    if not found:
        raise unknown_layer(fn, model, layer, list(seen))
    return logits, found[0]


def layer_shapes(model: nn.Module, input_shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Every layer of `model` and its output shape, in call order (abstract: nothing runs).

    Args:
      model: a linen Module taking ``(x, train=False)`` (e.g. `jaxcnn.create_model(name)`).
      input_shape: (N, H, W, C).

    Returns:
      {module path: output shape}, e.g. ``{"conv1": (1, 28, 28, 6), "pool1": ..., ...}``
      for LeNet-5 at (1, 32, 32, 1); a block comes after the layers inside it.
    """
    input_shape = _check_shape(input_shape, "layer_shapes")
    return dict(trace_shapes(model, input_shape)[0])


@functools.lru_cache(maxsize=32)
def trace_shapes(
    model: nn.Module, input_shape: tuple[int, ...]
) -> tuple[tuple[tuple[str, tuple[int, ...]], ...], tuple[int, ...]]:
    """((layer, output shape) pairs in call order, logits shape), traced abstractly, cached."""
    shapes: dict[str, tuple[int, ...]] = {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name == "__call__" and context.module.path and hasattr(out, "shape"):
            shapes.setdefault(_name(context.module), tuple(out.shape))
        return out

    x = jax.ShapeDtypeStruct(input_shape, jnp.float32)
    variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
    with nn.intercept_methods(interceptor):
        logits = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return tuple(shapes.items()), tuple(logits.shape)


def checked_layer_shape(
    model: nn.Module, layer: Any, input_shape: Sequence[int], fn: str
) -> tuple[int, ...]:
    """The output shape of `layer` for `input_shape`, or the unknown-layer ValueError."""
    layer = check_layer_name(layer, fn)
    shapes = dict(trace_shapes(model, _check_shape(input_shape, fn))[0])
    if layer not in shapes:
        raise unknown_layer(fn, model, layer, list(shapes))
    return shapes[layer]


def _check_shape(input_shape, fn: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in input_shape)
    except TypeError:
        raise TypeError(f"{fn}: `input_shape` must be (N, H, W, C); got {input_shape!r}") from None
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"{fn}: `input_shape` must be (N, H, W, C) positive; got {shape}")
    return shape


def _feature_maps(model, layer, variables, x):
    return forward(model, variables, x, layer, fn="feature_maps")[1]


_feature_maps_jit = jax.jit(_feature_maps, static_argnums=(0, 1))


def feature_maps(model: nn.Module, variables, x: jax.Array, layer: str) -> jax.Array:
    """The activations of layer `layer` for input `x`, in evaluation mode (jitted).

    Args:
      model: a linen Module taking ``(x, train=False)``, e.g. `jaxcnn.create_model("alexnet")`.
      variables: its ``{"params": ..., "batch_stats"?: ...}``.
      x: (N, H, W, C) float input, normalised as the model was trained.
      layer: module path, e.g. "conv1", "features.3", "layer2.1.conv2", "layer2.1".

    Returns:
      The layer's output, (N, h, w, C_layer) for convolutional layers ((N, F) for fully
      connected ones).

    Raises:
      ValueError: unknown `layer` (the message lists the valid names) or a badly shaped `x`.
    """
    x = check_images(x, "feature_maps")
    checked_layer_shape(model, layer, x.shape, "feature_maps")
    return _feature_maps_jit(model, layer, variables, x)


def receptive_field(model: nn.Module, layer: str, input_shape: Sequence[int]) -> Geometry | None:
    """Receptive-field geometry of a layer's output, from `jaxcnn.summary`'s layer table.

    Unit (i, j) of the layer's map sees input rows ``[start[0] + i * jump[0], ... + rf[0])``
    and the like for columns (`Geometry.window`); the window may extend into the padding
    beyond the image, which callers clip. A block (a module containing layers, such as a
    ResNet ``"layer2.1"`` or an Inception block) has the union of the fields of its layers at
    its output resolution (its output combines them).

    Args:
      model: a linen Module taking ``(x, train=False)``.
      layer: module path.
      input_shape: (N, H, W, C) of the input (the geometry does not depend on N).

    Returns:
      The `Geometry` (rf, jump, start per spatial axis), or None when the layer's output is
      not a sliding window of the input (after a flatten: each unit sees the whole image).

    Raises:
      ValueError: unknown `layer` (listing the valid names).
    """
    from ..analysis import summary

    layer = check_layer_name(layer, "receptive_field")
    input_shape = _check_shape(input_shape, "receptive_field")
    checked_layer_shape(model, layer, input_shape, "receptive_field")
    rows = {r.name: r for r in _summary_cached(model, input_shape, summary).layers}
    if layer in rows:
        return rows[layer].geometry
    # A block: the union over the layers inside it at the block's output resolution (the
    # largest jump among them). Layers on the way there see less, so they do not widen it.
    inside = [r.geometry for n, r in rows.items() if n.startswith(layer + ".")]
    if not inside or any(g is None for g in inside):
        return None
    top = max(g.jump for g in inside)
    gs = [g for g in inside if g.jump == top]
    start = tuple(min(g.start[a] for g in gs) for a in range(2))
    end = tuple(max(g.start[a] + g.rf[a] for g in gs) for a in range(2))
    return Geometry(rf=(end[0] - start[0], end[1] - start[1]), jump=top, start=start)


@functools.lru_cache(maxsize=32)
def _summary_cached(model, input_shape, summary):
    return summary(model, input_shape=input_shape)
