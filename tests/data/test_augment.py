"""Augmentations against torchvision.transforms.functional, plus statistics of the random ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from jaxcnn.data import augment as A


@pytest.fixture(scope="module")
def TF():
    """torchvision.transforms.functional: the reference geometry."""
    import torchvision.transforms.functional as F

    return F


def _chw(torch, img):
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)


def _hwc(t):
    return t.permute(1, 2, 0).numpy()


def _image(shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape).astype(dtype)


# ----------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "shape, size",
    [
        ((37, 53), (16, 20)),  # shrink (antialiased)
        ((8, 8), (32, 32)),  # enlarge (the digits case)
        ((50, 40), (64, 30)),  # one axis up, one down
        ((224, 300), (100, 100)),
    ],
)
@pytest.mark.parametrize("channels", [1, 3, 2])  # 1 and 3: Pillow; 2: the numpy filter
def test_resize_uint8_matches_torchvision(torch, TF, shape, size, channels):
    img = _image((*shape, channels))
    ours = A.resize(img, size)
    ref = _hwc(TF.resize(_chw(torch, img), list(size), antialias=True))
    assert ours.dtype == np.uint8 and ours.shape == (*size, channels)
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


@pytest.mark.parametrize("shape, size", [((37, 53), (16, 20)), ((8, 8), (32, 32))])
def test_resize_float_matches_torchvision(torch, TF, shape, size):
    img = _image((*shape, 3), dtype=np.float32)
    ours = A.resize(img, size)
    ref = _hwc(TF.resize(_chw(torch, img), list(size), antialias=True))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_resize_to_own_size_is_identity():
    img = _image((9, 7, 3))
    np.testing.assert_array_equal(A.resize(img, (9, 7)), img)
    f = _image((9, 7, 2), dtype=np.float32)
    np.testing.assert_array_equal(A.resize(f, (9, 7)), f)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (40, 40)])
def test_resize_shorter_matches_torchvision(torch, TF, shape):
    img = _image((*shape, 3))
    ours = A.resize_shorter(img, 24)
    ref = _hwc(TF.resize(_chw(torch, img), 24, antialias=True))
    assert ours.shape == ref.shape and min(ours.shape[:2]) == 24
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1


# ----------------------------------------------------------------------------- crops, flips


@pytest.mark.parametrize("shape, size", [((10, 12), (5, 6)), ((11, 11), 4), ((7, 9), (7, 2))])
def test_center_crop_matches_torchvision(torch, TF, shape, size):
    img = _image((*shape, 3))
    ref = _hwc(TF.center_crop(_chw(torch, img), list(np.broadcast_to(size, 2))))
    np.testing.assert_array_equal(A.center_crop(img, size), ref)


def test_center_crop_larger_than_image_raises():
    with pytest.raises(ValueError, match=r"larger than the image \(5, 5\)"):
        A.center_crop(_image((5, 5, 1)), 6)


@pytest.mark.parametrize("padding, size", [(0, 6), (2, 8), (4, 12), (3, (5, 9))])
def test_random_crop_matches_torchvision_given_its_draws(torch, TF, padding, size):
    """Same offsets as RandomCrop draws them (top, then left), same pixels as pad + crop."""
    img = _image((8, 8, 3))
    h, w = np.broadcast_to(size, 2)
    for seed in range(20):
        ours = A.random_crop(img, size, padding, np.random.default_rng(seed))
        draws = np.random.default_rng(seed)
        top = int(draws.integers(0, 8 + 2 * padding - h + 1))
        left = int(draws.integers(0, 8 + 2 * padding - w + 1))
        padded = TF.pad(_chw(torch, img), padding) if padding else _chw(torch, img)
        np.testing.assert_array_equal(ours, _hwc(TF.crop(padded, top, left, int(h), int(w))))


def test_random_crop_reaches_every_offset():
    # A one-hot image: where its pixel lands shows the offset drawn.
    img = np.zeros((4, 4, 1), np.uint8)
    img[0, 0] = 255
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(400):
        out = A.random_crop(img, 4, 2, rng)
        where = np.argwhere(out[:, :, 0])
        seen.add(tuple(where[0]) if len(where) else None)
    # Offsets 0..4 in each axis put the pixel at (2 - t, 2 - l) when visible: 9 visible spots
    # (t, l <= 2) plus "not visible".
    assert seen == {(r, c) for r in range(3) for c in range(3)} | {None}


def test_random_crop_larger_than_padded_image_raises():
    with pytest.raises(ValueError, match=r"larger than the padded image \(12, 12\)"):
        A.random_crop(_image((8, 8, 1)), 13, 2, np.random.default_rng(0))


def test_hflip_matches_torchvision_and_flips_half_the_time(torch, TF):
    img = _image((5, 7, 3))
    np.testing.assert_array_equal(
        A.hflip(img, np.random.default_rng(0), p=1.0), _hwc(TF.hflip(_chw(torch, img)))
    )
    assert A.hflip(img, np.random.default_rng(0), p=0.0) is img
    rng = np.random.default_rng(1)
    flips = sum(A.hflip(img, rng) is not img for _ in range(4000))
    assert abs(flips - 2000) < 4 * math.sqrt(1000)  # 4 sigma of Binomial(4000, 1/2)


# ----------------------------------------------------------------------------- resized crop


@pytest.mark.parametrize("shape", [(40, 40), (20, 90), (90, 20)])
def test_random_resized_crop_fallback_matches_torchvision(torch, shape):
    """With areas that can never fit, all 10 tries fail: the central fallback is deterministic."""
    from torchvision.transforms import RandomResizedCrop

    scale, ratio = (1.5, 2.0), (3 / 4, 4 / 3)
    ours = A.random_resized_crop_params(*shape, np.random.default_rng(0), scale, ratio)
    ref = RandomResizedCrop.get_params(torch.zeros(1, *shape), list(scale), list(ratio))
    assert ours == tuple(ref)


def test_random_resized_crop_box_statistics_match_torchvision(torch):
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    H, W, n = 60, 80, 3000
    ours = np.array([A.random_resized_crop_params(H, W, rng) for _ in range(n)], float)
    ref = np.array(
        [RandomResizedCrop.get_params(torch.zeros(1, H, W), [0.08, 1.0], [3 / 4, 4 / 3])
         for _ in range(n)],
        float,
    )  # fmt: skip
    for boxes in (ours, ref):
        top, left, h, w = boxes.T
        assert (top >= 0).all() and (left >= 0).all()
        assert (top + h <= H).all() and (left + w <= W).all()
    area = lambda b: b[:, 2] * b[:, 3] / (H * W)  # noqa: E731
    aspect = lambda b: b[:, 3] / b[:, 2]  # noqa: E731
    # Same distribution: means within a few standard errors.
    for stat in (area, aspect):
        a, r = stat(ours), stat(ref)
        se = math.sqrt(a.var() / n + r.var() / n)
        assert abs(a.mean() - r.mean()) < 4 * se
    assert area(ours).min() >= 0.07 and area(ours).max() <= 1.0
    assert aspect(ours).min() >= 0.7 and aspect(ours).max() <= 1.4


def test_random_resized_crop_is_crop_then_bilinear_resize(torch, TF):
    img = _image((30, 45, 3))
    for seed in range(5):
        out = A.random_resized_crop(img, 16, np.random.default_rng(seed))
        top, left, h, w = A.random_resized_crop_params(30, 45, np.random.default_rng(seed))
        ref = _hwc(TF.resized_crop(_chw(torch, img), top, left, h, w, [16, 16], antialias=True))
        assert out.shape == (16, 16, 3)
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


# ----------------------------------------------------------------------------- colour


def test_pca_lighting_adds_one_rgb_offset_from_the_eigenbasis():
    img = _image((6, 5, 3), dtype=np.float32)
    out = A.pca_lighting(img, np.random.default_rng(7), alphastd=0.1)
    alpha = np.random.default_rng(7).normal(0.0, 0.1, size=3)
    offset = A.IMAGENET_PCA_EIGVEC @ (alpha * A.IMAGENET_PCA_EIGVAL)
    np.testing.assert_allclose(out - img, np.broadcast_to(offset, img.shape), atol=1e-6)
    np.testing.assert_array_equal(A.pca_lighting(img, np.random.default_rng(0), 0.0), img)


def test_pca_lighting_offsets_have_the_pca_covariance():
    img = np.zeros((1, 1, 3), np.float32)
    rng = np.random.default_rng(0)
    offsets = np.stack([A.pca_lighting(img, rng, 0.1)[0, 0] for _ in range(20000)])
    v, lam = A.IMAGENET_PCA_EIGVEC, A.IMAGENET_PCA_EIGVAL
    expected = v @ np.diag((0.1 * lam) ** 2) @ v.T
    np.testing.assert_allclose(np.cov(offsets.T), expected, atol=0.03 * expected.max())
    # Along the first principal axis the spread is 0.1 * 0.2175.
    assert abs((offsets @ v[:, 0]).std() - 0.02175) < 0.001


def test_pca_lighting_rejects_uint8_and_grey():
    with pytest.raises(TypeError, match="float image"):
        A.pca_lighting(_image((2, 2, 3)), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        A.pca_lighting(_image((2, 2, 1), dtype=np.float32), np.random.default_rng(0))


def test_normalize_matches_torchvision(torch, TF):
    img = _image((4, 5, 3))
    ours = A.normalize(img, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    ref = _hwc(TF.normalize(TF.to_tensor(img), [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]))
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    with pytest.raises(ValueError, match="one value per channel"):
        A.normalize(img, (0.5,), (0.5,))
    with pytest.raises(ValueError, match="positive"):
        A.normalize(img, (0.5,) * 3, (0.5, 0.0, 0.5))


def test_convert_channels_matches_pillow_luma():
    from PIL import Image

    img = _image((6, 7, 3))
    grey = A.convert_channels(img, 1)
    ref = np.asarray(Image.fromarray(img).convert("L"))[:, :, None]
    assert grey.shape == (6, 7, 1)
    assert np.abs(grey.astype(int) - ref.astype(int)).max() <= 1
    rgb = A.convert_channels(grey, 3)
    assert rgb.shape == (6, 7, 3) and (rgb == grey).all()


# ----------------------------------------------------------------------------- errors


def test_bad_arguments_are_named():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="img must be a numpy array"):
        A.resize([[1, 2]], 2)
    with pytest.raises(ValueError, match=r"img must have shape \(H, W, C\)"):
        A.resize(np.zeros((4, 4), np.uint8), 2)
    with pytest.raises(TypeError, match="uint8 or floating"):
        A.hflip(np.zeros((4, 4, 1), np.int32), rng)
    with pytest.raises(TypeError, match="size must be an int or a pair"):
        A.center_crop(np.zeros((4, 4, 1), np.uint8), "2")
    with pytest.raises(ValueError, match="size must be positive"):
        A.resize(np.zeros((4, 4, 1), np.uint8), 0)
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        A.random_crop(np.zeros((4, 4, 1), np.uint8), 2, 0, 0)
    with pytest.raises(ValueError, match="padding must be a non-negative int"):
        A.random_crop(np.zeros((4, 4, 1), np.uint8), 2, -1, rng)
    with pytest.raises(ValueError, match="scale must satisfy"):
        A.random_resized_crop_params(4, 4, rng, scale=(0.5, 0.1))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (12.5, 1.0), (-30.0, 0.85), (90.0, 1.15)])
def test_rotate_scale_matches_torchvision(TF, channels, angle, scale):
    from PIL import Image
    from torchvision.transforms import InterpolationMode

    img = np.random.default_rng(3).integers(0, 256, (17, 23, channels), dtype=np.uint8)
    pil = Image.fromarray(img[..., 0] if channels == 1 else img)
    ref = np.asarray(
        TF.affine(
            pil,
            angle=angle,
            translate=[0, 0],
            scale=scale,
            shear=[0.0],
            interpolation=InterpolationMode.BILINEAR,
        )
    )
    ref = ref[..., None] if channels == 1 else ref
    out = A.rotate_scale(img, angle, scale)
    assert out.shape == img.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out, ref)


def test_random_rotate_scale_draws_angle_then_scale():
    img = np.zeros((9, 9, 1), np.uint8)
    img[4, 6] = 255  # a dot right of the centre: where it goes tells the angle
    seen = []
    for seed in range(200):
        r = np.random.default_rng(seed)
        angle, factor = r.uniform(-20, 20), r.uniform(0.9, 1.1)
        out = A.random_rotate_scale(img, np.random.default_rng(seed), 20, 0.1)
        np.testing.assert_array_equal(out, A.rotate_scale(img, angle, factor))
        seen.append(angle)
    assert min(seen) < -15 and max(seen) > 15
    with pytest.raises(ValueError, match="scale must be in"):
        A.random_rotate_scale(img, np.random.default_rng(0), 10, 1.0)
    with pytest.raises(ValueError, match="uint8 image with 1 or 3 channels"):
        A.rotate_scale(np.zeros((4, 4, 2), np.uint8), 10, 1.0)
