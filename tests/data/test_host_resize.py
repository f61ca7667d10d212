"""The host half of device-side augmentation (`jaxcnn.data.host_resize`) against the reference
transforms of `jaxcnn.data.augment`, and the loader paths that must not change."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from jaxcnn.data import DataConfig, augment, create_datasets
from jaxcnn.data import host_resize as hr
from jaxcnn.data import loader as loader_module
from jaxcnn.data.sources import _decode

# (h, w): landscape, portrait, square, odd sizes, a side equal to the target, enlargements
# (shorter side below the target), very thin, and 2x-4x reductions.
SHAPES = [
    (375, 500),
    (500, 375),
    (300, 300),
    (333, 501),
    (97, 211),
    (211, 97),
    (64, 100),
    (100, 64),
    (65, 64),
    (48, 90),
    (31, 31),
    (1, 50),
    (129, 257),
    (480, 640),
]


def reference(img, size, crop):
    if crop:
        return augment.center_crop(augment.resize_shorter(img, size), size)
    return augment.resize(img, size)


def photo(h, w, seed=0, channels=3):
    """A smooth photo-like uint8 image: low-frequency waves, a sharp-edged disc, mild noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((h, w, channels))
    for c in range(channels):
        v = 0.5 + 0.1 * rng.standard_normal()
        for _ in range(4):
            fy, fx = rng.uniform(0.5, 6, 2) / np.array([h, w])
            v = v + 0.12 * np.cos(2 * np.pi * (fy * y + fx * x) + rng.uniform(0, 2 * np.pi))
        out[:, :, c] = v
    disc = (y - 0.4 * h) ** 2 + (x - 0.6 * w) ** 2 < (0.2 * min(h, w)) ** 2
    out[disc] = out[disc] * 0.5 + 0.4
    out += rng.normal(0, 0.01, out.shape)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)


def write(path, img, **kw):
    Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img).save(path, **kw)
    return str(path)


def absdiff(a, b):
    assert a.shape == b.shape and a.dtype == b.dtype == np.uint8
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


# ----------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
def test_pillow_backend_is_within_one_level_of_the_reference(size, channels):
    """On noise, where a geometry error of a fraction of a pixel shows as tens of levels:
    the box resample equals center_crop(resize_shorter) up to 1 level (a fixed-point
    coefficient rounded the other way), and a plain resize (crop=False) exactly."""
    rng = np.random.default_rng(size + channels)
    differing = []
    for h, w in SHAPES:
        img = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        out = hr.resize_to_common(img, size, crop=True, backend="pillow")
        assert out.shape == (size, size, channels) and out.dtype == np.uint8
        d = absdiff(out, reference(img, size, True))
        assert d.max() <= 1, (h, w)
        differing.append(np.mean(d > 0))
        plain = hr.resize_to_common(img, size, crop=False, backend="pillow")
        np.testing.assert_array_equal(plain, reference(img, size, False), err_msg=str((h, w)))
    assert np.mean(differing) < 0.05


@pytest.mark.parametrize("h, w", [(375, 500), (500, 375), (211, 97), (40, 50)])
def test_source_box_is_the_region_the_centre_crop_keeps(h, w):
    size = 32
    x0, y0, x1, y1 = hr.source_box(h, w, size, crop=True)
    # The resized image's size and crop offset, as resize_shorter and center_crop take them.
    rh, rw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    top, left = round((rh - size) / 2), round((rw - size) / 2)
    assert (x0, x1) == pytest.approx((left * w / rw, (left + size) * w / rw))
    assert (y0, y1) == pytest.approx((top * h / rh, (top + size) * h / rh))
    assert hr.source_box(h, w, size, crop=False) == (0.0, 0.0, float(w), float(h))


def test_images_at_the_common_size_pass_through_untouched():
    img = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(32, 32, 3)
    for backend in ("pillow", "opencv"):
        assert hr.resize_to_common(img, 32, crop=True, backend=backend) is img
    cfg = DataConfig(image_size=32, random_resized_crop=True)
    t = loader_module._Transform(cfg, 3, 3, (0.5,) * 3, (0.5,) * 3, device=True)
    assert t.common(img) is img


