"""JPEG decoders for the host input pipeline, against Pillow, on the same files.

    python benchmarks/decoders.py                         # 200 generated photos, the table
    python benchmarks/decoders.py --out benchmarks/results/decoders_cpu.jsonl
    python benchmarks/decoders.py --images DIR --n 500    # your own JPEGs (recursively)
    python benchmarks/decoders.py --sizes 1280x960        # larger files: DCT scaling applies
    python benchmarks/decoders.py --n 4 --repeats 1       # a smoke run

`jaxcnn.data.ImageFolder` decodes with Pillow (`jaxcnn.data.sources._decode`: open, then
``convert("RGB")``). For each decoder that is installed, single-threaded, on the same files
(read into memory first, so disk and page cache are out of the figures):

* ``decode``: the file to an RGB uint8 (H, W, 3) array;
* ``decode_resize``: that, then the pipeline's own resize to a shorter side of ``--target``
  (256; `jaxcnn.data.augment.resize_shorter`, Pillow's antialiased bilinear);
* ``reduced_resize`` (decoders that scale in the DCT domain): the smallest decode whose shorter
  side is still >= ``--target`` (Pillow ``draft``, OpenCV ``IMREAD_REDUCED_COLOR_k``,
  libjpeg-turbo's M/8 scaling factors, libvips ``shrink``), then the same resize.

Images/s is the median over ``--repeats`` passes over all files, the candidates' passes
interleaved (round-robin, a different order each round) so that a disturbance on a shared
machine is spread over all of them; ``cpu_images_per_s`` divides by the process's CPU time
instead of wall time, which another process competing for the cores inflates less. Every
output is compared with Pillow's on the same file (``decode``: Pillow's decode;
the resized tasks: Pillow's full decode then the same resize): the number of bit-identical
images, the largest and the mean absolute difference in 0..255 levels, and the PSNR over all
pixels. Decoders that are not installed give a row with ``skipped`` and the reason, never an
error; the installed ones give their version, licence and installed size.

Without ``--images`` the script writes its own set, deterministically from ``--seed``, into a
temporary folder: crops of the real photographs that ship inside scikit-learn (china.jpg,
flower.jpg) and Matplotlib (grace_hopper.jpg), at random positions and scales, flipped at
random, with per-channel gains and mild sensor-like noise, resized to the ImageNet-like
``--sizes`` and saved by Pillow at ``--quality`` 90, baseline with 4:2:0 chroma except one
file in 20 grey, one in 10 progressive and one in 10 with 4:4:4 chroma; where neither package
is installed, synthetic photo-like images (gradients, edges, texture and noise).
`write_jpegs` is also what ``train_throughput.py --loader`` uses for its image folder.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib.metadata
import importlib.util
import io
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _perf_common as common

TASKS = ("decode", "decode_resize", "reduced_resize")
DEFAULT_SIZES = "500x375,375x500,500x333,640x480"
_PHOTOS = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


# --------------------------------------------------------------------------- the images
def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)x(\d+)\s*", part)
        if not m or int(m[1]) < 16 or int(m[2]) < 16:
            raise ValueError(f"--sizes must be WIDTHxHEIGHT[,...] of at least 16x16; got {text!r}")
        sizes.append((int(m[1]), int(m[2])))
    return sizes


def source_photos() -> list[tuple[str, np.ndarray]]:
    """The photographs shipped inside installed packages: [(name, uint8 (H, W, 3))]."""
    from PIL import Image

    found = []
    for package, rel in _PHOTOS:
        spec = importlib.util.find_spec(package)  # finds the package without importing it
        for loc in (spec.submodule_search_locations or []) if spec else []:
            path = Path(loc) / rel
            if path.is_file():
                with Image.open(path) as im:
                    found.append((f"{package}/{path.name}", np.asarray(im.convert("RGB"))))
                break
    return found


def _synthetic_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Gradients, a few hard-edged shapes, fine texture and noise: photo-like in JPEG terms."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b, c = rng.uniform(0.3, 1.0, 3)
    img = np.stack(
        [
            128 + 90 * np.sin(xx / (90 * a) + yy / (130 * b)),
            128 + 90 * np.cos(yy / (110 * c) - xx / (170 * a)),
            128 + 70 * np.sin((xx + yy) / (150 * b)),
        ],
        axis=-1,
    )
    for _ in range(6):  # hard edges: rectangles and discs of flat colour
        y0, x0 = rng.integers(0, h), rng.integers(0, w)
        r = rng.integers(10, max(11, min(h, w) // 3))
        colour = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:
            img[y0 : y0 + r, x0 : x0 + 2 * r] = colour
        else:
            img[(yy - y0) ** 2 + (xx - x0) ** 2 < r * r] = colour
    texture = 12 * np.sin(xx * rng.uniform(0.3, 1.2)) * np.cos(yy * rng.uniform(0.3, 1.2))
    img += texture[:, :, None] + rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _photo_crop(rng: np.random.Generator, photo: np.ndarray, w: int, h: int) -> np.ndarray:
    """A random crop of `photo` with aspect w/h, resized to (h, w), flipped and re-lit at random."""
    from PIL import Image

    H, W = photo.shape[:2]
    aspect = w / h
    box_w, box_h = (W, W / aspect) if W / aspect <= H else (H * aspect, H)
    s = math.sqrt(rng.uniform(0.35, 1.0))  # 35-100% of the largest box of that aspect
    cw, ch = box_w * s, box_h * s
    left, top = rng.uniform(0, W - cw), rng.uniform(0, H - ch)
    crop = Image.fromarray(photo).resize(
        (w, h), Image.Resampling.LANCZOS, box=(left, top, left + cw, top + ch)
    )
    img = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    img = img * rng.uniform(0.85, 1.15, 3) + rng.uniform(-12, 12)
    img = img + rng.normal(0, 2.5, img.shape)  # sensor noise: the texture upscaling smooths
    return np.clip(img, 0, 255).astype(np.uint8)


def write_jpegs(
    folder: str | Path,
    n: int,
    *,
    sizes: str | list[tuple[int, int]] = DEFAULT_SIZES,
    quality: int = 90,
    seed: int = 0,
    classes: int | None = None,
) -> list[Path]:
    """Write `n` photo-like JPEGs into `folder` (deterministic in `seed`); their paths.

    With `classes`, image i goes to ``folder/class{i % classes}/`` (an image-folder tree).
    Sizes cycle through `sizes` ((width, height) pairs or "500x375,..."). Baseline RGB with
    4:2:0 chroma, except one file in 20 grey, one in 10 progressive and one in 10 with 4:4:4
    chroma. See the module docstring for what the images are.
    """
    from PIL import Image

    sizes = _parse_sizes(sizes) if isinstance(sizes, str) else list(sizes)
    photos = source_photos()
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    paths = []
    for i in range(n):
        w, h = sizes[i % len(sizes)]
        if photos:
            img = _photo_crop(rng, photos[i % len(photos)][1], w, h)
        else:
            img = _synthetic_photo(rng, h, w)
        d = folder / f"class{i % classes}" if classes else folder
        d.mkdir(parents=True, exist_ok=True)
        path = d / f"img{i:05d}.jpg"
        im, options = Image.fromarray(img), {}
        if i % 20 == 7:  # photo data sets hold some grey, progressive and 4:4:4 files
            im = im.convert("L")
        elif i % 10 == 3:
            options["progressive"] = True
        elif i % 10 == 5:
            options["subsampling"] = 0
        im.save(path, quality=quality, **options)
        paths.append(path)
    return paths


def image_set_description() -> str:
    photos = source_photos()
    if photos:
        return "crops of " + ", ".join(name for name, _ in photos)
    return "synthetic photo-like images (no sample photographs installed)"


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(height, width) from a JPEG's start-of-frame marker, without decoding."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h = int.from_bytes(data[i + 5 : i + 7], "big")
            w = int.from_bytes(data[i + 7 : i + 9], "big")
            return h, w
        i += 2 + length
    raise ValueError("no JPEG start-of-frame marker found")


def _power_of_two_reduction(data: bytes, target: int, largest: int = 8) -> int:
    """The largest k in (1, 2, 4, 8) with ceil(shorter side / k) >= target."""
    h, w = jpeg_size(data)
    k = largest
    while k > 1 and math.ceil(min(h, w) / k) < target:
        k //= 2
    return k


# ---------------------------------------------------------------------------- candidates
class Skip(Exception):
    """A candidate that cannot run here; the message says why."""


@dataclass
class Candidate:
    """One decoder: `setup()` returns {"decode": f(bytes) -> (H, W, 3) uint8,
    "reduced": g(bytes, target) -> uint8 array with shorter side >= target (optional)}."""

    name: str
    dists: tuple[str, ...]
    setup: Callable[[], dict]
    note: str = ""
    functions: dict = field(default_factory=dict)


def _rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def _pillow():
    from PIL import Image

    def decode(data):
        # As jaxcnn.data.sources._decode: open, convert to RGB, view as an array.
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    def reduced(data, target):
        with Image.open(io.BytesIO(data)) as im:
            im.draft("RGB", (target, target))  # DCT scaling by 1/2, 1/4 or 1/8
            return np.asarray(im.convert("RGB"))

    return {"decode": decode, "reduced": reduced}


def _simplejpeg(fast: bool):
    def setup():
        try:
            import simplejpeg
        except ImportError as e:
            raise Skip(f"not installed ({e})") from None
        opts = {"fastdct": fast, "fastupsample": fast}

        def decode(data):
            return simplejpeg.decode_jpeg(data, colorspace="RGB", **opts)

        def reduced(data, target):
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            # The smallest libjpeg-turbo scale (M/8) whose shorter side is still >= target.
            mh, mw = (target, 0) if h <= w else (0, target)
            return simplejpeg.decode_jpeg(
                data, colorspace="RGB", min_height=mh, min_width=mw, **opts
            )

        return {"decode": decode, "reduced": reduced}

    return setup


def _turbojpeg():
    try:
        import turbojpeg
    except ImportError as e:
        raise Skip(f"not installed ({e})") from None
    try:
        tj = turbojpeg.TurboJPEG()
    except Exception as e:  # RuntimeError when libturbojpeg is missing, others when too old
        raise Skip(
            "PyTurboJPEG ships no library and cannot use the one here: "
            f"{' '.join(str(e).split())[:200]}"
        ) from None
    factors = sorted(tj.scaling_factors, key=lambda f: f[0] / f[1])

    def decode(data):
        return tj.decode(data, pixel_format=turbojpeg.TJPF_RGB)

    def reduced(data, target):
        h, w = jpeg_size(data)
        for num, den in factors:  # smallest first
            if min(-(-h * num // den), -(-w * num // den)) >= target:
                break
        return tj.decode(data, pixel_format=turbojpeg.TJPF_RGB, scaling_factor=(num, den))

    return {"decode": decode, "reduced": reduced}


def _opencv():
    try:
        import cv2
    except ImportError as e:
        raise Skip(f"not installed ({e})") from None
    cv2.setNumThreads(1)
    # Pillow does not apply EXIF orientation (nor does jaxcnn's _decode): neither may OpenCV.
    keep = cv2.IMREAD_IGNORE_ORIENTATION
    rgb_flag = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes to RGB itself
    reduced_flags = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4}
    reduced_flags[8] = cv2.IMREAD_REDUCED_COLOR_8

    def decode(data):
        buf = np.frombuffer(data, np.uint8)
        if rgb_flag is not None:
            return cv2.imdecode(buf, rgb_flag | keep)
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR | keep), cv2.COLOR_BGR2RGB)

    def reduced(data, target):
        k = _power_of_two_reduction(data, target)
        if k == 1:
            return decode(data)
        bgr = cv2.imdecode(np.frombuffer(data, np.uint8), reduced_flags[k] | keep)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    built = re.search(r"JPEG:\s*(.*)", cv2.getBuildInformation())
    library = built[1].strip().replace("build-", "") if built else None
    return {"decode": decode, "reduced": reduced, "jpeg_library": library}


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError as e:
        raise Skip(f"not installed ({e})") from None

    def decode(data):
        return _rgb(imagecodecs.jpeg8_decode(data))

    return {"decode": decode}  # jpeg8_decode has no scaled decode


def _imagecodecs_ljpeg():
    try:
        import imagecodecs
    except ImportError as e:
        raise Skip(f"not installed ({e})") from None
    if not getattr(imagecodecs, "LJPEG", None) or not imagecodecs.LJPEG.available:
        raise Skip("imagecodecs was built without its lossless-JPEG codec")

    def decode(data):
        return _rgb(imagecodecs.ljpeg_decode(data))

    try:  # it reads lossless JPEG (SOF3) only; a baseline file decodes to nothing or fails
        ok = decode(_tiny_baseline_jpeg()).shape == (8, 8, 3)
    except Exception:
        ok = False
    if not ok:
        raise Skip(
            "ljpeg_decode reads lossless JPEG (SOF3) only, not the baseline/progressive JPEGs "
            "of photo data sets (it returns an empty array or fails on them)"
        )
    return {"decode": decode}


def _tiny_baseline_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 100, 50)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _torchvision():
    try:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError as e:
        raise Skip(f"not installed ({e})") from None
    torch.set_num_threads(1)

    def decode(data):
        t = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
        return np.ascontiguousarray(t.permute(1, 2, 0).numpy())

    return {"decode": decode}  # no scaled decode on the CPU


def _kornia(turbo: bool):
    def setup():
        try:
            import kornia_rs
        except ImportError as e:
            raise Skip(f"not installed ({e})") from None
        if turbo:

            def decode(data):
                return _rgb(kornia_rs.io.decode_image_jpegturbo(data, "rgb"))

        else:

            def decode(data):
                return _rgb(kornia_rs.io.decode_image_jpeg(data))

        return {"decode": decode}

    return setup


def _pyvips():
    os.environ.setdefault("VIPS_CONCURRENCY", "1")  # read when libvips starts: one thread
    try:
        import pyvips
    except (ImportError, OSError) as e:
        raise Skip(f"not installed ({' '.join(str(e).split())[:200]})") from None
    pyvips.cache_set_max(0)  # no reuse of earlier results between passes

    def load(data, shrink=1):
        im = pyvips.Image.new_from_buffer(data, "", shrink=shrink, access="sequential")
        if im.bands == 1:
            im = im.colourspace("srgb")
        return im.numpy()

    def decode(data):
        return load(data)

    def reduced(data, target):
        return load(data, _power_of_two_reduction(data, target))

    return {
        "decode": decode,
        "reduced": reduced,
        "jpeg_library": f"libvips {pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}",
    }


def _pillow_simd():
    try:
        importlib.metadata.distribution("pillow-simd")
    except importlib.metadata.PackageNotFoundError:
        raise Skip(
            "not installed: PyPI has no binary wheel of it (source only; building it needs a "
            "compiler and libjpeg headers), and it replaces Pillow (the same PIL package), so "
            "it cannot be measured beside Pillow in one process"
        ) from None
    raise Skip("installed in place of Pillow: the pillow rows measure it")


CANDIDATES = (
    Candidate("pillow", ("pillow",), _pillow, "the reference (jaxcnn's _decode); draft()"),
    Candidate("pillow_simd", ("pillow-simd",), _pillow_simd),
    Candidate("simplejpeg", ("simplejpeg",), _simplejpeg(fast=False)),
    Candidate("simplejpeg_fast", ("simplejpeg",), _simplejpeg(fast=True), "fastdct + fastupsample"),
    Candidate("pyturbojpeg", ("PyTurboJPEG",), _turbojpeg, "needs a system libturbojpeg"),
    Candidate("opencv", ("opencv-python-headless", "opencv-python"), _opencv),
    Candidate("imagecodecs_jpeg8", ("imagecodecs",), _imagecodecs),
    Candidate("imagecodecs_ljpeg", ("imagecodecs",), _imagecodecs_ljpeg, "lossless JPEG"),
    Candidate("torchvision", ("torchvision",), _torchvision, "needs torch"),
    Candidate("kornia_rs", ("kornia-rs",), _kornia(turbo=False), "zune-jpeg (Rust)"),
    Candidate("kornia_rs_turbo", ("kornia-rs",), _kornia(turbo=True), "libjpeg-turbo"),
    Candidate("pyvips", ("pyvips", "pyvips-binary"), _pyvips, "libvips (LGPL)"),
)


# ------------------------------------------------------------------------ package facts
_JPEG_VERSION = re.compile(rb"libjpeg-turbo version (\d+\.\d+\.\d+)")


def package_facts(dists: tuple[str, ...]) -> dict:
    """Version, licence, installed size and bundled JPEG library of the installed dists."""
    found = []
    for name in dists:
        try:
            found.append(importlib.metadata.distribution(name))
        except importlib.metadata.PackageNotFoundError:
            continue
    if not found:
        return {}
    versions, licences, size, jpeg_libs = {}, {}, 0, set()
    for d in found:
        name = d.metadata["Name"]
        versions[name] = d.version
        licences[name] = _licence(d)
        for f in d.files or []:
            size += f.size or 0
            if ".so" in f.name and (f.size or 0) > 0:
                try:
                    blob = Path(f.locate()).read_bytes()
                except OSError:
                    continue
                jpeg_libs.update(m.decode() for m in _JPEG_VERSION.findall(blob))
                if b"zune_jpeg" in blob:
                    jpeg_libs.add("zune-jpeg")
    return {
        "versions": versions,
        "licences": licences,
        "installed_mib": round(size / 2**20, 1),
        "jpeg_library": ", ".join(
            f"libjpeg-turbo {v}" if v[0].isdigit() else v for v in sorted(jpeg_libs)
        )
        or None,
    }


def _licence(dist) -> str:
    md = dist.metadata
    text = md.get("License-Expression") or md.get("License") or ""
    if text and len(text) < 60 and "\n" not in text:
        return text
    classifiers = [c.split(" :: ")[-1] for c in md.get_all("Classifier") or [] if "License" in c]
    return ", ".join(classifiers) or (text.splitlines()[0][:60] if text else "unknown")


def _loaded_library(fragment: str) -> str | None:
    """The path of a shared library this process has loaded whose name holds `fragment`."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                if fragment in os.path.basename(path):
                    return path
    except OSError:
        pass
    return None


