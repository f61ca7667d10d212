"""Convolution filters as images.

The first layer's filters act on pixels, so they can be looked at directly: RGB filters as
colour images, grey ones as grey images (Krizhevsky et al.'s Figure 3, Zeiler & Fergus's
Figure 6). Deeper filters act on feature maps; summed over their input channels they show
the spatial pattern each one weights most, a rough but common summary.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["conv_kernels", "filters"]


def conv_kernels(variables) -> dict[str, np.ndarray]:
    """Every convolution kernel (4-D ``kernel`` parameter, HWIO) by layer path, in call order.

    Flax's parameter dicts keep the order in which modules created their parameters, which
    is the order the forward pass first calls them; so the first entry is the first layer.

    Args:
      variables: a model's variables ({"params": ...}) or its params.

    Returns:
      {layer path: (kh, kw, C_in // groups, C_out) array}.
    """
    if not isinstance(variables, Mapping):
        raise TypeError(
            f"conv_kernels: `variables` must be a model's variables or params (a mapping); "
            f"got {type(variables).__name__}"
        )
    params = variables.get("params", variables)
    found: dict[str, np.ndarray] = {}

    def walk(tree, path):
        for key, value in tree.items():  # dict order, not sorted: creation order
            if isinstance(value, Mapping):
                walk(value, (*path, str(key)))
            elif key == "kernel" and getattr(value, "ndim", 0) == 4:
                found[".".join(path)] = np.asarray(value)

    walk(params, ())
    return found


def filters(variables, layer: str | None = None, *, sum_channels: bool | None = None) -> np.ndarray:
    """A convolution layer's filters as images in [0, 1], each normalised on its own.

    Args:
      variables: a model's variables ({"params": ...}) or its params.
      layer: the convolution's module path (e.g. "conv1", "features.0", "layer1.0.conv2");
        None for the first convolution of the network.
      sum_channels: sum each filter over its input channels (one grey image per filter).
        None: only when the layer does not see 1 or 3 channels, i.e. first-layer filters are
        shown in grey or colour, deeper ones summed.

    Returns:
      (C_out, kh, kw, C) float32, C = 1 or 3 (the input channels) or 1 (summed); each filter
      mapped linearly from its own [min, max] to [0, 1] (a constant filter becomes 0.5).

    Raises:
      ValueError: `layer` names no convolution (the message lists those there are), or the
        variables hold none.
    """
    kernels = conv_kernels(variables)
    if not kernels:
        raise ValueError("filters: `variables` hold no convolution kernel (4-D 'kernel')")
    if layer is None:
        layer = next(iter(kernels))
    if not isinstance(layer, str) or layer not in kernels:
        raise ValueError(
            f"filters: no convolution named {layer!r}; `layer` must be one of the layers with "
            f"a 4-D kernel: {', '.join(kernels)}"
        )
    w = kernels[layer].astype(np.float32)  # (kh, kw, C_in, C_out)
    c_in = w.shape[2]
    if sum_channels is None:
        sum_channels = c_in not in (1, 3)
    if sum_channels:
        w = w.sum(axis=2, keepdims=True)
    w = np.transpose(w, (3, 0, 1, 2))  # (C_out, kh, kw, C)
    lo = w.min(axis=(1, 2, 3), keepdims=True)
    span = w.max(axis=(1, 2, 3), keepdims=True) - lo
    out = np.where(span > 0, (w - lo) / np.where(span > 0, span, 1), 0.5)
    return out.astype(np.float32)
