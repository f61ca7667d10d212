"""Random-access image sources: ``len(src)`` and ``src[i] -> {"image", "label"}``.

A source is a read-only sequence of examples ``{"image": uint8 (H, W, C), "label": int}``
with four descriptive attributes the loader and the model need:

* ``num_classes``: labels are in ``0 .. num_classes - 1``;
* ``mean``, ``std``: per-channel normalisation of the data set, in [0, 1] units;
* ``name``: a short description ("digits/train", "tfds:cifar10/train", a folder path);
* ``image_shape``: (H, W, C), with H and W None when images differ in size;
* ``skipped``: paths of files that could not be decoded and were left out (ImageFolder).

Sources are plain picklable objects, so grain worker processes can load from them.
"""

from __future__ import annotations

import functools
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

__all__ = [
    "DIGITS_MEAN",
    "DIGITS_STD",
    "IMAGE_EXTENSIONS",
    "KNOWN_NORMALIZATION",
    "ArraySource",
    "ImageFolder",
    "Source",
    "SyntheticSource",
    "TfdsSource",
    "digits",
    "synthetic",
    "tfds_source",
]

# Normalisation of the digits train split (1,438 images at 32x32, values / 255), computed once
# by `_digits_arrays`; tests/data/test_sources.py recomputes it.
DIGITS_MEAN = (0.3054540146,)
DIGITS_STD = (0.3237176207,)

# Per-channel (mean, std) of well-known TFDS data sets, in [0, 1] units.
KNOWN_NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "imagenet2012": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "imagenette": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class Source:
    """Base class of the sources: the attributes every source has (see the module docstring)."""

    name: str = "source"
    num_classes: int = 0
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    image_shape: tuple[int | None, int | None, int] = (None, None, 0)
    skipped: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        """C, the number of channels of every image."""
        return self.image_shape[2]

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        raise NotImplementedError

    def _check_index(self, index) -> int:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int; got {type(index).__name__}")
        n = len(self)
        i = int(index)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.name} of {n} examples")
        return i % n

    def __repr__(self) -> str:
        h, w, c = self.image_shape
        shape = f"{h}x{w}x{c}" if h is not None else f"variable x {c}"
        return (
            f"{type(self).__name__}({self.name!r}, {len(self)} examples, "
            f"{self.num_classes} classes, {shape})"
        )


def _check_stats(value, name: str, channels: int, positive: bool) -> tuple[float, ...]:
    vals = tuple(float(v) for v in np.asarray(value, dtype=np.float64).reshape(-1))
    if len(vals) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}); got {value!r}")
    if positive and any(v <= 0 for v in vals):
        raise ValueError(f"{name} must be positive; got {value!r}")
    return vals


# ----------------------------------------------------------------------------- arrays


class ArraySource(Source):
    """Images and labels held in memory.

    Args:
      images: uint8 (N, H, W, C), or (N, H, W) for grey images (a channel axis is added).
      labels: integer (N,), in 0 .. num_classes - 1.
      num_classes: number of classes; None: max(labels) + 1.
      mean: per-channel mean in [0, 1] units; None: computed from ``images``.
      std: per-channel std; None: computed from ``images``.
      name: a short description.
    """

    def __init__(
        self,
        images,
        labels,
        *,
        num_classes: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        name: str = "arrays",
    ):
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise TypeError(f"images must be uint8 (0..255); got dtype {images.dtype}")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or min(images.shape) < 1:
            raise ValueError(
                f"images must have shape (N, H, W, C) or (N, H, W) with every size >= 1; "
                f"got {images.shape}"
            )
        labels = np.asarray(labels)
        if not np.issubdtype(labels.dtype, np.integer):
            raise TypeError(f"labels must be integers; got dtype {labels.dtype}")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels must have shape (N,) = ({images.shape[0]},) to match images; "
                f"got {labels.shape}"
            )
        if labels.min() < 0:
            raise ValueError(f"labels must be >= 0; got a label {int(labels.min())}")
        top = int(labels.max())
        if num_classes is None:
            num_classes = top + 1
        elif not isinstance(num_classes, (int, np.integer)) or num_classes <= top:
            raise ValueError(
                f"num_classes must be an int greater than every label (max label {top}); "
                f"got {num_classes!r}"
            )
        c = images.shape[3]
        if mean is None or std is None:
            data_mean, data_std = _channel_stats(images)
            mean = data_mean if mean is None else mean
            std = data_std if std is None else std
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.num_classes = int(num_classes)
        self.mean = _check_stats(mean, "mean", c, positive=False)
        self.std = _check_stats(std, "std", c, positive=True)
        self.name = str(name)
        self.image_shape = (images.shape[1], images.shape[2], c)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        return {"image": self.images[i], "label": int(self.labels[i])}


