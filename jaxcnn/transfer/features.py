"""Features of one layer for a whole data set: the inputs of linear probes."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from ..anatomy import _few

__all__ = ["extract_features"]


def extract_features(
    model: nn.Module,
    variables: Mapping[str, Any],
    data: Any,
    *,
    layer: str,
    batch_size: int = 256,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> np.ndarray:
    """Pooled features of one layer for a whole data set: the input of a linear probe.

    The model runs in inference mode (``train=False``) and the output of `layer` (its
    ``__call__``) is captured; a (N, H, W, C) output is averaged over H and W (global
    average pooling), a (N, C) one is returned as it is, anything else flattened.

    Args:
      model: the linen Module (e.g. from `load_pretrained` or `load_run`).
      variables: its variables.
      data: float images (N, H, W, C), normalised as the model expects, or a
        `jaxcnn.data` source (uint8 images, all of one size), which is scaled to [0, 1]
        and normalised with `mean` and `std` (default: the source's own). Its labels are
        ``[data[i]["label"] for i in range(len(data))]``.
      layer: a layer path, e.g. "fc2", "layer4.1", "features.28", "avgpool".
      batch_size: images per forward pass (the last batch is padded, so one compilation).
      mean, std: per-channel normalisation of a source, in [0, 1] units.

    Returns:
      (N, D) float32 numpy features.

    Raises:
      ValueError: an unknown layer (the message lists the model's layers), bad data.
    """
    if not isinstance(layer, str) or not layer:
        raise TypeError(f"extract_features: layer must be a layer path string; got {layer!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"extract_features: batch_size must be a positive int; got {batch_size!r}")
    images = _images(data, mean, std)
    n = images.shape[0]

    probe = jax.eval_shape(
        functools.partial(_pooled, model, layer),
        variables,
        jax.ShapeDtypeStruct(images[:1].shape, jnp.float32),
    )
    if probe is None:
        called = _called_layers(model, variables, images[:1])
        raise ValueError(
            f"extract_features: {type(model).__name__} has no layer {layer!r}; its layers are "
            f"{_few(called, 60)}"
        )
    run = functools.partial(_pooled_jit, model, layer)
    out = []
    for start in range(0, n, batch_size):
        x = images[start : start + batch_size]
        real = x.shape[0]
        if real < batch_size and n > batch_size:  # pad: one compiled shape for every batch
            x = np.concatenate([x, np.zeros((batch_size - real, *x.shape[1:]), x.dtype)])
        out.append(np.asarray(run(variables, jnp.asarray(x)))[:real])
    return np.concatenate(out, axis=0)


def _pooled(model: nn.Module, layer: str, variables: Mapping, x: jax.Array) -> jax.Array | None:
    """`layer`'s output for `x` (global-average-pooled if 4-D), None if no such layer ran."""

    def wanted(mdl, method_name):
        return method_name == "__call__" and "/".join(mdl.path) == layer

    _, state = model.apply(
        variables, x, train=False, capture_intermediates=wanted, mutable=["intermediates"]
    )
    found = jax.tree.leaves(state.get("intermediates", {}))
    if not found:
        return None
    y = found[0].astype(jnp.float32)
    if y.ndim == 4:
        return jnp.mean(y, axis=(1, 2))
    return y.reshape(y.shape[0], -1)


# Compiled once per (model, layer, input shape): modules hash by their fields, so repeated
# calls (one per data set, one per seed in a benchmark) reuse the compilation.
_pooled_jit = jax.jit(_pooled, static_argnums=(0, 1))


def _images(data: Any, mean, std) -> np.ndarray:
    """Float32 (N, H, W, C) model inputs from an array or a jaxcnn.data source."""
    from ..data.sources import Source

    if isinstance(data, Source):
        h, w, c = data.image_shape
        if h is None or w is None:
            raise ValueError(
                f"extract_features: {data.name} has images of different sizes; resize them "
                "to one size first (e.g. with jaxcnn.data's loaders) and pass the array"
            )
        raw = np.stack([data[i]["image"] for i in range(len(data))]).astype(np.float32) / 255.0
        m = np.asarray(data.mean if mean is None else mean, np.float32).reshape(1, 1, 1, -1)
        s = np.asarray(data.std if std is None else std, np.float32).reshape(1, 1, 1, -1)
        if m.shape[-1] != c or s.shape[-1] != c:
            raise ValueError(f"extract_features: mean and std need {c} values (one per channel)")
        return (raw - m) / s
    if mean is not None or std is not None:
        raise ValueError(
            "extract_features: mean/std apply to a jaxcnn.data source; normalise arrays yourself"
        )
    images = np.asarray(data)
    if images.ndim != 4 or images.shape[0] < 1:
        raise ValueError(
            f"extract_features: data must be (N, H, W, C) images or a jaxcnn.data source; got "
            f"shape {images.shape}"
        )
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(
            f"extract_features: image arrays must be float (normalised as the model expects); "
            f"got {images.dtype}"
        )
    return images.astype(np.float32, copy=False)


def _called_layers(model: nn.Module, variables: Mapping, x: np.ndarray) -> list[str]:
    order: list[str] = []

    def record(next_fn, args, kwargs, context):
        name = "/".join(context.module.path)
        if context.method_name == "__call__" and name and name not in order:
            order.append(name)
        return next_fn(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return order
