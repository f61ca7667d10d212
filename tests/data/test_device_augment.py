"""Device augmentation against the host's numpy/Pillow transforms, given the same parameters.

Each deterministic transform is compared with its per-example reference in
`jaxcnn.data.augment` (exactly for crops, flips and normalisation; within the tolerances its
docstring states for the interpolating ones), the parameter sampler's distributions are
checked against torchvision's algorithms, and the composed pipeline against the host
pipeline's order, eagerly and under jit.
"""

from __future__ import annotations

import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.data import DataConfig, loader
from jaxcnn.data import augment as A
from jaxcnn.data import device_augment as D

MEAN3, STD3 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# Compiled once per shape: run eagerly, every primitive would be compiled on its own, which
# is several times slower for these small inputs.
J = types.SimpleNamespace(
    crop=jax.jit(D.crop_with_padding, static_argnames="size"),
    rotate=jax.jit(D.rotate_scale),
    resized_crop=jax.jit(D.resized_crop, static_argnames="out_size"),
    resize=jax.jit(D.resize, static_argnames="size"),
    jitter=jax.jit(D.color_jitter),
    apply=jax.jit(D.apply_params, static_argnames="spec"),
    eval=jax.jit(D.eval_batch, static_argnames="spec"),
)


def _images(shape, seed=0, dtype=np.uint8):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    return rng.random(shape).astype(dtype)


def _spec(**kw):
    base = dict(
        image_size=32, input_hw=(32, 32), source_channels=1, channels=1, mean=(0.5,), std=(0.25,)
    )
    return D.AugmentSpec(**{**base, **kw})


def _finish(images, spec):
    """The host's batching and normalisation (`_Transform.finish`) for the spec's channels."""
    cfg = DataConfig(image_size=spec.image_size)
    t = loader._Transform(cfg, spec.source_channels, spec.channels, spec.mean, spec.std)
    return t.finish(list(images), "test")


def _pca_offset(alpha):
    # augment.pca_lighting's offset for given alphas (float64, then float32).
    return (A.IMAGENET_PCA_EIGVEC @ (alpha * A.IMAGENET_PCA_EIGVAL)).astype(np.float32)


def _host_train(images, params, spec):
    """The host pipeline (`_Transform.train` + `finish`) run with the given parameters."""
    p = {k: np.asarray(v) for k, v in params.items()}
    s = spec.image_size
    out = []
    for b, img in enumerate(images):
        if spec.random_resized_crop:
            top, left, h, w = (int(v) for v in p["box"][b])
            img = A.resize(img[top : top + h, left : left + w], s)
        else:
            if spec.eval_resize:
                img = A.resize_shorter(img, spec.eval_resize)
            elif img.shape[:2] != (s, s):
                img = A.resize(img, s)
            if spec.random_rotation or spec.random_scale:
                img = A.rotate_scale(img, float(p["angle"][b]), float(p["scale"][b]))
            if spec.random_crop_padding or img.shape[:2] != (s, s):
                img = A._crop_with_zeros(img, int(p["top"][b]), int(p["left"][b]), s, s)
        if spec.hflip and p["flip"][b]:
            img = img[:, ::-1]
        if any(spec.color_jitter):
            factors = [
                float(p[name][b]) if name in p else None
                for name in ("brightness", "contrast", "saturation")
            ]
            img = A.adjust_colors(A.to_float(img), *factors, order=p["jitter_order"][b])
        if spec.pca_lighting:
            img = A.to_float(img) + _pca_offset(p["alpha"][b])
        out.append(img)
    return _finish(out, spec)


# ----------------------------------------------------------------------------- crop and flip


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_crop_with_padding_is_bit_identical_to_host(dtype):
    images = _images((12, 9, 11, 3), dtype=dtype)
    # Inside, overlapping every edge, and entirely outside.
    top = np.array([0, -2, 2, -3, 0, 5, -9, 9, 1, -1, 3, 0], np.int32)
    left = np.array([0, -2, 4, 0, -4, 6, 0, 0, 11, -11, 1, 5], np.int32)
    ours = np.asarray(J.crop(images, top, left, (7, 8)))
    ref = np.stack(
        [A._crop_with_zeros(im, t, l, 7, 8) for im, t, l in zip(images, top, left, strict=True)]
    )
    assert ours.dtype == dtype and ours.shape == (12, 7, 8, 3)
    np.testing.assert_array_equal(ours, ref)


