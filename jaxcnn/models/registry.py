"""A small registry: model name -> factory, with what tests and tools need to know about it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
from flax import linen as nn


@dataclasses.dataclass(frozen=True)
class CheckpointDialect:
    """How a third-party PyTorch port of a model names and lays out its checkpoints.

    Attributes:
      name: where such checkpoints come from (shown to the user), e.g. a repository.
      signature: a state-dict key only this port's checkpoints have (after wrapper prefixes
        such as ``module.`` are stripped); its presence identifies the port.
      rename: ``(regex, replacement)`` rules mapping the port's keys to jaxcnn's.
      model_kwargs: `create_model` options the weights need to give the port's outputs.
    """

    name: str
    signature: str
    rename: tuple[tuple[str, str], ...] = ()
    model_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about a model.

    Attributes:
      name: registry name, e.g. "resnet50".
      factory: `factory(num_classes=..., dtype=..., **kw) -> nn.Module`.
      input_size: the (H, W, C) the model was designed for (224x224x3 for ImageNet models).
      min_input_size: the smallest (H, W) the architecture admits.
      num_classes: the default number of classes.
      reference: where the reference definition (and weights) live: "torchvision", "timm"
        or None for models only the paper defines.
      reference_name: the model's name there (`torchvision.models.<name>` / `timm.create_model`).
      reference_kwargs: keyword arguments that make the reference match the default jaxcnn
        model (e.g. GoogLeNet's `aux_logits`).
      num_params: the parameter count at the default `num_classes`, from the paper or the
        reference library; the tests check it.
      checkpoint_dialects: third-party checkpoint layouts `jaxcnn.convert` recognises.
    """

    name: str
    factory: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    min_input_size: tuple[int, int]
    num_classes: int
    num_params: int
    reference: str | None = None
    reference_name: str | None = None
    reference_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint_dialects: tuple[CheckpointDialect, ...] = ()


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    *,
    input_size: tuple[int, int, int],
    min_input_size: tuple[int, int],
    num_params: int,
    num_classes: int = 1000,
    reference: str | None = None,
    reference_name: str | None = None,
    reference_kwargs: dict[str, Any] | None = None,
    checkpoint_dialects: tuple[CheckpointDialect, ...] = (),
):
    """Decorator registering `factory` under `name`."""

    def deco(factory):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name=name,
            factory=factory,
            input_size=input_size,
            min_input_size=min_input_size,
            num_classes=num_classes,
            num_params=num_params,
            reference=reference,
            reference_name=reference_name,
            reference_kwargs=dict(reference_kwargs or {}),
            checkpoint_dialects=tuple(checkpoint_dialects),
        )
        return factory

    return deco


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The `ModelSpec` of `name`; ValueError listing the valid names if there is none."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(
            f"unknown model {name!r}; registered models are: {', '.join(list_models())}"
        )
    return _REGISTRY[name]


def create_model(
    name: str, *, num_classes: int | None = None, dtype: Any = jnp.float32, **kwargs
) -> nn.Module:
    """A fresh linen Module for `name`.

    Args:
      name: a registered name (`list_models()`).
      num_classes: size of the classifier output; the model's default (1000 for ImageNet
        models) if None.
      dtype: computation dtype (parameters stay float32); e.g. jnp.bfloat16 for mixed
        precision.
      **kwargs: model-specific options (e.g. `aux_logits` for GoogLeNet, `dropout_rate`).

    Returns:
      A module with `init(key, x, train=False)` and `apply(variables, x, train=...)`, taking
      NHWC input and returning (N, num_classes) logits.
    """
    spec = get_spec(name)
    if num_classes is None:
        num_classes = spec.num_classes
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"create_model: `num_classes` must be a positive int; got {num_classes!r}")
    return spec.factory(num_classes=num_classes, dtype=dtype, **kwargs)
