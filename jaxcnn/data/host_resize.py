"""The host half of augmenting on the device: each training image to one square size, fast.

With ``data.augment_on="device"`` the host only decodes the training images and brings each to
``size`` x ``size`` uint8 pixels (the loader's ``common_size``); the random transforms run
later on the accelerator. The geometry is that of the reference transforms in
`jaxcnn.data.augment`:

* ``crop=True``: ``augment.center_crop(augment.resize_shorter(img, size), size)``;
* ``crop=False``: ``augment.resize(img, size)``.

Rather than resizing the whole image to (size, size * long / short) and then cropping, the
region the crop keeps (`source_box`, in continuous source coordinates) is resampled straight
to size x size: the resampler reads only that region and writes only what is kept. The output
pixel centres and the filter widths are those of the reference.

Backends (`choose_backend`):

* ``"pillow"``: Pillow's antialiased bilinear resize given the box. Equal to the reference up
  to 1 level on some pixels: the box's origin is a fraction, so a filter coefficient may round
  the other way in Pillow's fixed point.
* ``"opencv"`` (the ``opencv`` extra: ``pip install "jaxcnn[opencv]"``): OpenCV decodes the
  JPEG files (pixels equal to Pillow's, both use libjpeg-turbo) and resamples a reduction by
  less than 2 as a 3-tap low-pass (``[a, 1 - 2a, a]``, ``a = (s * s - 1) / 12`` for a
  reduction by s, which gives the filter the variance of Pillow's triangle) followed by
  bilinear interpolation at the same pixel centres. An approximation of the reference: on
  photo-like JPEGs around 500x375 brought to 224, 0.5 levels mean absolute difference, 31 at
  most (`benchmarks/host_resize.py`). Reductions by 2 or more are resampled by Pillow as in
  the "pillow" backend, and the files OpenCV might decode differently (not JPEG, CMYK,
  truncated, colour to grey) are decoded by Pillow.

The config key ``data.host_resize`` ("auto", the default, "pillow" or "opencv") chooses;
"auto" takes OpenCV when it is installed (installing the ``opencv`` extra is the opt-in). The
loader records the backend in ``Datasets.host_resize`` and its description, and logs it.

Decoding (`decode_to_common`, image folders): a JPEG file whose kept region is at least twice
``size`` on its shorter side is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain
(libjpeg's scaled inverse DCT: Pillow's ``draft``, OpenCV's ``IMREAD_REDUCED_*``), the
smallest scale that leaves the region at least ``size`` pixels, then resampled as above. This
is not the reference's full decode: on photo-like JPEGs of 1.2-1.9 megapixels brought to
224, about 1.2 levels mean absolute difference, 44 at most.
"""

from __future__ import annotations

import contextlib
import io
import math

import numpy as np

__all__ = [
    "BACKENDS",
    "choose_backend",
    "decode_to_common",
    "describe",
    "jpeg_scale",
    "resize_to_common",
    "source_box",
]

BACKENDS = ("pillow", "opencv")
# The DCT-domain scales libjpeg decodes at through Pillow's draft and OpenCV's reduced modes.
_JPEG_SCALES = (8, 4, 2)


def _cv2():
    # OpenCV is optional (the "opencv" extra); without it pyright cannot resolve the import.
    import cv2  # pyright: ignore[reportMissingImports]

    return cv2


def _have_cv2() -> bool:
    try:
        _cv2()
    except ImportError:
        return False
    return True


def choose_backend(name: str = "auto") -> str:
    """The host resize backend ``name`` stands for (``data.host_resize``).

    "auto" is "opencv" when OpenCV (``cv2``) can be imported, else "pillow". Asking for
    "opencv" without it installed is an ImportError.
    """
    if name == "auto":
        return "opencv" if _have_cv2() else "pillow"
    if name not in BACKENDS:
        raise ValueError(f"data.host_resize must be one of {('auto', *BACKENDS)}; got {name!r}")
    if name == "opencv" and not _have_cv2():
        raise ImportError(
            'the "opencv" host resize backend needs OpenCV: pip install "jaxcnn[opencv]" '
            '(or opencv-python-headless), or set data.host_resize="pillow"'
        )
    return name


def describe(backend: str) -> str:
    """The backend with the versions that produce its pixels, e.g. "pillow 13.0.0"."""
    import PIL

    if backend == "opencv":
        cv = _cv2().__version__
        return f"opencv {cv} (Pillow {PIL.__version__} for reductions by 2x or more)"
    if backend == "pillow":
        return f"pillow {PIL.__version__}"
    raise ValueError(f"unknown host resize backend {backend!r}; expected one of {BACKENDS}")


