"""The pure train/eval steps: losses and metrics against torch, a full SGD step against a
torch model with the same weights (BatchNorm statistics included), auxiliary heads, masks."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from jaxcnn import layers
from jaxcnn.training import (
    OptimizerConfig,
    create_train_state,
    cross_entropy,
    eval_step,
    make_optimizer,
    topk_correct,
    train_step,
)


class Tiny(nn.Module):
    """conv 3x3 -> BatchNorm -> ReLU -> global average -> dense (a torch twin is below)."""

    num_classes: int = 5

    @nn.compact
    def __call__(self, x, train=False):
        x = layers.Conv(4, 3, padding=1, name="conv")(x)
        x = layers.BatchNorm(name="bn")(x, train=train)
        x = jnp.mean(nn.relu(x), axis=(1, 2))
        return layers.Dense(self.num_classes, name="fc")(x)


class WithAux(NamedTuple):
    logits: jax.Array
    aux: jax.Array | None


class TinyAux(nn.Module):
    """Two heads on a shared feature; training mode returns both, like GoogLeNet."""

    @nn.compact
    def __call__(self, x, train=False):
        h = jnp.mean(x, axis=(1, 2))
        main = layers.Dense(3, name="main")(h)
        if not (train or self.is_initializing()):  # as the zoo's models: heads made at init
            return main
        return WithAux(main, layers.Dense(3, name="aux")(h))


def opt(**kw):
    return OptimizerConfig(**{"learning_rate": 0.05, "weight_decay": 1e-3, **kw})


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_matches_torch(torch, eps):
    rng = np.random.default_rng(0)
    logits, labels = rng.standard_normal((6, 7)).astype(np.float32), rng.integers(0, 7, 6)
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(logits), torch.tensor(labels), label_smoothing=eps, reduction="none"
    )
    np.testing.assert_allclose(cross_entropy(logits, labels, eps), ref.numpy(), rtol=1e-5)


def test_topk_matches_torch(torch):
    rng = np.random.default_rng(1)
    logits, labels = rng.standard_normal((50, 10)).astype(np.float32), rng.integers(0, 10, 50)
    for k in (1, 5):
        top = torch.topk(torch.tensor(logits), k).indices.numpy()
        ref = (top == labels[:, None]).any(1)
        np.testing.assert_array_equal(np.asarray(topk_correct(logits, labels, k)), ref)
    assert np.all(np.asarray(topk_correct(logits[:, :3], labels % 3, 5)) == 1.0)  # k capped at K


def _torch_tiny(torch, variables):
    conv = torch.nn.Conv2d(2, 4, 3, padding=1)
    bn = torch.nn.BatchNorm2d(4)
    fc = torch.nn.Linear(4, 5)
    p = jax.tree.map(np.asarray, variables["params"])
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(p["conv"]["kernel"].transpose(3, 2, 0, 1)))
        conv.bias.copy_(torch.tensor(p["conv"]["bias"]))
        fc.weight.copy_(torch.tensor(p["fc"]["kernel"].T))
        fc.bias.copy_(torch.tensor(p["fc"]["bias"]))
    return conv, bn, fc


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_train_step_matches_torch(torch, eps):
    """Three SGD steps of conv-BN-ReLU-pool-linear: parameters and running statistics equal
    torch's (train mode, momentum, L2 weight decay, label smoothing)."""
    model = Tiny()
    cfg = opt()
    state = create_train_state(model, optax.identity(), seed=0, input_shape=(6, 6, 2))
    tx = make_optimizer(cfg, optax.constant_schedule(cfg.learning_rate), state.params)
    state = create_train_state(model, tx, seed=0, input_shape=(6, 6, 2), variables=state.variables)
    conv, bn, fc = _torch_tiny(torch, state.variables)
    net = torch.nn.Sequential(
        conv, bn, torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), fc
    )
    topt = torch.optim.SGD(
        net.parameters(), lr=cfg.learning_rate, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    step = jax.jit(functools.partial(train_step, label_smoothing=eps))
    rng = np.random.default_rng(0)
    for t in range(3):
        x = rng.standard_normal((8, 6, 6, 2)).astype(np.float32)
        y = rng.integers(0, 5, 8)
        state, metrics = step(state, {"image": x, "label": y}, jax.random.PRNGKey(t))
        topt.zero_grad()
        out = net(torch.tensor(x.transpose(0, 3, 1, 2)))
        loss = torch.nn.functional.cross_entropy(out, torch.tensor(y), label_smoothing=eps)
        loss.backward()
        topt.step()
        assert float(metrics["loss"]) == pytest.approx(loss.item(), rel=1e-5)
    assert int(state.step) == 3
    p = state.params
    np.testing.assert_allclose(
        p["conv"]["kernel"].transpose(3, 2, 0, 1),
        conv.weight.detach().numpy(),
        rtol=1e-4,
        atol=1e-6,
    )
    np.testing.assert_allclose(
        p["fc"]["kernel"].T, fc.weight.detach().numpy(), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(p["bn"]["scale"], bn.weight.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        state.batch_stats["bn"]["mean"], bn.running_mean.numpy(), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(state.batch_stats["bn"]["var"], bn.running_var.numpy(), rtol=1e-5)
    assert int(state.batch_stats["bn"]["num_batches_tracked"]) == 3


@pytest.mark.slow
def test_lr_scale_scales_the_update():
    model = Tiny()
    x = {"image": np.ones((4, 6, 6, 2), np.float32), "label": np.arange(4)}
    s0 = create_train_state(model, optax.sgd(0.1), seed=0, input_shape=(6, 6, 2))
    full, _ = train_step(s0, x, jax.random.PRNGKey(0))
    half, _ = train_step(s0.replace(lr_scale=jnp.float32(0.5)), x, jax.random.PRNGKey(0))
    d_full = jax.tree.map(lambda a, b: a - b, full.params, s0.params)
    d_half = jax.tree.map(lambda a, b: a - b, half.params, s0.params)
    for a, b in zip(jax.tree.leaves(d_full), jax.tree.leaves(d_half), strict=True):
        np.testing.assert_allclose(np.asarray(b), 0.5 * np.asarray(a), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("weight", [0.3, 1.0])
def test_auxiliary_losses_weighted(weight):
    state = create_train_state(TinyAux(), optax.sgd(0.1), seed=0, input_shape=(4, 4, 3))
    batch = {
        "image": np.random.default_rng(0).standard_normal((5, 4, 4, 3)).astype(np.float32),
        "label": np.array([0, 1, 2, 0, 1]),
    }
    _, m = train_step(state, batch, jax.random.PRNGKey(0), aux_loss_weight=weight)
    out = state.apply_fn(state.variables, batch["image"], train=True)
    main = jnp.mean(cross_entropy(out.logits, batch["label"]))
    aux = jnp.mean(cross_entropy(out.aux, batch["label"]))
    assert float(m["loss"]) == pytest.approx(float(main), rel=1e-6)
    assert float(m["total_loss"]) == pytest.approx(float(main + weight * aux), rel=1e-6)


def test_eval_step_masks_padding():
    state = create_train_state(Tiny(), optax.sgd(0.1), seed=0, input_shape=(6, 6, 2))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 6, 6, 2)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    full = eval_step(state, {"image": x[:4], "label": y[:4]})
    # The same 4 examples plus 2 padded rows (garbage images, masked out).
    padded = eval_step(
        state, {"image": x, "label": y, "mask": np.array([1, 1, 1, 1, 0, 0], np.float32)}
    )
    for k in full:
        assert float(padded[k]) == pytest.approx(float(full[k]), rel=1e-6)
    assert float(padded["count"]) == 4
    logits = state.apply_fn(state.variables, x[:4], train=False)
    assert float(full["top1_correct"]) == float(np.sum(np.argmax(logits, -1) == y[:4]))


@pytest.mark.slow
def test_dropout_uses_the_step_key():
    """Different keys give different dropout masks; the same key the same step."""
    import jaxcnn

    model = jaxcnn.create_model("alexnet", num_classes=3)
    state = create_train_state(model, optax.sgd(0.01), seed=0, input_shape=(63, 63, 3))
    batch = {"image": np.ones((2, 63, 63, 3), np.float32), "label": np.array([0, 1])}
    step = jax.jit(train_step)
    _, a = step(state, batch, jax.random.PRNGKey(1))
    _, b = step(state, batch, jax.random.PRNGKey(1))
    _, c = step(state, batch, jax.random.PRNGKey(2))
    assert float(a["loss"]) == float(b["loss"]) != float(c["loss"])
