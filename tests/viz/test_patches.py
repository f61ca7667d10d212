"""top_patches on a constructed network whose maximal patches are known in advance."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxcnn import layers, viz

CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.float32)


class Detector(nn.Module):
    """conv1: 3x3 pad 1, channel 0 = a cross detector, channel 1 = its negative;
    conv2: 3x3/2 pad 1 that copies conv1's channel 0 at even positions; fc: a linear unit."""

    @nn.compact
    def __call__(self, x, train=False):
        a = layers.Conv(2, 3, padding=1, use_bias=False, name="conv1")(x)
        b = layers.Conv(1, 3, stride=2, padding=1, use_bias=False, name="conv2")(a)
        return layers.Dense(1, use_bias=False, name="fc")(b.reshape(b.shape[0], -1))


def detector_variables():
    k1 = np.zeros((3, 3, 1, 2), np.float32)
    k1[:, :, 0, 0], k1[:, :, 0, 1] = CROSS, -CROSS
    k2 = np.zeros((3, 3, 2, 1), np.float32)
    k2[1, 1, 0, 0] = 1.0  # conv2(i, j) = conv1 channel 0 at (2i, 2j)
    fc = np.random.default_rng(1).standard_normal((36, 1)).astype(np.float32)
    return {"params": {"conv1": {"kernel": k1}, "conv2": {"kernel": k2}, "fc": {"kernel": fc}}}


def put_cross(img, r, c, amp):
    for dr, dc in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)):
        if 0 <= r + dr < img.shape[0] and 0 <= c + dc < img.shape[1]:
            img[r + dr, c + dc, 0] = amp