def test_hflip_is_bit_identical_to_host():
    images = _images((4, 5, 6, 3))
    flip = np.array([True, False, True, False])
    ours = np.asarray(D.hflip(images, flip))
    ref = np.stack([im[:, ::-1] if f else im for im, f in zip(images, flip, strict=True)])
    np.testing.assert_array_equal(ours, ref)


# ----------------------------------------------------------------------------- rotate / scale


@pytest.mark.parametrize("shape", [(32, 32, 1), (40, 56, 3)])
def test_rotate_scale_matches_pillow(shape):
    rng = np.random.default_rng(1)
    images = _images((12, *shape), seed=2)
    angle = rng.uniform(-30, 30, 12).astype(np.float32)
    scale = rng.uniform(0.8, 1.2, 12).astype(np.float32)
    ours = np.asarray(J.rotate(images, angle, scale))
    ref = np.stack(
        [
            A.rotate_scale(im, float(a), float(s))
            for im, a, s in zip(images, angle, scale, strict=True)
        ]
    ).astype(np.float64)
    assert ours.dtype == np.float32 and ours.shape == images.shape
    # Pillow truncates its float result to uint8; ours keeps the float.
    d = ours - ref
    within = (d > -1e-3) & (d < 1 + 1e-3)
    assert within.mean() >= 0.9999, (d.min(), d.max())
    assert np.abs(d).max() <= 1.01 or (~within).sum() <= 3  # rare edge-of-image flips only
    assert np.mean(np.floor(ours + 1e-3) == ref) > 0.995


def test_rotate_scale_identity_and_constant_regions_are_exact():
    images = _images((2, 16, 20, 3))
    ident = np.asarray(J.rotate(images, np.zeros(2), np.ones(2)))
    np.testing.assert_array_equal(ident, images.astype(np.float32))
    flat = np.full((1, 16, 16, 1), 77, np.uint8)
    out = np.asarray(J.rotate(flat, np.array([23.0]), np.array([1.1])))
    assert set(np.unique(out)) <= {0.0, 77.0}
    ref = A.rotate_scale(flat[0], 23.0, 1.1)
    np.testing.assert_array_equal(out[0], ref.astype(np.float32))


# ----------------------------------------------------------------------------- resize


@pytest.mark.parametrize(
    "shape, out",
    [((37, 53, 3), (16, 20)), ((8, 8, 1), (32, 32)), ((64, 64, 3), (24, 24)), ((50, 40, 2), 30)],
)
def test_resized_crop_matches_host(shape, out):
    rng = np.random.default_rng(3)
    images = _images((8, *shape), seed=4)
    h, w = shape[:2]
    boxes = np.array([A.random_resized_crop_params(h, w, rng) for _ in range(7)] + [(0, 0, h, w)])
    ours = np.asarray(J.resized_crop(images, boxes, out))
    crops = [im[t : t + bh, l : l + bw] for im, (t, l, bh, bw) in zip(images, boxes, strict=True)]
    ref = np.stack([A.resize(c, out) for c in crops]).astype(np.float64)
    # Pillow (1 and 3 channels) rounds to uint8 after each pass; ours keeps the float.
    tol = 1.0 + 1e-3 if shape[2] in (1, 3) else 0.5 + 1e-3
    assert np.abs(ours - ref).max() <= tol
    # Against the host's float path (the same filter in float64), to float32 rounding.
    ref_f = np.stack([A.resize(c.astype(np.float32), out) for c in crops])
    np.testing.assert_allclose(ours, ref_f, atol=2e-3)


