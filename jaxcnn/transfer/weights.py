"""Pretrained models from weight files and jaxcnn workdirs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import linen as nn

from .. import models
from ..anatomy import _check_against, _flat, _head_axes, _head_layers, _resolve, _template
from ..training.finetune import _read_source
from .heads import replace_head

__all__ = ["load_pretrained"]


def load_pretrained(
    name: str,
    source: Any,
    *,
    num_classes: int | None = None,
    rng: jax.Array | None = None,
    rename: Sequence[tuple[str, str]] = (),
    **model_kwargs,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its pretrained variables, from a weight file or a jaxcnn workdir.

    Args:
      name: the registry name of the architecture (`jaxcnn.list_models()`).
      source: a weight file (any of `convert.load_weights`' formats: PyTorch's
        ``.pth``/``.pt``/``.th``/``.tar``/``.bin``/``.ckpt`` read with
        ``torch.load(weights_only=True)`` and unwrapped, ``.safetensors``, ``.npz``), a jaxcnn
        workdir (`jaxcnn.training.load_run`), or an in-memory state dict or variables dict.
        State dicts may use torchvision/timm names, carry wrapper prefixes (``module.``,
        ``model.``, ``_orig_mod.``) or come from a third-party port the registry knows
        (`convert.adapt_state_dict`); the returned model gets the options such a port
        needs (e.g. ``shortcut_pad="both"`` for akamaster/pytorch_resnet_cifar10's CIFAR
        ResNets).
      num_classes: the classes wanted; None keeps the source's. A different count needs
        `rng`: the heads are then replaced (`replace_head`).
      rng: key for new heads' initialisation.
      rename: ``(regex, replacement)`` rules for a state dict's keys
        (`convert.from_torch`).
      **model_kwargs: the model's options the weights were made with (e.g.
        ``aux_logits=True`` for torchvision's GoogLeNet file, which holds its auxiliary
        classifiers).

    Returns:
      (model, variables): ``create_model(name, num_classes=..., **options)`` and its
      variables, ready for ``model.apply(variables, x, train=False)``.

    Raises:
      ValueError: the weights are for another architecture (naming the missing, unexpected
        and mis-shaped keys), or for another class count and no `rng` was given.
      FileNotFoundError: no such file or workdir.
    """
    src_name, variables, desc, needed = _read_source(source, name, model_kwargs, rename)
    if src_name is not None and src_name != name:
        raise ValueError(
            f"load_pretrained: {desc} holds a {src_name}, not a {name} (mismatched architecture)"
        )
    # Options the source needs (a third-party port's shortcut layout, a workdir's own).
    model_kwargs = {**needed, **model_kwargs}
    module, shape = _resolve(name, None, model_kwargs)
    src_classes = _classes_of(variables, module, shape)
    if src_classes is None:
        raise ValueError(f"load_pretrained: {desc} has no classifier head for {name}")
    src_module = module.clone(num_classes=src_classes)
    _check_against(
        _flat(variables),
        _flat(_template(src_module, shape)),
        skip=(),
        what=f"load_pretrained: {desc} does not fit {name}",
    )
    if num_classes is None or num_classes == src_classes:
        return src_module, variables
    if rng is None:
        heads = _head_layers(module, shape)
        raise ValueError(
            f"load_pretrained: {desc} has {src_classes}-class heads ({', '.join(heads)}) but "
            f"num_classes={num_classes}: pass rng= to replace them with new ones "
            f"(transfer.replace_head), or num_classes={src_classes} to keep them"
        )
    new = replace_head(name, variables, num_classes, rng=rng, **model_kwargs)
    return models.create_model(name, num_classes=num_classes, **model_kwargs), new


def _classes_of(variables: Mapping, module: nn.Module, shape: tuple[int, ...]) -> int | None:
    """The class count `variables`' heads are sized for (None if they have no heads)."""
    flat = _flat(variables)
    counts = {
        int(np.shape(flat[p])[axis])
        for p, axis in _head_axes(module, shape).items()
        if p in flat and len(np.shape(flat[p])) > axis
    }
    if len(counts) > 1:
        raise ValueError(f"the heads of the given variables disagree on the class count: {counts}")
    return counts.pop() if counts else None
