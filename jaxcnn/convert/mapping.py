"""torchvision / timm state dicts <-> jaxcnn variables, by one naming rule.

Every jaxcnn model names its layers by their dotted path in the reference PyTorch model
(`jaxcnn.layers`), so a torch key is the layer path plus a leaf name:

    params/<path>/kernel   <-> <path>.weight     conv: (O, I, kh, kw) <-> (kh, kw, I, O)
                                                 linear: (out, in) <-> (in, out)
    params/<path>/scale    <-> <path>.weight     (BatchNorm)
    params/<path>/bias     <-> <path>.bias
    batch_stats/<path>/mean                <-> <path>.running_mean
    batch_stats/<path>/var                 <-> <path>.running_var
    batch_stats/<path>/num_batches_tracked <-> <path>.num_batches_tracked

No per-model tables: adding a model with the right layer names makes it convertible.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

_PARAM_LEAF = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_STAT_LEAF = {"mean": "running_mean", "var": "running_var"}


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
    *layer, leaf = path
    if collection == "params":
        leaf = _PARAM_LEAF.get(leaf, leaf)
    elif collection == "batch_stats":
        leaf = _STAT_LEAF.get(leaf, leaf)
    else:
        raise ValueError(f"cannot map variable collection {collection!r} to torch keys")
    return ".".join([*layer, leaf])


def _to_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def _from_torch_layout(leaf: str, value: np.ndarray) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return value.transpose(2, 3, 1, 0)
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def _flatten(variables: Mapping[str, Any]) -> dict[tuple[str, tuple[str, ...]], Any]:
    """{(collection, path): leaf} of a variables dict."""
    out = {}
    for collection, tree in variables.items():
        flat = jax.tree_util.tree_flatten_with_path(tree)[0]
        for keypath, leaf in flat:
            out[(collection, tuple(str(k.key) for k in keypath))] = leaf
    return out


def _unflatten(flat: dict[tuple[str, tuple[str, ...]], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (collection, path), leaf in flat.items():
        node = out.setdefault(collection, {})
        for p in path[:-1]:
            node = node.setdefault(p, {})
        node[path[-1]] = leaf
    return out


def variables_to_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """jaxcnn variables -> a torch-style state dict of numpy arrays (PyTorch layouts)."""
    out = {}
    for (collection, path), leaf in _flatten(variables).items():
        value = np.asarray(leaf)
        if path[-1] == "num_batches_tracked":
            value = value.astype(np.int64)  # torch keeps it as int64
        out[_torch_key(collection, path)] = _to_torch_layout(path[-1], value)
    return out


def state_dict_to_variables(
    state_dict: Mapping[str, Any], template: Mapping[str, Any], *, model: str = "model"
) -> dict[str, Any]:
    """A torch-style state dict -> variables with the structure, shapes and dtypes of `template`.

    Args:
      state_dict: key -> array-like (numpy arrays or torch tensors on the CPU).
      template: the model's variables (or their `jax.ShapeDtypeStruct`s, e.g. from
        `jax.eval_shape(model.init, ...)`), which fix which keys are expected.
      model: name used in error messages.

    Raises:
      ValueError: listing missing keys, unexpected keys and shape mismatches.
    """
    expected = {}
    for (collection, path), leaf in _flatten(template).items():
        expected[_torch_key(collection, path)] = (collection, path, leaf)
    given = set(state_dict)
    missing = sorted(set(expected) - given)
    unexpected = sorted(given - set(expected))
    # Files from before PyTorch 0.4.1 have no BatchNorm counters; torch's own loader accepts
    # them, and evaluation never reads them.
    counters = [k for k in missing if k.endswith(".num_batches_tracked")]
    missing = [k for k in missing if k not in counters]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_with_closest(missing, unexpected)}")
    if unexpected:
        problems.append(
            f"unexpected keys ({len(unexpected)}): {_with_closest(unexpected, missing)}"
        )
    flat = {}
    mismatched = []
    for key, (collection, path, leaf) in expected.items():
        if key in counters:
            flat[(collection, path)] = np.zeros(leaf.shape, leaf.dtype)
            continue
        if key not in state_dict:
            continue
        raw = check_real(key, state_dict[key], model)  # complex: an error, never a cast
        value = check_real(key, _from_torch_layout(path[-1], _to_numpy(raw)), model)
        if tuple(value.shape) != tuple(leaf.shape):
            torch_shape = tuple(_to_numpy(state_dict[key]).shape)
            want = tuple(_to_torch_layout(path[-1], np.empty(leaf.shape, np.int8)).shape)
            mismatched.append(f"{key}: checkpoint {torch_shape}, model expects {want}")
            continue
        # A copy: never alias the caller's (torch) storage, which its optimiser may update.
        flat[(collection, path)] = np.array(value, dtype=leaf.dtype, copy=True)
    if mismatched:
        problems.append(
            f"shape mismatches ({len(mismatched)}): {_few(mismatched)} (weights made for other "
            "model options? pass them, e.g. num_classes=10)"
        )
    if problems:
        raise ValueError(
            f"{model}: the state dict does not match the model: " + "; ".join(problems)
        )
    if counters:
        warnings.warn(
            f"{model}: the state dict has no BatchNorm num_batches_tracked counters "
            f"({len(counters)} layers; files from before PyTorch 0.4.1): set to 0, as "
            "PyTorch's loader does. Evaluation does not use them.",
            UserWarning,
            stacklevel=3,
        )
    return _unflatten(flat)


def _with_closest(keys: list[str], candidates: list[str], n: int = 8) -> str:
    """`keys`, each with its most similar key among `candidates` where one is close."""
    shown = []
    for k in keys[:n]:
        near = difflib.get_close_matches(k, candidates, n=1, cutoff=0.6)
        shown.append(f"{k} (closest: {near[0]})" if near else k)
    return ", ".join(shown) + (f", ... ({len(keys) - n} more)" if len(keys) > n else "")


def _few(items, n: int = 8) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... ({len(items) - n} more)" if len(items) > n else "")


def _to_numpy(value) -> np.ndarray:
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.startswith("torch"):
        return torch_tensor_to_numpy(value)
    return np.asarray(value)


def check_real(key: str, value, where: str):
    """`value` (an array or tensor), unless its dtype is complex: a TypeError naming `key`.

    Weights are real; casting complex values to the model's float dtype (what numpy does,
    with only a ComplexWarning) would silently drop their imaginary part.
    """
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return value
    is_complex = getattr(dtype, "is_complex", None)  # torch.dtype
    if not isinstance(is_complex, bool):
        try:
            is_complex = np.issubdtype(np.dtype(dtype), np.complexfloating)
        except TypeError:  # a dtype numpy does not know (ml_dtypes' are known): not complex
            is_complex = False
    if is_complex:
        raise TypeError(
            f"{where}: {key!r} holds complex values (dtype {dtype}); weights must be real, and "
            "converting would drop the imaginary part. Convert the tensor first (e.g. "
            "t.real or t.abs()) if that is what you mean."
        )
    return value


def torch_tensor_to_numpy(t) -> np.ndarray:
    """A CPU torch tensor as numpy, bfloat16 included (numpy has no bfloat16; ml_dtypes has)."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()