def test_resize_identity_box_is_exact():
    images = _images((3, 9, 7, 3))
    boxes = np.array([[2, 1, 5, 6]] * 3)
    out = np.asarray(J.resized_crop(images, boxes, (5, 6)))
    np.testing.assert_array_equal(out, images[:, 2:7, 1:7].astype(np.float32))
    np.testing.assert_array_equal(np.asarray(J.resize(images, (9, 7))), images.astype(np.float32))


# ----------------------------------------------------------------------------- colour


def test_pca_lighting_matches_host():
    x = _images((3, 5, 6, 3), dtype=np.float32)
    seeds = [11, 12, 13]
    alphas = np.stack([np.random.default_rng(s).normal(0.0, 0.1, size=3) for s in seeds])
    ours = np.asarray(D.pca_lighting(x, alphas.astype(np.float32)))
    ref = np.stack(
        [A.pca_lighting(im, np.random.default_rng(s), 0.1) for im, s in zip(x, seeds, strict=True)]
    )
    np.testing.assert_allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("channels", [3, 1])
def test_color_jitter_matches_torchvision(torch, channels):
    import torchvision.transforms.functional as F

    x = _images((6, 7, 5, channels), seed=5, dtype=np.float32)
    rng = np.random.default_rng(6)
    factors = rng.uniform(0.5, 1.5, (3, 6)).astype(np.float32)
    order = np.stack([rng.permutation(3) for _ in range(6)]).astype(np.int32)
    ours = np.asarray(J.jitter(x, *factors, order))
    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for b in range(6):
        t = torch.from_numpy(x[b]).permute(2, 0, 1)
        for op in order[b]:
            t = adjust[op](t, float(factors[op][b]))
        np.testing.assert_allclose(ours[b], t.permute(1, 2, 0).numpy(), atol=2e-6)


def test_color_jitter_leaves_out_disabled_adjustments():
    x = _images((2, 4, 4, 3), dtype=np.float32)
    f = np.array([1.3, 0.6], np.float32)
    ours = np.asarray(D.color_jitter(x, brightness=f))
    np.testing.assert_array_equal(ours, np.clip(f[:, None, None, None] * x, 0, 1))


# ----------------------------------------------------------------------------- normalize


@pytest.mark.parametrize("source, channels", [(1, 1), (1, 3), (3, 3), (3, 1)])
def test_normalize_matches_host_finish(source, channels):
    images = _images((4, 6, 6, source))
    mean, std = (MEAN3, STD3) if channels == 3 else ((0.45,), (0.226,))
    ours = np.asarray(D.normalize(images, mean, std, channels=channels))
    spec = _spec(image_size=6, source_channels=source, channels=channels, mean=mean, std=std)
    ref = _finish(images, spec)
    assert ours.dtype == np.float32 and ours.shape == (4, 6, 6, channels)
    if channels == 1 and source == 3:  # the luma's summation order may differ by an ulp
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    else:
        np.testing.assert_array_equal(ours, ref)


def test_normalize_float_input_is_in_unit_range():
    x = _images((2, 3, 3, 3), dtype=np.float32)
    ours = np.asarray(D.normalize(x, MEAN3, STD3))
    ref = (x - np.float32(MEAN3)) / np.float32(STD3)
    np.testing.assert_allclose(ours, ref, atol=1e-6)


# ----------------------------------------------------------------------------- sampling


def test_crop_offsets_cover_every_position_uniformly():
    p = D.sample_params(jax.random.key(0), 5000, image_hw=(32, 32), out_size=28, padding=2)
    for name in ("top", "left"):
        v = np.asarray(p[name])
        assert v.dtype == np.int32 and v.min() == -2 and v.max() == 6  # both ends included
        counts = np.bincount(v + 2, minlength=9)
        assert np.all(np.abs(counts / 5000 - 1 / 9) < 0.025), counts
    assert np.corrcoef(p["top"], p["left"])[0, 1] < 0.05  # drawn independently


