"""SGD with momentum, weight decay, learning-rate schedules and reduce-on-plateau.

The optimizer is PyTorch's `torch.optim.SGD` in optax terms: the gradient is (optionally)
clipped, weight decay is added to it (``g + wd * w``, L2 as torch does it), then heavy-ball or
Nesterov momentum ``buf = momentum * buf + g`` and the update ``-lr * buf``.

For fine-tuning, `make_optimizer` also freezes layers (`optax.multi_transform` with
`optax.set_to_zero`) and scales learning rates per layer (`scale_by_multipliers`).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .. import layers

SCHEDULES = ("constant", "step", "multistep", "cosine", "plateau")


def learning_rate_schedule(
    opt_cfg: Any, sched_cfg: Any, *, steps_per_epoch: int, total_steps: int
) -> optax.Schedule:
    """The learning rate as a function of the step.

    Args:
      opt_cfg: the config's `optimizer` section (learning_rate).
      sched_cfg: the config's `schedule` section (name, warmup_epochs, step_epochs,
        milestones, gamma, min_learning_rate).
      steps_per_epoch: optimizer steps per epoch (epochs in the config become steps).
      total_steps: length of training.

    Returns:
      step -> learning rate. For "plateau" this is the constant base rate (after warm-up);
      the decay is applied as `TrainState.lr_scale` by `Plateau`.
    """
    name = sched_cfg.name
    if name not in SCHEDULES:
        raise ValueError(f"schedule.name must be one of {SCHEDULES}; got {name!r}")
    base = float(opt_cfg.learning_rate)
    if not base > 0:
        raise ValueError(f"optimizer.learning_rate must be > 0; got {base}")
    gamma = float(sched_cfg.gamma)
    warmup = round(float(sched_cfg.warmup_epochs) * steps_per_epoch)
    if warmup < 0 or warmup >= max(total_steps, 1):
        raise ValueError(
            f"schedule.warmup_epochs must give 0 <= warm-up steps < total steps ({total_steps}); "
            f"got {sched_cfg.warmup_epochs} epochs = {warmup} steps"
        )
    min_lr = float(sched_cfg.min_learning_rate)

    def epochs_to_step(e: float) -> int:
        return round(float(e) * steps_per_epoch)

    if name in ("constant", "plateau"):
        main = optax.constant_schedule(base)
    elif name == "step":
        every = epochs_to_step(sched_cfg.step_epochs)
        if every < 1:
            raise ValueError(f"schedule.step_epochs must be >= 1 step; got {sched_cfg.step_epochs}")
        bounds = {b: gamma for b in range(every, total_steps + every, every)}
        main = optax.piecewise_constant_schedule(base, bounds)
    elif name == "multistep":
        milestones = [epochs_to_step(m) for m in sched_cfg.milestones]
        if not milestones or milestones != sorted(set(milestones)) or milestones[0] < 1:
            raise ValueError(
                "schedule.milestones must be increasing epochs (>= 1 step); "
                f"got {tuple(sched_cfg.milestones)}"
            )
        main = optax.piecewise_constant_schedule(base, dict.fromkeys(milestones, gamma))
    else:  # cosine
        decay_steps = max(total_steps - warmup, 1)
        main = optax.cosine_decay_schedule(base, decay_steps, alpha=min_lr / base)
    if warmup == 0:
        return main
    # Epoch milestones count from the start of training; cosine starts after the warm-up.
    return _warmup_then(base, warmup, main, shift=name == "cosine")


def _warmup_then(base: float, warmup: int, main: optax.Schedule, *, shift: bool) -> optax.Schedule:
    """Linear warm-up from 0 to `base` over `warmup` steps, then `main`.

    shift=True starts `main` at its own step 0 after the warm-up (cosine); shift=False evaluates
    `main` at the global step (epoch milestones keep their meaning).
    """

    def schedule(step):
        step = jnp.asarray(step)
        ramp = base * jnp.minimum(step, warmup) / warmup
        after = main(step - warmup) if shift else main(step)
        return jnp.where(step < warmup, ramp, after)

    return schedule


def weight_decay_mask(params: Any, *, decay_bn_and_bias: bool) -> Any:
    """True for the leaves weight decay applies to.

    With `decay_bn_and_bias=False`, only leaves of rank >= 2 (convolution and dense kernels)
    decay; biases and BatchNorm scales/shifts (rank 1) do not — the common "no bias decay"
    refinement (e.g. Goyal et al. 2017; torchvision's `norm_weight_decay=0`).
    """
    return jax.tree.map(lambda p: bool(decay_bn_and_bias or p.ndim >= 2), params)


def frozen_mask(params: Any, frozen: Collection[str]) -> Any:
    """True for the leaves of `params` that lie in one of the `frozen` layer paths.

    Args:
      params: a "params" tree (nested dicts keyed by layer name).
      frozen: layer paths, "/"-separated ("conv1", "layer1.0/bn1"); a path covers every
        layer under it (see `jaxcnn.layers.in_frozen_layer`).
    """
    if isinstance(frozen, str):
        raise TypeError(f"frozen must be a collection of layer paths; got the string {frozen!r}")
    frozen = frozenset(frozen)

    def leaf(keypath, _):
        names = tuple(str(getattr(k, "key", k)) for k in keypath)
        return layers.in_frozen_layer(names[:-1], frozen)

    return jax.tree_util.tree_map_with_path(leaf, params)


def scale_by_multipliers(multipliers: Any) -> optax.GradientTransformation:
    """Multiply each update by its own constant (a tree of floats shaped like the params).

    Placed after SGD, scaling leaf i's update by m_i is training it at m_i times the
    learning rate: the momentum buffer ``buf = momentum * buf + g`` does not involve the
    rate, so this is exactly a per-layer learning rate (discriminative fine-tuning).
    """

    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * jnp.asarray(m, u.dtype), updates, multipliers), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(
    opt_cfg: Any,
    schedule: optax.Schedule,
    params: Any,
    *,
    frozen: Collection[str] = (),
    lr_multipliers: Any = None,
) -> optax.GradientTransformation:
    """clip -> weight decay -> SGD with (Nesterov) momentum at `schedule`'s rate.

    Args:
      opt_cfg: the config's `optimizer` section.
      schedule: the learning rate per step.
      params: the parameters (their structure and ranks decide the weight-decay mask).
      frozen: layer paths whose parameters do not train (see `frozen_mask`). They go through
        `optax.set_to_zero` inside `optax.multi_transform`: their update is exactly zero, and
        clipping, weight decay and momentum never see them (no momentum buffer is kept for
        them, and they do not count in the clipped gradient norm).
      lr_multipliers: None, or a tree of floats like `params`: each leaf's learning rate is
        the schedule's times its multiplier (`scale_by_multipliers`).
    """
    wd = float(opt_cfg.weight_decay)
    momentum = float(opt_cfg.momentum)
    clip = float(opt_cfg.clip_grad_norm)
    if wd < 0:
        raise ValueError(f"optimizer.weight_decay must be >= 0; got {wd}")
    if not 0 <= momentum < 1:
        raise ValueError(f"optimizer.momentum must be in [0, 1); got {momentum}")
    if clip < 0:
        raise ValueError(f"optimizer.clip_grad_norm must be >= 0 (0: off); got {clip}")
    if opt_cfg.nesterov and momentum == 0:
        raise ValueError("optimizer.nesterov needs momentum > 0")
    parts = []
    if clip > 0:
        parts.append(optax.clip_by_global_norm(clip))
    if wd > 0:
        decay_bn_and_bias = bool(opt_cfg.decay_bn_and_bias)
        # A function of the (possibly partitioned) tree it is given, so that it also applies
        # inside multi_transform, where frozen leaves are masked out of the tree.
        parts.append(
            optax.add_decayed_weights(
                wd, mask=lambda p: weight_decay_mask(p, decay_bn_and_bias=decay_bn_and_bias)
            )
        )
    parts.append(optax.sgd(schedule, momentum=momentum or None, nesterov=bool(opt_cfg.nesterov)))
    tx = optax.chain(*parts)
    if frozen:
        mask = frozen_mask(params, frozen)
        if all(jax.tree.leaves(mask)):
            raise ValueError(f"frozen layers {sorted(frozen)} leave no parameter to train")
        labels = jax.tree.map(lambda f: "frozen" if f else "trained", mask)
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
    if lr_multipliers is not None:
        if jax.tree.structure(lr_multipliers) != jax.tree.structure(params):
            raise ValueError(
                "lr_multipliers must be a tree of floats with the structure of params; got "
                f"{jax.tree.structure(lr_multipliers)}, params have {jax.tree.structure(params)}"
            )
        # After the partition (the full tree again): a frozen leaf's zero stays zero.
        tx = optax.chain(tx, scale_by_multipliers(lr_multipliers))
    return tx


class Plateau:
    """Reduce-on-plateau on the host, as AlexNet was trained ("divide the learning rate by 10
    when the validation error rate stopped improving"), with `torch.optim.lr_scheduler.
    ReduceLROnPlateau`'s rule: after more than `patience` evaluations without a relative
    improvement of 1e-4, multiply the rate by `gamma` (never below `min_scale`).

    Its state (a small dict) is saved with each checkpoint so a resumed run decays at the
    same evaluations as an uninterrupted one.
    """

    def __init__(self, *, patience: int, gamma: float, min_scale: float = 0.0):
        if patience < 0:
            raise ValueError(f"schedule.plateau_patience must be >= 0; got {patience}")
        if not 0 < gamma < 1:
            raise ValueError(f"schedule.gamma must be in (0, 1) for 'plateau'; got {gamma}")
        self.patience, self.gamma, self.min_scale = patience, gamma, min_scale
        self.state = {"best": math.inf, "bad": 0, "scale": 1.0}

    def update(self, value: float) -> float:
        """Record a monitored value (lower is better); returns the new scale."""
        s = self.state
        improved = not math.isfinite(s["best"]) or value < s["best"] - 1e-4 * abs(s["best"])
        if improved:
            s["best"], s["bad"] = float(value), 0
        else:
            s["bad"] += 1
            if s["bad"] > self.patience:
                s["scale"] = max(s["scale"] * self.gamma, self.min_scale)
                s["bad"] = 0
        return s["scale"]
