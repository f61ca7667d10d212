"""Reading and writing weight files: .safetensors, .npz and PyTorch's containers.

Nothing here unpickles code: .npz is read with `allow_pickle=False` and .pth only through
`torch.load(weights_only=True)`, which restores tensors and plain containers and refuses
anything else. safetensors and npz need no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .mapping import check_real, torch_tensor_to_numpy

# PyTorch's own containers (zip archives of pickled tensors, whatever the suffix says).
TORCH_SUFFIXES = (".pth", ".pt", ".th", ".tar", ".pth.tar", ".bin", ".ckpt")
SUFFIXES = (".safetensors", ".npz", *TORCH_SUFFIXES)
# Keys under which training scripts nest the weights, tried in this order at every level.
WRAPPERS = ("state_dict", "model_state_dict", "model", "net", "module", "network", "ema")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".pth.tar" if name.endswith(".pth.tar") else path.suffix.lower()


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A state dict (key -> numpy array) from a weight file.

    Accepted files:

    * ``.safetensors``; ``.npz`` (read with ``allow_pickle=False``);
    * PyTorch's containers, whatever the suffix says: ``.pth``, ``.pt``, ``.th``, ``.tar``,
      ``.pth.tar``, ``.bin``, ``.ckpt`` (a Lightning checkpoint), read with
      ``torch.load(weights_only=True)``, which restores tensors and plain containers and
      refuses code.

    A checkpoint that nests the weights is unwrapped, level by level, through the usual keys:
    ``state_dict`` (also a Lightning checkpoint's), ``model_state_dict``, ``model``, ``net``,
    ``module``, ``network``, ``ema``; what sits beside them (epoch, optimizer, best accuracy)
    is left out. Key prefixes that wrappers add (``module.`` of DataParallel, ``model.`` of
    Lightning, ``_orig_mod.`` of torch.compile) are kept here and removed by
    `jaxcnn.convert.from_torch`, which knows which keys the model has.

    Raises:
      FileNotFoundError: no such file.
      ValueError: an unknown suffix, or a file that holds no state dict (the message lists
        the top-level keys it found).
      TypeError: a tensor of a complex dtype (weights are real; the message names its key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_weights: no such file: {path}")
    suffix = _suffix(path)
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return _real(load_file(str(path)), path)
    if suffix == ".npz":
        try:
            f = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"load_weights: {path} is not a readable .npz archive ({e})") from e
        if not isinstance(f, np.lib.npyio.NpzFile):  # a single .npy array, renamed
            raise ValueError(
                f"load_weights: {path} holds one {type(f).__name__} (an .npy file?), not an "
                ".npz archive of named arrays"
            )
        with f:
            return _real({k: f[k] for k in f.files}, path)
    if suffix in TORCH_SUFFIXES:
        import pickle

        import torch

        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"load_weights: {path} holds more than tensors (torch.load(weights_only=True) "
                f"refused it: {str(e).splitlines()[0]}). jaxcnn never unpickles code; re-save "
                "the weights alone with torch.save(model.state_dict(), path), or as "
                ".safetensors."
            ) from e
        return _state_dict_from_torch_object(obj, path)
    raise ValueError(
        f"load_weights: unknown weight file type {suffix!r} for {path}; expected one of "
        f"{', '.join(SUFFIXES)}"
    )


def _real(state_dict: Mapping, path) -> dict:
    """`state_dict` as a dict; a TypeError naming the first complex tensor."""
    return {k: check_real(str(k), v, f"load_weights: {path}") for k, v in state_dict.items()}


def _is_state_dict(obj) -> bool:
    import torch

    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _state_dict_from_torch_object(obj, path) -> dict[str, np.ndarray]:
    top = obj
    for _ in range(4):  # {"model": {"state_dict": {...}}} and the like
        if not isinstance(obj, Mapping) or _is_state_dict(obj):
            break
        inner = next((obj[w] for w in WRAPPERS if isinstance(obj.get(w), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if _is_state_dict(obj):
        _real(obj, path)  # before a torch complex32, which numpy cannot hold, fails to convert
        return {str(k): torch_tensor_to_numpy(v) for k, v in obj.items()}
    if isinstance(top, Mapping):
        keys = ", ".join(repr(k) for k in list(top)[:12]) + (", ..." if len(top) > 12 else "")
        found = f"a mapping with top-level keys {keys}"
    else:
        found = type(top).__name__
    raise ValueError(
        f"load_weights: {path} holds no state dict (a mapping of names to tensors) at the top "
        f"or under any of {', '.join(WRAPPERS)}; found {found}"
    )


def save_weights(path: str | os.PathLike, state_dict: Mapping[str, np.ndarray]) -> None:
    """Write a state dict (key -> array) as ``.safetensors`` or ``.npz``, atomically.

    The file is written next to its destination and renamed into place, so an interrupted
    save never leaves a truncated file where a good one was.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    # ascontiguousarray turns 0-d arrays into (1,): keep each array's own shape (BatchNorm's
    # num_batches_tracked is a scalar).
    arrays = {
        k: np.ascontiguousarray(np.asarray(v)).reshape(np.shape(v)) for k, v in state_dict.items()
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        if suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file(arrays, str(tmp))
        elif suffix == ".npz":
            with open(tmp, "wb") as f:
                # allow_pickle spelled out (its default), so no key of **arrays can fill it.
                np.savez(f, allow_pickle=True, **arrays)
        else:
            raise ValueError(
                f"save_weights: unsupported suffix {suffix!r} for {path}; use .safetensors or .npz"
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
