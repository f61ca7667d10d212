"""Reading and writing weight files: .safetensors, .npz and PyTorch's .pth / .pt.

Nothing here unpickles code: .npz is read with `allow_pickle=False` and .pth only through
`torch.load(weights_only=True)`, which restores tensors and plain containers and refuses
anything else. safetensors and npz need no torch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .mapping import torch_tensor_to_numpy

SUFFIXES = (".safetensors", ".npz", ".pth", ".pt", ".bin")


def load_weights(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A state dict (key -> numpy array) from a weight file.

    Args:
      path: a ``.safetensors``, ``.npz`` or PyTorch ``.pth`` / ``.pt`` / ``.bin`` file. A
        PyTorch checkpoint that wraps the weights as ``{"state_dict": ...}`` or
        ``{"model": ...}`` is unwrapped.

    Raises:
      FileNotFoundError: no such file.
      ValueError: an unknown suffix, or a file that holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_weights: no such file: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        return dict(load_file(str(path)))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if suffix in (".pth", ".pt", ".bin"):
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


def _state_dict_from_torch_object(obj, path) -> dict[str, np.ndarray]:
    import torch

    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            if wrapper in obj and isinstance(obj[wrapper], Mapping):
                obj = obj[wrapper]
                break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return {str(k): torch_tensor_to_numpy(v) for k, v in obj.items()}
    raise ValueError(
        f"load_weights: {path} holds no state dict (a mapping of names to tensors); got "
        f"{type(obj).__name__}"
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
                np.savez(f, **arrays)
        else:
            raise ValueError(
                f"save_weights: unsupported suffix {suffix!r} for {path}; use .safetensors or .npz"
            )
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
