"""LeNet-5: parameter counts, input-size limits, and the 1998 paper's layers (Table I, S2/S4).

No torch reference exists for either model, so the paper's arithmetic is checked directly.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcnn
from jaxcnn import ops
from jaxcnn.models import get_spec
from jaxcnn.models.lenet import C3_TABLE, Subsampling, TableConv, squash

NAMES = ["lenet5", "lenet5_1998"]
# Per layer: modern 156 + 2,416 + 48,120 + 10,164 + 850; the paper's
# C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164, linear output 850.
EXPECTED_PARAMS = {"lenet5": 61_706, "lenet5_1998": 60_850}
SMALLEST = re.escape("smallest valid input is (N, 32, 32, 1)")

# Table I of LeCun et al. (1998) as printed: rows are S2 maps 0-5, columns C3 maps 0-15.
TABLE_I = """
X . . . X X X . . X X X X . X X
X X . . . X X X . . X X X X . X
X X X . . . X X X . . X . X X X
. X X X . . X X X X . . X . X X
. . X X X . . X X X X . X X . X
. . . X X X . . X X X X . X X X
"""


def _abstract_variables(name, h=32, w=32, **kw):
    model = jaxcnn.create_model(name, **kw)
    x = jax.ShapeDtypeStruct((1, h, w, 1), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


@pytest.fixture(scope="module")
def variables():
    """Initialised variables of both models, shared: every compilation costs seconds on CPU."""
    return {
        name: jaxcnn.create_model(name).init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))
        for name in NAMES
    }


@pytest.mark.parametrize("name", NAMES)
def test_param_count(name):
    variables = _abstract_variables(name)
    count = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert count == EXPECTED_PARAMS[name] == get_spec(name).num_params
    assert set(variables) == {"params"}


def test_lenet5_1998_param_count_per_layer():
    params = _abstract_variables("lenet5_1998")["params"]
    per_layer = {k: sum(x.size for x in jax.tree.leaves(v)) for k, v in params.items()}
    assert per_layer == {
        "c1": 156,
        "s2": 12,
        "c3": 1_516,
        "s4": 32,
        "c5": 48_120,
        "f6": 10_164,
        "output": 850,
    }


def test_admitted_sizes_follow_from_the_geometry():
    """conv 5 -> pool 2 -> conv 5 -> pool 2 must leave a 5x5 map: exactly 32 <= H <= 35."""

    def final(h):
        h = ops.conv_output_size(h, 5)
        h = ops.conv_output_size(h, 2, 2)
        h = ops.conv_output_size(h, 5)
        return ops.conv_output_size(h, 2, 2)

    assert [h for h in range(16, 64) if final(h) == 5] == [32, 33, 34, 35]
    for name in NAMES:
        spec = get_spec(name)
        assert spec.min_input_size == (32, 32)
        assert spec.input_size == (32, 32, 1)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("h, w", [(32, 32), (35, 35), (32, 35), (33, 34)])
def test_admitted_sizes_work(name, h, w):
    params = _abstract_variables(name, h, w)["params"]
    assert sum(x.size for x in jax.tree.leaves(params)) == EXPECTED_PARAMS[name]
    model = jaxcnn.create_model(name)
    y = jax.eval_shape(model.apply, {"params": params}, jax.ShapeDtypeStruct((3, h, w, 1), "f4"))
    assert y.shape == (3, 10) and y.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("h, w", [(31, 32), (32, 31)])
def test_too_small_raises(name, h, w):
    with pytest.raises(ValueError, match=SMALLEST):
        _abstract_variables(name, h, w)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("h, w", [(36, 32), (32, 36), (224, 224)])
def test_too_large_raises(name, h, w):
    with pytest.raises(ValueError, match=r"too large.*\(N, 32, 32, 1\) to \(N, 35, 35, 1\)"):
        _abstract_variables(name, h, w)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 32, 32, 3), (32, 32, 1), (1, 1, 32, 32)])
def test_bad_input_raises(name, shape):
    model = jaxcnn.create_model(name)
    with pytest.raises(ValueError, match=SMALLEST):
        jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))


@pytest.mark.parametrize("name", NAMES)
def test_num_classes(name):
    params = _abstract_variables(name, num_classes=7)["params"]
    assert params["fc3" if name == "lenet5" else "output"]["kernel"].shape == (84, 7)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_forward_backward(name, variables):
    model, variables = jaxcnn.create_model(name), variables[name]
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 1))
    labels = jnp.arange(4)

    def loss(params):
        logits = model.apply({"params": params}, x)
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert np.isfinite(value)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        assert np.all(np.isfinite(g)), path
        assert np.any(g != 0), path  # every parameter trains


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_compute(name, variables):
    variables = variables[name]
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(variables))
    x = jnp.ones((2, 32, 32, 1))
    y = jax.jit(jaxcnn.create_model(name, dtype=jnp.bfloat16).apply)(variables, x)
    assert y.dtype == jnp.float32 and y.shape == (2, 10)
    y32 = jax.jit(jaxcnn.create_model(name).apply)(variables, x)
    np.testing.assert_allclose(y, y32, atol=0.1)  # bf16 keeps ~3 significant digits


def test_table_i():
    """C3_TABLE transcribes the paper's Table I (6 x 16, 60 connections)."""
    rows = [line.split() for line in TABLE_I.strip().splitlines()]
    printed = {(i, j) for i, row in enumerate(rows) for j, c in enumerate(row) if c == "X"}
    ours = {(i, j) for j, ins in enumerate(C3_TABLE) for i in ins}
    assert printed == ours
    assert len(ours) == 60