# -------------------------------------------------------------------------------- timing
@dataclass
class Job:
    candidate: str
    task: str
    first: Callable  # bytes -> array: the decode (or the reduced decode)
    finish: Callable | None  # (array, bytes) -> array: the resize, or None
    stats: dict = field(default_factory=dict)
    wall: list = field(default_factory=list)
    cpu: list = field(default_factory=list)


def shorter_side_shape(h: int, w: int, target: int) -> tuple[int, int]:
    """The (h, w) `jaxcnn.data.augment.resize_shorter` gives an (h, w) image."""
    return (target, int(target * w / h)) if h <= w else (int(target * h / w), target)


def _compare(acc: dict, out: np.ndarray, ref: np.ndarray) -> None:
    d = np.abs(out.astype(np.int16) - ref.astype(np.int16))
    acc["identical"] = acc.get("identical", 0) + int(not d.any())
    acc["max"] = max(acc.get("max", 0), int(d.max()))
    acc["sum"] = acc.get("sum", 0) + int(d.sum(dtype=np.int64))
    acc["sq"] = acc.get("sq", 0) + int((d.astype(np.int64) ** 2).sum())
    acc["values"] = acc.get("values", 0) + d.size
    acc["compared"] = acc.get("compared", 0) + 1


def make_jobs(candidates, *, target: int, tasks=TASKS) -> tuple[list[Job], list[dict]]:
    """Set up each candidate: its (decoder, task) jobs, or a row saying why it is skipped."""
    from jaxcnn.data.augment import resize, resize_shorter

    def to_target(arr, data):  # the pipeline's resize of a full decode
        return resize_shorter(arr, target)

    def from_reduced(arr, data):  # the same output shape, from a reduced decode
        return resize(arr, shorter_side_shape(*jpeg_size(data), target))

    jobs, skipped = [], []
    for c in candidates:
        try:
            c.functions = c.setup()
        except Skip as e:
            skipped.append({"candidate": c.name, "skipped": str(e), "note": c.note})
            continue
        f = c.functions["decode"]
        if "decode" in tasks:
            jobs.append(Job(c.name, "decode", f, None))
        if "decode_resize" in tasks:
            jobs.append(Job(c.name, "decode_resize", f, to_target))
        if "reduced_resize" in tasks and "reduced" in c.functions:
            g = c.functions["reduced"]
            jobs.append(Job(c.name, "reduced_resize", lambda b, g=g: g(b, target), from_reduced))
    return jobs, skipped