def _channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple, tuple]:
    """Per-channel mean and (population) std of uint8 (N, H, W, C) in [0, 1] units."""
    c = images.shape[3]
    total = np.zeros(c, np.float64)
    total_sq = np.zeros(c, np.float64)
    # Chunks keep the float64 temporaries small for large arrays.
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].reshape(-1, c).astype(np.float64)
        total += x.sum(axis=0)
        total_sq += np.square(x).sum(axis=0)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 0, std, 255.0)  # a constant channel: leave its scale alone
    return tuple((mean / 255).tolist()), tuple((std / 255).tolist())


# ----------------------------------------------------------------------------- digits


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as `load_digits()` gives them: (1797, 8, 8) float64 images, labels.

    Read straight from the CSV file scikit-learn ships (what `load_digits` parses), found
    without importing scikit-learn, whose import takes most of a second; if the file is not
    where scikit-learn keeps it, `load_digits` itself.
    """
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            data = np.loadtxt(path, delimiter=",")
            if data.shape == (1797, 65):
                return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits
    from sklearn.utils import Bunch

    # A Bunch unless return_X_y=True (sklearn annotates no overloads for the two forms).
    bunch = cast(Bunch, load_digits())
    return bunch.images, bunch.target


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All 1,797 digits at 32x32 (uint8 (N, 32, 32, 1)), their labels, and the test mask.

    Resizing is antialiased bilinear (`augment.resize`'s numpy path, in float64, so the
    result does not depend on Pillow's fixed-point arithmetic): values / 16 in [0, 1],
    resized, then * 255 and rounded.
    """
    from .augment import _resize_weights

    raw_images, raw_labels = _sklearn_digits()
    small = raw_images.astype(np.float64) / 16.0  # (N, 8, 8) in [0, 1]
    labels = raw_labels.astype(np.int64)
    # augment._resize_numpy's two contractions, batched (the same sums in the same order).
    wh, ww = _resize_weights(8, 32), _resize_weights(8, 32)
    big = np.einsum("pw,nowc->nopc", ww, np.einsum("oh,nhwc->nowc", wh, small[..., None]))
    images = np.clip(np.rint(big * 255.0), 0, 255).astype(np.uint8)
    # The split: per class, in class order, a permutation from one PCG64(0) generator;
    # the first round(20%) of each class is the test split.
    rng = np.random.Generator(np.random.PCG64(0))
    is_test = np.zeros(labels.shape[0], bool)
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        is_test[members[: round(0.2 * members.size)]] = True
    for arr in (images, labels, is_test):
        arr.setflags(write=False)
    return images, labels, is_test


def digits(split: str = "train") -> ArraySource:
    """scikit-learn's 8x8 handwritten digits, resized to 32x32 grey: the bundled data set.

    1,797 real images of 10 classes; a fixed split (see `_digits_arrays`) gives 1,438 "train"
    and 359 "test" images, about 36 of each class in "test"; "all" is the whole set. Records
    keep sklearn's order within a split.

    Args:
      split: "train", "test" or "all".

    Returns:
      An `ArraySource` of uint8 (32, 32, 1) images, normalised by `DIGITS_MEAN`/`DIGITS_STD`.
    """
    images, labels, is_test = _digits_arrays()
    if split == "train":
        keep = ~is_test
    elif split == "test":
        keep = is_test
    elif split == "all":
        keep = np.ones_like(is_test)
    else:
        raise ValueError(f'split must be "train", "test" or "all"; got {split!r}')
    return ArraySource(
        images[keep],
        labels[keep],
        num_classes=10,
        mean=DIGITS_MEAN,
        std=DIGITS_STD,
        name=f"digits/{split}",
    )


# ----------------------------------------------------------------------------- TFDS