def test_rotation_scale_flip_pca_and_jitter_distributions():
    p = D.sample_params(
        jax.random.key(1),
        4000,
        image_hw=(32, 32),
        out_size=32,
        rotation=15,
        scale=0.15,
        hflip=True,
        pca=0.1,
        brightness=0.4,
        contrast=0.2,
        saturation=1.5,
    )
    assert set(p) == {
        "angle",
        "scale",
        "flip",
        "alpha",
        "brightness",
        "contrast",
        "saturation",
        "jitter_order",
    }
    angle, scale = np.asarray(p["angle"]), np.asarray(p["scale"])
    assert -15 <= angle.min() < -14 and 14 < angle.max() <= 15 and abs(angle.mean()) < 0.5
    assert 0.85 <= scale.min() < 0.86 and 1.14 < scale.max() <= 1.15
    assert abs(np.asarray(p["flip"]).mean() - 0.5) < 0.03
    alpha = np.asarray(p["alpha"])
    assert alpha.shape == (4000, 3) and np.all(np.abs(alpha.std(axis=0) - 0.1) < 0.006)
    for name, low, high in (
        ("brightness", 0.6, 1.4),
        ("contrast", 0.8, 1.2),
        ("saturation", 0, 2.5),
    ):
        v = np.asarray(p[name])
        assert low <= v.min() < low + 0.01 and high - 0.01 < v.max() <= high, name
    order = np.asarray(p["jitter_order"])
    assert np.all(np.sort(order, axis=1) == np.arange(3))
    perms, counts = np.unique(order, axis=0, return_counts=True)
    assert len(perms) == 6 and np.all(np.abs(counts / 4000 - 1 / 6) < 0.03)


@pytest.mark.slow
def test_rrc_boxes_follow_torchvision():
    height, width, n = 40, 60, 3000
    box = np.asarray(
        D.sample_params(jax.random.key(2), n, image_hw=(height, width), out_size=16, rrc=True)[
            "box"
        ]
    )
    top, left, h, w = box.T
    assert box.dtype == np.int32
    assert np.all((h >= 1) & (w >= 1) & (top >= 0) & (left >= 0))
    assert np.all((top + h <= height) & (left + w <= width))
    # Area and aspect bounds of the accepted tries, up to the rounding of h and w.
    area = h * w / (height * width)
    assert area.min() >= 0.08 * 0.8 and area.max() <= 1.0
    assert np.all(np.abs(np.log(w / h)) <= math.log(4 / 3) + 1.0 / np.minimum(h, w))
    # The same distribution as the numpy reference sampler (torchvision's algorithm).
    rng = np.random.default_rng(0)
    ref = np.array([A.random_resized_crop_params(height, width, rng) for _ in range(n)])
    for col in range(4):
        scale = ref[:, col].std() / math.sqrt(n) * 5
        assert abs(box[:, col].mean() - ref[:, col].mean()) < scale, col
    # Placement is uniform over the positions left free: both ends are reached.
    assert top.min() == 0 and left.min() == 0
    assert np.any(top + h == height) and np.any(left + w == width)


def test_rrc_falls_back_to_the_central_clamped_crop():
    # No try fits a 4 x 100 image: every box is torchvision's fallback.
    box = np.asarray(
        D.sample_params(jax.random.key(3), 50, image_hw=(4, 100), out_size=8, rrc=True)["box"]
    )
    assert np.all(box == np.array([0, 47, 4, 5]))
    box = np.asarray(
        D.sample_params(jax.random.key(3), 50, image_hw=(100, 4), out_size=8, rrc=True)["box"]
    )
    assert np.all(box == np.array([47, 0, 5, 4]))


def test_params_are_a_function_of_the_key_and_each_purpose_draws_alone():
    kw = dict(image_hw=(32, 32), out_size=32, padding=4, rotation=10, scale=0.1, hflip=True)
    key = jax.random.key(7)
    a = D.sample_params(key, 64, **kw)
    b = D.sample_params(key, 64, **kw)
    c = D.sample_params(jax.random.fold_in(key, 1), 64, **kw)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
        assert not np.array_equal(a[name], c[name]), name
    # Enabling more transforms leaves the draws of the others unchanged.
    more = D.sample_params(key, 64, **kw, pca=0.1, brightness=0.3)
    for name in ("top", "left", "angle", "scale", "flip"):
        np.testing.assert_array_equal(a[name], more[name])
    # A raw uint32 key works too.
    raw = D.sample_params(jax.random.PRNGKey(7), 64, **kw)
    assert set(raw) == set(a)