def check(jobs: list[Job], data: list[bytes], *, target: int) -> None:
    """One untimed pass (the warm-up): every output against Pillow's on the same file.

    A decoder that raises, or returns another shape than Pillow's, on any file gets an
    ``error`` in its stats (all its tasks) and is not timed.
    """
    from jaxcnn.data.augment import resize_shorter

    ref_decode = _pillow()["decode"]
    broken: dict[str, str] = {}
    for i, b in enumerate(data):
        ref = ref_decode(b)
        ref_small = resize_shorter(ref, target)
        h, w = ref.shape[:2]
        for job in jobs:
            if job.candidate in broken:
                continue
            want = ref_small if job.finish else ref
            try:
                out = job.first(b)
                job.stats["decoded_px"] = (
                    job.stats.get("decoded_px", 0) + out.shape[0] * out.shape[1]
                )
                job.stats["full_px"] = job.stats.get("full_px", 0) + h * w
                if job.finish:
                    out = job.finish(out, b)
                if out.shape != want.shape or out.dtype != np.uint8:
                    raise ValueError(
                        f"output {out.dtype} {out.shape} where Pillow gives uint8 {want.shape}"
                    )
            except Exception as e:  # a decoder that fails on a file is reported, not timed
                message = " ".join(str(e).split())[:200]
                broken[job.candidate] = f"file {i} ({job.task}): {type(e).__name__}: {message}"
                continue
            _compare(job.stats, out, want)
    for job in jobs:
        if job.candidate in broken:
            job.stats["error"] = broken[job.candidate]


