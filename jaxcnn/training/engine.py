"""`build_engine`: from a config and its input to the model, state, schedule and compiled steps.

Every client of the engine assembles a run the same way, so it is done once, here:

    from jaxcnn.training import TrainConfig, build_engine, InputSpec
    engine = build_engine(TrainConfig(model="resnet18", num_steps=100), datasets)
    state, metrics = engine.train_step(engine.state, engine.par.put_batch(batch))

`train_and_evaluate` (the loop), the benchmarks and the notebooks all call it. What it builds,
in order: the `DataParallel` placement of `config.parallel`; the model (`config.model`,
`config.dtype`, the data's class count); the learning-rate schedule over the run's steps;
random initial variables (`fold_in(key(seed), 0)`); the frozen layers and per-layer learning
rates of the fine-tuning keys; the optimizer; the model configured for them (frozen BatchNorms
run in inference mode); the state, placed on the devices; and the jit/pmap-compiled train step
(with the device-side augmentation of the data in front, if the data asks for it) and eval step.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import models
from ..xla import run_once_compiler_options
from . import finetune
from . import steps as steps_lib
from .config import TrainConfig, parse_config
from .optim import Plateau, learning_rate_schedule, make_optimizer
from .parallel import DataParallel
from .state import TrainState, create_train_state

log = logging.getLogger("jaxcnn.training")

__all__ = ["Engine", "InputSpec", "augmenting", "build_engine"]

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# The purpose tag of the device augmentation's keys: fold_in(key(seed), tag), then the step.
_AUGMENT_TAG = 0x617567


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """What the engine needs to know of the data, when there is no `Datasets` to ask.

    Attributes:
      image_shape: (H, W, C) of one example as the model sees it.
      num_classes: the classifier's width.
      steps_per_epoch: training steps in one epoch (schedules and epoch-based keys count in
        epochs); 1 makes epochs and steps the same.
      augment: the device-side augmentation to compile in front of the train step
        (`jaxcnn.data.device_augment.AugmentSpec`), or None.
    """

    image_shape: tuple[int, int, int]
    num_classes: int
    steps_per_epoch: int = 1
    augment: Any = None

    @classmethod
    def of(cls, datasets: Any) -> InputSpec:
        """The spec of a `jaxcnn.data.Datasets`."""
        h, w, c = datasets.image_shape
        return cls(
            image_shape=(int(h), int(w), int(c)),
            num_classes=int(datasets.num_classes),
            steps_per_epoch=int(datasets.train.steps_per_epoch),
            augment=datasets.augment,
        )


@dataclasses.dataclass
class Engine:
    """A run's model, state and compiled steps (see `build_engine`).

    Attributes:
      config: the checked config.
      spec: the input it was built for.
      par: where state and batches live and how steps are compiled.
      model: the linen model (configured for the frozen BatchNorms and the parallel mode).
      schedule: the learning rate per step (before any reduce-on-plateau scale).
      tx: the optimizer.
      frozen: layer paths that do not train.
      total_steps: the run's length in steps.
      plateau: the reduce-on-plateau tracker (schedule "plateau"), else None.
      variables: the initial variables (random, from `fold_in(key(seed), 0)`).
      state: the initial state, placed on the devices.
      train_step: compiled ``(state, batch) -> (state, metrics)``; the batch as `par.put_batch`
        places it; the state is donated.
      eval_step: compiled ``(state, batch) -> sums`` ("loss_sum", "top1_correct",
        "top5_correct", "count"; padding rows masked out).
    """

    config: TrainConfig
    spec: InputSpec
    par: DataParallel
    model: Any
    schedule: optax.Schedule
    tx: optax.GradientTransformation
    frozen: tuple[str, ...]
    total_steps: int
    plateau: Plateau | None
    variables: dict[str, Any]
    state: TrainState
    train_step: Callable
    eval_step: Callable

    def steps_every(self, epochs: float) -> int:
        """A period given in epochs, in steps (at least 1)."""
        return max(1, round(epochs * self.spec.steps_per_epoch))

    def learning_rate(self, step: int) -> float:
        """The schedule's rate for the update of step `step` + 1 (steps count from 0)."""
        return float(np.asarray(self.schedule(step)))

    def start_from(self, variables: dict[str, Any]) -> TrainState:
        """A fresh state (step 0, on the devices) from `variables` instead of the random ones."""
        c = self.config
        host = create_train_state(
            self.model, self.tx, seed=c.seed, input_shape=self.spec.image_shape, variables=variables
        )
        return self.par.put_state(host)


