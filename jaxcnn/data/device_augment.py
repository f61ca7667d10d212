"""Batched, jit-compatible training augmentation in JAX, to run on the accelerator.

The transforms of `jaxcnn.data.augment` (which runs per example on the host, in numpy and
Pillow) for a whole batch of uint8 images already at a common size ``(B, H, W, C)``, as pure
functions of arrays that trace once per shape and run inside (or beside) a compiled step on
any backend. Two layers, so that the geometry can be checked exactly:

1. `sample_params(key, batch, ...)` draws every random number of a batch from one key, one
   `jax.random.fold_in` per purpose: enabling a transform never changes the others' draws.
   A caller that derives the key from (seed, step) gets the same batch wherever and
   whenever the step runs (bitwise on CPU).
2. Deterministic transforms given those parameters: `crop_with_padding`, `rotate_scale`,
   `resized_crop` (and its static form `resize`), `hflip`, `color_jitter`, `pca_lighting`,
   `normalize`. Each is compared with the numpy/Pillow reference given the same parameters;
   the differences are stated in each docstring.

`augment_batch(images, key, spec)` composes them in the order of the host pipeline
(``_Transform.train`` in `jaxcnn.data.loader`): a random resized crop, or [resize] +
rotation/scale + padded random crop; then flip, colour jitter, PCA lighting, and channel
conversion fused with normalisation. `eval_batch(images, spec)` is the evaluation transform.
`AugmentSpec` holds the (static) configuration; it is hashable, so it can be a static
argument of `jax.jit`.

Units: uint8 images, and the float32 results of the interpolating transforms, are in pixel
units 0..255. Colour jitter and PCA lighting work on floats in [0, 1], as in torchvision.
Interpolated values are kept as floats rather than rounded back to uint8 after each step as
the host pipeline must (Pillow rounds after resizing and truncates after its affine warp).

The random numbers come from `jax.random`, not numpy, so device and host augmentation give
the same distribution of images, not the same images.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

from . import augment
from .augment import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, LUMA_WEIGHTS, _pair
from .config import DataConfig

__all__ = [
    "AugmentSpec",
    "apply_params",
    "augment_batch",
    "color_jitter",
    "crop_with_padding",
    "eval_batch",
    "hflip",
    "normalize",
    "pca_lighting",
    "resize",
    "resized_crop",
    "rotate_scale",
    "sample_params",
]

# One fold_in tag per purpose. Tags are never reused or renumbered: a new transform takes a
# new tag, so every existing transform keeps its draws for a given key.
_TAGS = {
    "crop": 0,
    "rotation": 1,
    "scale": 2,
    "rrc": 3,
    "flip": 4,
    "pca": 5,
    "brightness": 6,
    "contrast": 7,
    "saturation": 8,
    "jitter_order": 9,
}
# torchvision's RandomResizedCrop defaults, which the host pipeline uses.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_RRC_TRIES = 10
# torchvision's rgb_to_grayscale weights (ColorJitter's contrast and saturation), which differ
# in the fourth decimal from Pillow's luma (LUMA_WEIGHTS) used for channel conversion.
_JITTER_GREY = (0.2989, 0.587, 0.114)


# ----------------------------------------------------------------------------- validation


def _check_images(images, name: str = "images", *, uint8: bool = False):
    """A (B, H, W, C) array (numpy, jax or tracer) of uint8 or float pixels."""
    if not (hasattr(images, "shape") and hasattr(images, "dtype")):
        raise TypeError(f"{name} must be an array (B, H, W, C); got {type(images).__name__}")
    if len(images.shape) != 4:
        raise ValueError(
            f"{name} must have shape (B, H, W, C); got shape {tuple(images.shape)} "
            f"(a single image needs a leading batch axis: images[None])"
        )
    if min(images.shape) < 1:
        raise ValueError(f"{name} must be non-empty (B, H, W, C >= 1); got {tuple(images.shape)}")
    dtype = np.dtype(images.dtype)
    if uint8 and dtype != np.uint8:
        raise TypeError(f"{name} must be uint8 pixels 0..255; got dtype {dtype}")
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating):
        raise TypeError(f"{name} must be uint8 or floating point; got dtype {dtype}")
    return jnp.asarray(images)


def _check_float_images(x, name: str = "x"):
    x = _check_images(x, name)
    if x.dtype == jnp.uint8:
        raise TypeError(f"{name} must be floats in [0, 1]; got uint8 (divide by 255 first)")
    return x


def _check_param(value, name: str, batch: int, tail: tuple[int, ...] = (), *, kind: str):
    """A per-example parameter array of shape (batch, *tail) of the given kind."""
    if not hasattr(value, "shape"):
        value = np.asarray(value)
    shape = tuple(value.shape)
    if shape != (batch, *tail):
        raise ValueError(
            f"{name} must have shape {(batch, *tail)} (one per image); got shape {shape}"
        )
    dtype = np.dtype(value.dtype)
    if kind == "int" and not np.issubdtype(dtype, np.integer):
        raise TypeError(f"{name} must be integers; got dtype {dtype}")
    if kind == "bool" and dtype != np.bool_:
        raise TypeError(f"{name} must be booleans; got dtype {dtype}")
    if kind == "float" and not (
        np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)
    ):
        raise TypeError(f"{name} must be real numbers; got dtype {dtype}")
    value = jnp.asarray(value)
    if kind == "int":
        return value.astype(jnp.int32)
    if kind == "float":
        return value.astype(jnp.float32)
    return value


def _check_key(key):
    if not hasattr(key, "dtype"):
        raise TypeError(f"key must be a jax.random key; got {type(key).__name__}")
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single key; got a key array of shape {key.shape}")
    elif not (np.dtype(key.dtype) == np.uint32 and len(key.shape) == 1):
        raise TypeError(
            f"key must be a jax.random key (jax.random.key(seed) or PRNGKey(seed)); got an "
            f"array of dtype {key.dtype} and shape {tuple(key.shape)}"
        )
    return key


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_real(value: object) -> TypeGuard[int | float | np.integer | np.floating]:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _batch(batch) -> int:
    if not _is_int(batch) or batch < 1:
        raise ValueError(f"batch must be a positive int; got {batch!r}")
    return int(batch)


def _range(value, name: str, lowest: float) -> tuple[float, float]:
    if not (isinstance(value, Sequence) and len(value) == 2 and all(map(_is_real, value))):
        raise TypeError(f"{name} must be a pair (low, high); got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not lowest < low <= high:
        raise ValueError(f"{name} must satisfy {lowest} < low <= high; got {value!r}")
    return low, high


def _shorter_side_hw(hw: tuple[int, int], size: int) -> tuple[int, int]:
    """`augment.resize_shorter`'s output size: the longer side truncated, as torchvision."""
    h, w = hw
    return (size, int(size * w / h)) if h <= w else (int(size * h / w), size)