def time_jobs(jobs: list[Job], data: list[bytes], *, repeats: int) -> None:
    """`repeats` timed passes over all files per job, interleaved round-robin."""
    live = [j for j in jobs if "error" not in j.stats]
    for r in range(repeats):
        order = live[r % len(live) :] + live[: r % len(live)] if live else []
        if r % 2:
            order = order[::-1]
        for job in order:
            first, finish = job.first, job.finish
            gc.collect()
            w0, c0 = time.perf_counter(), time.process_time()
            if finish is None:
                for b in data:
                    first(b)
            else:
                for b in data:
                    finish(first(b), b)
            job.wall.append(time.perf_counter() - w0)
            job.cpu.append(time.process_time() - c0)


def rows_for(jobs, skipped, candidates, *, n: int, setup: dict) -> list[dict]:
    by_name = {c.name: c for c in candidates}
    facts = {c.name: package_facts(c.dists) for c in candidates}
    pillow_wall = {
        j.task: n / np.median(j.wall) for j in jobs if j.candidate == "pillow" and j.wall
    }
    pillow_cpu = {j.task: n / np.median(j.cpu) for j in jobs if j.candidate == "pillow" and j.cpu}
    for pillow_rate in (pillow_wall, pillow_cpu):
        if "decode_resize" in pillow_rate:  # a reduced decode is the alternative to a full one
            pillow_rate["reduced_resize"] = pillow_rate["decode_resize"]
    rows = []
    for job in jobs:
        c = by_name[job.candidate]
        row = {
            "benchmark": "decoders",
            "candidate": job.candidate,
            "task": job.task,
            "note": c.note,
            **facts[job.candidate],
        }
        if c.functions.get("jpeg_library"):
            row["jpeg_library"] = c.functions["jpeg_library"]
        if job.candidate == "pyturbojpeg":
            row["jpeg_library"] = _loaded_library("libturbojpeg") or row.get("jpeg_library")
        s = job.stats
        if "error" in s:
            row["error"] = s["error"]
        else:
            wall = common.summarize([n / t for t in job.wall])
            row.update(
                images_per_s=wall["median"],
                images_per_s_min=wall["min"],
                images_per_s_max=wall["max"],
                ms_per_image=1e3 / wall["median"],
                cpu_images_per_s=n / float(np.median(job.cpu)),
            )
            if job.task in pillow_wall:
                row["vs_pillow"] = row["images_per_s"] / pillow_wall[job.task]
                row["vs_pillow_cpu"] = row["cpu_images_per_s"] / pillow_cpu[job.task]
        if s.get("full_px"):
            row["decoded_pixel_fraction"] = s["decoded_px"] / s["full_px"]
        if s.get("compared"):
            mse = s["sq"] / s["values"]
            row.update(
                identical_to_pillow=f"{s['identical']}/{s['compared']}",
                max_abs_diff=s["max"],
                mean_abs_diff=s["sum"] / s["values"],
                psnr_db=None if mse == 0 else 10 * math.log10(255**2 / mse),
            )
        row.update(setup)
        rows.append(row)
    for sk in skipped:
        rows.append({"benchmark": "decoders", "task": None, **sk, **setup})
    return rows


