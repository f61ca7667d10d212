"""Preparing TFDS's MNIST-format and CIFAR data sets without TensorFlow.

TFDS reads prepared ArrayRecord files without TensorFlow, but its builders for MNIST,
Fashion-MNIST, KMNIST, CIFAR-10 and CIFAR-100 need it to prepare them: TFDS extracts the
downloaded archives through ``tf.io.gfile``, the builders read the extracted files with
``tf.io.gfile``, and they hand TFDS images as arrays, which TFDS encodes with
``tf.image.encode_png``. Downloading itself (and checking the downloads' checksums) needs no
TensorFlow.

`prepare_without_tensorflow` prepares these data sets with TFDS's own builder instance, the
one ``tfds.builder(name, data_dir=..., file_format="array_record")`` returns, so name,
version, features, splits, download URLs, checksums, ``dataset_info.json`` and the folder
are TFDS's. Only the builder's ``_split_generators`` is replaced, on that instance and for
the length of ``download_and_prepare``: the replacement downloads the same files (without
extracting them), reads them with Python's gzip/tarfile and numpy, and yields the same
examples as TFDS's ``_generate_examples`` with each image PNG-encoded by Pillow. Patching
the instance, rather than defining a subclass, keeps the builder's class, module
(``dataset_info.json`` records it) and registration untouched.

What is identical to the data set TFDS prepares with TensorFlow: the example keys (TFDS's
running index, which also fixes the order of the records in the files), the labels, the
CIFAR ids and label names, the decoded pixels (PNG is lossless), the number of examples
per split and the downloads. What is not: the PNG bytes (Pillow's and TensorFlow's
encoders may choose other filters or compression), hence the byte sizes of the records
and files and the sizes recorded in ``dataset_info.json``.

Without TensorFlow installed this path is taken for the builder versions whose generator
it reproduces (`SUPPORTED`); with TensorFlow, TFDS prepares as usual.
"""

from __future__ import annotations

import importlib.util
import io
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["SUPPORTED", "prepare_without_tensorflow", "tensorflow_installed"]

# TFDS name -> the builder version whose `_generate_examples` the replacement reproduces
# (tensorflow_datasets/image_classification/mnist.py and cifar.py). Another version may
# generate other examples, so it is left to TFDS.
SUPPORTED: dict[str, str] = {
    "mnist": "3.0.1",
    "fashion_mnist": "3.0.1",
    "kmnist": "3.0.1",
    "cifar10": "3.0.2",
    "cifar100": "3.0.2",
}

# The published files of the MNIST format, as TFDS's MNIST builder names them.
_MNIST_FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_MNIST_SPLITS = {"train": 60_000, "test": 10_000}  # TFDS's num_examples per split
_MNIST_SIZE = 28
_CIFAR_SIZE = 32


def tensorflow_installed() -> bool:
    """Whether TensorFlow can be imported (found, not imported: importing it is slow)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # a module in sys.modules without a spec
        return "tensorflow" in sys.modules


def prepare_without_tensorflow(builder) -> bool:
    """Prepare a TFDS MNIST-format or CIFAR builder without TensorFlow, if that applies.

    It applies when TensorFlow is not installed and ``builder`` is TFDS's own builder of a
    data set and version in `SUPPORTED`. The builder then runs its ``download_and_prepare``
    with TF-free example generation (see the module docstring); its downloads, checksum
    checks and writing are TFDS's.

    Args:
      builder: a ``tfds.core.DatasetBuilder``, not yet prepared, e.g. from
        ``tfds.builder("mnist", data_dir=..., file_format="array_record")``.

    Returns:
      True when it prepared the data set; False when it does not apply (the caller then
      prepares with ``builder.download_and_prepare()``).
    """
    if tensorflow_installed():
        return False
    split_generators = _split_generators_for(builder)
    if split_generators is None:
        return False
    # An instance attribute shadows the class's method for this builder only.
    builder._split_generators = types.MethodType(split_generators, builder)
    try:
        builder.download_and_prepare()
    finally:
        del builder._split_generators
    return True


def _split_generators_for(builder):
    """The TF-free `_split_generators` for ``builder``, or None for a builder it does not know."""
    name = getattr(builder, "name", None)
    if name is None or SUPPORTED.get(name) != str(getattr(builder, "version", "")):
        return None
    from tensorflow_datasets.image_classification import cifar, mnist

    # The exact classes: a subclass (EMNIST is one of MNIST) may download other files.
    if type(builder) in (mnist.MNIST, mnist.FashionMNIST, mnist.KMNIST):
        return _mnist_split_generators
    if type(builder) in (cifar.Cifar10, cifar.Cifar100):
        return _cifar_split_generators
    return None


def _png(image: np.ndarray) -> bytes:
    """uint8 (H, W, 1) or (H, W, 3) -> PNG bytes (grey or RGB, 8 bits per channel)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buffer, format="PNG")
    return buffer.getvalue()


def _read_bytes(path) -> bytes:
    from etils import epath

    with epath.Path(path).open("rb") as f:
        return f.read()


# ----------------------------------------------------------------------------- MNIST format


def _mnist_split_generators(builder, dl_manager) -> dict[str, Iterator]:
    """TFDS's MNIST `_split_generators`, with the gzip files read here instead of extracted."""
    from urllib.parse import urljoin

    files = dl_manager.download({k: urljoin(builder.URL, v) for k, v in _MNIST_FILES.items()})
    return {
        split: mnist_examples(files[f"{split}_data"], files[f"{split}_labels"], n)
        for split, n in _MNIST_SPLITS.items()
    }