def source_box(h: int, w: int, size: int, crop: bool) -> tuple[float, float, float, float]:
    """The region (x0, y0, x1, y1) of an h x w image that becomes the size x size output.

    ``crop=True``: what ``center_crop(resize_shorter(img, size), size)`` keeps, in source
    pixels: the resized image is (size, int(size * long / short)) as torchvision computes it,
    the crop starts at round((resized - size) / 2), and a resized pixel spans w / resized_w
    source pixels across (h / resized_h down). ``crop=False``: the whole image.
    """
    if not crop:
        return (0.0, 0.0, float(w), float(h))
    if h <= w:
        rh, rw = size, int(size * w / h)
    else:
        rh, rw = int(size * h / w), size
    top = round((rh - size) / 2.0)
    left = round((rw - size) / 2.0)
    sx, sy = w / rw, h / rh
    return (left * sx, top * sy, (left + size) * sx, (top + size) * sy)


def jpeg_scale(box: tuple[float, float, float, float], size: int) -> int:
    """1, 2, 4 or 8: the largest DCT-domain reduction that keeps the box >= size on each side.

    Only images at least twice the size the box needs are reduced: the output is then still
    an antialiased reduction of the decoded pixels, never an enlargement.
    """
    short = min(box[2] - box[0], box[3] - box[1])
    for s in _JPEG_SCALES:
        if short >= s * size:
            return s
    return 1


def _scaled(box, s: int):
    return box if s == 1 else tuple(v / s for v in box)


def _as_hwc(arr: np.ndarray) -> np.ndarray:
    return arr[:, :, None] if arr.ndim == 2 else arr


# ----------------------------------------------------------------------------- resampling


def _resize_pil(im, size: int, box) -> np.ndarray:
    """A Pillow "L" or "RGB" image's box, resampled to size x size: uint8 (size, size, C)."""
    from PIL import Image

    out = im.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return _as_hwc(np.asarray(out))


def _low_pass(s: float) -> np.ndarray:
    """The 3-tap kernel that, followed by bilinear interpolation, stands in for Pillow's
    triangle filter of half-width s (1 < s < 2): the same variance, (s * s) / 6."""
    if s <= 1.0:
        return np.ones(1, np.float32)
    a = (s * s - 1.0) / 12.0
    return np.array([a, 1.0 - 2.0 * a, a], np.float32)


def _resize_cv2(arr: np.ndarray, size: int, box) -> np.ndarray:
    """OpenCV's resample of the box (a reduction by less than 2 on each axis) to size x size."""
    cv2 = _cv2()
    x0, y0, x1, y1 = box
    sx, sy = (x1 - x0) / size, (y1 - y0) / size
    h, w = arr.shape[:2]
    # The box and 2 pixels around it: the low-pass and the interpolation read 1 pixel each.
    left, top = max(0, math.floor(x0) - 2), max(0, math.floor(y0) - 2)
    right, bottom = min(w, math.ceil(x1) + 2), min(h, math.ceil(y1) + 2)
    roi = arr[top:bottom, left:right]
    # Output pixel (i, j) samples the source at the reference's centre x0 + (j + 0.5) sx,
    # in OpenCV's coordinates where pixel k is centred on k.
    m = np.array(
        [[sx, 0.0, x0 - left + 0.5 * sx - 0.5], [0.0, sy, y0 - top + 0.5 * sy - 0.5]],
        np.float64,
    )
    with _one_thread(cv2):
        if sx > 1.0 or sy > 1.0:
            roi = cv2.sepFilter2D(
                roi, -1, _low_pass(sx), _low_pass(sy), borderType=cv2.BORDER_REPLICATE
            )
        out = cv2.warpAffine(
            roi,
            m,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return _as_hwc(out)


@contextlib.contextmanager
def _one_thread(cv2):
    """OpenCV single-threaded inside: on images this small its thread pool spends more CPU
    time waiting than it saves (1.4 -> 2.0 ms of CPU per 500x375 JPEG on two cores), and the
    loader's parallelism is its worker processes. The process's own setting is restored."""
    threads = cv2.getNumThreads()
    if threads != 1:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        if threads != 1:
            cv2.setNumThreads(threads)


def _bgr_to_rgb(arr: np.ndarray) -> np.ndarray:
    cv2 = _cv2()
    with _one_thread(cv2):
        return cv2.cvtColor(np.ascontiguousarray(arr), cv2.COLOR_BGR2RGB)


def _resize_array(arr: np.ndarray, size: int, box, backend: str) -> np.ndarray:
    """uint8 (H, W, C), C in {1, 3}: the box resampled to (size, size, C) by the backend."""
    if backend == "opencv":
        sx, sy = (box[2] - box[0]) / size, (box[3] - box[1]) / size
        if max(sx, sy) < 2.0:
            return _resize_cv2(arr, size, box)
    elif backend != "pillow":
        raise ValueError(f"unknown host resize backend {backend!r}; expected one of {BACKENDS}")
    from PIL import Image

    im = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else np.ascontiguousarray(arr))
    return _resize_pil(im, size, box)