class TfdsSource(Source):
    """A TFDS data set read through ``tfds.data_source`` (ArrayRecord random access).

    Build it with `tfds_source`.
    """

    def __init__(self, data_source, *, name, num_classes, mean, std, image_shape):
        self._source = data_source
        self.name = name
        self.num_classes = num_classes
        self.mean = mean
        self.std = std
        self.image_shape = image_shape

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        record = self._source[i]
        image = np.asarray(record["image"])
        if image.ndim == 2:
            image = image[:, :, None]
        return {"image": image, "label": int(record["label"])}


def tfds_source(name: str, split: str, *, data_dir: str | None = None) -> TfdsSource:
    """A TFDS data set split as a source, read with random access from ArrayRecord files.

    A data set not yet prepared in ``data_dir`` is prepared there first, in the ArrayRecord
    format, by its TFDS builder (``download_and_prepare``: this downloads it, unless the
    builder makes its data itself). Reading needs no TensorFlow. Preparing needs it for most
    of the TFDS catalog (their builders read their downloads and encode their images with
    TensorFlow), not for a builder that hands TFDS Pillow images, image files or encoded
    bytes, nor for "mnist", "fashion_mnist", "kmnist", "cifar10" and "cifar100", which
    `jaxcnn.data.tfds_prepare` prepares without TensorFlow when it is not installed.
    Normalisation is `KNOWN_NORMALIZATION[name]`, or 0.5 / 0.5 per channel for other sets.

    Args:
      name: TFDS name, e.g. "mnist", "cifar10", "imagenet2012" (optionally "name:version").
      split: a TFDS split string, e.g. "train", "test", "train[:90%]".
      data_dir: TFDS data directory; None: TFDS's default.

    Returns:
      A `TfdsSource` of {"image": uint8 (H, W, C), "label": int}.

    Raises:
      ModuleNotFoundError: preparing the data set needs TensorFlow, which is not installed.
      OSError: the data set is not prepared and could not be downloaded (e.g. offline).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty TFDS data set name; got {name!r}")
    import tensorflow_datasets as tfds

    # Random access needs ArrayRecord files, and `tfds.data_source` chooses that format only
    # when no data_dir is given (with one, it would prepare TFRecord files it cannot read).
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    features = builder.info.features
    if not isinstance(features, tfds.features.FeaturesDict):  # None, or a single feature
        raise ValueError(
            f'TFDS data set {name!r} must have features "image" and "label"; it has {features!r}'
        )
    keys = list(features.keys())
    if "image" not in keys or "label" not in keys:
        raise ValueError(
            f'TFDS data set {name!r} must have features "image" and "label"; it has {keys}'
        )
    num_classes = getattr(features["label"], "num_classes", None)
    if not num_classes:
        raise ValueError(f'TFDS data set {name!r}: feature "label" is not a ClassLabel')
    # tfds types `shape` as a tree of shapes; a single (image) feature's is one tuple.
    shape = tuple(cast(Sequence[int | None], features["image"].shape))
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or shape[2] is None:
        raise ValueError(f"TFDS data set {name!r}: expected (H, W, C) images; got shape {shape}")
    if not builder.is_prepared():
        _tfds_prepare(builder, name)
    # tfds's logging decorator types the wrapped method without its first parameter, `split`.
    data_source = builder.as_data_source(split=split)  # pyright: ignore[reportCallIssue]
    base = name.split(":")[0].split("/")[0]
    channels = int(shape[2])
    mean, std = KNOWN_NORMALIZATION.get(base, ((0.5,) * channels, (0.5,) * channels))
    if len(mean) != channels:
        mean, std = (0.5,) * channels, (0.5,) * channels
    return TfdsSource(
        data_source,
        name=f"tfds:{name}/{split}",
        num_classes=int(num_classes),
        mean=tuple(mean),
        std=tuple(std),
        image_shape=(shape[0], shape[1], channels),
    )


def _tfds_prepare(builder, name: str) -> None:
    """``builder.download_and_prepare()``, its two common failures told in plain words.

    Without TensorFlow, MNIST-format and CIFAR builders are prepared by `tfds_prepare`.
    """
    from .tfds_prepare import prepare_without_tensorflow

    how = (
        f"prepare it on a machine where that works, in the ArrayRecord format "
        f"(tfds.builder({name!r}, file_format='array_record').download_and_prepare()), and "
        f"point data_dir at the folder that holds its {builder.name}/ folder"
    )
    try:
        if not prepare_without_tensorflow(builder):
            builder.download_and_prepare()
    except OSError as e:  # requests' ConnectionError is one
        raise OSError(
            f"TFDS data set {name!r} is not prepared in {builder.data_dir}, and preparing it "
            f"failed ({type(e).__name__}: {e}). If this machine is offline, {how}"
        ) from e
    except Exception as e:  # an ImportError, or one inside TFDS's ExtractError
        if _missing_module(e) != "tensorflow":
            raise
        raise ModuleNotFoundError(
            f"preparing TFDS data set {name!r} in {builder.data_dir} needs TensorFlow, which "
            f"is not installed (its builder uses it; reading prepared data does not). "
            f"Install it (pip install tensorflow-cpu), or {how}",
            name="tensorflow",
        ) from e


def _missing_module(error: BaseException | None) -> str | None:
    """The top-level name of the module whose import failed, along the chain of causes."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ImportError):
            # TFDS re-raises with its context in the message, dropping ``name``.
            found = re.search(r"No module named '([\w.]+)'", str(error))
            module = error.name or (found.group(1) if found else None)
            if module:
                return module.split(".")[0]
        error = error.__cause__ or error.__context__
    return None


