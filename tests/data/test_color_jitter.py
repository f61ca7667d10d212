"""Colour jitter: the host transform against torchvision, and `data.color_jitter` end to end.

The device transform is compared with `augment.adjust_colors` given the same factors in
test_device_augment.py; here the host side is checked against torchvision's
``F.adjust_brightness/contrast/saturation`` and its sampler against ``ColorJitter``'s ranges,
and the config key is followed through `create_datasets` on both paths.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from jaxcnn.data import augment as A
from jaxcnn.data import create_datasets
from jaxcnn.data import device_augment as D
from jaxcnn.training.config import default_config


def _images(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


@pytest.mark.parametrize("channels", [3, 1])
def test_adjust_colors_matches_torchvision(torch, channels):
    import torchvision.transforms.functional as F

    adjust = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    rng = np.random.default_rng(1)
    for trial in range(6):
        img = _images((7, 9, channels), seed=trial)
        factors = rng.uniform(0.0, 2.0, 3)
        order = rng.permutation(3)
        ours = A.adjust_colors(img, *factors, order=order)
        t = torch.from_numpy(img).permute(2, 0, 1)
        for op in order:
            t = adjust[op](t, float(factors[op]))
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, t.permute(1, 2, 0).numpy(), atol=2e-6)


def test_adjust_colors_equals_the_device_transform():
    images = _images((5, 6, 8, 3), seed=2)
    rng = np.random.default_rng(3)
    b, c, s = rng.uniform(0.3, 1.7, (3, 5)).astype(np.float32)
    order = np.stack([rng.permutation(3) for _ in range(5)]).astype(np.int32)
    ours = np.asarray(jax.jit(D.color_jitter)(images, b, c, s, order))
    for i in range(5):
        ref = A.adjust_colors(images[i], b[i], c[i], s[i], order=order[i])
        np.testing.assert_allclose(ours[i], ref, atol=2e-6)


def test_color_jitter_draws_torchvisions_ranges_and_orders():
    rng = np.random.default_rng(0)
    img = np.full((2, 2, 3), 0.5, np.float32)
    img[0, 0] = (0.9, 0.1, 0.3)
    brightness = []
    for _ in range(400):
        out = A.color_jitter(img, np.random.default_rng(int(rng.integers(1 << 30))), 0.4)
        # Brightness alone: out = clip(f * img); the factor is the ratio on an unclipped pixel.
        brightness.append(out[1, 1, 0] / 0.5)
    brightness = np.array(brightness)
    assert 0.6 <= brightness.min() < 0.65 and 1.35 < brightness.max() <= 1.4
    assert abs(brightness.mean() - 1.0) < 0.03
    # A strength above 1 clips the lower bound at 0, as ColorJitter does.
    r = np.random.default_rng(5)
    factors = [A.color_jitter(img, r, brightness=3.0)[1, 1, 0] / 0.5 for _ in range(200)]
    assert min(factors) >= 0.0 and max(factors) <= 4.0 and min(factors) < 0.3


def test_color_jitter_is_reproducible_and_zero_strength_is_identity():
    img = _images((5, 5, 3), seed=4)
    a = A.color_jitter(img, np.random.default_rng(9), 0.4, 0.4, 0.4)
    b = A.color_jitter(img, np.random.default_rng(9), 0.4, 0.4, 0.4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, img)
    np.testing.assert_array_equal(A.color_jitter(img, np.random.default_rng(9)), img)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(brightness=-0.1), "brightness must be a finite number >= 0"),
        (dict(saturation=float("nan")), "saturation must be a finite number >= 0"),
        (dict(contrast=True), "contrast must be a finite number >= 0"),
    ],
)
def test_color_jitter_rejects_bad_strengths(kwargs, message):
    with pytest.raises(ValueError, match=message):
        A.color_jitter(_images((3, 3, 3)), np.random.default_rng(0), **kwargs)


def test_adjust_colors_rejects_uint8_and_bad_orders():
    with pytest.raises(TypeError, match="float image"):
        A.adjust_colors(np.zeros((2, 2, 3), np.uint8), 1.0)
    with pytest.raises(ValueError, match="permutation"):
        A.adjust_colors(_images((2, 2, 3)), 1.0, order=(0, 0, 1))


def _datasets(augment_on, jitter, **kw):
    cfg = default_config().data
    cfg.source = "synthetic"
    cfg.synthetic_examples = 16
    cfg.image_size = 16
    cfg.augment_on = augment_on
    cfg.color_jitter = jitter
    for k, v in kw.items():
        setattr(cfg, k, v)
    return create_datasets(cfg, batch_size=8, eval_batch_size=8, seed=0)


def test_config_key_reaches_both_paths():
    off = next(iter(_datasets("host", (0.0, 0.0, 0.0)).train))["image"]
    on = next(iter(_datasets("host", (0.5, 0.5, 0.5)).train))["image"]
    assert on.shape == off.shape and not np.allclose(on, off)
    device = _datasets("device", (0.5, 0.0, 0.25))
    assert device.augment.color_jitter == (0.5, 0.0, 0.25)
    assert set(device.augment.param_names) >= {"brightness", "saturation", "jitter_order"}
    assert "contrast" not in device.augment.param_names
    assert _datasets("device", (0.0, 0.0, 0.0)).augment.color_jitter == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("bad", [(0.1, -1.0, 0.0), (0.1, 0.2, 0.3, 0.4), (0.1, float("inf"), 0)])
def test_loader_rejects_bad_values(bad):
    # (The config check of the same key is in tests/training/test_config_errors.py.)
    with pytest.raises(ValueError, match=r"data\.color_jitter must be"):
        _datasets("host", bad)