# ----------------------------------------------------------------------------- pipeline


DIGITS = dict(random_crop_padding=2, hflip=True)


def _check_pipeline(spec, images, key, tol_uint8, *, eager=False):
    params = spec.sample_params(key, images.shape[0])
    run = D.apply_params if eager else J.apply
    ours = np.asarray(run(images, params, spec))
    ref = _host_train(images, params, spec)
    assert ours.shape == ref.shape and ours.dtype == np.float32
    if tol_uint8 == 0 and eager:
        np.testing.assert_array_equal(ours, ref)
    elif tol_uint8 == 0:  # XLA may contract the normalisation into an FMA: an ulp
        np.testing.assert_allclose(ours, ref, rtol=3e-7, atol=3e-7)
    else:
        tol = tol_uint8 / 255.0 / min(spec.std) + 1e-5
        err = np.abs(ours - ref)
        assert np.mean(err <= tol) >= 0.9999, err.max()
    return ours


@pytest.mark.parametrize("eager", [True, False])
def test_pipeline_crop_and_flip_equals_host_bitwise(eager):
    spec = _spec(**DIGITS)
    images = _images((16, 32, 32, 1), seed=8)
    _check_pipeline(spec, images, jax.random.key(0), 0, eager=eager)


@pytest.mark.parametrize(
    "kw, input_hw, source, channels, tol",
    [
        (dict(random_rotation=15.0, random_scale=0.15, random_crop_padding=2), (32, 32), 1, 1, 1),
        (dict(random_rotation=10.0, hflip=True), (32, 32), 1, 3, 1),  # flip folded in rotation
        # Resize, then rotate: the host rounds after the first and truncates after the second.
        (dict(random_scale=0.1, hflip=True), (28, 28), 1, 1, 2),
        (dict(eval_resize=36, hflip=True), (40, 50), 3, 3, 1),  # resize_shorter + crop
        (dict(random_resized_crop=True, hflip=True, pca_lighting=0.1), (40, 48), 3, 3, 1),
        (dict(random_resized_crop=True), (40, 48), 3, 1, 1),
        # The resample's difference of up to 1 (the host rounds, the device does not), then
        # scaled by jitter factors of up to 1.4 in each of three steps: within 1.4 ** 3 < 3.
        (
            dict(random_resized_crop=True, hflip=True, color_jitter=(0.4, 0.4, 0.4)),
            (40, 48),
            3,
            3,
            3,
        ),
        (dict(random_crop_padding=2, color_jitter=(0.3, 0.0, 0.5)), (32, 32), 1, 1, 0),
    ],
)
def test_pipeline_matches_host_given_the_same_params(kw, input_hw, source, channels, tol):
    mean, std = (MEAN3, STD3) if channels == 3 else ((0.45,), (0.226,))
    spec = _spec(
        input_hw=input_hw, source_channels=source, channels=channels, mean=mean, std=std, **kw
    )
    images = _images((8, *input_hw, source), seed=9)
    _check_pipeline(spec, images, jax.random.key(1), tol)


@pytest.mark.parametrize("kw", [DIGITS, dict(random_rotation=15.0, random_scale=0.15)])
def test_augment_batch_under_jit_equals_eager(kw):
    spec = _spec(**kw)
    images = jnp.asarray(_images((8, 32, 32, 1), seed=10))
    key = jax.random.key(3)
    jitted = np.asarray(jax.jit(D.augment_batch, static_argnames="spec")(images, key, spec))
    eager = np.asarray(D.augment_batch(images, key, spec))
    if kw is DIGITS:  # XLA may contract the normalisation into an FMA: an ulp
        np.testing.assert_allclose(jitted, eager, rtol=3e-7, atol=3e-7)
    else:  # ... and fuse the float arithmetic of the interpolation differently
        assert np.mean(np.abs(jitted - eager) <= 1e-4) >= 0.999


