"""How a model's BatchNorm layers train: synchronised over a mapped axis, or frozen.

Every model that contains `jaxcnn.layers.BatchNorm` has two attributes that its blocks hand
down to each BatchNorm (`jaxcnn.layers.batch_norm_options`):

* ``bn_axis_name``: the mapped axis (`jax.pmap`, `shard_map`, `jax.vmap`) over which the
  training-mode batch statistics are averaged, so that every device normalises with the
  statistics of the global batch (synchronised BatchNorm). None: the statistics of the batch
  the model sees, which under `jax.jit` with a sharded batch are global already.
* ``frozen_batch_norms``: layer paths from the model's root ("bn1", "layer1.0",
  "layer1.0/bn1"); every BatchNorm at or under one of them runs in inference mode even with
  ``train=True``: it normalises with its running statistics and updates none of them.

`configure_batch_norm` sets both on any model, and leaves models without BatchNorm as they
are, so code that trains a model of any family can call it unconditionally::

    model = models.configure_batch_norm(model, axis_name=par.bn_axis_name, frozen=frozen)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from flax import linen as nn

FIELDS = ("bn_axis_name", "frozen_batch_norms")


def has_batch_norm(model: nn.Module) -> bool:
    """Whether `model` holds BatchNorm layers configurable with `configure_batch_norm`.

    True for a model with the attributes ``bn_axis_name`` and ``frozen_batch_norms`` unless
    it says otherwise with a ``has_batch_norm`` property (VGG without BatchNorm does).
    """
    names = {f.name for f in dataclasses.fields(model)}
    return all(f in names for f in FIELDS) and bool(getattr(model, "has_batch_norm", True))


def configure_batch_norm(
    model: nn.Module, *, axis_name: str | None = None, frozen: Collection[str] = ()
) -> nn.Module:
    """`model` with its BatchNorms synchronised over `axis_name` and `frozen` ones frozen.

    Returns ``model.clone(bn_axis_name=axis_name, frozen_batch_norms=...)`` for a model with
    BatchNorm layers (replacing any earlier setting), and `model` itself for one without
    (LeNet, AlexNet, VGG without ``_bn``, GoogLeNet-2014), which has no batch statistics to
    synchronise or freeze. Parameters and variables are unaffected: the same variables apply
    to the model before and after.

    Args:
      model: a linen Module, e.g. from `jaxcnn.create_model`.
      axis_name: the mapped axis over which BatchNorm averages its training-mode statistics:
        the `axis_name` of the `jax.pmap` (`jaxcnn.training.DataParallel.bn_axis_name`),
        `shard_map` or `jax.vmap` the training step runs in. None (the default): no
        synchronisation, right for one device and for `jax.jit` over a sharded batch. A model
        configured with an axis must run ``train=True`` inside a transform that binds it.
      frozen: layer paths from the model's root, "/"-separated ("bn1", "layer1.0",
        "layer1.0/bn1"), e.g. from `jaxcnn.transfer.frozen_layers`; every BatchNorm at or
        under one of them runs in inference mode even with ``train=True`` (running
        statistics, none updated). Paths of layers without BatchNorm are allowed and change
        nothing here (their parameters are the optimizer's and `train_step`'s business).

    Returns:
      A linen Module with the same call signature: ``init(key, x, train=False)``,
      ``apply(variables, x, train=...)``.

    Raises:
      TypeError: `model` is not a linen Module, `axis_name` is not a string or None,
        `frozen` is a single string or not a collection of strings.
      ValueError: `axis_name` or one of the `frozen` paths is empty.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"configure_batch_norm: `model` must be a flax.linen Module (e.g. from "
            f"jaxcnn.create_model); got {type(model).__name__}"
        )
    if axis_name is not None and not isinstance(axis_name, str):
        raise TypeError(
            f"configure_batch_norm: `axis_name` must be a string (a pmap/vmap axis name) or "
            f"None; got {axis_name!r} ({type(axis_name).__name__})"
        )
    if axis_name == "":
        raise ValueError("configure_batch_norm: `axis_name` must be a non-empty string or None")
    if isinstance(frozen, (str, bytes)) or not isinstance(frozen, Collection):
        raise TypeError(
            f"configure_batch_norm: `frozen` must be a collection of layer paths such as "
            f"('bn1', 'layer1.0'); got {frozen!r}"
            + (f" (write ({frozen!r},) for one path)" if isinstance(frozen, str) else "")
        )
    for path in frozen:
        if not isinstance(path, str):
            raise TypeError(
                f"configure_batch_norm: every path in `frozen` must be a string such as "
                f"'layer1.0/bn1'; got {path!r} ({type(path).__name__}) in {frozen!r}"
            )
        if not path:
            raise ValueError(
                f"configure_batch_norm: `frozen` paths must be non-empty; got {frozen!r}"
            )
    if not has_batch_norm(model):
        return model
    return model.clone(bn_axis_name=axis_name, frozen_batch_norms=tuple(sorted(set(frozen))))