def format_table(rows: list[dict]) -> str:
    def num(x, fmt):
        return "" if x is None else format(x, fmt)

    lines = [
        "| decoder | task | images/s | vs Pillow | CPU images/s | vs Pillow (CPU) | identical "
        "| max diff | mean diff | PSNR dB | decoded px |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("skipped"):
            continue
        if r.get("error"):
            lines.append(f"| {r['candidate']} | {r['task']} | error: {r['error']} |||||||||")
            continue
        psnr = "inf" if r.get("psnr_db") is None and r.get("max_abs_diff") == 0 else None
        lines.append(
            f"| {r['candidate']} | {r['task']} | {r['images_per_s']:,.0f} "
            f"| {num(r.get('vs_pillow'), '.2f')}x | {r['cpu_images_per_s']:,.0f} "
            f"| {num(r.get('vs_pillow_cpu'), '.2f')}x | {r.get('identical_to_pillow', '')} "
            f"| {r.get('max_abs_diff', '')} | {num(r.get('mean_abs_diff'), '.3f')} "
            f"| {psnr or num(r.get('psnr_db'), '.1f')} "
            f"| {num(r.get('decoded_pixel_fraction'), '.2f')} |"
        )
    lines += ["", "| decoder | version | licence | installed MiB | JPEG library | note |"]
    lines.append("|---|---|---|---:|---|---|")
    seen = set()
    for r in rows:
        if r["candidate"] in seen:
            continue
        seen.add(r["candidate"])
        if r.get("skipped"):
            lines.append(f"| {r['candidate']} | skipped: {r['skipped']} |||||")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in r.get("versions", {}).items())
        licences = ", ".join(dict.fromkeys(r.get("licences", {}).values()))
        lines.append(
            f"| {r['candidate']} | {versions} | {licences} | {r.get('installed_mib', '')} "
            f"| {r.get('jpeg_library') or ''} | {r.get('note', '')} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- main
def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--images", default=None, help="a folder of JPEGs (default: generate them)")
    p.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--repeats", type=int, default=5, help="timed passes per decoder and task")
    p.add_argument("--target", type=int, default=256, help="shorter side after resizing")
    p.add_argument(
        "--sizes", default=DEFAULT_SIZES, help="WIDTHxHEIGHT list of the generated images"
    )
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of the generated images")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument(
        "--only",
        default=None,
        help=f"comma-separated decoders (default all: {', '.join(c.name for c in CANDIDATES)})",
    )
    p.add_argument(
        "--out", "--json", dest="out", default=None, help="append one JSON line per row here"
    )
    args = p.parse_args(argv)
    for name in ("n", "repeats", "target"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be >= 1; got {getattr(args, name)}")
    if not 1 <= args.quality <= 100:
        raise ValueError(f"--quality must be in 1..100; got {args.quality}")
    _parse_sizes(args.sizes)
    return args


def _load_images(args, tmp: str) -> tuple[list[bytes], dict]:
    if args.images:
        paths = sorted(
            p
            for p in Path(args.images).rglob("*")
            if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file()
        )[: args.n]
        if not paths:
            raise ValueError(f"--images {args.images!r} holds no .jpg/.jpeg files")
        desc = {"images": str(args.images)}
    else:
        paths = write_jpegs(tmp, args.n, sizes=args.sizes, quality=args.quality, seed=args.seed)
        desc = {
            "images": image_set_description() + " (5% grey, 10% progressive, 10% 4:4:4)",
            "sizes": args.sizes,
            "quality": args.quality,
            "seed": args.seed,
        }
    data = [p.read_bytes() for p in paths]
    shapes = [jpeg_size(b) for b in data]
    desc.update(
        n_images=len(data),
        mean_file_kib=round(sum(map(len, data)) / len(data) / 1024, 1),
        mean_megapixels=round(sum(h * w for h, w in shapes) / len(shapes) / 1e6, 3),
    )
    return data, desc


def main(argv=None) -> list[dict]:
    """Run the benchmark; returns its rows (one per decoder and task, one per skipped one)."""
    args = _parse(argv)
    candidates = list(CANDIDATES)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = sorted(set(names) - {c.name for c in candidates})
        if unknown:
            raise ValueError(f"--only: unknown decoders {unknown}")
        candidates = [c for c in candidates if c.name in names or c.name == "pillow"]
    with tempfile.TemporaryDirectory() as tmp:
        data, desc = _load_images(args, tmp)
    machine = common.machine_info()
    setup = {
        **desc,
        "target": args.target,
        "repeats": args.repeats,
        "single_threaded": True,
        "date": datetime.date.today().isoformat(),
        **machine,
    }
    print(
        f"# {len(data)} JPEGs ({desc['images']}; {desc['mean_megapixels']} MP, "
        f"{desc['mean_file_kib']} KiB on average), {args.repeats} passes each; "
        f"{machine['cpus_usable']}-core {machine['cpu_model']}, load {machine['load_avg_1m']}",
        flush=True,
    )
    jobs, skipped = make_jobs(candidates, target=args.target)
    check(jobs, data, target=args.target)
    time_jobs(jobs, data, repeats=args.repeats)
    rows = rows_for(jobs, skipped, candidates, n=len(data), setup=setup)
    load_after = common.machine_info()["load_avg_1m"]
    for r in rows:
        r["load_avg_1m_after"] = load_after
        print(json.dumps(r), flush=True)
    print(format_table(rows))
    if args.out:
        common.write_jsonl(args.out, rows, append=True)
    return rows


if __name__ == "__main__":
    main()