def test_resize_to_common_rejects_what_it_cannot_resample():
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 1 or 3\)"):
        hr.resize_to_common(np.zeros((40, 50, 3), np.float32), 32, crop=True)
    with pytest.raises(ValueError, match=r"uint8 \(H, W, 1 or 3\)"):
        hr.resize_to_common(np.zeros((40, 50, 4), np.uint8), 32, crop=True)
    with pytest.raises(ValueError, match="unknown host resize backend"):
        hr.resize_to_common(np.zeros((40, 50, 3), np.uint8), 32, crop=True, backend="cuda")


def test_transform_common_keeps_the_reference_for_other_images():
    """Float images (and other channel counts) still take augment's transforms, so the
    batch check of finish_train reports them as before."""
    cfg = DataConfig(image_size=24, eval_resize=28)
    t = loader_module._Transform(cfg, 3, 3, (0.5,) * 3, (0.5,) * 3, device=True)
    img = np.random.default_rng(0).random((40, 50, 3)).astype(np.float32)
    np.testing.assert_array_equal(t.common(img), reference(img, 28, True))
    with pytest.raises(ValueError, match=r"expected uint8 \(28, 28, 3\) to augment on the device"):
        t.finish_train([t.common(img)], "floats")


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_decode_to_common_is_the_resample_of_the_decode(tmp_path, mode):
    """Files under twice the size the crop needs are decoded in full: the result is exactly
    resize_to_common of what ImageFolder decodes (JPEG colour and grey, PNG, 16-bit PNG)."""
    size = 64
    files = [
        write(tmp_path / "a.jpg", photo(100, 150, 1), quality=90),
        write(tmp_path / "b.jpg", photo(150, 100, 2, channels=1), quality=90),
        write(tmp_path / "c.png", photo(90, 70, 3)),
        write(tmp_path / "d.jpg", photo(127, 200, 4), quality=90, progressive=True),
        write(tmp_path / "e.jpg", photo(64, 64, 5), quality=90),  # already the size
        write(tmp_path / "f.jpg", photo(40, 56, 6), quality=90),  # enlarged
    ]
    grey16 = (photo(80, 120, 7, channels=1)[:, :, 0].astype(np.uint16) * 250) + 100
    Image.fromarray(grey16).save(tmp_path / "g.png")
    files.append(str(tmp_path / "g.png"))
    for path in files:
        for crop in (True, False):
            out = hr.decode_to_common(path, mode, size, crop=crop, backend="pillow")
            decoded = _decode(path, mode)
            expected = hr.resize_to_common(decoded, size, crop=crop, backend="pillow")
            np.testing.assert_array_equal(out, expected, err_msg=f"{path} crop={crop}")
            assert absdiff(out, reference(decoded, size, crop)).max() <= 1


def test_large_jpeg_is_decoded_at_reduced_scale_close_to_the_full_decode(tmp_path):
    """A 1280x960 JPEG brought to 224: the centre crop's 960x960 region is more than 4x the
    target, so libjpeg decodes at 1/4 scale (320x240) before the resample. Within 2 levels
    mean and 48 at most of the full decode + reference transforms; a box not scaled with the
    image (a quarter of the region) would be tens of levels off on average."""
    img = photo(960, 1280, 11)
    path = write(tmp_path / "large.jpg", img, quality=90)
    box = hr.source_box(960, 1280, 224, crop=True)
    assert hr.jpeg_scale(box, 224) == 4
    with Image.open(path) as im:
        assert hr._draft(im, 4) == 4 and im.size == (320, 240)
    full = reference(_decode(path, "RGB"), 224, True)
    out = hr.decode_to_common(path, "RGB", 224, crop=True, backend="pillow")
    d = absdiff(out, full)
    assert not np.array_equal(out, full)  # the reduced decode was taken
    assert d.mean() <= 2.0 and d.max() <= 48, (d.mean(), d.max())
    # Below twice the target, the decode is full: exactly the resample of the decode.
    small = write(tmp_path / "small.jpg", photo(440, 600, 12), quality=90)
    assert hr.jpeg_scale(hr.source_box(440, 600, 224, crop=True), 224) == 1
    np.testing.assert_array_equal(
        hr.decode_to_common(small, "RGB", 224, crop=True),
        hr.resize_to_common(_decode(small, "RGB"), 224, crop=True),
    )


