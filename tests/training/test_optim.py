"""The optimizer and the schedules against torch.optim, step by step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxcnn.training import (
    OptimizerConfig,
    Plateau,
    ScheduleConfig,
    learning_rate_schedule,
    make_optimizer,
)
from jaxcnn.training.optim import weight_decay_mask


def opt_cfg(**kw):
    return OptimizerConfig(**kw)


def sched_cfg(**kw):
    return ScheduleConfig(**{"name": "constant", **kw})


@pytest.mark.parametrize(
    "kw",
    [
        dict(),
        dict(nesterov=True),
        dict(weight_decay=5e-2, decay_bn_and_bias=False),
        dict(clip_grad_norm=0.5, weight_decay=0.0),
        dict(momentum=0.0),
    ],
)
def test_sgd_matches_torch(torch, kw):
    """Five steps on the same gradients as torch.optim.SGD (L2 added to the gradient, torch's
    momentum buffer, Nesterov; clip_grad_norm_ before the step)."""
    cfg = opt_cfg(**kw)
    rng = np.random.default_rng(0)
    params = {"kernel": rng.standard_normal((3, 4)), "bias": rng.standard_normal(4)}
    grads = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(5)]
    sched = learning_rate_schedule(cfg, sched_cfg(), steps_per_epoch=1, total_steps=5)
    tx = make_optimizer(cfg, sched, params)
    p = jax.tree.map(jnp.asarray, params)
    s = tx.init(p)
    for g in grads:
        u, s = tx.update(jax.tree.map(jnp.asarray, g), s, p)
        p = optax.apply_updates(p, u)

    tp = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in params.items()}
    groups = [{"params": [tp["kernel"]]}]
    groups.append(
        {"params": [tp["bias"]], **({"weight_decay": 0.0} if not cfg.decay_bn_and_bias else {})}
    )
    opt = torch.optim.SGD(
        groups,
        lr=cfg.learning_rate,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    for g in grads:
        for k in tp:
            tp[k].grad = torch.tensor(g[k])
        if cfg.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(list(tp.values()), cfg.clip_grad_norm)
        opt.step()
    for k in params:
        np.testing.assert_allclose(np.asarray(p[k]), tp[k].detach().numpy(), rtol=1e-5, atol=1e-6)


def test_weight_decay_mask_spares_rank1():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 2)), "bias": jnp.ones(2)},
        "bn": {"scale": jnp.ones(2), "bias": jnp.ones(2)},
    }
    mask = weight_decay_mask(params, decay_bn_and_bias=False)
    assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False}}
    assert all(jax.tree.leaves(weight_decay_mask(params, decay_bn_and_bias=True)))


def torch_lrs(torch, make_sched, n, lr=0.1):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.asarray(out)


@pytest.mark.parametrize("spe", [1, 7])
def test_schedules_match_torch(torch, spe):
    """Per-step rates against torch's schedulers stepped once per epoch (spe steps each)."""
    epochs = 12
    n = epochs * spe
    steps = np.arange(n)

    def ours(**kw):
        s = learning_rate_schedule(opt_cfg(), sched_cfg(**kw), steps_per_epoch=spe, total_steps=n)
        return np.asarray([float(s(t)) for t in steps])

    def per_epoch(lrs):  # torch's value for each epoch, repeated over its steps
        return np.repeat(lrs, spe)

    lr_sched = torch.optim.lr_scheduler
    np.testing.assert_allclose(
        ours(name="step", step_epochs=5.0),
        per_epoch(torch_lrs(torch, lambda o: lr_sched.StepLR(o, 5, 0.1), epochs)),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        ours(name="multistep", milestones=(3, 8)),
        per_epoch(torch_lrs(torch, lambda o: lr_sched.MultiStepLR(o, [3, 8], 0.1), epochs)),
        rtol=1e-6,
    )
    # cosine: torch's CosineAnnealingLR stepped per step over the whole run
    cos = torch_lrs(torch, lambda o: lr_sched.CosineAnnealingLR(o, n, eta_min=1e-3), n)
    np.testing.assert_allclose(ours(name="cosine", min_learning_rate=1e-3), cos, rtol=1e-5)
    np.testing.assert_allclose(ours(name="constant"), np.full(n, 0.1), rtol=1e-7)


def test_warmup_then_cosine_and_step():
    s = learning_rate_schedule(
        opt_cfg(), sched_cfg(name="cosine", warmup_epochs=2.0), steps_per_epoch=5, total_steps=60
    )
    lrs = np.asarray([float(s(t)) for t in range(60)])
    np.testing.assert_allclose(lrs[:10], 0.1 * np.arange(10) / 10, rtol=1e-6)
    assert lrs[10] == pytest.approx(0.1)  # the cosine starts at its peak after the warm-up
    assert np.all(np.diff(lrs[10:]) <= 1e-9)
    s = learning_rate_schedule(
        opt_cfg(),
        sched_cfg(name="step", warmup_epochs=1.0, step_epochs=3),
        steps_per_epoch=5,
        total_steps=60,
    )
    assert float(s(14)) == pytest.approx(0.1) and float(s(15)) == pytest.approx(0.01)


def test_plateau_matches_torch(torch):
    values = [1.0, 0.9, 0.95, 0.93, 0.92, 0.91, 0.91, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2, factor=0.1, threshold=1e-4)
    ours = Plateau(patience=2, gamma=0.1)
    for v in values:
        ref.step(v)
        assert ours.update(v) == pytest.approx(opt.param_groups[0]["lr"])
    assert ours.state["scale"] < 1.0  # the sequence does trigger decays


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(name="linear"), "schedule.name"),
        (dict(name="multistep", milestones=(5, 3)), "milestones"),
        (dict(name="cosine", warmup_epochs=100.0), "warmup"),
    ],
)
def test_schedule_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        learning_rate_schedule(opt_cfg(), sched_cfg(**bad), steps_per_epoch=1, total_steps=10)


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(momentum=1.0), "momentum"),
        (dict(weight_decay=-1.0), "weight_decay"),
        (dict(momentum=0.0, nesterov=True), "nesterov"),
    ],
)
def test_optimizer_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        make_optimizer(opt_cfg(**bad), optax.constant_schedule(0.1), {"w": jnp.ones((2, 2))})
