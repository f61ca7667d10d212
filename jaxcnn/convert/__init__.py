"""Weights between PyTorch (torchvision, timm) and jaxcnn, and weight files.

variables = convert.from_torch("resnet50", state_dict)   # torchvision key names
state_dict = convert.to_torch("resnet50", variables)     # exact inverse, numpy values
state_dict = convert.load_weights("resnet50.pth")        # .safetensors / .npz / .pth
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .mapping import _flatten, _torch_key, state_dict_to_variables, variables_to_state_dict
from .weights import load_weights, save_weights

__all__ = [
    "adapt_state_dict",
    "from_torch",
    "load_weights",
    "save_weights",
    "template",
    "to_torch",
]


def template(name: str, **model_kwargs) -> dict[str, Any]:
    """Shapes and dtypes of `name`'s variables (`jax.ShapeDtypeStruct`s), computed abstractly."""
    from ..models import create_model, get_spec

    spec = get_spec(name)
    model = create_model(name, **model_kwargs)
    h, w, c = spec.input_size
    x = jax.ShapeDtypeStruct((1, h, w, c), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def from_torch(
    name: str,
    state_dict: Mapping[str, Any],
    *,
    rename: Sequence[tuple[str, str]] = (),
    **model_kwargs,
) -> dict[str, Any]:
    """jaxcnn variables for model `name` from a torchvision (or timm) state dict.

    Keys are matched after three steps:

    1. wrapper prefixes that no key of the model has are stripped, as often as they nest:
       ``module.`` (DataParallel), ``_orig_mod.`` (torch.compile), ``model.`` (Lightning);
    2. a checkpoint of a known third-party port (`jaxcnn.models.CheckpointDialect`, e.g. the
       CIFAR ResNets of akamaster/pytorch_resnet_cifar10) is renamed to jaxcnn's keys; if
       the port also needs model options (its shortcut layout), they must be among
       `model_kwargs`, or this raises saying which (`jaxcnn.transfer.load_pretrained` sets
       them itself);
    3. `rename`, your own ``(regex, replacement)`` rules, in order (`re.sub` on each key).

    BatchNorm ``num_batches_tracked`` counters that the file lacks (files older than
    PyTorch 0.4.1) are filled with 0, as PyTorch's own loader does, with a warning.

    Args:
      name: a registered model name.
      state_dict: torch key -> tensor or array, e.g. `torchvision.models.resnet50().state_dict()`
        or `convert.load_weights(path)`.
      rename: ``(pattern, replacement)`` rules applied to the keys after steps 1 and 2.
      **model_kwargs: options of `create_model` that the weights were made for (e.g.
        `num_classes=10`, `aux_logits=True`).

    Returns:
      {"params": ..., "batch_stats": ...} as numpy arrays, ready for `model.apply`.

    Raises:
      ValueError: naming missing and unexpected keys (each with its closest counterpart)
        and shape mismatches (e.g. a checkpoint for another `num_classes`).
    """
    shapes = template(name, **model_kwargs)
    state_dict, _ = _adapt(name, state_dict, shapes, rename, model_kwargs)
    return state_dict_to_variables(state_dict, shapes, model=name)


def adapt_state_dict(
    name: str,
    state_dict: Mapping[str, Any],
    *,
    rename: Sequence[tuple[str, str]] = (),
    model_kwargs: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The state dict with jaxcnn's key names, and the model options it needs.

    Steps 1-3 of `from_torch` (wrapper prefixes, known third-party ports, `rename`), without
    matching the result against the model. A port whose model options are missing from
    `model_kwargs` (None: not checked) raises.

    Returns:
      (state dict, model options): the options the recognised port needs ({} if none), to
      pass to `create_model` and `from_torch`.
    """
    return _adapt(name, state_dict, template(name, **(model_kwargs or {})), rename, model_kwargs)


def _adapt(name, state_dict, shapes, rename, model_kwargs):
    from ..models import get_spec

    spec = get_spec(name)
    expected = {_torch_key(c, p) for c, p in _flatten(shapes)}
    keys = {str(k): k for k in state_dict}
    renamed = _strip_wrapper_prefixes(list(keys), expected)
    needed: dict[str, Any] = {}
    for dialect in spec.checkpoint_dialects:
        if dialect.signature in renamed.values() and dialect.signature not in expected:
            renamed = {k: _apply_rules(v, dialect.rename) for k, v in renamed.items()}
            needed = dict(dialect.model_kwargs)
            wrong = {
                k: v
                for k, v in needed.items()
                if model_kwargs is not None and model_kwargs.get(k) != v
            }
            if wrong:
                opts = ", ".join(f"{k}={v!r}" for k, v in wrong.items())
                raise ValueError(
                    f"{name}: this checkpoint comes from {dialect.name}, whose weights give its "
                    f"outputs only with {opts}: create the model with create_model({name!r}, "
                    f"{opts}) and pass the same to from_torch, or load it in one call with "
                    "jaxcnn.transfer.load_pretrained, which does both"
                )
            break
    if rename:
        renamed = {k: _apply_rules(v, rename) for k, v in renamed.items()}
    out: dict[str, Any] = {}
    for old, new in renamed.items():
        if new in out:
            raise ValueError(
                f"{name}: two checkpoint keys map to {new!r} after renaming (one of them "
                f"{old!r}); make the rename rules more specific"
            )
        out[new] = state_dict[keys[old]]
    return out, needed


_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.")


def _strip_wrapper_prefixes(keys: list[str], expected: set[str]) -> dict[str, str]:
    """{key: key without its leading wrapper prefixes}, for prefixes no model key has; kept
    as they are unless that makes at least one key a model key."""
    prefixes = [p for p in _WRAPPER_PREFIXES if not any(e.startswith(p) for e in expected)]

    def strip(key: str) -> str:
        while True:
            p = next((p for p in prefixes if key.startswith(p)), None)
            if p is None:
                return key
            key = key[len(p) :]

    stripped = {k: strip(k) for k in keys}
    if any(v != k and v in expected for k, v in stripped.items()):
        return stripped
    return {k: k for k in keys}


def _apply_rules(key: str, rules: Sequence[tuple[str, str]]) -> str:
    for pattern, replacement in rules:
        key = re.sub(pattern, replacement, key)
    return key


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