# ----------------------------------------------------------------------------- folders


# Pillow modes of grey images with more than 8 bits: 16-bit PNGs open as "I;16", and "I"
# (32-bit signed) is how some decoders hand over 16-bit data.
_WIDE_GREY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _decode(path: str, mode: str, *, draft: bool = False) -> np.ndarray:
    """Decode one image file to uint8 (H, W, C); ValueError naming the file if it cannot be.

    16-bit grey images are scaled to 8 bits, round(v / 257), so that 65535 maps to 255 and
    the whole range keeps its gradations (Pillow's ``convert`` would clip them at 255);
    "I" images are taken as 16-bit, values outside 0..65535 clipped. Pillow itself reduces
    16-bit colour PNGs to 8 bits (their high byte, v // 256, never more than 1 from v / 257).
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            if draft:
                # JPEG decoding at 1/8 scale still reads (and so checks) the whole stream.
                im.draft(mode, (1, 1))
            if im.mode in _WIDE_GREY_MODES:
                arr = _grey16_to_uint8(np.asarray(im))
                if mode == "RGB":
                    arr = np.repeat(arr[:, :, None], 3, axis=2)  # as Pillow's L -> RGB
            else:
                arr = np.asarray(im.convert(mode))
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        raise ValueError(f"could not decode image file {path!r}: {e}") from e
    return arr[:, :, None] if arr.ndim == 2 else arr


def _grey16_to_uint8(x: np.ndarray) -> np.ndarray:
    """(H, W) integer values in 0..65535 (others clipped) -> uint8 round(v / 257)."""
    if x.dtype.kind == "i":
        x = np.clip(x, 0, 65535)
    x = x.astype(np.uint32)
    # (v + 128) // 257 is round(v / 257) exactly: v / 257 is never a tie (2 v = 257 (2 k + 1)
    # has no solution, 257 being odd), so integer arithmetic gives the same pixels everywhere.
    return ((x + 128) // 257).astype(np.uint8)


class ImageFolder(Source):
    """A class-per-subfolder image tree: ``root/<class>/**/<image>``.

    Class names are the sorted subfolder names (labels 0 .. K-1); images are files ending in
    one of `IMAGE_EXTENSIONS` (any case), found recursively and sorted by path, so the index
    of every file is fixed by the tree alone. Hidden entries (".ipynb_checkpoints") are
    ignored. Symbolic links are followed; within a class a file reached under several paths
    counts once, by its real path, and a link back into the folder being walked is a
    ValueError ("symlink loop: <link> -> <target> leads back to <folder>"; see
    `_list_images`). Images are decoded with Pillow when loaded; 16-bit grey images are
    scaled to 8 bits, round(v / 257).

    Corrupt files: by default loading one raises ValueError naming the file. With
    ``skip_corrupt=True`` every file is decoded once here, up front, and the undecodable ones
    are left out of the source (``skipped`` lists them, and a warning gives their number), so
    that indices, and with them the loader's batches, never change during training.

    Args:
      root: the folder holding one subfolder per class.
      skip_corrupt: leave out (and list in ``skipped``) files that cannot be decoded.
      mode: "RGB" (3 channels) or "L" (grey, 1 channel): the Pillow mode images convert to.
      classes: the class names, in label order; None: the subfolders of ``root``. Give the
        training folder's classes to an evaluation folder so labels agree even if a class is
        missing from it.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        skip_corrupt: bool = False,
        mode: str = "RGB",
        classes: Sequence[str] | None = None,
    ):
        root = os.fspath(root)
        if mode not in ("RGB", "L"):
            raise ValueError(f'mode must be "RGB" or "L"; got {mode!r}')
        if not os.path.isdir(root):
            raise ValueError(f"root must be an existing folder; got {root!r}")
        found = sorted(
            e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")
        )
        if not found:
            raise ValueError(f"image folder {root!r} has no class subfolders (root/<class>/img)")
        if classes is None:
            classes = found
        else:
            classes = list(classes)
            unknown = sorted(set(found) - set(classes))
            if unknown:
                raise ValueError(
                    f"image folder {root!r} has class folders {unknown} that are not among "
                    f"the expected classes {classes}"
                )
        paths, labels = [], []
        for label, cls in enumerate(classes):
            folder = os.path.join(root, cls)
            if not os.path.isdir(folder):
                continue  # an evaluation folder may lack some training classes
            files = _list_images(folder)
            if not files:
                raise ValueError(
                    f"class folder {folder!r} has no image files (extensions {IMAGE_EXTENSIONS})"
                )
            paths.extend(files)
            labels.extend([label] * len(files))
        skipped: tuple[str, ...] = ()
        if skip_corrupt:
            good = _decodable(paths, mode)
            skipped = tuple(p for p, ok in zip(paths, good, strict=True) if not ok)
            paths = [p for p, ok in zip(paths, good, strict=True) if ok]
            labels = [lab for lab, ok in zip(labels, good, strict=True) if ok]
            if skipped:
                shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
                warnings.warn(
                    f"image folder {root!r}: skipped {len(skipped)} corrupt files ({shown})",
                    stacklevel=2,
                )
            if not paths:
                raise ValueError(f"image folder {root!r}: none of its image files can be decoded")
        self.root = root
        self.classes = tuple(classes)
        self.paths = tuple(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.skipped = skipped
        self.mode = mode
        self.name = root
        self.num_classes = len(classes)
        c = 3 if mode == "RGB" else 1
        self.mean = (0.5,) * c
        self.std = (0.5,) * c
        self.image_shape = (None, None, c)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        return {"image": _decode(self.paths[i], self.mode), "label": int(self.labels[i])}

    def load_common(
        self, index: int, size: int, *, crop: bool, backend: str = "pillow"
    ) -> dict[str, Any]:
        """Example ``index`` with its image brought to uint8 (size, size, C) at decode time:
        `jaxcnn.data.host_resize.decode_to_common` (what the loader's host half does when
        augmenting on the device; ``crop`` and ``backend`` as there)."""
        from .host_resize import decode_to_common

        i = self._check_index(index)
        image = decode_to_common(self.paths[i], self.mode, size, crop=crop, backend=backend)
        return {"image": image, "label": int(self.labels[i])}


def _list_images(folder: str) -> list[str]:
    """The image files under ``folder``, recursively, following symbolic links; sorted by path.

    The walk goes depth first through names in sorted order. A folder reached again through
    another link is not listed again, and a file reached under several paths (a link beside
    its target, two links to one file) counts once, by its real path: each is listed under
    the path the walk reaches it by first. A link back to a folder the walk is inside (the
    folder itself, one of its ancestors) would make the tree infinite: ValueError naming it.
    Unreadable folders are passed over, as ``os.walk`` does.
    """

    def identity(st: os.stat_result) -> tuple[int, int]:
        return (st.st_dev, st.st_ino)

    def parents(path: str) -> list[str]:
        out = []
        while os.path.dirname(path) != path:
            path = os.path.dirname(path)
            out.append(path)
        return out

    # The real folders the walk is inside, by identity (a link to any of them leads back into
    # the walk) -> the path to name them by: the ancestors of the folder, both of its real
    # path and of the path as given (listed last, so that its spelling wins), then the folders
    # entered, and left again, as the walk goes depth first.
    inside: dict[tuple[int, int], str] = {}
    for path in parents(os.path.realpath(folder)) + parents(os.path.abspath(folder)):
        try:
            inside[identity(os.stat(path))] = path
        except OSError:
            pass
    listed: set[tuple[int, int]] = set()
    out: list[str] = []
    folders: list[tuple[int, str]] = []  # (index in out of its first file, real folder path)
    link_targets: dict[int, str] = {}  # index in out -> real path, for linked files
    todo: list[str | tuple[int, int]] = [folder]  # a path: enter it; an identity: leave it
    while todo:
        item = todo.pop()
        if isinstance(item, tuple):
            del inside[item]
            continue
        # Checked on entering, in the order a recursive walk meets them: every link that leads
        # back into the walk is found, even when its target was also reached another way.
        try:
            key = identity(os.stat(item))
        except OSError:
            continue
        if key in inside:
            if os.path.islink(item):
                raise ValueError(
                    f"symlink loop: {item} -> {os.readlink(item)} leads back to {inside[key]}"
                )
            raise ValueError(f"folder loop: {item} is the folder {inside[key]} again")
        if key in listed:
            continue
        try:
            with os.scandir(item) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        listed.add(key)
        inside[key] = item
        todo.append(key)
        folders.append((len(out), os.path.realpath(item)))
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir()  # follows links
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(entry.path)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                if entry.is_symlink():
                    link_targets[len(out)] = os.path.realpath(entry.path)
                out.append(entry.path)
        todo.extend(reversed(subfolders))  # popped in sorted order
    return sorted(_once_per_real_path(out, folders, link_targets))


def _once_per_real_path(
    paths: list[str], folders: list[tuple[int, str]], link_targets: dict[int, str]
) -> list[str]:
    """``paths`` less those whose real path an earlier one has (see `_list_images`)."""
    if not link_targets:
        return paths  # every folder is listed once, so only linked files can repeat a file
    keep, seen = [], set()
    bounds = [start for start, _ in folders[1:]] + [len(paths)]
    for (start, real_folder), end in zip(folders, bounds, strict=True):
        for i in range(start, end):
            real = link_targets.get(i)
            if real is None:
                real = os.path.join(real_folder, os.path.basename(paths[i]))
            if real not in seen:
                seen.add(real)
                keep.append(paths[i])
    return keep


def _decodable(paths: Sequence[str], mode: str) -> list[bool]:
    """Whether each file decodes; threads, since Pillow releases the GIL while decoding."""
    from concurrent.futures import ThreadPoolExecutor

    def ok(path: str) -> bool:
        try:
            _decode(path, mode, draft=True)
        except ValueError:
            return False
        return True

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(ok, paths, chunksize=64))