def dataset():
    """10 noisy 12x12 images; crosses in images 3 (amplitude 3 at (6, 6)), 7 (2 at (4, 8)), 8
    (1.5 at the corner (0, 0), partly outside) and 5 (10 at (6, 6), but masked out).
    Batches of 4, 4 and 2, as dicts with a mask."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 0.05, (10, 12, 12, 1)).astype(np.float32)
    put_cross(images[3], 6, 6, 3.0)
    put_cross(images[7], 4, 8, 2.0)
    put_cross(images[8], 0, 0, 1.5)
    put_cross(images[5], 6, 6, 10.0)
    mask = np.ones(10, np.float32)
    mask[5] = 0
    batches = [{"image": images[s : s + 4], "mask": mask[s : s + 4]} for s in (0, 4, 8)]
    return images, batches


def test_top_patches_of_a_cross_detector():
    images, batches = dataset()
    top = viz.top_patches(Detector(), detector_variables(), batches, "conv1", [0], k=3)
    assert top.count == 9  # the masked image is skipped
    np.testing.assert_array_equal(top.indices[0], [3, 7, 8])  # by amplitude
    np.testing.assert_array_equal(top.positions[0], [[6, 6], [4, 8], [0, 0]])
    # The cross's 5 pixels: 5 * amplitude, plus the noise under them; the corner cross
    # shows only 3 of its pixels.
    assert top.scores[0, 0] == pytest.approx(15.0, abs=0.25)
    assert top.scores[0, 1] == pytest.approx(10.0, abs=0.25)
    assert top.scores[0, 2] == pytest.approx(4.5, abs=0.25)
    assert top.geometry.rf == (3, 3)
    # The receptive field of unit (6, 6) is rows and columns 5..7: the cross itself.
    np.testing.assert_array_equal(top.patches[0, 0, ..., 0], images[3, 5:8, 5:8, 0])
    np.testing.assert_array_equal(top.windows[0, 0], [[5, 8], [5, 8]])
    assert top.valid[0, 0].all()
    # At the corner the field starts at -1: clipped to rows/cols 0..1.
    np.testing.assert_array_equal(top.windows[0, 2], [[0, 2], [0, 2]])
    np.testing.assert_array_equal(top.valid[0, 2], [[0, 0, 0], [0, 1, 1], [0, 1, 1]])
    np.testing.assert_array_equal(top.crop(0, 2), images[8, 0:2, 0:2])
    assert (top.patches[0, 2][~top.valid[0, 2]] == 0).all()  # `fill`


def test_deeper_layer_crops_its_larger_field():
    # conv2 unit (3, 3) = conv1 at (6, 6); its field is 5x5 from -2 with jump 2: rows 4..8.
    images, batches = dataset()
    top = viz.top_patches(Detector(), detector_variables(), batches, "conv2", [0], k=2)
    assert (top.geometry.rf, top.geometry.jump, top.geometry.start) == ((5, 5), (2, 2), (-2, -2))
    np.testing.assert_array_equal(top.indices[0], [3, 7])
    np.testing.assert_array_equal(top.positions[0], [[3, 3], [2, 4]])
    np.testing.assert_array_equal(top.patches[0, 0], images[3, 4:9, 4:9])
    np.testing.assert_array_equal(top.patches[0, 1], images[7, 2:7, 6:11])


def test_negative_unit_and_more_k_than_images():
    # Channel 1 (-cross) is largest where the image is darkest; with k > 9 images, the tail
    # is empty.
    _, batches = dataset()
    top = viz.top_patches(Detector(), detector_variables(), batches, "conv1", [1, 0], k=12)
    assert top.scores.shape == (2, 12)
    assert np.isfinite(top.scores[:, :9]).all() and np.isneginf(top.scores[:, 9:]).all()
    assert (top.indices[:, 9:] == -1).all()
    assert 5 not in top.indices
    assert (np.diff(top.scores[:, :9], axis=1) <= 0).all()  # best first
    np.testing.assert_array_equal(top.indices[1, :3], [3, 7, 8])


def test_fully_connected_unit_gets_whole_images():
    images, batches = dataset()
    v = detector_variables()
    top = viz.top_patches(Detector(), v, batches, "fc", [0], k=4)
    assert top.geometry is None
    fc = np.array(viz.feature_maps(Detector(), v, jnp.asarray(images), "fc"))[:, 0]
    fc[5] = -np.inf  # masked
    np.testing.assert_array_equal(top.indices[0], np.argsort(-fc)[:4])
    np.testing.assert_array_equal(top.patches[0], images[top.indices[0]])


def test_max_images_and_plain_arrays():
    images, _ = dataset()
    # Arrays instead of dicts; only the first 3 images are scanned (no cross among them).
    model, v, stream = Detector(), detector_variables(), [images[:4], images[4:]]
    top = viz.top_patches(model, v, stream, "conv1", [0], k=1, max_images=3)
    assert top.count == 3 and top.indices[0, 0] in (0, 1, 2)
    top = viz.top_patches(model, v, stream, "conv1", [0], k=1, max_images=6)
    assert top.count == 6 and top.indices[0, 0] == 5  # unmasked now: the brightest cross


def test_bad_arguments():
    images, batches = dataset()
    model, v = Detector(), detector_variables()
    with pytest.raises(ValueError, match=r"`units` must lie in \[0, 2\)"):
        viz.top_patches(model, v, batches, "conv1", [2])
    with pytest.raises(ValueError, match="empty"):
        viz.top_patches(model, v, [], "conv1", [0])
    with pytest.raises(ValueError, match="one image size"):
        viz.top_patches(model, v, [images[:2], images[:2, :10, :10]], "conv1", [0])
    with pytest.raises(ValueError, match="`k`"):
        viz.top_patches(model, v, batches, "conv1", [0], k=0)
    with pytest.raises(ValueError, match="masked out"):
        viz.top_patches(model, v, [{"image": images[:2], "mask": np.zeros(2)}], "conv1", [0])
    with pytest.raises(ValueError, match=r"no layer 'conv3'.*conv1, conv2, fc"):
        viz.top_patches(model, v, batches, "conv3", [0])
