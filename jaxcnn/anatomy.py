"""Model anatomy: the layers of a model by name, its classifier heads and its blocks.

The vocabulary that freezing, per-layer learning rates, new heads and feature extraction
(`jaxcnn.training.finetune`, `jaxcnn.transfer`) speak:

* A *layer path* is a Flax module path from the model's root, "/"-separated: "conv1",
  "layer1.0/bn1", "aux1/fc2". Layer names are the torchvision/timm names (`jaxcnn.layers`).
  *Patterns* are shell-style globs over layer paths (`fnmatch`; ``*`` also crosses "/"): a
  pattern selects the layers it matches and everything under them ("layer1.*", "*bn*").
* The *heads* are the layers whose variables are sized by ``num_classes``: the classifier
  and the auxiliary classifiers' last layers ("fc", "aux1/fc2", "AuxLogits/fc",
  "classifier.6"). They are found by comparing the model's variable shapes at two class
  counts, so no per-model table is needed.
* The *blocks* are the top-level layers that hold variables, in execution order: residual
  blocks for ResNets ("layer1.0", ...), single layers for LeNet, AlexNet and VGG, Inception
  modules for GoogLeNet. Depth freezing ("all but the last N blocks") counts the blocks that
  are not heads; heads always train.

Everything here is traced abstractly (`jax.eval_shape`): nothing is computed or allocated.
This module needs only the models; its private helpers (a model and its input shape from a
registry name or a Module, variables flattened to paths, variables checked against a model's)
serve the modules above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from . import models

__all__ = ["blocks", "head_layers", "layer_paths"]

Path = tuple[str, ...]  # (collection, *layer path, leaf name)


def _resolve(model: Any, input_shape: Sequence[int] | None, model_kwargs: dict) -> tuple:
    """(module, (H, W, C)) for a registry name or a linen Module."""
    if isinstance(model, str):
        spec = models.get_spec(model)
        module = models.create_model(model, **model_kwargs)
        shape = spec.input_size if input_shape is None else input_shape
    elif isinstance(model, nn.Module):
        if model_kwargs:
            raise TypeError(
                f"model options {sorted(model_kwargs)} apply only to a registry name; got a "
                f"{type(model).__name__} module, which already has its options"
            )
        if input_shape is None:
            raise ValueError(
                f"input_shape (H, W, C) is needed when model is a module ({type(model).__name__});"
                " with a registry name the model's design size is used"
            )
        module, shape = model, input_shape
    else:
        raise TypeError(f"model must be a registry name or a linen Module; got {model!r}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (H, W, C); got {shape}")
    return module, shape


def _template(module: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """The module's variables as `jax.ShapeDtypeStruct`s (nothing computed)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
    return jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), x)


def _flat(variables: Mapping[str, Any]) -> dict[Path, Any]:
    """{(collection, *layer path, leaf): leaf} of a variables dict."""
    out = {}
    for keypath, leaf in jax.tree_util.tree_flatten_with_path(dict(variables))[0]:
        out[tuple(str(getattr(k, "key", k)) for k in keypath)] = leaf
    return out


def _unflat(flat: Mapping[Path, Any]) -> dict[str, Any]:
    """The variables dict of {(collection, *layer path, leaf): leaf}: `_flat`'s inverse."""
    out: dict[str, Any] = {}
    for path, leaf in flat.items():
        node = out
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return out


def _layer(path: Path) -> str:
    """The layer path ("a/b") of a flat variable path."""
    return "/".join(path[1:-1])


def _under(layer: str, roots: Iterable[str]) -> bool:
    """`layer` is one of `roots` or lies inside one."""
    return any(layer == r or layer.startswith(r + "/") for r in roots)


def _few(items: Sequence[str], n: int = 8) -> str:
    """The first `n` of `items` (layer paths, keys), comma-separated, for an error message."""
    items = list(items)
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _num_classes(module: nn.Module) -> int:
    k = getattr(module, "num_classes", None)
    if not isinstance(k, int):
        raise ValueError(
            f"{type(module).__name__} has no integer `num_classes` attribute, so its heads "
            "cannot be found; jaxcnn's models all have one"
        )
    return k