@pytest.mark.slow
def test_augment_batch_traces_once_and_is_a_function_of_the_key():
    kw = dict(random_resized_crop=True, hflip=True, pca_lighting=0.1, color_jitter=0.4)
    spec = _spec(input_hw=(36, 40), source_channels=3, channels=3, mean=MEAN3, std=STD3, **kw)
    images = jnp.asarray(_images((8, 36, 40, 3), seed=10))
    traces = []

    def step(images, key):
        traces.append(1)
        return D.augment_batch(images, key, spec)

    jitted = jax.jit(step)
    keys = [jax.random.fold_in(jax.random.key(3), s) for s in range(3)]
    outs = [np.asarray(jitted(images, k)) for k in keys]
    assert len(traces) == 1
    assert outs[0].shape == (8, 32, 32, 3) and outs[0].dtype == np.float32
    np.testing.assert_array_equal(outs[0], np.asarray(jitted(images, keys[0])))
    assert not np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[1], outs[2])
    # Equal to the two layers run separately with the same key.
    params = spec.sample_params(keys[1], 8)
    np.testing.assert_allclose(J.apply(images, params, spec), outs[1], rtol=0, atol=1e-5)


def test_eval_batch_matches_host_eval():
    cases = [
        (dict(eval_resize=36), (40, 50), 3, 3),  # resize_shorter + centre crop
        (dict(eval_resize=40), (45, 37), 3, 1),  # odd margins: round half to even
        (dict(), (28, 28), 1, 1),  # plain resize to image_size
        (dict(), (32, 32), 1, 3),  # no geometry: exact
    ]
    for kw, input_hw, source, channels in cases:
        mean, std = (MEAN3, STD3) if channels == 3 else ((0.45,), (0.226,))
        spec = _spec(
            input_hw=input_hw, source_channels=source, channels=channels, mean=mean, std=std, **kw
        )
        images = _images((4, *input_hw, source), seed=11)
        cfg = DataConfig(image_size=32, **kw)
        t = loader._Transform(cfg, source, channels, spec.mean, spec.std)
        ref = t.finish([t.eval(im) for im in images], "test")
        ours = np.asarray(J.eval(images, spec))
        # No geometry: the host's normalisation up to an ulp (an FMA under jit).
        tol = 3e-7 * 4 if input_hw == (32, 32) else 1.0 / 255 / min(std) + 1e-5
        np.testing.assert_allclose(ours, ref, rtol=0, atol=tol)


# ----------------------------------------------------------------------------- spec and errors


def test_from_config_reads_the_data_section():
    cfg = DataConfig(image_size=224, random_resized_crop=True, hflip=True, pca_lighting=0.1)
    spec = D.AugmentSpec.from_config(
        cfg, mean=MEAN3, std=STD3, source_channels=3, channels=None, input_hw=(256, 256)
    )
    assert spec.random_resized_crop and spec.hflip and spec.pca_lighting == 0.1
    assert spec.channels == 3 and spec.input_hw == (256, 256) and spec.color_jitter == (0, 0, 0)
    assert hash(spec) == hash(
        D.AugmentSpec.from_config(
            cfg.to_dict(),
            mean=list(MEAN3),
            std=STD3,
            source_channels=3,
            channels=3,
            input_hw=[256, 256],
        )
    )
    jitter = D.AugmentSpec.from_config(
        {"color_jitter": 0.4},
        mean=(0.5,),
        std=(0.2,),
        source_channels=1,
        channels=1,
        input_hw=(32, 32),
    )
    assert jitter.color_jitter == (0.4, 0.4, 0.4)
    assert set(jitter.param_names) == {"brightness", "contrast", "saturation", "jitter_order"}
    with pytest.raises(ValueError, match=r"unknown keys \['hflips'\]"):
        D.AugmentSpec.from_config(
            {"hflips": True},
            mean=(0.5,),
            std=(0.2,),
            source_channels=1,
            channels=1,
            input_hw=(32, 32),
        )


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(random_resized_crop=True, random_crop_padding=4), "alternatives"),
        (dict(eval_resize=30), r"eval_resize \(30\) must be >= image_size \(32\)"),
        (dict(pca_lighting=0.1), "pca_lighting needs RGB"),
        (dict(mean=(0.5, 0.5)), r"mean must have one value per channel \(1\)"),
        (dict(std=(0.0,)), "std must be finite and positive"),
        (dict(random_rotation=200), r"random_rotation must be degrees in \[0, 180\]"),
        (dict(random_scale=1.0), r"random_scale must be in \[0, 1\)"),
        (dict(channels=2), "channels must be None"),
        (dict(image_size=0), "image_size must be an int >= 1"),
        (dict(color_jitter=(0.1, -1, 0)), "color_jitter must be"),
    ],
)
def test_spec_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        _spec(**kw)