def resize_to_common(img: np.ndarray, size: int, *, crop: bool, backend: str = "pillow"):
    """uint8 (H, W, C), C in {1, 3} -> uint8 (size, size, C) in one resample (module docstring).

    ``crop=True`` stands for ``augment.center_crop(augment.resize_shorter(img, size), size)``,
    ``crop=False`` for ``augment.resize(img, size)``. An image already size x size is
    returned as it is.
    """
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (1, 3):
        raise ValueError(
            f"resize_to_common takes uint8 (H, W, 1 or 3) images; got {img.dtype} {img.shape}"
        )
    h, w = img.shape[:2]
    if (h, w) == (size, size):
        return img
    return _resize_array(img, size, source_box(h, w, size, crop), backend)


# ----------------------------------------------------------------------------- decoding


def _cv2_decode(data: bytes, file_mode: str, mode: str, s: int) -> np.ndarray | None:
    """A JPEG's pixels from OpenCV at 1/s scale (BGR, or grey for mode "L"), or None where
    they might differ from Pillow's decode (or OpenCV fails): then Pillow decodes.

    Only "RGB" and "L" JPEGs, to "RGB", or "L" to "L" (OpenCV's own grey conversion of a
    colour JPEG is libjpeg's luma, not Pillow's), and only files that end with the JPEG end
    marker (Pillow refuses truncated files; libjpeg would fill them in with grey).
    """
    if file_mode not in ("RGB", "L") or (mode == "L" and file_mode != "L"):
        return None
    if not data.endswith(b"\xff\xd9"):
        return None
    cv2 = _cv2()
    grey = mode == "L"
    if s == 1:
        flags = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR
    else:
        kind = "GRAYSCALE" if grey else "COLOR"
        flags = getattr(cv2, f"IMREAD_REDUCED_{kind}_{s}")
    flags |= cv2.IMREAD_IGNORE_ORIENTATION  # Pillow does not apply EXIF orientation
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    if arr is None:
        return None
    return arr  # BGR when colour: the caller reverses the channels of its (smaller) output


def decode_to_common(path: str, mode: str, size: int, *, crop: bool, backend: str = "pillow"):
    """An image file -> uint8 (size, size, C) as `resize_to_common` of its decode, with the
    DCT-domain reduction of large JPEGs (module docstring).

    ``mode`` is "RGB" or "L", as `jaxcnn.data.ImageFolder` decodes: a file that cannot be
    decoded is a ValueError naming it. A file already size x size is decoded exactly (as
    ``ImageFolder[i]``) and returned as it is.
    """
    from PIL import Image

    from .sources import _WIDE_GREY_MODES, _decode

    if backend not in BACKENDS:
        raise ValueError(f"unknown host resize backend {backend!r}; expected one of {BACKENDS}")
    arr, bgr, wide = None, False, False
    try:
        data = None
        if backend == "opencv":
            with open(path, "rb") as f:
                data = f.read()
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            wide = im.mode in _WIDE_GREY_MODES
            if not wide:
                w, h = im.size
                box = source_box(h, w, size, crop)
                s = jpeg_scale(box, size) if im.format == "JPEG" else 1
                if data is not None and im.format == "JPEG":
                    arr = _cv2_decode(data, im.mode, mode, s)
                    if arr is not None and arr.shape[:2] != (-(-h // s), -(-w // s)):
                        arr = None
                    bgr = arr is not None and arr.ndim == 3
                if arr is None:
                    if s > 1:
                        s = _draft(im, s)
                    if im.mode != mode:
                        im = im.convert(mode)
                    if backend == "pillow" and ((w, h) != (size, size) or s > 1):
                        return _resize_pil(im, size, _scaled(box, s))
                    arr = np.asarray(im)
    except Exception as e:  # as sources._decode: Pillow raises many kinds for bad files
        raise ValueError(f"could not decode image file {path!r}: {e}") from e
    if wide:  # 16-bit grey: scaled to 8 bits by ImageFolder's own rule first
        return resize_to_common(_decode(path, mode), size, crop=crop, backend=backend)
    assert arr is not None  # every image but a wide grey one was decoded above
    arr = _as_hwc(arr)
    if (w, h) != (size, size) or s > 1:
        arr = _resize_array(arr, size, _scaled(box, s), backend)
    return _bgr_to_rgb(arr) if bgr else arr


def _draft(im, s: int) -> int:
    """Ask Pillow's JPEG decoder for 1/s scale (w // s x h // s gives exactly s unless the image
    is under 2s pixels across); the scale it will decode at, 1 if none."""
    w = im.size[0]
    got = im.draft(im.mode, (w // s, im.size[1] // s))
    if got is None:
        return 1
    return round(w / got[1][2])
