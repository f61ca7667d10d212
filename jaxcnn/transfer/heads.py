"""New classifier heads for trained variables: torchvision's ``model.fc = nn.Linear(...)``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from ..anatomy import (
    _check_against,
    _flat,
    _head_layers,
    _layer,
    _resolve,
    _template,
    _under,
    _unflat,
)

__all__ = ["replace_head"]


def _fresh(module: nn.Module, shape: tuple[int, ...], rng: jax.Array, layers: Sequence[str]):
    """The variables under `layers` of a fresh `module.init(rng, ...)`.

    Only those leaves are outputs of the jitted init, so XLA drops the rest of the
    initialisation (and the forward pass) as dead code: cheap even for VGG's 100M-parameter
    first fully connected layer. The values equal those of the full init with `rng`.
    """
    x = jnp.zeros((1, *shape), jnp.float32)

    def init(key):
        flat = _flat(module.init(key, x, train=False))
        return {"/".join(p): v for p, v in flat.items() if _under(_layer(p), layers)}

    out = jax.jit(init)(rng)
    return {tuple(k.split("/")): v for k, v in out.items()}


def replace_head(
    name: str | nn.Module,
    variables: Mapping[str, Any],
    num_classes: int,
    *,
    rng: jax.Array,
    input_shape: Sequence[int] | None = None,
    **model_kwargs,
) -> dict[str, Any]:
    """`variables` with new, freshly initialised heads for `num_classes` classes.

    The classifier and the auxiliary classifiers' last layers (`head_layers`) are replaced
    by the initialisation ``create_model(name, num_classes=num_classes).init(rng, ...)``
    gives them; every other variable (parameters and BatchNorm statistics) is kept as it is
    (the same arrays). This is torchvision's ``model.fc = nn.Linear(512, num_classes)``
    (and ``model.AuxLogits.fc = ...``) for jaxcnn variables.

    Args:
      name: the registry name of the model `variables` belong to (or the linen Module).
      variables: {"params": ..., "batch_stats": ...?} of that model, heads of any size.
      num_classes: the new number of classes.
      rng: the key of the new heads' initialisation.
      input_shape: (H, W, C); default the registry's design size (required for a Module).
      **model_kwargs: the model's options (e.g. ``aux_logits=True``).

    Returns:
      New variables for the model with `num_classes` outputs.

    Raises:
      ValueError: `variables` are not those of this architecture (naming the missing,
        unexpected and mis-shaped variables outside the heads), or a bad `num_classes`.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"replace_head: num_classes must be a positive int; got {num_classes!r}")
    if isinstance(name, str):
        module, shape = _resolve(name, input_shape, {**model_kwargs, "num_classes": num_classes})
    else:
        module, shape = _resolve(name, input_shape, model_kwargs)
        module = module.clone(num_classes=num_classes)
    heads = _head_layers(module, shape)
    template = _flat(_template(module, shape))
    given = _flat(variables)
    label = name if isinstance(name, str) else type(name).__name__
    _check_against(given, template, skip=heads, what=f"replace_head: variables do not fit {label}")
    fresh = _fresh(module, shape, rng, heads)
    return _unflat({p: fresh[p] if _under(_layer(p), heads) else given[p] for p in template})