def test_bad_inputs_raise_clear_errors():
    spec = _spec(**DIGITS)
    good = _images((2, 32, 32, 1))
    key = jax.random.key(0)
    with pytest.raises(
        TypeError, match=r"images_uint8 must be uint8 pixels 0\.\.255; got dtype float32"
    ):
        D.augment_batch(good.astype(np.float32), key, spec)
    with pytest.raises(
        ValueError, match=r"shape \(B, H, W, C\); got shape \(32, 32, 1\).*images\[None\]"
    ):
        D.augment_batch(good[0], key, spec)
    with pytest.raises(ValueError, match=r"must have shape \(B, 32, 32, 1\).*got \(2, 30, 32, 1\)"):
        D.augment_batch(good[:, :30], key, spec)
    with pytest.raises(TypeError, match=r"key must be a jax\.random key"):
        D.augment_batch(good, np.zeros((2, 2), np.float32), spec)
    with pytest.raises(ValueError, match="key must be a single key"):
        D.augment_batch(good, jax.random.split(key, 2), spec)
    with pytest.raises(TypeError, match="spec must be an AugmentSpec"):
        D.augment_batch(good, key, {"hflip": True})
    with pytest.raises(ValueError, match=r"params lacks \['flip'\]"):
        D.apply_params(good, {"top": np.zeros(2, np.int32), "left": np.zeros(2, np.int32)}, spec)
    with pytest.raises(
        ValueError, match=r"out_size \(40, 40\) is larger than the padded image \(36, 36\)"
    ):
        D.sample_params(key, 2, image_hw=(32, 32), out_size=40, padding=2)
    with pytest.raises(ValueError, match="rrc and padding are alternatives"):
        D.sample_params(key, 2, image_hw=(32, 32), out_size=32, padding=2, rrc=True)
    with pytest.raises(ValueError, match="batch must be a positive int"):
        D.sample_params(key, 0, image_hw=(32, 32), out_size=32)
    with pytest.raises(
        ValueError, match=r"top must have shape \(2,\) \(one per image\); got shape \(3,\)"
    ):
        D.crop_with_padding(good, np.zeros(3, np.int32), np.zeros(2, np.int32), 28)
    with pytest.raises(TypeError, match="top must be integers; got dtype float32"):
        D.crop_with_padding(good, np.zeros(2, np.float32), np.zeros(2, np.int32), 28)
    with pytest.raises(ValueError, match=r"boxes must have shape \(2, 4\)"):
        D.resized_crop(good, np.zeros((2, 3), np.int32), 16)
    with pytest.raises(TypeError, match="flip must be booleans"):
        D.hflip(good, np.zeros(2, np.int32))
    with pytest.raises(TypeError, match="x must be floats in \\[0, 1\\]; got uint8"):
        D.pca_lighting(_images((2, 4, 4, 3)), np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match=r"pca_lighting needs RGB images"):
        D.pca_lighting(good.astype(np.float32), np.zeros((2, 3), np.float32))
    with pytest.raises(TypeError, match="images must be uint8 or floating point; got dtype int32"):
        D.rotate_scale(good.astype(np.int32), np.zeros(2), np.ones(2))