def test_decode_to_common_names_an_undecodable_file(tmp_path):
    good = write(tmp_path / "ok.jpg", photo(60, 80, 3), quality=90)
    path = tmp_path / "bad.jpg"
    path.write_bytes(open(good, "rb").read()[:400])  # truncated
    for backend in ("pillow",) + (("opencv",) if hr._have_cv2() else ()):
        with pytest.raises(ValueError, match=r"could not decode image file .*bad\.jpg"):
            hr.decode_to_common(str(path), "RGB", 32, crop=True, backend=backend)


# ----------------------------------------------------------------------------- the loader


def _folder(root, n=12, channels=3):
    rng = np.random.default_rng(0)
    sizes = [(375, 500), (500, 375), (300, 300), (224, 224), (150, 200), (960, 1280)]
    for split in ("train", "test"):
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            d = root / split / f"c{i % 3}"
            d.mkdir(parents=True, exist_ok=True)
            write(d / f"{i}.jpg", photo(h, w, int(rng.integers(1 << 30)), channels), quality=90)
    return root


def _datasets(root, **data):
    cfg = {"source": "folder", "name": str(root), "image_size": 224, **data}
    return create_datasets(
        cfg, seed=0, batch_size=12, eval_batch_size=12, process_index=0, process_count=1
    )


@pytest.mark.parametrize("channels", [3, 1])
def test_device_mode_folder_batches_are_decode_to_common(tmp_path, channels):
    root = _folder(tmp_path, channels=channels)
    extra = {"channels": 1} if channels == 1 else {}
    ds = _datasets(root, random_resized_crop=True, hflip=True, augment_on="device", **extra)
    assert ds.host_resize.startswith(hr.choose_backend()) and ds.host_resize in ds.description
    backend = ds.train._batches.transform.host_resize
    batch = ds.train.batch_at(0)
    assert batch["image"].shape == (12, 224, 224, channels) and batch["image"].dtype == np.uint8
    src = ds.train_source
    order = ds.train._batches.records(np.arange(12))
    for j, i in enumerate(order):
        expected = hr.decode_to_common(src.paths[i], src.mode, 224, crop=True, backend=backend)
        np.testing.assert_array_equal(batch["image"][j], expected)
        np.testing.assert_array_equal(batch["label"][j], src.labels[i])
    # Deterministic, and the same from a pickled copy (what a grain worker runs).
    np.testing.assert_array_equal(ds.train.batch_at(0)["image"], batch["image"])
    copy = pickle.loads(pickle.dumps(ds.train._batches))
    np.testing.assert_array_equal(copy(0)["image"], batch["image"])


def test_host_mode_and_evaluation_never_use_the_new_path(tmp_path, monkeypatch):
    """augment_on="host" and every evaluation batch are the torchvision-exact transforms of
    `augment`, bit for bit: nothing of host_resize is called."""

    def fail(*args, **kwargs):
        raise AssertionError("host_resize used")

    root = _folder(tmp_path, n=6)
    device = _datasets(root, eval_resize=256, augment_on="device")
    monkeypatch.setattr(hr, "resize_to_common", fail)
    monkeypatch.setattr(hr, "decode_to_common", fail)
    host = _datasets(root, eval_resize=256, hflip=True, augment_on="host")
    assert host.host_resize is None and "host resize" not in host.description
    t = host.train._batches.transform
    assert t.host_resize is None
    src = host.train_source
    order = host.train._batches.records(np.arange(12))
    batch = host.train.batch_at(0)["image"]
    for q, i in enumerate(order):
        img = _decode(src.paths[i], "RGB")
        rng = np.random.default_rng([0, loader_module._AUG_TAG, q])
        img = augment.random_crop(augment.resize_shorter(img, 256), 224, 0, rng)
        expected = augment.hflip(img, rng)
        np.testing.assert_array_equal(batch[q], t.finish([expected], "test")[0])
    evaluation = [
        augment.center_crop(augment.resize_shorter(_decode(p, "RGB"), 256), 224)
        for p in host.eval_source.paths
    ]
    ref = t.finish(evaluation, "test")
    np.testing.assert_array_equal(host.eval.batch_at(0)["image"][:6], ref)
    np.testing.assert_array_equal(device.eval.batch_at(0)["image"][:6], ref)


# ----------------------------------------------------------------------------- backends


