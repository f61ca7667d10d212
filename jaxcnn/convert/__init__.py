"""Weights between PyTorch (torchvision, timm) and jaxcnn, and weight files.

variables = convert.from_torch("resnet50", state_dict)   # torchvision key names
state_dict = convert.to_torch("resnet50", variables)     # exact inverse, numpy values
state_dict = convert.load_weights("resnet50.pth")        # .safetensors / .npz / .pth
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .mapping import state_dict_to_variables, variables_to_state_dict
from .weights import load_weights, save_weights

__all__ = ["from_torch", "load_weights", "save_weights", "template", "to_torch"]


def template(name: str, **model_kwargs) -> dict[str, Any]:
    """Shapes and dtypes of `name`'s variables (`jax.ShapeDtypeStruct`s), computed abstractly."""
    from ..models import create_model, get_spec

    spec = get_spec(name)
    model = create_model(name, **model_kwargs)
    h, w, c = spec.input_size
    x = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def from_torch(name: str, state_dict: Mapping[str, Any], **model_kwargs) -> dict[str, Any]:
    """jaxcnn variables for model `name` from a torchvision (or timm) state dict.

    Args:
      name: a registered model name.
      state_dict: torch key -> tensor or array, e.g. `torchvision.models.resnet50().state_dict()`
        or `convert.load_weights(path)`.
      **model_kwargs: options of `create_model` that the weights were made for (e.g.
        `num_classes=10`, `aux_logits=True`).

    Returns:
      {"params": ..., "batch_stats": ...} as numpy arrays, ready for `model.apply`.

    Raises:
      ValueError: naming missing or unexpected keys and shape mismatches (e.g. a checkpoint
        for another `num_classes`).
    """
    return state_dict_to_variables(state_dict, template(name, **model_kwargs), model=name)


def to_torch(name: str, variables: Mapping[str, Any], **model_kwargs) -> dict[str, np.ndarray]:
    """The torchvision (or timm) state dict of `variables`: numpy arrays, torch key names.

    The exact inverse of `from_torch`: `from_torch(name, to_torch(name, v))` equals `v`.
    Load it into torch with `{k: torch.from_numpy(v) for k, v in sd.items()}`.

    Args:
      name: the registered model `variables` belong to.
      variables: {"params": ..., "batch_stats": ...?} of that model.
      **model_kwargs: the `create_model` options the variables were made with.

    Raises:
      ValueError: if `variables` are not those of `name` (the same report as `from_torch`).
    """
    state_dict = variables_to_state_dict(variables)
    # Checked by mapping back against the model's own structure.
    state_dict_to_variables(state_dict, template(name, **model_kwargs), model=name)
    return state_dict
