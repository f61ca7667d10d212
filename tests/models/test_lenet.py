"""LeNet-5: the input sizes the geometry admits, and the 1998 paper's layers (Table I, S2/S4,
squashing, initialisation). Counts, limits, outputs and a training step of both models are
test_registry.py's.

No torch reference exists for either model, so the paper's arithmetic is checked directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import jaxcnn
from jaxcnn import ops
from jaxcnn.models import get_spec
from jaxcnn.models.lenet import Subsampling, squash
from jaxcnn.xla import run_once_compiler_options
from tests.models.expected import EXPECTED

NAMES = ["lenet5", "lenet5_1998"]

# Table I of LeCun et al. (1998) as printed: rows are S2 maps 0-5, columns C3 maps 0-15.
TABLE_I = """
X . . . X X X . . X X X X . X X
X X . . . X X X . . X X X X . X
X X X . . . X X X . . X . X X X
. X X X . . X X X X . . X . X X
. . X X X . . X X X X . X X . X
. . . X X X . . X X X X . X X X
"""
# (6, 16): whether S2 map i feeds C3 map j, as printed.
PRINTED = np.array([[c == "X" for c in line.split()] for line in TABLE_I.strip().splitlines()])


def _abstract_variables(name, h=32, w=32, **kw):
    model = jaxcnn.create_model(name, **kw)
    x = jax.ShapeDtypeStruct((1, h, w, 1), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.key(0), x), x)


@pytest.fixture(scope="module")
def variables():
    """Initialised variables of lenet5_1998, shared by the tests of its layers."""
    model = jaxcnn.create_model("lenet5_1998")
    init = jax.jit(model.init, compiler_options=run_once_compiler_options())
    return init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


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

    admitted = [h for h in range(16, 64) if final(h) == 5]
    assert admitted == [32, 33, 34, 35]
    for name in NAMES:  # what the registry and the models' input checks hold them to
        assert get_spec(name).min_input_size == (admitted[0], admitted[0])
        assert EXPECTED[name].max_size == (admitted[-1], admitted[-1])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("h, w", [(32, 32), (35, 35), (32, 35), (33, 34)])
def test_admitted_sizes_work(name, h, w):
    params = _abstract_variables(name, h, w)["params"]
    assert sum(x.size for x in jax.tree.leaves(params)) == EXPECTED[name].params
    model = jaxcnn.create_model(name)
    y = jax.eval_shape(model.apply, {"params": params}, jax.ShapeDtypeStruct((3, h, w, 1), "f4"))
    assert y.shape == (3, 10) and y.dtype == jnp.float32


@pytest.mark.parametrize("name", NAMES)
def test_num_classes(name):
    params = _abstract_variables(name, num_classes=7)["params"]
    assert params["fc3" if name == "lenet5" else "output"]["kernel"].shape == (84, 7)


def _c3_inside_the_model(variables, x, delta=None):
    """(input, output) of lenet5_1998's c3 on input `x`, its input shifted by `delta`."""
    io = {}

    def capture(next_fun, args, kwargs, context):
        if context.module.name != "c3" or context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        s2 = args[0] if delta is None else args[0] + delta
        io["s2"], io["c3"] = s2, next_fun(s2, **kwargs)
        return io["c3"]

    with nn.intercept_methods(capture):
        jaxcnn.create_model("lenet5_1998").apply(variables, x)
    return io["s2"], io["c3"]


def test_c3_connectivity_is_table_i(variables):
    """In the model, d c3[..., j] / d s2[..., i] is exactly zero iff the printed Table I does
    not connect S2 map i to C3 map j (60 connections)."""
    x = jax.random.normal(jax.random.key(2), (1, 32, 32, 1))

    @jax.jit
    def jacobian(delta):  # (16, 1, 14, 14, 6): one row per C3 map (summed over positions)
        return jax.jacrev(
            lambda d: jnp.sum(_c3_inside_the_model(variables, x, d)[1], axis=(0, 1, 2))
        )(delta)

    jac = np.asarray(jacobian(jnp.zeros((1, 14, 14, 6))))
    connected = np.any(jac != 0, axis=(1, 2, 3)).T  # (6, 16): S2 map x C3 map
    np.testing.assert_array_equal(connected, PRINTED)
    assert connected.sum() == 60


def test_c3_equals_masked_dense_convolution(variables):
    """c3 computes a dense 5x5 convolution whose kernels are zero where Table I has no
    connection; its 60 kernels are stored map by map, in the order of the S2 maps."""
    p = variables["params"]["c3"]
    x = jax.random.normal(jax.random.key(3), (2, 32, 32, 1))
    s2, got = jax.jit(lambda x: _c3_inside_the_model(variables, x))(x)
    dense = np.zeros((5, 5, 6, 16), np.float32)
    n = 0
    for j in range(16):
        for i in np.flatnonzero(PRINTED[:, j]):
            dense[:, :, i, j] = p["kernel"][:, :, n]
            n += 1
    assert n == p["kernel"].shape[2] == 60
    want = ops.conv2d(s2, jnp.asarray(dense), p["bias"])
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_paper_initialisation(variables):
    """U(-2.4/F, 2.4/F) with F the unit's fan-in; C3's bound depends on the map."""
    p = variables["params"]
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
    for inputs in PRINTED.sum(axis=0):  # S2 maps feeding each C3 map: 3, 4 or 6
        block = kernel[:, :, n : n + inputs]
        bound = 2.4 / (25 * inputs)
        assert np.abs(block).max() <= bound
        assert np.abs(block).max() > 0.8 * bound
        n += inputs


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
