"""Per-example image transforms in pure numpy, with explicit random generators.

Every function takes one image ``img: (H, W, C)`` (uint8 in 0..255, or float in [0, 1]) and
returns a new one; random transforms draw only from the ``rng: np.random.Generator`` they are
given, so a caller that derives ``rng`` from (seed, position) gets the same result wherever
and whenever the example is processed. Geometry follows ``torchvision.transforms``: the same
random draws (in the same order) and the same crop arithmetic, so results can be checked
against ``torchvision.transforms.functional`` given the drawn parameters.

Bilinear resizing is antialiased like PIL's (and torchvision's default ``antialias=True``):
a triangle filter whose support widens by the reduction factor when shrinking, and plain
bilinear interpolation with half-pixel centres when enlarging. uint8 images with 1 or 3
channels are resized by Pillow itself; float images (and other channel counts) by an
equivalent separable weight matrix in numpy, in float64.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np

# AlexNet's PCA of ImageNet RGB pixels (values in [0, 1]), as used by fb.resnet.torch and the
# torchvision reference recipes: eigenvalues, and eigenvectors as the columns of EIGVEC.
IMAGENET_PCA_EIGVAL = np.array([0.2175, 0.0188, 0.0045], dtype=np.float64)
IMAGENET_PCA_EIGVEC = np.array(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ],
    dtype=np.float64,
)
# ITU-R 601-2 luma, the weights of Pillow's "RGB" -> "L" conversion.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float64)

__all__ = [
    "IMAGENET_PCA_EIGVAL",
    "IMAGENET_PCA_EIGVEC",
    "LUMA_WEIGHTS",
    "center_crop",
    "convert_channels",
    "hflip",
    "normalize",
    "pca_lighting",
    "random_crop",
    "random_resized_crop",
    "random_resized_crop_params",
    "resize",
    "resize_shorter",
    "resized_crop_fallback",
    "to_float",
]


# ----------------------------------------------------------------------------- validation


def _check_image(img, name: str = "img") -> np.ndarray:
    if not isinstance(img, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H, W, C); got {type(img).__name__}")
    if img.ndim != 3:
        raise ValueError(f"{name} must have shape (H, W, C); got shape {img.shape}")
    if img.shape[0] < 1 or img.shape[1] < 1 or img.shape[2] < 1:
        raise ValueError(f"{name} must be non-empty (H, W, C >= 1); got shape {img.shape}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"{name} must be uint8 or floating point; got dtype {img.dtype}")
    return img


def _pair(size, name: str = "size") -> tuple[int, int]:
    """An int or (h, w) pair of positive ints -> (h, w)."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif (
        isinstance(size, Sequence)
        and len(size) == 2
        and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in size)
    ):
        pair = (int(size[0]), int(size[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints (h, w); got {size!r}")
    if pair[0] < 1 or pair[1] < 1:
        raise ValueError(f"{name} must be positive; got {size!r}")
    return pair


def _check_rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator; got {type(rng).__name__}")
    return rng


def _check_range(value, name: str, lowest: float) -> tuple[float, float]:
    if not (isinstance(value, Sequence) and len(value) == 2):
        raise TypeError(f"{name} must be a pair (low, high); got {value!r}")
    low, high = float(value[0]), float(value[1])
    if not (lowest < low <= high):
        raise ValueError(f"{name} must satisfy {lowest} < low <= high; got {value!r}")
    return low, high


# ----------------------------------------------------------------------------- conversions


def to_float(img: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 [0, 1]; a float image is returned as float32 unchanged.

    Args:
      img: (H, W, C) uint8 or float.

    Returns:
      (H, W, C) float32.
    """
    img = _check_image(img)
    if img.dtype == np.uint8:
        return img.astype(np.float32) * np.float32(1.0 / 255.0)
    return img.astype(np.float32, copy=False)


def convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """Grey <-> RGB: 1 -> 3 repeats the channel, 3 -> 1 takes ITU-R 601-2 luma (as Pillow's "L").

    Args:
      img: (H, W, C) uint8 or float, C in {1, 3}.
      channels: 1 or 3.

    Returns:
      (H, W, channels), uint8 (rounded) if the input was uint8, else float32.
    """
    img = _check_image(img)
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels!r}")
    c = img.shape[2]
    if c == channels:
        return img
    if c == 1:
        return np.repeat(img, 3, axis=2)
    if c != 3:
        raise ValueError(f"img must have 1 or 3 channels to convert; got shape {img.shape}")
    grey = img.astype(np.float64) @ LUMA_WEIGHTS
    if img.dtype == np.uint8:
        return np.clip(np.rint(grey), 0, 255).astype(np.uint8)[:, :, None]
    return grey.astype(np.float32)[:, :, None]


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(img - mean) / std per channel, on [0, 1] values (uint8 input is divided by 255 first).

    Args:
      img: (H, W, C) uint8 or float.
      mean: C per-channel means in [0, 1] units.
      std: C per-channel standard deviations, positive.

    Returns:
      (H, W, C) float32.
    """
    x = to_float(img)
    m = np.asarray(mean, dtype=np.float32).reshape(-1)
    s = np.asarray(std, dtype=np.float32).reshape(-1)
    c = x.shape[2]
    if m.shape != (c,) or s.shape != (c,):
        raise ValueError(
            f"mean and std must have one value per channel ({c}); got mean {m.tolist()} "
            f"and std {s.tolist()}"
        )
    if np.any(s <= 0):
        raise ValueError(f"std must be positive; got {s.tolist()}")
    return (x - m) / s


# ----------------------------------------------------------------------------- geometry


@functools.lru_cache(maxsize=256)
def _resize_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) float64 rows of PIL's antialiased bilinear (triangle) filter.

    Output pixel o is centred at (o + 0.5) * in / out in input coordinates; input pixel j at
    j + 0.5. When shrinking the triangle is stretched by the reduction factor (antialiasing);
    rows are normalised, which near the border equals clamping to the edge pixel.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centres = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    dist = (np.arange(in_size, dtype=np.float64)[None, :] + 0.5 - centres[:, None]) / support
    w = np.maximum(0.0, 1.0 - np.abs(dist))
    w /= w.sum(axis=1, keepdims=True)
    w.setflags(write=False)
    return w


def _resize_numpy(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    x = img.astype(np.float64)
    wh = _resize_weights(img.shape[0], out_h)
    ww = _resize_weights(img.shape[1], out_w)
    y = np.einsum("oh,hwc->owc", wh, x)
    return np.einsum("pw,owc->opc", ww, y)


def resize(img: np.ndarray, size) -> np.ndarray:
    """Antialiased bilinear resize to exactly ``size`` (torchvision ``F.resize(img, [h, w])``).

    Args:
      img: (H, W, C) uint8 or float.
      size: int (square) or (h, w).

    Returns:
      (h, w, C) of the input's dtype (uint8 rounded; float as float32).
    """
    img = _check_image(img)
    out_h, out_w = _pair(size)
    if img.shape[:2] == (out_h, out_w):
        return img.copy() if img.dtype == np.uint8 else img.astype(np.float32)
    c = img.shape[2]
    if img.dtype == np.uint8 and c in (1, 3):
        # Pillow's C resampler is several times faster than the dense numpy filter on large
        # images and is bit-exact with torchvision's PIL path.
        from PIL import Image

        pil = Image.fromarray(img[:, :, 0] if c == 1 else np.ascontiguousarray(img))
        out = np.asarray(pil.resize((out_w, out_h), Image.Resampling.BILINEAR))
        return out[:, :, None] if c == 1 else out
    out = _resize_numpy(img, out_h, out_w)
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(np.float32)


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size``, keeping the aspect ratio (``F.resize(img, size)``).

    The longer side is ``int(size * long / short)`` (truncated), as torchvision computes it.

    Args:
      img: (H, W, C) uint8 or float.
      size: the new shorter side, positive int.

    Returns:
      (h, w, C) with min(h, w) == size, of the input's dtype.
    """
    img = _check_image(img)
    (size, _) = _pair(size)
    h, w = img.shape[:2]
    if h <= w:
        out = (size, int(size * w / h))
    else:
        out = (int(size * h / w), size)
    return resize(img, out)


def center_crop(img: np.ndarray, size) -> np.ndarray:
    """The central ``size`` crop (``F.center_crop``: offsets ``round((H - h) / 2)``).

    Unlike torchvision, a crop larger than the image is an error rather than zero padding:
    in a pipeline it means the resize before it was configured too small.

    Args:
      img: (H, W, C).
      size: int or (h, w), at most the image's size.

    Returns:
      (h, w, C), a copy of the input's dtype.
    """
    img = _check_image(img)
    h, w = _pair(size)
    H, W = img.shape[:2]
    if h > H or w > W:
        raise ValueError(
            f"center_crop size {(h, w)} is larger than the image ({H}, {W}); resize the image "
            f"to at least {(h, w)} first"
        )
    top = round((H - h) / 2.0)
    left = round((W - w) / 2.0)
    return img[top : top + h, left : left + w].copy()


def random_crop(img: np.ndarray, size, padding: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` crop of the image zero-padded by ``padding`` on every side.

    torchvision's ``RandomCrop(size, padding=padding)``: the top offset is drawn first, then
    the left one, each uniform over every valid position of the padded image. The padding is
    never materialised: the crop window is intersected with the image and copied into zeros.

    Args:
      img: (H, W, C).
      size: int or (h, w), at most (H + 2 * padding, W + 2 * padding).
      padding: non-negative int.
      rng: the generator to draw the offsets from.

    Returns:
      (h, w, C), the input's dtype.
    """
    img = _check_image(img)
    h, w = _pair(size)
    if not isinstance(padding, (int, np.integer)) or isinstance(padding, bool) or padding < 0:
        raise ValueError(f"padding must be a non-negative int; got {padding!r}")
    rng = _check_rng(rng)
    H, W = img.shape[:2]
    ph, pw = H + 2 * padding, W + 2 * padding
    if h > ph or w > pw:
        raise ValueError(
            f"random_crop size {(h, w)} is larger than the padded image ({ph}, {pw}) "
            f"(image ({H}, {W}) with padding {padding})"
        )
    top = int(rng.integers(0, ph - h + 1)) - padding  # in image coordinates
    left = int(rng.integers(0, pw - w + 1)) - padding
    return _crop_with_zeros(img, top, left, h, w)


def _crop_with_zeros(img: np.ndarray, top: int, left: int, h: int, w: int) -> np.ndarray:
    """img[top:top+h, left:left+w] where out-of-image pixels read as zero."""
    H, W = img.shape[:2]
    if top >= 0 and left >= 0 and top + h <= H and left + w <= W:
        return img[top : top + h, left : left + w].copy()
    out = np.zeros((h, w, img.shape[2]), dtype=img.dtype)
    y0, y1 = max(top, 0), min(top + h, H)
    x0, x1 = max(left, 0), min(left + w, W)
    if y0 < y1 and x0 < x1:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = img[y0:y1, x0:x1]
    return out


def rotate_scale(img: np.ndarray, angle: float, scale: float) -> np.ndarray:
    """Rotate by ``angle`` degrees (counter-clockwise) and scale by ``scale`` about the centre.

    torchvision's ``F.affine(img, angle, translate=[0, 0], scale=scale, shear=[0.0])`` on a
    PIL image: the centre is (W / 2, H / 2), bilinear interpolation, zeros outside the image.

    Args:
      img: (H, W, C) uint8 with C = 1 or 3.
      angle: degrees, positive counter-clockwise.
      scale: > 0; above 1 enlarges the content.

    Returns:
      (H, W, C) uint8.
    """
    img = _check_image(img)
    if img.dtype != np.uint8 or img.shape[2] not in (1, 3):
        raise ValueError(
            f"rotate_scale needs a uint8 image with 1 or 3 channels; got {img.dtype} "
            f"with {img.shape[2]} channels"
        )
    if not scale > 0:
        raise ValueError(f"scale must be > 0; got {scale!r}")
    from PIL import Image

    h, w, c = img.shape
    # PIL maps each output pixel (x, y) to the input pixel M (x, y) + t: M is the inverse of
    # "rotate by angle, scale by s" (in image coordinates, y down), t keeps the centre fixed.
    a = math.radians(angle)
    cos, sin = math.cos(a) / scale, math.sin(a) / scale
    cx, cy = w * 0.5, h * 0.5
    matrix = (cos, sin, cx - cos * cx - sin * cy, -sin, cos, cy + sin * cx - cos * cy)
    pil = Image.fromarray(img[:, :, 0] if c == 1 else np.ascontiguousarray(img))
    out = np.asarray(
        pil.transform(
            (w, h), Image.Transform.AFFINE, matrix, resample=Image.Resampling.BILINEAR, fillcolor=0
        )
    )
    return out[:, :, None] if c == 1 else out


def random_rotate_scale(
    img: np.ndarray, rng: np.random.Generator, degrees: float, scale: float
) -> np.ndarray:
    """`rotate_scale` by an angle uniform in [-degrees, degrees] and a factor uniform in
    [1 - scale, 1 + scale], drawn in that order (as torchvision's ``RandomAffine(degrees,
    scale=(1 - scale, 1 + scale))``). Small rotations and rescalings are the classic
    augmentation for handwritten digits (Simard et al. 2003)."""
    rng = _check_rng(rng)
    if not 0 <= degrees <= 180:
        raise ValueError(f"degrees must be in [0, 180]; got {degrees!r}")
    if not 0 <= scale < 1:
        raise ValueError(f"scale must be in [0, 1); got {scale!r}")
    angle = float(rng.uniform(-degrees, degrees))
    factor = float(rng.uniform(1 - scale, 1 + scale))
    return rotate_scale(img, angle, factor)


def hflip(img: np.ndarray, rng: np.random.Generator, p: float = 0.5) -> np.ndarray:
    """Mirror left-right with probability ``p`` (one ``rng.random()`` draw).

    Args:
      img: (H, W, C).
      rng: the generator to draw from.
      p: flip probability in [0, 1].

    Returns:
      (H, W, C): the flipped image (a view) or ``img`` itself.
    """
    img = _check_image(img)
    rng = _check_rng(rng)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1]; got {p!r}")
    return img[:, ::-1] if rng.random() < p else img


def random_resized_crop_params(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> tuple[int, int, int, int]:
    """The crop box of ``RandomResizedCrop.get_params`` (torchvision's algorithm).

    Up to 10 tries: area fraction ~ U(scale), log aspect ~ U(log ratio); the first box that
    fits is placed uniformly at random. Otherwise a central crop of the whole image clamped to
    the ratio range.

    Args:
      height: image height H.
      width: image width W.
      rng: the generator to draw from.
      scale: (low, high) fraction of the image area.
      ratio: (low, high) aspect ratio w / h.

    Returns:
      (top, left, h, w) of the crop.
    """
    rng = _check_rng(rng)
    scale = _check_range(scale, "scale", 0.0)
    ratio = _check_range(ratio, "ratio", 0.0)
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_ratio[0], log_ratio[1]))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return resized_crop_fallback(height, width, ratio)


def resized_crop_fallback(
    height: int, width: int, ratio: tuple[float, float]
) -> tuple[int, int, int, int]:
    """torchvision's box when none of the 10 tries fits: the whole image clamped to the
    ratio range, centred. Returns (top, left, h, w)."""
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w = width
        h = round(w / ratio[0])
    elif in_ratio > ratio[1]:
        h = height
        w = round(h * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    img: np.ndarray,
    size,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
) -> np.ndarray:
    """Inception-style crop: a random box (`random_resized_crop_params`) resized to ``size``.

    Args:
      img: (H, W, C).
      size: int or (h, w) of the output.
      rng: the generator to draw from.
      scale: (low, high) fraction of the image area.
      ratio: (low, high) aspect ratio w / h.

    Returns:
      (h, w, C), the input's dtype (float as float32).
    """
    img = _check_image(img)
    out = _pair(size)
    top, left, h, w = random_resized_crop_params(img.shape[0], img.shape[1], rng, scale, ratio)
    return resize(img[top : top + h, left : left + w], out)


# ----------------------------------------------------------------------------- colour


# torchvision's rgb_to_grayscale weights, which ColorJitter's contrast and saturation use.
JITTER_GREY = np.array([0.2989, 0.587, 0.114], np.float32)


def adjust_colors(
    img: np.ndarray,
    brightness: float | None = None,
    contrast: float | None = None,
    saturation: float | None = None,
    order: Sequence[int] | np.ndarray = (0, 1, 2),
) -> np.ndarray:
    """torchvision's brightness/contrast/saturation adjustments with given factors, in order.

    Each is a blend ``clip(f * x + (1 - f) * g, 0, 1)`` with g = 0 (brightness, index 0), the
    mean grey level (contrast, 1) or the grey image (saturation, 2), as ``F.adjust_*`` do on
    float tensors; saturation leaves a grey image unchanged and contrast uses its own mean.

    Args:
      img: (H, W, C) float in [0, 1], C in {1, 3}.
      brightness, contrast, saturation: factors >= 0, or None to leave that one out.
      order: a permutation of (0, 1, 2) (a sequence or an int array): the order the enabled
        adjustments run in.

    Returns:
      (H, W, C) float32 in [0, 1].
    """
    img = _check_image(img)
    if img.dtype == np.uint8:
        raise TypeError("adjust_colors needs a float image in [0, 1]; got uint8 (use to_float)")
    if img.shape[2] not in (1, 3):
        raise ValueError(f"adjust_colors needs 1 or 3 channels; got shape {img.shape}")
    if sorted(int(i) for i in order) != [0, 1, 2]:
        raise ValueError(f"order must be a permutation of (0, 1, 2); got {tuple(order)!r}")
    x = img.astype(np.float32)
    factors = (brightness, contrast, saturation)
    for i in order:
        f = factors[int(i)]
        if f is None:
            continue
        if f < 0 or not math.isfinite(f):
            name = ("brightness", "contrast", "saturation")[int(i)]
            raise ValueError(f"{name} factor must be a finite number >= 0; got {f!r}")
        f = np.float32(f)
        if i == 0:
            g = np.float32(0.0)
        elif x.shape[2] == 1:
            if i == 2:
                continue  # a grey image has no saturation to change
            g = x.mean(dtype=np.float32)
        else:
            grey = x @ JITTER_GREY
            g = grey.mean(dtype=np.float32) if i == 1 else grey[..., None]
        x = np.clip(f * x + (np.float32(1.0) - f) * g, 0.0, 1.0).astype(np.float32)
    return x


def color_jitter(
    img: np.ndarray,
    rng: np.random.Generator,
    brightness: float = 0.0,
    contrast: float = 0.0,
    saturation: float = 0.0,
) -> np.ndarray:
    """torchvision's ``ColorJitter(brightness, contrast, saturation)`` on a float image.

    Each strength s > 0 draws its factor uniformly from [max(0, 1 - s), 1 + s] (in the order
    brightness, contrast, saturation), then a random order of the three adjustments is drawn
    (`rng.permutation(3)`) and `adjust_colors` applies them; a strength of 0 leaves that
    adjustment out.

    Args:
      img: (H, W, C) float in [0, 1], C in {1, 3}.
      rng: the generator to draw from.
      brightness, contrast, saturation: strengths >= 0.

    Returns:
      (H, W, C) float32 in [0, 1].
    """
    rng = _check_rng(rng)
    factors = []
    for name, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not (0 <= s < math.inf):
            raise ValueError(f"{name} must be a finite number >= 0; got {s!r}")
        factors.append(float(rng.uniform(max(0.0, 1.0 - s), 1.0 + s)) if s else None)
    order = rng.permutation(3)
    return adjust_colors(img, *factors, order=order)


def pca_lighting(img: np.ndarray, rng: np.random.Generator, alphastd: float = 0.1) -> np.ndarray:
    """AlexNet's PCA colour augmentation: add ``EIGVEC @ (alpha * EIGVAL)`` to every pixel.

    alpha ~ N(0, alphastd^2) per principal component (three ``rng.normal`` draws). As in
    fb.resnet.torch the result is not clipped to [0, 1].

    Args:
      img: (H, W, 3) float RGB in [0, 1].
      rng: the generator to draw from.
      alphastd: standard deviation of the alphas (0.1 in the AlexNet paper); 0 is a no-op.

    Returns:
      (H, W, 3) float32.
    """
    img = _check_image(img)
    if img.dtype == np.uint8:
        raise TypeError("pca_lighting needs a float image in [0, 1]; got uint8 (use to_float)")
    if img.shape[2] != 3:
        raise ValueError(f"pca_lighting needs an RGB image (H, W, 3); got shape {img.shape}")
    rng = _check_rng(rng)
    if alphastd < 0:
        raise ValueError(f"alphastd must be non-negative; got {alphastd!r}")
    x = img.astype(np.float32, copy=False)
    if alphastd == 0:
        return x
    alpha = rng.normal(0.0, alphastd, size=3)
    offset = IMAGENET_PCA_EIGVEC @ (alpha * IMAGENET_PCA_EIGVAL)
    return x + offset.astype(np.float32)