def _idx(data: bytes, what: str, ndim: int) -> np.ndarray:
    """An idx array (big-endian header: 0, 0, type 0x08 = uint8, ndim; ndim int32 sizes)."""
    header = 4 + 4 * ndim
    if len(data) < header or data[:4] != bytes((0, 0, 8, ndim)):
        raise ValueError(
            f"{what}: not an idx file of uint8 with {ndim} dimensions "
            f"(header {data[:4].hex() or 'empty'}, expected 000008{ndim:02x})"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    size = int(np.prod(shape))
    if len(data) - header < size:
        raise ValueError(f"{what}: {len(data) - header} bytes of data for shape {shape}")
    return np.frombuffer(data, np.uint8, count=size, offset=header).reshape(shape)


def mnist_examples(
    images_path, labels_path, num_examples: int
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The examples of one split of an MNIST-format data set, as TFDS's MNIST builder makes them.

    TFDS's generator skips the idx headers and takes the first ``num_examples`` records
    (the published files hold exactly that many); this one reads the headers, checks them,
    and takes the first ``min(count, num_examples)``.

    Args:
      images_path: the gzip-compressed idx file of uint8 images, (N, 28, 28).
      labels_path: the gzip-compressed idx file of uint8 labels, (N,).
      num_examples: the most examples to take.

    Yields:
      ``(index, {"image": PNG bytes of a 28x28 grey image, "label": int})``, index from 0.
    """
    import gzip

    images = _idx(gzip.decompress(_read_bytes(images_path)), str(images_path), 3)
    labels = _idx(gzip.decompress(_read_bytes(labels_path)), str(labels_path), 1)
    if images.shape[1:] != (_MNIST_SIZE, _MNIST_SIZE):
        raise ValueError(f"{images_path}: images must be 28x28; got {images.shape[1:]}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels_path}: {labels.shape[0]} labels for {images.shape[0]} images")
    for index in range(min(images.shape[0], num_examples)):
        yield index, {"image": _png(images[index, :, :, None]), "label": int(labels[index])}


# ----------------------------------------------------------------------------- CIFAR


def _cifar_split_generators(builder, dl_manager) -> dict[str, Iterator]:
    """TFDS's CIFAR `_split_generators`, with the archive's files read here, not extracted."""
    info = builder._cifar_info
    archive = dl_manager.download(info.url)
    wanted = [*info.label_files, *info.train_files, *info.test_files]
    members = _tar_members(archive, {os.path.normpath(info.prefix + f): f for f in wanted})
    for key, label_file in zip(info.label_keys, info.label_files, strict=True):
        # As TFDS reads them: text mode (universal newlines), one name a line, blanks dropped.
        text = io.TextIOWrapper(io.BytesIO(members.pop(label_file)), encoding="utf-8").read()
        builder.info.features[key].names = [name for name in text.split("\n") if name]
    return {
        "train": cifar_examples(
            "train_", [(f, members) for f in info.train_files], info.label_keys
        ),
        "test": cifar_examples("test_", [(f, members) for f in info.test_files], info.label_keys),
    }


def _tar_members(archive, wanted: dict[str, str]) -> dict[str, bytes]:
    """The contents of the wanted regular files of a (compressed) tar archive, in one pass.

    Args:
      archive: path of the archive.
      wanted: normalised member path -> the key to return its bytes under.
    """
    import tarfile

    from etils import epath

    found: dict[str, bytes] = {}
    with epath.Path(archive).open("rb") as f, tarfile.open(fileobj=f, mode="r|*") as tar:
        for member in tar:
            key = wanted.get(os.path.normpath(member.name))
            if key is not None and member.isfile():
                data = tar.extractfile(member)
                assert data is not None  # None only for members that are not regular files
                found[key] = data.read()
    missing = sorted(set(wanted) - {p for p, k in wanted.items() if k in found})
    if missing:
        raise ValueError(f"{archive}: the archive lacks {missing}")
    return found


def cifar_examples(
    split_prefix: str, files: list, label_keys: list[str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The examples of one CIFAR split, as TFDS's CIFAR builder makes them.

    Each record of a CIFAR binary file is one byte per label key, then 3,072 bytes of
    image in (C, H, W) order (32x32, RGB); the index runs on across the files.

    Args:
      split_prefix: "train_" or "test_", the prefix of the ids.
      files: the split's files in order, each a path, or a pair ``(key, members)`` whose
        bytes are ``members.pop(key)`` (read when reached, then released).
      label_keys: the label features, in the order of their bytes (TFDS's ``label_keys``).

    Yields:
      ``(index, {**labels, "id": f"{split_prefix}{index:05d}", "image": PNG bytes})``.
    """
    record = len(label_keys) + 3 * _CIFAR_SIZE * _CIFAR_SIZE
    index = 0
    for file in files:
        if isinstance(file, tuple):
            name, members = file
            data = members.pop(name)
        else:
            name, data = file, _read_bytes(file)
        if len(data) % record:
            raise ValueError(
                f"{name}: {len(data)} bytes is not a whole number of {record}-byte records"
            )
        rows = np.frombuffer(data, np.uint8).reshape(-1, record)
        del data
        for row in rows:
            labels = row[: len(label_keys)]
            example: dict[str, Any] = {
                key: int(value) for key, value in zip(label_keys, labels, strict=True)
            }
            example["id"] = f"{split_prefix}{index:05d}"
            image = row[len(label_keys) :].reshape(3, _CIFAR_SIZE, _CIFAR_SIZE).transpose(1, 2, 0)
            example["image"] = _png(np.ascontiguousarray(image))
            yield index, example
            index += 1
