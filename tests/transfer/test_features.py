"""Feature extraction for linear probes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import ops, transfer
from jaxcnn.data import ArraySource, digits


@pytest.fixture(scope="module")
def lenet():
    model = jaxcnn.create_model("lenet5", num_classes=10)
    return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


@pytest.mark.slow
def test_features_equal_a_manual_forward_pass(lenet):
    model, v = lenet
    x = np.random.default_rng(0).standard_normal((37, 32, 32, 1)).astype(np.float32)
    p = v["params"]
    h = jnp.tanh(ops.conv2d(x, p["conv1"]["kernel"], p["conv1"]["bias"]))
    h = ops.avg_pool2d(h, 2)
    h = jnp.tanh(ops.conv2d(h, p["conv2"]["kernel"], p["conv2"]["bias"]))
    pool2 = ops.avg_pool2d(h, 2)  # (37, 5, 5, 16)
    got = transfer.extract_features(model, v, x, layer="pool2", batch_size=16)
    assert got.shape == (37, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.mean(np.asarray(pool2), axis=(1, 2)), rtol=1e-5, atol=1e-6)
    # A (N, C) layer is returned as it is: the last layer's output is the logits.
    logits = transfer.extract_features(model, v, x, layer="fc3", batch_size=8)
    np.testing.assert_allclose(logits, model.apply(v, x), rtol=1e-5, atol=1e-6)


def test_features_of_a_source_are_normalised_with_its_statistics(lenet):
    model, v = lenet
    src = digits("test")
    feats = transfer.extract_features(model, v, src, layer="fc2")
    assert feats.shape == (len(src), 84)
    x = (src.images.astype(np.float32) / 255.0 - src.mean[0]) / src.std[0]
    np.testing.assert_allclose(
        feats, transfer.extract_features(model, v, x, layer="fc2"), rtol=1e-5, atol=1e-6
    )
    # Explicit statistics override the source's.
    other = transfer.extract_features(model, v, src, layer="fc2", mean=(0.0,), std=(1.0,))
    assert not np.allclose(other, feats)


def test_feature_errors(lenet):
    model, v = lenet
    x = np.zeros((2, 32, 32, 1), np.float32)
    with pytest.raises(ValueError, match=r"no layer 'fc9'; its layers are conv1, pool1, conv2"):
        transfer.extract_features(model, v, x, layer="fc9")
    with pytest.raises(TypeError, match="must be float"):
        transfer.extract_features(model, v, x.astype(np.uint8), layer="fc2")
    with pytest.raises(ValueError, match=r"\(N, H, W, C\) images"):
        transfer.extract_features(model, v, x[0], layer="fc2")
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        transfer.extract_features(model, v, x, layer="fc2", batch_size=0)
    with pytest.raises(ValueError, match="normalise arrays yourself"):
        transfer.extract_features(model, v, x, layer="fc2", mean=(0.5,))
    src = ArraySource(np.zeros((2, 32, 32), np.uint8), np.array([0, 1]))
    with pytest.raises(ValueError, match="need 1 values"):
        transfer.extract_features(model, v, src, layer="fc2", mean=(0.1, 0.2), std=(1.0, 1.0))