@pytest.mark.slow
def test_c3_connectivity_through_the_gradient(variables):
    """d c3[..., j] / d s2[..., i] is exactly zero iff Table I does not connect i to j."""
    c3 = TableConv(C3_TABLE, 5)
    c3_params = {"params": variables["lenet5_1998"]["params"]["c3"]}
    s2 = jax.random.normal(jax.random.key(2), (1, 14, 14, 6))

    def map_sums(s2):  # (16,): one scalar per C3 map
        return jnp.sum(c3.apply(c3_params, s2), axis=(0, 1, 2))

    jac = np.asarray(jax.jacrev(map_sums)(s2))  # (16, 1, 14, 14, 6)
    connected = np.any(jac != 0, axis=(1, 2, 3)).T  # (6, 16): S2 map x C3 map
    expected = np.zeros((6, 16), bool)
    for j, ins in enumerate(C3_TABLE):
        expected[list(ins), j] = True
    np.testing.assert_array_equal(connected, expected)


def test_c3_equals_masked_dense_convolution(variables):
    p = variables["lenet5_1998"]["params"]["c3"]
    s2 = jax.random.normal(jax.random.key(3), (2, 14, 14, 6))
    dense = np.zeros((5, 5, 6, 16), np.float32)
    n = 0
    for j, ins in enumerate(C3_TABLE):
        for i in ins:
            dense[:, :, i, j] = p["kernel"][:, :, n]
            n += 1
    want = ops.conv2d(s2, jnp.asarray(dense), p["bias"])
    got = TableConv(C3_TABLE, 5).apply({"params": p}, s2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_paper_initialisation(variables):
    """U(-2.4/F, 2.4/F) with F the unit's fan-in; C3's bound depends on the map."""
    p = variables["lenet5_1998"]["params"]
    for layer, fan_in in [("c1", 25), ("c5", 400), ("f6", 120), ("output", 84)]:
        for leaf in ("kernel", "bias"):
            v = np.abs(np.asarray(p[layer][leaf]))
            assert v.max() <= 2.4 / fan_in, (layer, leaf)
        # Large layers come close to their bound.
        assert np.abs(p[layer]["kernel"]).max() > 0.9 * 2.4 / fan_in, layer
    for layer in ("s2", "s4"):
        for leaf in ("scale", "bias"):
            assert np.abs(np.asarray(p[layer][leaf])).max() <= 2.4 / 4
    kernel = np.asarray(p["c3"]["kernel"])
    n = 0
    for ins in C3_TABLE:
        block = kernel[:, :, n : n + len(ins)]
        bound = 2.4 / (25 * len(ins))
        assert np.abs(block).max() <= bound
        assert np.abs(block).max() > 0.8 * bound
        n += len(ins)


def test_subsampling_is_coefficient_times_window_sum_plus_bias():
    x = jax.random.normal(jax.random.key(4), (2, 10, 10, 3))
    sub = Subsampling()
    variables = sub.init(jax.random.key(5), x)
    scale = np.asarray(variables["params"]["scale"])
    bias = np.asarray(variables["params"]["bias"])
    xn = np.asarray(x)
    window_sum = xn.reshape(2, 5, 2, 5, 2, 3).sum(axis=(2, 4))
    np.testing.assert_allclose(sub.apply(variables, x), window_sum * scale + bias, rtol=1e-5)


def test_squash():
    """f(a) = 1.7159 tanh(2a/3): f(+-1) = +-1 and the asymptote is 1.7159."""
    np.testing.assert_allclose(squash(jnp.array([-1.0, 0.0, 1.0])), [-1.0, 0.0, 1.0], atol=1e-4)
    np.testing.assert_allclose(squash(jnp.array(50.0)), 1.7159, rtol=1e-6)
