"""The per-backend forms of the hot operations (`jaxcnn.ops._platform`).

Per-channel sums and the max-pool derivatives have a CPU form and a GPU/TPU form, chosen by
the lowering of the jit's target, not by a run-time `case`. Here: both forms compute the same
function (the GPU form runs here on CPU as a plain JAX function), every transformation
(jvp, vjp, vmap, second order) works, and a CUDA program exported on this machine holds only
the GPU form: no `case`, one fused pass of BatchNorm statistics, XLA's select-and-scatter.
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export
from jax.extend.core import Literal
from jax.test_util import check_grads

import jaxcnn
from jaxcnn import ops
from jaxcnn.ops import pooling, reduction
from tests.helpers import from_torch_nchw, to_torch_nchw

# ------------------------------------------------------------------ per-channel sums


@pytest.mark.parametrize("shape", [(2, 5, 4, 3), (7, 6), (97, 2)], ids=str)
def test_sum_and_broadcast_forms_agree(x64, shape):
    x = np.random.default_rng(0).standard_normal(shape)
    np.testing.assert_allclose(reduction._sum_products(x), reduction._sum_plain(x), rtol=1e-13)
    v = x.reshape(-1, shape[-1])[0]
    np.testing.assert_array_equal(
        reduction._broadcast_products(v, shape=shape), reduction._broadcast_plain(v, shape=shape)
    )


def test_channel_ops_under_vmap_jvp_and_second_order(x64):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 2))  # vmapped over axis 0 and over axis 2
    want = x.sum(axis=(1, 2))
    np.testing.assert_allclose(jax.vmap(ops.channel_sum)(x), want, rtol=1e-13)
    np.testing.assert_allclose(
        jax.vmap(ops.channel_sum, in_axes=2)(x),
        x.transpose(2, 0, 1, 3).sum(axis=(1, 2)),
        rtol=1e-13,
    )
    v = rng.standard_normal((3, 2))
    got = jax.vmap(lambda v: ops.channel_broadcast(v, (4, 5, 2)), in_axes=0, out_axes=1)(v)
    np.testing.assert_array_equal(
        got, np.broadcast_to(v[None, :, None, None, :], (4, 3, 5, 1, 2))[:, :, :, 0]
    )
    # Second order against finite differences (whose own error sets the tolerance).
    check_grads(
        lambda x: ops.channel_sum(jnp.sin(x)) ** 2, (x[:1, :2],), order=2, modes=["fwd", "rev"]
    )
    check_grads(
        lambda v: jnp.cos(ops.channel_broadcast(v, (3, 2))), (v[0],), order=2, modes=["fwd", "rev"]
    )


# -------------------------------------------------------------- one-pass batch norm


def test_batch_norm_one_pass_keeps_float32_accuracy_far_from_zero():
    # mean 1e3 times the spread: E[x^2] - E[x]^2 unshifted would lose every digit of var.
    rng = np.random.default_rng(2)
    x = (1000.0 + rng.standard_normal((16, 8, 8, 4))).astype(np.float32)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    x64 = x.astype(np.float64).reshape(-1, 4)
    want_mean, want_var = x64.mean(0), x64.var(0)
    _, mean, var = jax.jit(ops.batch_norm)(x, ones, zeros)  # default shift: x's first row
    np.testing.assert_allclose(mean, want_mean, rtol=1e-6)
    np.testing.assert_allclose(var, want_var, rtol=1e-4)
    _, _, var_rm = jax.jit(functools.partial(ops.batch_norm, shift=jnp.full(4, 999.5)))(
        x, ones, zeros
    )  # any shift within a few standard deviations of the mean
    np.testing.assert_allclose(var_rm, want_var, rtol=1e-4)
    # Control: with no shift the same formula is far off, so the checks above can fail.
    _, _, bad = jax.jit(functools.partial(ops.batch_norm, shift=jnp.zeros(4)))(x, ones, zeros)
    assert np.max(np.abs(np.asarray(bad) / want_var - 1)) > 1e-2


def test_batch_norm_layer_matches_torch_with_a_mean_far_from_zero(torch):
    # From the first step on (running statistics still at 0), the one-pass statistics keep
    # torch's (two-pass) accuracy with a mean 150 times the spread.
    rng = np.random.default_rng(3)
    bn = jaxcnn.layers.BatchNorm()
    bn_t = torch.nn.BatchNorm2d(5)
    variables = bn.init(jax.random.key(0), jnp.zeros((1, 2, 2, 5)))
    for step in range(3):
        x = (300.0 + 2.0 * rng.standard_normal((8, 6, 6, 5))).astype(np.float32)
        y, upd = bn.apply(variables, x, train=True, mutable=["batch_stats"])
        variables = {**variables, **upd}
        y_t = from_torch_nchw(bn_t(to_torch_nchw(torch, x)).detach())
        np.testing.assert_allclose(y, y_t, atol=2e-4, err_msg=f"step {step}")
    stats = variables["batch_stats"]
    np.testing.assert_allclose(stats["mean"], bn_t.running_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(stats["var"], bn_t.running_var.numpy(), rtol=1e-4)


def test_batch_norm_statistics_are_one_pass():
    # In a chain of three BatchNorms, the longest chain of dependent per-channel sums is 3:
    # each layer's two sums read x (shifted) and not each other (two passes would give 6).
    def net(x):
        s = jnp.ones(x.shape[-1])
        for _ in range(3):
            x, _, _ = ops.batch_norm(jnp.tanh(x), s, s)
        return x

    jaxpr = jax.make_jaxpr(net)(jnp.ones((4, 3, 3, 2))).jaxpr
    depth = {}
    longest = count = 0
    for eqn in jaxpr.eqns:
        d = max((depth.get(v, 0) for v in eqn.invars if not isinstance(v, Literal)), default=0)
        if eqn.primitive.name == "jaxcnn_channel_sum":
            d, count = d + 1, count + 1
        for v in eqn.outvars:
            depth[v] = d
        longest = max(longest, d)
    assert count == 6 and longest == 3


# ------------------------------------------------------------------ max-pool derivatives

_TIE_GEOMETRIES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1, padding=1),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)),
]


def _win(x, kwargs):
    k = kwargs["kernel_size"]
    return pooling._window(
        "max_pool2d",
        x,
        k,
        kwargs.get("stride"),
        kwargs.get("padding", 0),
        1,
        kwargs.get("ceil_mode", False),
    )


@pytest.mark.parametrize("kwargs", _TIE_GEOMETRIES, ids=str)
def test_max_pool_xla_and_torch_forms_agree_on_ties(x64, kwargs):
    # Small integers: ties in most windows. Both forms pick the first maximum.
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.integers(0, 3, (2, 9, 8, 3)).astype(np.float64))
    win = _win(x, kwargs)
    g = jnp.asarray(rng.standard_normal((2, *win.out_hw, 3)))
    t = jnp.asarray(rng.standard_normal(x.shape))
    routed = pooling._route_torch(x, g, win=win)
    # The same cells receive the same terms; where windows overlap they are added in
    # another order, hence the tolerance (the tie test below is exact).
    np.testing.assert_allclose(pooling._route_xla(x, g, win=win), routed, rtol=1e-13, atol=0)
    ones = jnp.ones_like(g)
    np.testing.assert_array_equal(
        pooling._route_xla(x, ones, win=win) > 0, pooling._route_torch(x, ones, win=win) > 0
    )
    # select (the JVP, PyTorch's rule on every backend) and either form of route are each
    # other's transpose: <select(t), g> == <t, route(g)>.
    selected = pooling._select_torch(x, t, win=win)
    np.testing.assert_allclose(jnp.vdot(selected, g), jnp.vdot(t, routed), rtol=1e-12)


def test_max_pool_xla_form_differs_only_where_documented(x64):
    # A window holding two NaNs: PyTorch's rule (CPU form) routes to the last NaN; XLA's
    # select-and-scatter compares NaN like a number and keeps the first cell.
    x = jnp.asarray(np.array([[np.nan, 1.0], [np.nan, 0.0]]).reshape(1, 2, 2, 1))
    win = _win(x, dict(kernel_size=2))
    g = jnp.ones((1, 1, 1, 1))
    assert pooling._route_torch(x, g, win=win).ravel().tolist() == [0, 0, 1, 0]
    assert pooling._route_xla(x, g, win=win).ravel().tolist() != [0, 0, 1, 0]


@pytest.mark.slow
def test_max_pool_forward_mode_and_vmap(x64, torch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 8, 2))
    kwargs = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    fn = functools.partial(ops.max_pool2d, **kwargs)
    check_grads(fn, (x,), order=2, modes=["fwd", "rev"])
    # jvp against torch's forward-mode AD.
    t = rng.standard_normal(x.shape)
    _, got = jax.jvp(fn, (jnp.asarray(x),), (jnp.asarray(t),))
    import torch.autograd.forward_ad as fwad

    with fwad.dual_level():
        dual = fwad.make_dual(to_torch_nchw(torch, x), to_torch_nchw(torch, t))
        want = from_torch_nchw(
            fwad.unpack_dual(torch.nn.functional.max_pool2d(dual, **kwargs)).tangent
        )
    np.testing.assert_allclose(got, want, rtol=1e-12)
    # vmap of the gradient equals the per-example gradients.
    xs = rng.standard_normal((3, 1, 6, 6, 2))

    def grad(x):
        return jax.grad(lambda x: jnp.sum(fn(x) ** 2))(x)

    np.testing.assert_allclose(jax.vmap(grad)(xs), np.stack([grad(x) for x in xs]), rtol=1e-12)


# ------------------------------------------------------------ the CUDA program, exported


def _cuda_module(fn, *args) -> str:
    return export.export(jax.jit(fn), platforms=("cuda",))(*args).mlir_module()


def test_cuda_lowering_of_a_resnet50_train_step_holds_only_the_gpu_forms():
    import optax

    from jaxcnn.training import state as state_lib
    from jaxcnn.training import steps

    model = jaxcnn.create_model("resnet50", num_classes=10)
    st = jax.eval_shape(
        lambda: state_lib.create_train_state(
            model, optax.sgd(0.1, momentum=0.9), seed=0, input_shape=(64, 64, 3)
        )
    )
    batch = {
        "image": jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32),
        "label": jax.ShapeDtypeStruct((2,), jnp.int32),
    }
    text = _cuda_module(lambda st, b: steps.train_step(st, b, jax.random.key(0)), st, batch)
    assert "stablehlo.case" not in text
    assert "dot_general" in text  # the classifier: the CPU form's products would add many
    # Sums of an activation over its rows, (rows, C) -> (C,): per BatchNorm two forward
    # (mean and mean of squares of one pass) and two backward (scale and bias gradients),
    # plus the classifier's bias gradient.
    n_bn = sum(
        1
        for p in jax.tree_util.tree_leaves_with_path(st.batch_stats)
        if jax.tree_util.keystr(p[0]).endswith("['mean']")
    )
    assert n_bn == 53
    act = re.findall(
        r"stablehlo\.reduce\(.*across dimensions = \[0\] : \(tensor<\d+x\d+xf32>", text
    )
    assert len(act) == 4 * n_bn + 1
    # The max pool's gradient is XLA's select-and-scatter, not a stack of kh * kw taps.
    assert "select_and_scatter" in text


def test_cpu_lowering_of_the_same_ops_holds_only_the_cpu_forms():
    x = jax.ShapeDtypeStruct((8, 14, 14, 32), jnp.float32)

    def loss(x):
        y, _, _ = ops.batch_norm(x, jnp.ones(32), jnp.zeros(32))
        return jnp.sum(ops.max_pool2d(jnp.tanh(y), 3, 2, 1))

    text = export.export(jax.jit(jax.grad(loss)), platforms=("cpu",))(x).mlir_module()
    assert "stablehlo.case" not in text and "select_and_scatter" not in text
    assert not re.search(
        r"stablehlo\.reduce\(.*across dimensions = \[0\] : \(tensor<1568x32xf32>", text
    )
    assert "dot_general" in text


def test_eager_under_disable_jit_and_empty_batches():
    # Eagerly the primitives compile a small program; jax.disable_jit() must not make that
    # call itself forever, and vmap over zero-size axes must not divide by zero.
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    with jax.disable_jit():
        np.testing.assert_array_equal(ops.channel_sum(x), [120.0])
        g = jax.grad(lambda x: ops.max_pool2d(x, 2).sum())(x)
        y, _, _ = ops.batch_norm(x, jnp.ones(1), jnp.zeros(1))
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(g)), [5, 7, 13, 15])
    np.testing.assert_allclose(
        y, jax.jit(ops.batch_norm)(x, jnp.ones(1), jnp.zeros(1))[0], rtol=1e-6
    )
    for shape, want in (((0, 3), (0, 3)), ((2, 0, 3), (2, 3)), ((2, 3, 0), (2, 0))):
        got = jax.vmap(ops.channel_sum)(jnp.ones(shape))
        assert got.shape == want and not np.asarray(got).any()
    assert jax.vmap(lambda v: ops.channel_broadcast(v, (2, 3)))(jnp.ones((0, 3))).shape == (0, 2, 3)
