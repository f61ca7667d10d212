"""Pure training and evaluation steps.

`train_step(state, batch, rng)` and `eval_step(state, batch)` are plain functions of arrays:
no jit, pmap or sharding here (that is `parallel`'s job), so they can be called, tested and
differentiated directly. Options (label smoothing, auxiliary-loss weight, the pmap axis) are
bound with `functools.partial`.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import jax
import jax.numpy as jnp
import optax

from .optim import frozen_mask
from .state import TrainState


def split_outputs(out: Any) -> tuple[jax.Array, list[jax.Array]]:
    """(main logits, auxiliary logits) of a model's output.

    Models with auxiliary classifiers (GoogLeNet, Inception-v3) return a NamedTuple in training
    mode whose first field is the main classifier; absent heads are None.
    """
    if isinstance(out, tuple):
        return out[0], [a for a in out[1:] if a is not None]
    return out, []


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example softmax cross-entropy with integer labels, as `torch.nn.functional.
    cross_entropy(..., label_smoothing=eps, reduction="none")`: the target puts 1 - eps on the
    label and eps / num_classes on every class.

    Args:
      logits: (N, K) float.
      labels: (N,) int.
    Returns:
      (N,) float32 losses.
    """
    logits = logits.astype(jnp.float32)
    if label_smoothing == 0.0:
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    k = logits.shape[-1]
    target = optax.smooth_labels(jax.nn.one_hot(labels, k, dtype=jnp.float32), label_smoothing)
    return optax.softmax_cross_entropy(logits, target)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """(N,) float32: 1 where `labels` is among the `k` largest logits (k capped at K).

    A label counts as in the top k if fewer than k classes score strictly higher (ties are
    resolved in the label's favour, which matters only for exactly equal logits).
    """
    k = min(k, logits.shape[-1])
    label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    higher = jnp.sum(logits > label_logit, axis=-1)
    return (higher < k).astype(jnp.float32)


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    rng: jax.Array,
    *,
    label_smoothing: float = 0.0,
    aux_loss_weight: float = 0.3,
    axis_name: str | None = None,
    frozen: Collection[str] = (),
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD step on a batch.

    Args:
      state: the current state.
      batch: {"image": (N, H, W, C) float, "label": (N,) int}.
      rng: this step's key (dropout); the engine passes `fold_in(state.rng, state.step)`.
      label_smoothing: see `cross_entropy`.
      aux_loss_weight: each auxiliary classifier's loss enters the objective with this weight
        (0.3 in Szegedy et al. 2014).
      axis_name: under pmap, the mapped axis: gradients and metrics are averaged over it.
        BatchNorm statistics are the model's business: for synchronised BatchNorm the model
        in `state.apply_fn` is configured with the same axis
        (`jaxcnn.models.configure_batch_norm(model, axis_name=...)`, as
        `DataParallel.bn_axis_name` names it).
      frozen: layer paths ("conv1", "layer1.0/bn1"; see `optim.frozen_mask`) that do not
        train: no gradient flows into their parameters (so no backward pass is spent below
        the lowest trained layer), and their parameters are carried over unchanged, bit for
        bit. Pair it with `make_optimizer(..., frozen=...)`, which keeps optimizer state and
        weight decay away from them, and with a model configured with the same paths,
        `jaxcnn.models.configure_batch_norm(model, frozen=frozen)`, before
        `create_train_state`: its BatchNorms under these paths then run in inference mode
        (running statistics, none updated, so these too stay bit for bit). The model alone
        decides how its BatchNorms run; this step only applies it with ``train=True``.

    Returns:
      (new state, metrics) with scalar metrics "loss" (the main classifier's mean
      cross-entropy), "total_loss" (with auxiliary terms), "top1", "top5" (fractions) and
      "grad_norm".
    """
    images, labels = batch["image"], batch["label"]
    has_bn = bool(state.batch_stats)
    frozen = frozenset(frozen)
    mask = frozen_mask(state.params, frozen) if frozen else None

    def loss_fn(params):
        if mask is not None:
            params = jax.tree.map(lambda p, f: jax.lax.stop_gradient(p) if f else p, params, mask)
        variables = {"params": params}
        if has_bn:
            variables["batch_stats"] = state.batch_stats
        out, updates = state.apply_fn(
            variables, images, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
        )
        logits, aux = split_outputs(out)
        loss = jnp.mean(cross_entropy(logits, labels, label_smoothing))
        total = loss
        for a in aux:
            total = total + aux_loss_weight * jnp.mean(cross_entropy(a, labels, label_smoothing))
        return total, (loss, logits, updates.get("batch_stats", {}))

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (total, (loss, logits, batch_stats)), grads = grad_fn(state.params)
    metrics = {
        "loss": loss,
        "total_loss": total,
        "top1": jnp.mean(topk_correct(logits, labels, 1)),
        "top5": jnp.mean(topk_correct(logits, labels, 5)),
    }
    if axis_name is not None:
        grads = jax.lax.pmean(grads, axis_name)
        metrics = jax.lax.pmean(metrics, axis_name)
    metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    # reduce-on-plateau: scaling the final SGD update by s is scaling the learning rate by s.
    updates = jax.tree.map(lambda u: u * state.lr_scale.astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    if mask is not None:
        # p + 0.0 is not always p bit for bit (-0.0 + 0.0 == +0.0): carry frozen leaves over.
        params = jax.tree.map(lambda old, new, f: old if f else new, state.params, params, mask)
    new_state = state.replace(
        step=state.step + 1,
        params=params,
        batch_stats=batch_stats if has_bn else state.batch_stats,
        opt_state=opt_state,
    )
    return new_state, metrics


def eval_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    axis_name: str | None = None,
) -> dict[str, jax.Array]:
    """Sums over a batch for exact aggregation over a data set.

    Args:
      state: the state to evaluate (running BatchNorm statistics, no dropout).
      batch: {"image": (N, H, W, C), "label": (N,) int, "mask": (N,) float, optional}; masked
        examples (0) are padding and count nowhere.

    Returns:
      {"loss_sum", "top1_correct", "top5_correct", "count"}: float32 sums over the real
      examples (summed over `axis_name` under pmap).
    """
    images, labels = batch["image"], batch["label"]
    mask = batch.get("mask")
    if mask is None:
        mask = jnp.ones(labels.shape, jnp.float32)
    out = state.apply_fn(state.variables, images, train=False)
    logits, _ = split_outputs(out)
    sums = {
        "loss_sum": jnp.sum(cross_entropy(logits, labels) * mask),
        "top1_correct": jnp.sum(topk_correct(logits, labels, 1) * mask),
        "top5_correct": jnp.sum(topk_correct(logits, labels, 5) * mask),
        "count": jnp.sum(mask),
    }
    if axis_name is not None:
        sums = jax.lax.psum(sums, axis_name)
    return sums