# ----------------------------------------------------------------------------- parameters


def sample_params(
    key,
    batch: int,
    *,
    image_hw,
    out_size,
    padding: int = 0,
    rotation: float = 0.0,
    scale: float = 0.0,
    rrc: bool = False,
    hflip: bool = False,
    pca: float = 0.0,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
    rrc_scale: tuple[float, float] = RRC_SCALE,
    rrc_ratio: tuple[float, float] = RRC_RATIO,
) -> dict[str, jax.Array]:
    """Every random parameter of a batch's augmentation, drawn from ``key``.

    Each purpose draws from ``fold_in(key, tag)`` with its own fixed tag, so switching one
    transform on or off leaves the others' parameters unchanged. Only the keys of enabled
    transforms are present in the result. Distributions follow torchvision (and the host
    pipeline in `jaxcnn.data.augment`):

    * ``"top"``, ``"left"``: int32 (B,), the crop's offsets in image coordinates (negative
      reaches into the zero padding), uniform over every position of ``out_size`` in the image
      padded by ``padding``, both ends included. Present unless ``rrc``, when ``padding > 0``
      or ``image_hw`` differs from ``out_size``.
    * ``"angle"``: float32 (B,) degrees ~ U[-rotation, rotation); ``"scale"``: float32 (B,)
      ~ U[1 - scale, 1 + scale). Both present when ``rotation > 0 or scale > 0``.
    * ``"box"``: int32 (B, 4), (top, left, h, w) of ``RandomResizedCrop.get_params``: up to
      10 tries of area fraction ~ U(rrc_scale) and log aspect ~ U(log rrc_ratio); the first
      box that fits is placed uniformly; else the central crop clamped to the ratio range.
      Present when ``rrc``.
    * ``"flip"``: bool (B,), each True with probability 1/2. Present when ``hflip``.
    * ``"alpha"``: float32 (B, 3) ~ N(0, pca^2), the PCA lighting alphas. When ``pca > 0``.
    * ``"brightness"``, ``"contrast"``, ``"saturation"``: float32 (B,) factors ~
      U[max(0, 1 - v), 1 + v] for each enabled value v, and ``"jitter_order"``: int32 (B, 3),
      a uniform permutation of (0 brightness, 1 contrast, 2 saturation) per example (as
      ColorJitter's ``randperm``). When any of the three is > 0.

    Args:
      key: a jax.random key (typed or raw uint32).
      batch: B, a positive int.
      image_hw: (H, W) of the image the crop or RRC box is taken from (for the host
        pipeline's order, the image after any resize to the training size).
      out_size: int or (h, w), the crop size.
      padding: zero padding on every side for the random crop, non-negative int.
      rotation: maximum absolute angle in degrees, in [0, 180].
      scale: maximum relative change of scale, in [0, 1).
      rrc: draw random-resized-crop boxes instead of crop offsets.
      hflip: draw flip bits.
      pca: standard deviation of the PCA alphas, >= 0 (0: off).
      brightness, contrast, saturation: ColorJitter strengths, >= 0 (0: off).
      rrc_scale: (low, high) area fraction of the RRC box.
      rrc_ratio: (low, high) aspect ratio w / h of the RRC box.

    Returns:
      dict of arrays with a leading batch axis, as listed above.
    """
    key = _check_key(key)
    batch = _batch(batch)
    height, width = _pair(image_hw, "image_hw")
    out_h, out_w = _pair(out_size, "out_size")
    if not _is_int(padding) or padding < 0:
        raise ValueError(f"padding must be a non-negative int; got {padding!r}")
    if not (_is_real(rotation) and 0 <= rotation <= 180):
        raise ValueError(f"rotation must be degrees in [0, 180]; got {rotation!r}")
    if not (_is_real(scale) and 0 <= scale < 1):
        raise ValueError(f"scale must be in [0, 1); got {scale!r}")
    for name, value in (
        ("pca", pca),
        ("brightness", brightness),
        ("contrast", contrast),
        ("saturation", saturation),
    ):
        if not (_is_real(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    if rrc and padding:
        raise ValueError(
            f"rrc and padding are alternatives (a random resized crop is not padded); got "
            f"padding={padding}"
        )

    def purpose(name):
        return jax.random.fold_in(key, _TAGS[name])

    params: dict[str, jax.Array] = {}
    if rrc:
        params["box"] = _rrc_boxes(
            purpose("rrc"),
            batch,
            height,
            width,
            _range(rrc_scale, "rrc_scale", 0.0),
            _range(rrc_ratio, "rrc_ratio", 0.0),
        )
    elif padding or (height, width) != (out_h, out_w):
        ph, pw = height + 2 * padding, width + 2 * padding
        if out_h > ph or out_w > pw:
            raise ValueError(
                f"out_size {(out_h, out_w)} is larger than the padded image ({ph}, {pw}) "
                f"(image_hw ({height}, {width}) with padding {padding})"
            )
        k_top, k_left = jax.random.split(purpose("crop"))
        params["top"] = jax.random.randint(k_top, (batch,), 0, ph - out_h + 1) - padding
        params["left"] = jax.random.randint(k_left, (batch,), 0, pw - out_w + 1) - padding
    if rotation or scale:
        params["angle"] = jax.random.uniform(
            purpose("rotation"), (batch,), minval=-float(rotation), maxval=float(rotation)
        )
        params["scale"] = jax.random.uniform(
            purpose("scale"), (batch,), minval=1.0 - float(scale), maxval=1.0 + float(scale)
        )
    if hflip:
        params["flip"] = jax.random.bernoulli(purpose("flip"), 0.5, (batch,))
    if pca:
        params["alpha"] = float(pca) * jax.random.normal(purpose("pca"), (batch, 3))
    jitter = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
    if any(jitter.values()):
        for name, value in jitter.items():
            if value:
                params[name] = jax.random.uniform(
                    purpose(name),
                    (batch,),
                    minval=max(0.0, 1.0 - float(value)),
                    maxval=1.0 + float(value),
                )
        # argsort of i.i.d. uniforms is a uniform random permutation, drawn per example.
        order = jax.random.uniform(purpose("jitter_order"), (batch, 3))
        params["jitter_order"] = jnp.argsort(order, axis=1).astype(jnp.int32)
    return params


def _rrc_boxes(key, batch, height, width, scale, ratio):
    """(B, 4) int32 boxes of torchvision's RandomResizedCrop.get_params, vectorised.

    All 10 tries are drawn at once over a tries axis; the first that fits is selected with
    argmax (jnp.where for the fallback), so there is no data-dependent control flow.
    """
    k_area, k_ratio, k_top, k_left = jax.random.split(key, 4)
    area = float(height * width)
    shape = (batch, _RRC_TRIES)
    target = area * jax.random.uniform(k_area, shape, minval=scale[0], maxval=scale[1])
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    aspect = jnp.exp(jax.random.uniform(k_ratio, shape, minval=log_ratio[0], maxval=log_ratio[1]))
    # jnp.round rounds half to even, as Python's round() in torchvision does.
    w = jnp.round(jnp.sqrt(target * aspect)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / aspect)).astype(jnp.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(fits, axis=1)[:, None]  # the first try that fits (0 if none does)
    found = jnp.any(fits, axis=1)
    fb_top, fb_left, fb_h, fb_w = augment.resized_crop_fallback(height, width, ratio)
    h = jnp.where(found, jnp.take_along_axis(h, first, axis=1)[:, 0], fb_h)
    w = jnp.where(found, jnp.take_along_axis(w, first, axis=1)[:, 0], fb_w)
    top = jax.random.randint(k_top, (batch,), 0, height - h + 1)
    left = jax.random.randint(k_left, (batch,), 0, width - w + 1)
    top = jnp.where(found, top, fb_top)
    left = jnp.where(found, left, fb_left)
    return jnp.stack([top, left, h, w], axis=1).astype(jnp.int32)


# ----------------------------------------------------------------------------- geometry


# Per-example gathers of whole slices along the first non-batch axis: XLA lowers these to
# contiguous row copies, where take_along_axis with broadcast indices gathers element by element.
_take_rows = jax.vmap(lambda x, i: jnp.take(x, i, axis=0))


def crop_with_padding(images, top, left, size):
    """Per-example ``size`` crops at (top, left), reading zeros outside the image.

    The padding of a padded random crop is never materialised: pixel (i, j) of crop b is
    ``images[b, top[b] + i, left[b] + j]`` where that lies inside the image and 0 elsewhere,
    exactly as the host's ``augment._crop_with_zeros`` (same offsets -> bit-identical output).

    Args:
      images: (B, H, W, C) of any dtype.
      top: (B,) int, row of each crop's first pixel in image coordinates (may be negative).
      left: (B,) int, column of each crop's first pixel (may be negative).
      size: int or (h, w), the crop size.

    Returns:
      (B, h, w, C) of the input's dtype.
    """
    images = _check_images(images)
    b = images.shape[0]
    h, w = _pair(size, "size")
    top = _check_param(top, "top", b, kind="int")
    left = _check_param(left, "left", b, kind="int")
    return _crop(images, top, left, h, w)


def _crop(images, top, left, h, w, flip=None):
    """`crop_with_padding`, mirrored left-right where ``flip`` (B,) is set.

    Folding a flip into the crop's column indices is exact (the same pixels, reordered) and
    spares a separate flip, which XLA on CPU may fuse into the gather and slow down.
    """
    _, height, width, _ = images.shape
    rows = top[:, None] + jnp.arange(h, dtype=jnp.int32)[None, :]  # (B, h)
    cols = left[:, None] + jnp.arange(w, dtype=jnp.int32)[None, :]  # (B, w)
    if flip is not None:
        cols = jnp.where(flip[:, None], cols[:, ::-1], cols)
    # Gather with clamped indices, then zero what lies outside: no padded copy of the batch.
    x = jnp.take_along_axis(images, jnp.clip(rows, 0, height - 1)[:, :, None, None], axis=1)
    x = jnp.take_along_axis(x, jnp.clip(cols, 0, width - 1)[:, None, :, None], axis=2)
    rows_in = (rows >= 0) & (rows < height)
    cols_in = (cols >= 0) & (cols < width)
    inside = rows_in[:, :, None, None] & cols_in[:, None, :, None]
    return jnp.where(inside, x, jnp.zeros((), images.dtype))


def hflip(images, flip):
    """Mirror left-right the images whose ``flip`` bit is set.

    Args:
      images: (B, H, W, C) of any dtype.
      flip: (B,) bool.

    Returns:
      (B, H, W, C) of the input's dtype, bit-identical to ``img[:, ::-1]`` per flipped image.
    """
    images = _check_images(images)
    flip = _check_param(flip, "flip", images.shape[0], kind="bool")
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def rotate_scale(images, angle, scale):
    """Rotate by ``angle`` degrees (counter-clockwise) and scale by ``scale`` about the centre.

    The map of the host's ``augment.rotate_scale`` (Pillow's AFFINE transform, as
    torchvision's ``F.affine`` on a PIL image), reproduced step by step: output pixel (x, y)
    samples the input at ``M (x + 0.5, y + 0.5) + t`` (pixel centres), with M the inverse of
    "rotate by angle, scale by scale" and t keeping the centre (W / 2, H / 2) fixed; a sample
    outside [0, W) x [0, H) is 0, one inside is bilinear between the four nearest pixel
    centres, clamped to the edge pixels (Pillow's BILINEAR filter).

    Differences from the host reference, in uint8 units, measured on 1.2 million pixels of
    random uint8 images at angles in [-30, 30] and scales in [0.8, 1.2]
    (tests/data/test_device_augment.py checks the same bounds): Pillow truncates each result
    to uint8 and this keeps the float, so ``result - reference`` lies in (-0.001, 1.001) for
    all but 0.006% of pixels (``floor(result + 0.001) == reference`` for 99.9%); the rest
    are values within float32 rounding of an integer, which Pillow's float64 truncates to
    the integer below: a difference of at most 1.0005. A sample within about 1e-5 pixels of
    the image's edge could fall inside in one and outside in the other (0 instead of the
    edge value); none did in the measurement.

    Args:
      images: (B, H, W, C) uint8 or float, in pixel units.
      angle: (B,) degrees, positive counter-clockwise.
      scale: (B,) > 0; above 1 enlarges the content.

    Returns:
      (B, H, W, C) float32 in the input's units, not rounded.
    """
    images = _check_images(images)
    b = images.shape[0]
    angle = _check_param(angle, "angle", b, kind="float")
    scale = _check_param(scale, "scale", b, kind="float")
    return _rotate(images, angle, scale)


def _rotate(images, angle, scale, flip=None):
    """`rotate_scale`, mirrored left-right where ``flip`` (B,) is set.

    The mirror is folded into the sampling grid: output column x of a flipped image samples
    where column W - 1 - x would, whose offset from the centre is exactly the negation, so
    the result equals flipping afterwards bit for bit.
    """
    b, height, width, c = images.shape
    a = angle * np.float32(math.pi / 180.0)
    cos = (jnp.cos(a) / scale)[:, None, None]
    sin = (jnp.sin(a) / scale)[:, None, None]
    cx, cy = np.float32(width * 0.5), np.float32(height * 0.5)
    # Pillow's map is xin = cos*x + sin*y + (cx - cos*cx - sin*cy) at pixel centres; written
    # about the centre it is the same map, better conditioned in float32.
    xo = (jnp.arange(width, dtype=jnp.float32) + 0.5 - cx)[None, None, :]
    yo = (jnp.arange(height, dtype=jnp.float32) + 0.5 - cy)[None, :, None]
    if flip is not None:
        xo = jnp.where(flip[:, None, None], -xo, xo)
    xin = cx + cos * xo + sin * yo  # (B, H, W)
    yin = cy - sin * xo + cos * yo
    inside = (xin >= 0) & (xin < width) & (yin >= 0) & (yin < height)
    xs, ys = xin - 0.5, yin - 0.5
    x0, y0 = jnp.floor(xs), jnp.floor(ys)
    dx, dy = (xs - x0)[..., None], (ys - y0)[..., None]
    x0, y0 = x0.astype(jnp.int32), y0.astype(jnp.int32)
    xa, xb = jnp.clip(x0, 0, width - 1), jnp.clip(x0 + 1, 0, width - 1)
    ya, yb = jnp.clip(y0, 0, height - 1), jnp.clip(y0 + 1, 0, height - 1)
    flat = images.reshape(b, height * width, c).astype(jnp.float32)
    corners = jnp.concatenate(
        [(ya * width + xa), (ya * width + xb), (yb * width + xa), (yb * width + xb)], axis=1
    ).reshape(b, 4 * height * width)
    p = _take_rows(flat, corners).reshape(b, 4, height, width, c)
    # Pillow's order of operations: v = a + (b - a) * d, so a constant region stays exact.
    top_row = p[:, 0] + (p[:, 1] - p[:, 0]) * dx
    bottom_row = p[:, 2] + (p[:, 3] - p[:, 2]) * dx
    out = top_row + (bottom_row - top_row) * dy
    return jnp.where(inside[..., None], out, 0.0)


def _taps(start, length, in_size: int, out_len: int, offset: int, n_out: int):
    """Antialiased bilinear taps along one axis: (B, n_out, K) indices and weights.

    Output pixel o of a resize of input pixels [start, start + length) to ``out_len`` is
    centred at (o + 0.5) * length / out_len in box coordinates; the triangle filter is
    stretched by the reduction factor when shrinking (PIL's bilinear support, as
    ``augment._resize_weights``) and restricted to the box, then normalised. At most
    floor(2 * support) + 1 input pixels have non-zero weight; K adds one tap as a margin for
    float32 rounding. Only outputs [offset, offset + n_out) are computed (a centre crop of a
    resize costs only the crop).
    """
    support_max = max(in_size / out_len, 1.0)
    k = math.floor(2.0 * support_max) + 2
    length_f = length.astype(jnp.float32)[:, None, None]
    scale = length_f / np.float32(out_len)
    support = jnp.maximum(scale, 1.0)
    o = jnp.arange(offset, offset + n_out, dtype=jnp.float32)[None, :, None]
    centre = (o + 0.5) * scale  # (B, n_out, 1), box coordinates
    first = jnp.maximum(jnp.floor(centre - support + 0.5), 0.0)
    j = first + jnp.arange(k, dtype=jnp.float32)[None, None, :]  # (B, n_out, K)
    w = jnp.maximum(0.0, 1.0 - jnp.abs(j + 0.5 - centre) / support)
    w = jnp.where(j < length_f, w, 0.0)
    w = w / jnp.maximum(jnp.sum(w, axis=2, keepdims=True), np.float32(1e-12))
    idx = jnp.clip(j.astype(jnp.int32) + start[:, None, None], 0, in_size - 1)
    return idx, w


def _blend_rows(x, idx, w) -> jax.Array:
    """out[b, o] = sum_k w[b, o, k] * x[b, idx[b, o, k]] for x (B, N, M, C) -> (B, n, M, C)."""
    out: jax.Array | None = None
    # One gather and a fused multiply-add per tap: reducing over a tap axis of a gathered
    # (B, n, K, M, C) array ran about 10x slower on CPU.
    for k in range(idx.shape[2]):
        term = _take_rows(x, idx[:, :, k]).astype(jnp.float32) * w[:, :, k, None, None]
        out = term if out is None else out + term
    assert out is not None  # _taps gives K >= 4 taps
    return out


def _resample(images, boxes, out_hw, offset=(0, 0), crop_hw=None, flip=None):
    """Resize each image's box to ``out_hw``, keep outputs [offset, offset + crop_hw), and
    mirror left-right where ``flip`` (B,) is set."""
    _, height, width, _ = images.shape
    crop_hw = out_hw if crop_hw is None else crop_hw
    ri, rw = _taps(boxes[:, 0], boxes[:, 2], height, out_hw[0], offset[0], crop_hw[0])
    ci, cw = _taps(boxes[:, 1], boxes[:, 3], width, out_hw[1], offset[1], crop_hw[1])
    if flip is not None:  # mirrored output columns: the same taps in reverse order
        ci = jnp.where(flip[:, None, None], ci[:, ::-1], ci)
        cw = jnp.where(flip[:, None, None], cw[:, ::-1], cw)
    # Separable, each pass gathering whole rows: columns first on the transposed input (the
    # cheapest array to transpose, uint8 in the pipeline), then rows.
    x = _blend_rows(jnp.swapaxes(images, 1, 2), ci, cw)  # (B, w, H, C)
    return _blend_rows(jnp.swapaxes(x, 1, 2), ri, rw)  # (B, h, w, C)


def resized_crop(images, boxes, out_size):
    """Each image's box resized to ``out_size``: the host's ``random_resized_crop`` given a box.

    Antialiased bilinear like PIL and torchvision's ``antialias=True`` (the triangle filter
    widened by the reduction factor when shrinking, half-pixel centres, normalised weights
    within the box), as a separable K-tap gather per example, so boxes of any size share one
    compiled shape.

    Differences from the host reference ``augment.resize(img[top:top+h, left:left+w], size)``
    (Pillow for uint8 1/3-channel images), in uint8 units, measured on random uint8 images
    and boxes (tests/data/test_device_augment.py): at most 1.0 (Pillow rounds to uint8 after
    each of its two passes, this keeps the float), below 0.5 for 80-85% of pixels; against
    the host's float path (the same filter with float64 weights) at most 1e-3.

    Args:
      images: (B, H, W, C) uint8 or float, in pixel units.
      boxes: (B, 4) int, (top, left, h, w) inside the image (h, w >= 1).
      out_size: int or (h, w) of the output.

    Returns:
      (B, h, w, C) float32 in the input's units, not rounded.
    """
    images = _check_images(images)
    boxes = _check_param(boxes, "boxes", images.shape[0], (4,), kind="int")
    return _resample(images, boxes, _pair(out_size, "out_size"))


def resize(images, size):
    """`resized_crop` with the whole image as the box (``augment.resize``, same tolerances).

    Args:
      images: (B, H, W, C) uint8 or float, in pixel units.
      size: int or (h, w) of the output.

    Returns:
      (B, h, w, C) float32 in the input's units.
    """
    images = _check_images(images)
    b, height, width, _ = images.shape
    boxes = jnp.broadcast_to(jnp.array([0, 0, height, width], jnp.int32), (b, 4))
    return _resample(images, boxes, _pair(size, "size"))


# ----------------------------------------------------------------------------- colour


def _grey(x):
    """torchvision's rgb_to_grayscale for a (B, H, W, 3) float batch -> (B, H, W, 1)."""
    r, g, b = _JITTER_GREY
    return (r * x[..., 0] + g * x[..., 1] + b * x[..., 2])[..., None]


def color_jitter(x, brightness=None, contrast=None, saturation=None, order=None):
    """torchvision's ColorJitter (brightness, contrast, saturation) with the given factors.

    Per example, the enabled adjustments run in the order given by ``order`` (a permutation
    of 0 brightness, 1 contrast, 2 saturation), each as ``F.adjust_*`` on a float tensor:
    brightness ``clip(f x)``, contrast ``clip(f x + (1 - f) mean(grey(x)))``, saturation
    ``clip(f x + (1 - f) grey(x))``, clipped to [0, 1], grey with torchvision's weights
    (0.2989, 0.587, 0.114). As in torchvision, saturation leaves 1-channel images unchanged
    and contrast uses their own mean. Matches torchvision to float32 rounding (tested to 2e-6).

    Args:
      x: (B, H, W, C) float in [0, 1], C in {1, 3}.
      brightness, contrast, saturation: (B,) factors >= 0, or None to leave that one out.
      order: (B, 3) int, a permutation of (0, 1, 2) per example; None: that order.

    Returns:
      (B, H, W, C) float32 in [0, 1].
    """
    x = _check_float_images(x).astype(jnp.float32)
    b, c = x.shape[0], x.shape[3]
    if c not in (1, 3):
        raise ValueError(f"color_jitter needs 1 or 3 channels; got shape {tuple(x.shape)}")
    factors = {}
    for i, (name, value) in enumerate(
        (("brightness", brightness), ("contrast", contrast), ("saturation", saturation))
    ):
        if value is not None:
            f = _check_param(value, name, b, kind="float")[:, None, None, None]
            factors[i] = f
    if order is None:
        order = jnp.broadcast_to(jnp.arange(3, dtype=jnp.int32), (b, 3))
    order = _check_param(order, "order", b, (3,), kind="int")

    if c == 1:
        factors.pop(2, None)  # saturation leaves a grey image unchanged (torchvision)
    # Each adjustment is torchvision's blend clip(f x + (1 - f) g), with g = 0 (brightness),
    # the mean grey level (contrast) or the grey image (saturation). At each of the three
    # steps every image blends with the factor and target its order names: one fused pass
    # per step and no data-dependent control flow.
    for step in range(3):
        # Materialise each step's input: otherwise XLA may fuse whatever produced it (an
        # earlier step, a resample's gathers) into the mean below and recompute it per
        # element (5 to 30x slower on CPU).
        x = jax.lax.optimization_barrier(x)
        op = order[:, step][:, None, None, None]
        f = jnp.ones_like(op, dtype=jnp.float32)
        g = jnp.zeros_like(op, dtype=jnp.float32)
        active = jnp.zeros_like(op, dtype=bool)
        for i, factor in factors.items():
            chosen = op == i
            f = jnp.where(chosen, factor, f)
            if i == 1:
                # The mean of the grey image is the grey of the channel means (linear).
                means = jnp.mean(x, axis=(1, 2), keepdims=True)
                g = jnp.where(chosen, _grey(means) if c == 3 else means, g)
            elif i == 2:
                g = jnp.where(chosen, _grey(x), g)
            active = active | chosen
        x = jnp.where(active, jnp.clip(f * x + (1.0 - f) * g, 0.0, 1.0), x)
    return x


def pca_lighting(x, alphas):
    """AlexNet's PCA lighting: add ``EIGVEC @ (alpha * EIGVAL)`` to every pixel, per image.

    The host's ``augment.pca_lighting`` given the alphas (ImageNet eigen data, no clipping).
    The offset is computed in float32 (the host: float64 then rounded), which differs by at
    most a few float32 ulps (tested to 1e-6).

    Args:
      x: (B, H, W, 3) float RGB in [0, 1].
      alphas: (B, 3) float, the per-component alphas.

    Returns:
      (B, H, W, 3) float32.
    """
    x = _check_float_images(x)
    if x.shape[3] != 3:
        raise ValueError(f"pca_lighting needs RGB images (B, H, W, 3); got shape {x.shape}")
    alphas = _check_param(alphas, "alphas", x.shape[0], (3,), kind="float")
    # Elementwise rather than a matmul: a default-precision dot is bfloat16 on TPU.
    vec = jnp.asarray(IMAGENET_PCA_EIGVEC, jnp.float32)[None]  # (1, 3, 3)
    weighted = alphas * jnp.asarray(IMAGENET_PCA_EIGVAL, jnp.float32)[None, :]  # (B, 3)
    offset = jnp.sum(vec * weighted[:, None, :], axis=2)  # (B, 3)
    return x.astype(jnp.float32) + offset[:, None, None, :]


def _stats(values, name: str, channels: int, *, positive: bool) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be {channels} numbers; got {values!r}") from e
    if arr.shape != (channels,):
        raise ValueError(f"{name} must have one value per channel ({channels}); got {values!r}")
    if not np.all(np.isfinite(arr)) or (positive and np.any(arr <= 0)):
        raise ValueError(
            f"{name} must be finite{' and positive' if positive else ''}; got {values!r}"
        )
    return arr


def _normalize(x, mean, std, channels, pixel_max: float):
    c = x.shape[3]
    channels = c if channels is None else channels
    if channels != c and not (channels in (1, 3) and c in (1, 3)):
        raise ValueError(
            f"channels must be the images' channel count ({c}) or 1 <-> 3; got {channels!r}"
        )
    mean = _stats(mean, "mean", channels, positive=False)
    std = _stats(std, "std", channels, positive=True)
    # The same float32 constants as the host's _Transform.finish, so a uint8 batch that only
    # went through crops and flips normalises to the same bits.
    scale = 1.0 / std
    if pixel_max != 1.0:
        scale = scale / pixel_max
    offset = (mean / std).astype(np.float32)
    x = x.astype(jnp.float32)
    if channels != c:
        if channels == 3:
            x = jnp.broadcast_to(x, (*x.shape[:3], 3))
        else:
            # Pillow's luma, elementwise (a default-precision dot is bfloat16 on TPU).
            lw = LUMA_WEIGHTS.astype(np.float32)
            x = (x[..., 0] * lw[0] + x[..., 1] * lw[1] + x[..., 2] * lw[2])[..., None]
    return x * scale.astype(np.float32).reshape(1, 1, 1, -1) - offset.reshape(1, 1, 1, -1)


def normalize(x, mean, std, *, channels: int | None = None):
    """Channel conversion and ``(x - mean) / std``, uint8 -> [0, 1] fused into the scale.

    As the host's ``_Transform.finish``: the channel count is converted first (1 -> 3 repeats,
    3 -> 1 takes Pillow's ITU-R 601-2 luma), then ``x * (1 / std [/ 255]) - mean / std`` with
    the same float32 constants, so uint8 input gives the host's bits when run eagerly (the
    luma's summation order may differ by an ulp); under jit, XLA may contract the multiply
    and subtract into one fused multiply-add, which differs by at most an ulp.

    Args:
      x: (B, H, W, C) uint8 (0..255) or float in [0, 1], C in {1, 3} if converted.
      mean: ``channels`` static per-channel means in [0, 1] units.
      std: ``channels`` static per-channel standard deviations, positive.
      channels: output channel count; None keeps C.

    Returns:
      (B, H, W, channels) float32.
    """
    x = _check_images(x, "x")
    return _normalize(x, mean, std, channels, 255.0 if x.dtype == jnp.uint8 else 1.0)


# ----------------------------------------------------------------------------- pipeline


@dataclasses.dataclass(frozen=True)
class AugmentSpec:
    """The static description of a batch's train and eval transforms (hashable).

    Field names follow the `data` config section (`jaxcnn.data.DataConfig`); use
    `from_config` to build one from it.

    Attributes:
      image_size: S, the side of the square images produced.
      input_hw: (H, W) of the uint8 batches given to `augment_batch` / `eval_batch`.
      source_channels: C of the input batches.
      channels: C_out of the output (1 <-> 3 conversion); None: source_channels.
      mean, std: C_out per-channel statistics in [0, 1] units.
      eval_resize: shorter side before the centre crop (and the training crop), 0: off.
      random_crop_padding, random_rotation, random_scale, random_resized_crop, hflip,
        pca_lighting: as in the config.
      color_jitter: (brightness, contrast, saturation) ColorJitter strengths, 0: off.
    """

    image_size: int
    input_hw: tuple[int, int]
    source_channels: int
    channels: int | None
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # The data config's defaults (`DataConfig` holds them; a frozen dataclass's class attribute
    # is its field's default): an unset transform is off.
    eval_resize: int = DataConfig.eval_resize
    random_crop_padding: int = DataConfig.random_crop_padding
    random_rotation: float = DataConfig.random_rotation
    random_scale: float = DataConfig.random_scale
    random_resized_crop: bool = DataConfig.random_resized_crop
    hflip: bool = DataConfig.hflip
    pca_lighting: float = DataConfig.pca_lighting
    color_jitter: tuple[float, float, float] = DataConfig.color_jitter

    def __post_init__(self):
        def put(name, value):
            object.__setattr__(self, name, value)

        for name, lowest in (("image_size", 1), ("eval_resize", 0), ("random_crop_padding", 0)):
            value = getattr(self, name)
            if not _is_int(value) or value < lowest:
                raise ValueError(f"{name} must be an int >= {lowest}; got {value!r}")
            put(name, int(value))
        put("input_hw", _pair(self.input_hw, "input_hw"))
        if not _is_int(self.source_channels) or self.source_channels < 1:
            raise ValueError(
                f"source_channels must be a positive int; got {self.source_channels!r}"
            )
        put("source_channels", int(self.source_channels))
        channels = self.source_channels if self.channels is None else self.channels
        if not _is_int(channels) or (
            channels != self.source_channels
            and not (channels in (1, 3) and self.source_channels in (1, 3))
        ):
            raise ValueError(
                f"channels must be None, source_channels ({self.source_channels}) or a 1 <-> 3 "
                f"conversion; got {self.channels!r}"
            )
        put("channels", int(channels))
        put("mean", tuple(float(v) for v in _stats(self.mean, "mean", channels, positive=False)))
        put("std", tuple(float(v) for v in _stats(self.std, "std", channels, positive=True)))
        if not (_is_real(self.random_rotation) and 0 <= self.random_rotation <= 180):
            raise ValueError(
                f"random_rotation must be degrees in [0, 180]; got {self.random_rotation!r}"
            )
        if not (_is_real(self.random_scale) and 0 <= self.random_scale < 1):
            raise ValueError(f"random_scale must be in [0, 1); got {self.random_scale!r}")
        if not (
            _is_real(self.pca_lighting)
            and math.isfinite(self.pca_lighting)
            and self.pca_lighting >= 0
        ):
            raise ValueError(
                f"pca_lighting must be a finite number >= 0; got {self.pca_lighting!r}"
            )
        put("random_rotation", float(self.random_rotation))
        put("random_scale", float(self.random_scale))
        put("pca_lighting", float(self.pca_lighting))
        put("random_resized_crop", bool(self.random_resized_crop))
        put("hflip", bool(self.hflip))
        jitter = self.color_jitter
        if _is_real(jitter):
            jitter = (jitter, jitter, jitter)
        if not (
            isinstance(jitter, Sequence)
            and len(jitter) == 3
            and all(_is_real(v) and math.isfinite(v) and v >= 0 for v in jitter)
        ):
            raise ValueError(
                f"color_jitter must be a number >= 0 or (brightness, contrast, saturation) "
                f"numbers >= 0; got {self.color_jitter!r}"
            )
        put("color_jitter", tuple(float(v) for v in jitter))
        if self.random_resized_crop and self.random_crop_padding:
            raise ValueError(
                "random_resized_crop and random_crop_padding are alternatives; got both "
                f"(random_crop_padding={self.random_crop_padding})"
            )
        if self.eval_resize and self.eval_resize < self.image_size:
            raise ValueError(
                f"eval_resize ({self.eval_resize}) must be >= image_size ({self.image_size}) "
                f"(or 0): the crops are taken from images whose shorter side is eval_resize"
            )
        if self.pca_lighting and self.source_channels != 3:
            raise ValueError(
                f"pca_lighting needs RGB input (source_channels=3); got source_channels="
                f"{self.source_channels}"
            )

    @classmethod
    def from_config(
        cls,
        data_cfg,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        source_channels: int,
        channels: int | None,
        input_hw,
    ) -> AugmentSpec:
        """The spec of a `data` config section (`DataConfig`, ConfigDict or mapping).

        Missing keys take their defaults (`jaxcnn.data.DataConfig`); ``color_jitter`` is a
        (brightness, contrast, saturation) triple or one number for all three.

        Args:
          data_cfg: the `data` section of the training config.
          mean, std: the resolved per-channel statistics, ``channels`` values each.
          source_channels: channel count of the uint8 batches.
          channels: the resolved output channel count (None: source_channels).
          input_hw: (H, W) of the uint8 batches.

        Returns:
          `AugmentSpec`.
        """
        cfg = DataConfig.from_any(data_cfg)
        return cls(
            image_size=cfg.image_size,
            input_hw=tuple(input_hw),
            source_channels=source_channels,
            channels=channels,
            mean=tuple(mean),
            std=tuple(std),
            eval_resize=cfg.eval_resize,
            random_crop_padding=cfg.random_crop_padding,
            random_rotation=cfg.random_rotation,
            random_scale=cfg.random_scale,
            random_resized_crop=cfg.random_resized_crop,
            hflip=cfg.hflip,
            pca_lighting=cfg.pca_lighting,
            color_jitter=cfg.color_jitter,
        )

    @property
    def train_hw(self) -> tuple[int, int]:
        """(H, W) after the training resize step, where the crop is taken (without RRC)."""
        if self.eval_resize:
            return _shorter_side_hw(self.input_hw, self.eval_resize)
        return (self.image_size, self.image_size)

    @property
    def param_names(self) -> tuple[str, ...]:
        """The keys `sample_params` returns for this spec (those its transforms read)."""
        names = []
        s = self.image_size
        if self.random_resized_crop:
            names.append("box")
        elif self.random_crop_padding or self.train_hw != (s, s):
            names += ["top", "left"]
        if self.random_rotation or self.random_scale:
            names += ["angle", "scale"]
        if self.hflip:
            names.append("flip")
        if self.pca_lighting:
            names.append("alpha")
        jitter = dict(zip(("brightness", "contrast", "saturation"), self.color_jitter, strict=True))
        names += [name for name, value in jitter.items() if value]
        if any(self.color_jitter):
            names.append("jitter_order")
        return tuple(names)

    def sample_params(self, key, batch: int) -> dict[str, jax.Array]:
        """`sample_params` for this spec's training transforms (see there for the keys)."""
        brightness, contrast, saturation = self.color_jitter
        return sample_params(
            key,
            batch,
            image_hw=self.input_hw if self.random_resized_crop else self.train_hw,
            out_size=self.image_size,
            padding=self.random_crop_padding,
            rotation=self.random_rotation,
            scale=self.random_scale,
            rrc=self.random_resized_crop,
            hflip=self.hflip,
            pca=self.pca_lighting,
            brightness=brightness,
            contrast=contrast,
            saturation=saturation,
        )


def _check_batch(images, spec: AugmentSpec, name: str):
    if not isinstance(spec, AugmentSpec):
        raise TypeError(f"spec must be an AugmentSpec; got {type(spec).__name__}")
    images = _check_images(images, name, uint8=True)
    expected = (*spec.input_hw, spec.source_channels)
    if tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"{name} must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}) "
            f"(spec.input_hw and spec.source_channels); got {tuple(images.shape)}"
        )
    return images


def apply_params(images_uint8, params: Mapping[str, Any], spec: AugmentSpec):
    """The training transforms of ``spec`` with the given parameters (no randomness).

    The host pipeline's order: random resized crop, or [resize to eval_resize's shorter side,
    or to image_size if the sizes differ] + rotation/scale + padded crop; then flip, colour
    jitter, PCA lighting, and channel conversion with normalisation.

    Args:
      images_uint8: (B, H, W, C) uint8 with (H, W, C) = (*spec.input_hw, spec.source_channels).
      params: what ``spec.sample_params(key, B)`` returns (the keys of enabled transforms).
      spec: `AugmentSpec`.

    Returns:
      (B, S, S, C_out) float32, normalised.
    """
    x = _check_batch(images_uint8, spec, "images_uint8")
    missing = sorted(set(spec.param_names) - set(params))
    if missing:
        raise ValueError(f"params lacks {missing}, which spec's transforms need")
    s = spec.image_size
    b = x.shape[0]

    def param(name, tail=(), kind="float"):
        return _check_param(params[name], f"params[{name!r}]", b, tail, kind=kind)

    # The flip is folded into the last geometric transform (exactly: the same values,
    # mirrored), so no separate pass over the batch is needed for it.
    flip = param("flip", kind="bool") if spec.hflip else None
    if spec.random_resized_crop:
        x = _resample(x, param("box", (4,), "int"), (s, s), flip=flip)
        flip = None
    else:
        if spec.input_hw != spec.train_hw:
            x = resize(x, spec.train_hw)
        crop = spec.random_crop_padding or spec.train_hw != (s, s)
        if spec.random_rotation or spec.random_scale:
            x = _rotate(x, param("angle"), param("scale"), None if crop else flip)
            flip = flip if crop else None
        if crop:
            x = _crop(x, param("top", kind="int"), param("left", kind="int"), s, s, flip)
            flip = None
    if flip is not None:
        x = hflip(x, flip)
    pixel_max = 255.0
    if any(spec.color_jitter) or spec.pca_lighting:
        # To [0, 1] as the host's to_float: jitter and PCA are defined on [0, 1] values.
        x = x.astype(jnp.float32) * np.float32(1.0 / 255.0)
        pixel_max = 1.0
        if any(spec.color_jitter):
            x = color_jitter(
                x,
                params.get("brightness"),
                params.get("contrast"),
                params.get("saturation"),
                params["jitter_order"],
            )
        if spec.pca_lighting:
            x = pca_lighting(x, params["alpha"])
    return _normalize(x, spec.mean, spec.std, spec.channels, pixel_max)


def augment_batch(images_uint8, key, spec: AugmentSpec):
    """Augment and normalise a training batch: ``apply_params(images, spec.sample_params(key))``.

    Pure and jit-compatible; ``spec`` is static (``jax.jit(augment_batch,
    static_argnames="spec")`` or a ``functools.partial``), so it traces once per input shape.

    Args:
      images_uint8: (B, H, W, C) uint8 with (H, W, C) = (*spec.input_hw, spec.source_channels).
      key: a jax.random key, e.g. ``fold_in(key(seed), step)``.
      spec: `AugmentSpec`.

    Returns:
      (B, S, S, C_out) float32 with S = spec.image_size, C_out = spec.channels.
    """
    images = _check_batch(images_uint8, spec, "images_uint8")
    key = _check_key(key)
    # Materialise the parameters (B-sized arrays): left to itself, XLA may fuse the random
    # bit generation into the per-pixel loops that read them and recompute it per pixel.
    params = jax.lax.optimization_barrier(spec.sample_params(key, images.shape[0]))
    return apply_params(images, params, spec)


def eval_batch(images_uint8, spec: AugmentSpec):
    """The evaluation transform: [resize shorter side + centre crop | resize], normalise.

    As the host's ``_Transform.eval`` then ``finish``: with ``eval_resize``, the shorter side
    is resized to it and the central image_size crop kept (only the kept pixels are
    computed); otherwise a batch not at image_size is resized to it.

    Args:
      images_uint8: (B, H, W, C) uint8 with (H, W, C) = (*spec.input_hw, spec.source_channels).
      spec: `AugmentSpec`.

    Returns:
      (B, S, S, C_out) float32.
    """
    x = _check_batch(images_uint8, spec, "images_uint8")
    s = spec.image_size
    if spec.eval_resize:
        h1, w1 = _shorter_side_hw(spec.input_hw, spec.eval_resize)
        # augment.center_crop's offsets (Python's round, half to even, as torchvision).
        top, left = round((h1 - s) / 2.0), round((w1 - s) / 2.0)
        b, height, width, _ = x.shape
        boxes = jnp.broadcast_to(jnp.array([0, 0, height, width], jnp.int32), (b, 4))
        x = _resample(x, boxes, (h1, w1), (top, left), (s, s))
    elif spec.input_hw != (s, s):
        x = resize(x, s)
    return _normalize(x, spec.mean, spec.std, spec.channels, 255.0)