# ----------------------------------------------------------------------------- synthetic


class SyntheticSource(Source):
    """Random images and labels, each generated on access from (seed, index): see `synthetic`."""

    image_shape: tuple[int, int, int]  # every image has the same, known size

    def __init__(self, num_examples: int, image_shape: Sequence[int], num_classes: int, seed: int):
        self._n = num_examples
        self._seed = seed
        h, w, c = (int(s) for s in image_shape)  # `synthetic` checked it is (H, W, C)
        self.image_shape = (h, w, c)
        self.num_classes = num_classes
        # Uniform over 0..255: mean 1/2, std sqrt((256^2 - 1) / 12) / 255.
        self.mean = (0.5,) * c
        self.std = (float(np.sqrt((256**2 - 1) / 12.0) / 255.0),) * c
        self.name = f"synthetic/seed{seed}"

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = self._check_index(index)
        rng = np.random.default_rng([self._seed, i])
        label = int(rng.integers(0, self.num_classes))
        image = rng.integers(0, 256, size=self.image_shape, dtype=np.uint8)
        return {"image": image, "label": label}


def synthetic(
    num_examples: int,
    image_shape: tuple[int, int, int] = (224, 224, 3),
    num_classes: int = 1000,
    seed: int = 0,
) -> SyntheticSource:
    """Random uint8 images with random labels, for throughput benchmarks (nothing to learn).

    Nothing is held in memory: example i is drawn from ``default_rng([seed, i])`` when loaded.

    Args:
      num_examples: number of examples, positive.
      image_shape: (H, W, C) of every image.
      num_classes: labels are uniform over 0 .. num_classes - 1.
      seed: non-negative int.

    Returns:
      A `SyntheticSource`.
    """
    for arg, value in (("num_examples", num_examples), ("num_classes", num_classes)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{arg} must be a positive int; got {value!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s >= 1 for s in shape):
        raise ValueError(f"image_shape must be (H, W, C) of positive ints; got {image_shape!r}")
    return SyntheticSource(int(num_examples), shape, int(num_classes), int(seed))