def build_engine(
    config: Any, data: Any, *, devices: list | None = None, donate: bool = True
) -> Engine:
    """Build a run's model, state, schedule and compiled steps from its config.

    Args:
      config: a `TrainConfig`, or a ConfigDict / mapping of its keys (checked by
        `parse_config`).
      data: the `jaxcnn.data.Datasets` the run trains on, or an `InputSpec`.
      devices: the devices to run on; default those of `DataParallel(config.parallel)`.
      donate: let the train step reuse its input state's memory (the state passed in is then
        consumed).

    Returns:
      `Engine`.

    Raises:
      ConfigError: a bad config.
      ValueError: a batch size that does not split over the devices, or a run with no steps.
    """
    c = parse_config(config)
    spec = data if isinstance(data, InputSpec) else InputSpec.of(data)
    par = DataParallel(c.parallel, devices=devices)
    par.check_batch_size(c.batch_size)
    par.check_batch_size(c.eval_batch_size, "eval_batch_size")
    total_steps = c.num_steps if c.num_steps > 0 else round(c.num_epochs * spec.steps_per_epoch)
    if total_steps < 1:
        raise ValueError(
            f"num_epochs ({c.num_epochs}) and num_steps ({c.num_steps}) give no training steps "
            f"at {spec.steps_per_epoch} steps per epoch"
        )
    model = models.create_model(
        c.model, num_classes=spec.num_classes, dtype=_DTYPES[c.dtype], **dict(c.model_kwargs)
    )
    schedule = learning_rate_schedule(
        c.optimizer, c.schedule, steps_per_epoch=spec.steps_per_epoch, total_steps=total_steps
    )
    shape = spec.image_shape
    variables = jax.jit(
        lambda k: model.init(k, jnp.zeros((1, *shape)), train=False),
        compiler_options=run_once_compiler_options(),
    )(jax.random.fold_in(jax.random.PRNGKey(c.seed), 0))
    frozen, multipliers = finetune.fine_tuning(c, model, shape)
    if frozen:
        log.info("frozen layers: %s", ", ".join(frozen))
    tx = make_optimizer(
        c.optimizer, schedule, variables["params"], frozen=frozen, lr_multipliers=multipliers
    )
    # BatchNorm: statistics synchronised over the pmap axis (if any), frozen layers' fixed.
    model = models.configure_batch_norm(model, axis_name=par.bn_axis_name, frozen=frozen)
    host_state = create_train_state(model, tx, seed=c.seed, input_shape=shape, variables=variables)

    train_step: Callable = functools.partial(
        steps_lib.train_step,
        label_smoothing=c.label_smoothing,
        aux_loss_weight=c.aux_loss_weight,
        frozen=frozen,
    )
    if spec.augment is not None:  # data.augment_on == "device"
        train_step = augmenting(train_step, spec.augment, seed=c.seed)
    plateau = None
    if c.schedule.name == "plateau":
        plateau = Plateau(
            patience=c.schedule.plateau_patience,
            gamma=c.schedule.gamma,
            min_scale=c.schedule.min_learning_rate / c.optimizer.learning_rate,
        )
    return Engine(
        config=c,
        spec=spec,
        par=par,
        model=model,
        schedule=schedule,
        tx=tx,
        frozen=frozen,
        total_steps=total_steps,
        plateau=plateau,
        variables=variables,
        state=par.put_state(host_state),
        train_step=par.compile_train_step(train_step, donate=donate),
        eval_step=par.compile_eval_step(steps_lib.eval_step),
    )


def augmenting(train_step: Callable, spec: Any, *, seed: int) -> Callable:
    """`train_step` preceded by the device-side augmentation of its batch's uint8 images.

    The key of step t is ``fold_in(fold_in(key(seed), tag), t)``, t read from the state, so a
    resumed run draws what the uninterrupted one drew; under pmap each device also folds in
    its index, so devices augment their rows differently.

    Args:
      train_step: ``(state, batch, rng, *, axis_name) -> (state, metrics)``, as `steps`.
      spec: the `jaxcnn.data.device_augment.AugmentSpec` of the data (`Datasets.augment`).
      seed: the run's seed.
    """
    from ..data import device_augment

    base = jax.random.fold_in(jax.random.PRNGKey(seed), _AUGMENT_TAG)

    def step(state, batch, rng, *, axis_name=None):
        key = jax.random.fold_in(base, state.step)
        if axis_name is not None:
            key = jax.random.fold_in(key, jax.lax.axis_index(axis_name))
        images = device_augment.augment_batch(batch["image"], key, spec)
        return train_step(state, {**batch, "image": images}, rng, axis_name=axis_name)

    return step