def layer_paths(
    model: str | nn.Module, *, input_shape: Sequence[int] | None = None, **model_kwargs
) -> tuple[str, ...]:
    """Every layer path that holds variables, or contains layers that do, sorted.

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      input_shape: (H, W, C) to trace the model at; default the registry's design size
        (required for a Module).

    Returns:
      e.g. ("bn1", "conv1", "fc", "layer1.0", "layer1.0/bn1", "layer1.0/conv1", ...).
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    return _layer_paths(_template(module, shape))


def _layer_paths(template: Mapping[str, Any]) -> tuple[str, ...]:
    out = set()
    for path in _flat(template):
        layer = path[1:-1]
        out.update("/".join(layer[:i]) for i in range(1, len(layer) + 1))
    return tuple(sorted(out))


def head_layers(
    model: str | nn.Module, *, input_shape: Sequence[int] | None = None, **model_kwargs
) -> tuple[str, ...]:
    """The layers whose variables are sized by ``num_classes``: the classifier heads.

    Found by comparing the model's variable shapes at ``num_classes`` and ``num_classes + 1``
    (abstractly, nothing is computed), so every registered model, and any model with a
    ``num_classes`` attribute, works without a table.

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      input_shape: (H, W, C); default the registry's design size (required for a Module).

    Returns:
      Sorted layer paths, e.g. ("fc",) for ResNet, ("aux1/fc2", "aux2/fc2", "fc") for
      GoogLeNet with ``aux_logits=True``, ("classifier.6",) for VGG.
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    return _head_layers(module, shape)


def _head_layers(module: nn.Module, shape: tuple[int, ...]) -> tuple[str, ...]:
    k = _num_classes(module)
    a = _flat(_template(module, shape))
    b = _flat(_template(module.clone(num_classes=k + 1), shape))
    if set(a) != set(b):
        raise ValueError(
            f"{type(module).__name__}: the variables' structure changes with num_classes; "
            "heads cannot be told apart from the rest"
        )
    heads = sorted({_layer(p) for p in a if a[p].shape != b[p].shape})
    if not heads:
        raise ValueError(f"{type(module).__name__}: no layer is sized by num_classes")
    return tuple(heads)


def _head_axes(module: nn.Module, shape: tuple[int, ...]) -> dict[Path, int]:
    """{head variable path: the axis that has num_classes entries}."""
    k = _num_classes(module)
    a = _flat(_template(module, shape))
    b = _flat(_template(module.clone(num_classes=k + 1), shape))
    axes = {}
    for p in a:
        if a[p].shape != b[p].shape:
            (axis,) = (
                i for i, (x, y) in enumerate(zip(a[p].shape, b[p].shape, strict=True)) if x != y
            )
            axes[p] = axis
    return axes


def blocks(
    model: str | nn.Module, *, input_shape: Sequence[int] | None = None, **model_kwargs
) -> tuple[str, ...]:
    """The top-level layers that hold variables, in the order the forward pass runs them.

    Args:
      model: a registry name (built with `model_kwargs`) or a linen Module.
      input_shape: (H, W, C); default the registry's design size (required for a Module).

    Returns:
      e.g. ("conv1", "conv2", "fc1", "fc2", "fc3") for LeNet-5, ("conv1", "bn1", "layer1.0",
      ..., "layer4.1", "fc") for ResNet-18.
    """
    module, shape = _resolve(model, input_shape, model_kwargs)
    return _blocks(module, shape)


def _blocks(module: nn.Module, shape: tuple[int, ...]) -> tuple[str, ...]:
    order: list[str] = []

    def record(next_fn, args, kwargs, context):
        path = context.module.path
        if context.method_name == "__call__" and len(path) >= 1 and path[0] not in order:
            order.append(path[0])
        return next_fn(*args, **kwargs)

    with nn.intercept_methods(record):
        template = _template(module, shape)
    holding = {p[1] for p in _flat(template)}
    return tuple(b for b in order if b in holding)


def _check_against(
    given: Mapping[Path, Any], template: Mapping[Path, Any], *, skip: Sequence[str], what: str
) -> None:
    """ValueError naming missing, unexpected and mis-shaped variables outside `skip` layers."""
    missing = sorted(
        "/".join(p) for p in template if p not in given and not _under(_layer(p), skip)
    )
    unexpected = sorted(
        "/".join(p) for p in given if p not in template and not _under(_layer(p), skip)
    )
    mismatched = sorted(
        f"{'/'.join(p)}: given {tuple(np.shape(given[p]))}, expected {tuple(template[p].shape)}"
        for p in template
        if p in given and not _under(_layer(p), skip) and np.shape(given[p]) != template[p].shape
    )
    problems = []
    if missing:
        problems.append(f"missing ({len(missing)}): {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected ({len(unexpected)}): {_few(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {_few(mismatched)}")
    if problems:
        raise ValueError(f"{what}: " + "; ".join(problems))