def test_choose_backend(monkeypatch):
    assert hr.choose_backend() == ("opencv" if hr._have_cv2() else "pillow")
    assert hr.choose_backend("pillow") == "pillow"
    assert hr.describe("pillow").startswith("pillow ")
    with pytest.raises(ValueError, match=r"data\.host_resize must be one of"):
        hr.choose_backend("simd")
    with pytest.raises(ValueError, match=r"data\.host_resize must be one of"):
        _datasets("unused", host_resize="simd", augment_on="host")  # checked on either path
    monkeypatch.setattr(hr, "_have_cv2", lambda: False)
    assert hr.choose_backend("auto") == "pillow"
    with pytest.raises(ImportError, match=r"jaxcnn\[opencv\]"):
        hr.choose_backend("opencv")


def test_the_loader_uses_the_backend_the_config_names(tmp_path, monkeypatch):
    root = _folder(tmp_path, n=3)
    monkeypatch.setattr(hr, "_have_cv2", lambda: True)  # "auto" would take OpenCV
    ds = _datasets(root, random_resized_crop=True, host_resize="pillow")
    assert ds.host_resize.startswith("pillow ")
    assert ds.train._batches.transform.host_resize == "pillow"


@pytest.fixture
def cv2():
    return pytest.importorskip("cv2")


def test_opencv_decodes_jpegs_as_pillow_does(cv2, tmp_path):
    """Full and reduced (1/2, 1/4, 1/8) decodes of baseline, progressive, 4:4:4 and grey JPEGs
    are Pillow's pixels (both libjpeg-turbo with the same settings)."""
    cases = [
        ({}, 3),
        ({"progressive": True}, 3),
        ({"subsampling": 0}, 3),
        ({}, 1),
    ]
    for k, (kw, channels) in enumerate(cases):
        path = write(tmp_path / f"{k}.jpg", photo(250, 333, k, channels), quality=90, **kw)
        data = open(path, "rb").read()
        with Image.open(path) as im:
            file_mode = im.mode
        for s in (1, 2, 4, 8):
            arr = hr._cv2_decode(data, file_mode, "RGB", s)
            with Image.open(path) as im:
                if s > 1:
                    assert hr._draft(im, s) == s
                ref = np.asarray(im.convert("RGB"))
            np.testing.assert_array_equal(arr[:, :, ::-1], ref, err_msg=f"{kw} {channels} {s}")
    # A colour JPEG to grey is left to Pillow (its luma differs from libjpeg's).
    assert hr._cv2_decode(data, "RGB", "L", 1) is None


def test_opencv_backend_is_close_to_the_reference(cv2, tmp_path):
    """Reductions by less than 2: the low-pass + bilinear stand-in for Pillow's triangle
    filter, within 1 level mean and 40 at most on photo-like images; larger reductions and
    enlargements as stated in the module docstring."""
    size = 64
    threads = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        for k, (h, w) in enumerate([(100, 120), (120, 100), (90, 90), (70, 127), (40, 56)]):
            img = photo(h, w, k)
            for crop in (True, False):
                out = hr.resize_to_common(img, size, crop=crop, backend="opencv")
                d = absdiff(out, reference(img, size, crop))
                assert d.mean() <= 1.0 and d.max() <= 40, (h, w, crop, d.mean(), d.max())
        assert cv2.getNumThreads() == 2  # one thread inside the calls only
    finally:
        cv2.setNumThreads(threads)
    # Reductions by 2 or more are Pillow's resample.
    img = photo(300, 400, 9)
    np.testing.assert_array_equal(
        hr.resize_to_common(img, size, crop=True, backend="opencv"),
        hr.resize_to_common(img, size, crop=True, backend="pillow"),
    )
    # From files: equal to the resample of Pillow's decode, in RGB order.
    path = write(tmp_path / "a.jpg", photo(100, 150, 3), quality=90)
    np.testing.assert_array_equal(
        hr.decode_to_common(path, "RGB", size, crop=True, backend="opencv"),
        hr.resize_to_common(_decode(path, "RGB"), size, crop=True, backend="opencv"),
    )
    grey = write(tmp_path / "g.jpg", photo(100, 150, 4, channels=1), quality=90)
    for mode in ("RGB", "L"):
        np.testing.assert_array_equal(
            hr.decode_to_common(grey, mode, size, crop=True, backend="opencv"),
            hr.resize_to_common(_decode(grey, mode), size, crop=True, backend="opencv"),
        )
