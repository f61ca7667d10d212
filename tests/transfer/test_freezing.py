"""Freezing on optax, frozen BatchNorm in inference mode, and per-layer learning rates, through
the library's own `make_optimizer`, `train_step` and `models.configure_batch_norm`."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

import jaxcnn
from jaxcnn import layers, transfer
from jaxcnn.training import create_train_state, default_config, make_optimizer, train_step
from jaxcnn.training.optim import frozen_mask


def _opt_cfg(**kw):
    c = default_config().optimizer
    for k, v in kw.items():
        c[k] = v
    return c


def _params():
    return {
        "conv1": {"kernel": jnp.full((3, 3, 1, 2), 0.5), "bias": jnp.array([-0.0, 1.0])},
        "fc": {"kernel": jnp.full((4, 3), -0.25), "bias": jnp.ones(3)},
    }


def test_frozen_mask_covers_layers_under_a_path():
    params = {
        "layer1.0": {"conv1": {"kernel": 1}, "bn1": {"scale": 1}},
        "layer1.1": {"c": {"k": 1}},
    }
    mask = frozen_mask(params, ("layer1.0/bn1", "layer1.1"))
    assert mask == {"layer1.0": {"conv1": {"kernel": False}, "bn1": {"scale": True}},
                    "layer1.1": {"c": {"k": True}}}  # fmt: skip
    # "layer1" is not a parent of "layer1.0": whole names only.
    assert not any(jax.tree.leaves(frozen_mask(params, ("layer1",))))
    with pytest.raises(TypeError, match="collection of layer paths"):
        frozen_mask(params, "layer1.0")


def test_frozen_leaves_get_zero_updates_no_decay_and_no_momentum_state():
    params = _params()
    cfg = _opt_cfg(weight_decay=0.1, momentum=0.9, nesterov=True, clip_grad_norm=1.0)
    tx = make_optimizer(cfg, optax.constant_schedule(0.1), params, frozen=("conv1",))
    state = tx.init(params)
    # No momentum buffer (nor anything else) is kept for the frozen layer.
    is_trace = lambda s: isinstance(s, optax.TraceState)  # noqa: E731
    traces = [s.trace for s in jax.tree.leaves(state, is_leaf=is_trace) if is_trace(s)]
    assert traces and all(jax.tree.leaves(t["conv1"]) == [] for t in traces)
    assert all(len(jax.tree.leaves(t["fc"])) == 2 for t in traces)
    grads = jax.tree.map(lambda p: jnp.full_like(p, 3.0), params)
    for _ in range(3):
        updates, state = tx.update(grads, state, params)
        assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates["conv1"]))
        assert all(bool(jnp.all(u != 0)) for u in jax.tree.leaves(updates["fc"]))
    # The clipped norm is that of the trained leaves only: here fc's, 3 * sqrt(15).
    single = make_optimizer(cfg, optax.constant_schedule(0.1), {"fc": params["fc"]})
    u_single, _ = single.update(
        {"fc": grads["fc"]}, single.init({"fc": params["fc"]}), {"fc": params["fc"]}
    )
    u_frozen, _ = tx.update(grads, tx.init(params), params)
    for a, b in zip(jax.tree.leaves(u_single), jax.tree.leaves(u_frozen["fc"]), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="leave no parameter to train"):
        make_optimizer(cfg, optax.constant_schedule(0.1), params, frozen=("conv1", "fc"))


def test_lr_multipliers_scale_each_layer_like_its_own_learning_rate():
    params = _params()
    cfg = _opt_cfg(weight_decay=1e-2, momentum=0.9)
    mults = {"conv1": {"kernel": 0.1, "bias": 0.1}, "fc": {"kernel": 1.0, "bias": 1.0}}
    tx = make_optimizer(cfg, optax.constant_schedule(0.5), params, lr_multipliers=mults)
    slow = make_optimizer(cfg, optax.constant_schedule(0.05), params)
    fast = make_optimizer(cfg, optax.constant_schedule(0.5), params)
    s, s_slow, s_fast = tx.init(params), slow.init(params), fast.init(params)
    key = jax.random.key(0)
    for i in range(4):
        k = jax.random.fold_in(key, i)
        g = jax.tree.map(lambda p, k=k: jax.random.normal(k, p.shape), params)
        u, s = tx.update(g, s, params)
        u_slow, s_slow = slow.update(g, s_slow, params)
        u_fast, s_fast = fast.update(g, s_fast, params)
        np.testing.assert_allclose(u["conv1"]["kernel"], u_slow["conv1"]["kernel"], rtol=1e-6)
        np.testing.assert_allclose(u["fc"]["kernel"], u_fast["fc"]["kernel"], rtol=1e-6)
    with pytest.raises(ValueError, match="structure of params"):
        make_optimizer(cfg, optax.constant_schedule(0.5), params, lr_multipliers={"fc": 1.0})


def test_frozen_batchnorm_in_training_mode_is_torch_batchnorm_in_eval_mode(torch):
    x = np.asarray(jax.random.normal(jax.random.key(0), (4, 3, 3, 2))) * 3 + 1
    bn_t = torch.nn.BatchNorm2d(2)
    with torch.no_grad():
        bn_t.weight.copy_(torch.tensor([1.5, 0.5]))
        bn_t.bias.copy_(torch.tensor([0.25, -1.0]))
        bn_t.running_mean.copy_(torch.tensor([0.5, -0.5]))
        bn_t.running_var.copy_(torch.tensor([2.0, 0.5]))
    bn_t.num_batches_tracked.fill_(4)
    bn_t.eval()
    expected = bn_t(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()
    expected = expected.transpose(0, 2, 3, 1)
    mv = {
        "params": {"bn": {"scale": jnp.array([1.5, 0.5]), "bias": jnp.array([0.25, -1.0])}},
        "batch_stats": {"bn": {"mean": jnp.array([0.5, -0.5]), "var": jnp.array([2.0, 0.5]),
                               "num_batches_tracked": jnp.array(4, jnp.int32)}},
    }  # fmt: skip
    # The model's root has the path (); a layer inside a model is frozen by its path.
    for frozen in (("bn",), ("other", "bn")):
        out, upd = _OneBN(frozen=frozen).apply(mv, x, train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
        for a, b in zip(
            jax.tree.leaves(upd["batch_stats"]), jax.tree.leaves(mv["batch_stats"]), strict=True
        ):
            assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    # For another path (or none) it trains as usual: batch statistics, running ones updated.
    bn_t.train()
    trained = bn_t(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).detach().numpy()
    for frozen in (("other",), ("bn1",), ()):
        out, upd = _OneBN(frozen=frozen).apply(mv, x, train=True, mutable=["batch_stats"])
        np.testing.assert_allclose(out, trained.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            upd["batch_stats"]["bn"]["mean"], bn_t.running_mean.numpy(), rtol=1e-6
        )
        assert int(upd["batch_stats"]["bn"]["num_batches_tracked"]) == 5
    with pytest.raises(TypeError, match=r"`frozen_paths` must be a tuple of layer paths"):
        _OneBN(frozen="bn").apply(mv, x, train=True, mutable=["batch_stats"])


class _OneBN(nn.Module):
    frozen: tuple[str, ...] = ()

    @nn.compact
    def __call__(self, x, train=False):
        return layers.BatchNorm(frozen_paths=self.frozen, name="bn")(x, train=train)


@pytest.mark.slow
def test_train_step_keeps_frozen_parameters_and_statistics_bit_identical():
    """Several real steps of ResNet-20 with the stem and the first stage frozen."""
    model = jaxcnn.create_model("resnet20", num_classes=10)
    x0 = jnp.zeros((1, 32, 32, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x0)
    # A -0.0 in a frozen layer: p + 0.0 would turn it into +0.0.
    variables["params"]["conv1"]["kernel"] = (
        variables["params"]["conv1"]["kernel"].at[0, 0, 0, 0].set(-0.0)
    )
    frozen = transfer.frozen_layers(model, ("conv1", "bn1", "layer1.*"), input_shape=(32, 32, 3))
    assert frozen == ("bn1", "conv1", "layer1.0", "layer1.1", "layer1.2")
    # Its BatchNorms under the frozen paths run in inference mode.
    model = jaxcnn.models.configure_batch_norm(model, frozen=frozen)
    cfg = _opt_cfg(weight_decay=5e-4, momentum=0.9)
    tx = make_optimizer(cfg, optax.constant_schedule(0.1), variables["params"], frozen=frozen)
    state = create_train_state(model, tx, seed=0, input_shape=(32, 32, 3), variables=variables)
    step = jax.jit(functools.partial(train_step, frozen=frozen))
    for i in range(3):
        key = jax.random.key(10 + i)
        batch = {
            "image": jax.random.normal(key, (8, 32, 32, 3)),
            "label": jax.random.randint(key, (8,), 0, 10),
        }
        state, metrics = step(state, batch, jax.random.fold_in(key, 1))
        assert np.isfinite(float(metrics["loss"]))

    def bits(tree):
        return [np.asarray(a).tobytes() for a in jax.tree.leaves(tree)]

    for coll, new in (("params", state.params), ("batch_stats", state.batch_stats)):
        for layer in variables[coll]:
            same = bits(new[layer]) == bits(variables[coll][layer])
            assert same == (layer in frozen), (coll, layer)
    assert np.signbit(state.params["conv1"]["kernel"][0, 0, 0, 0])
