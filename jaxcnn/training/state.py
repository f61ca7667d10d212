"""The training state: everything a step reads and writes, as one pytree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.core import Tracer

from ..xla import run_once_compiler_options


class TrainState(struct.PyTreeNode):
    """Parameters, BatchNorm statistics, optimizer state, step counter and base RNG key.

    Attributes:
      step: int32 scalar, the number of optimizer steps taken.
      params: the model's "params" collection (float32, also under bf16 compute).
      batch_stats: the model's "batch_stats" collection ({} for models without BatchNorm).
      opt_state: the optax state of `tx`.
      rng: a raw uint32[2] PRNG key; step t uses `fold_in(rng, t)` (dropout, ...).
      lr_scale: float32 scalar multiplying every update: the reduce-on-plateau factor (1.0
        otherwise). Kept in the state so that a resumed run continues with the decayed rate.
      apply_fn: the model's `apply` (static, not a pytree leaf).
      tx: the optax transformation (static).
    """

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    rng: jax.Array
    lr_scale: jax.Array
    apply_fn: Callable = struct.field(pytree_node=False)
    tx: optax.GradientTransformation = struct.field(pytree_node=False)

    @property
    def variables(self) -> dict[str, Any]:
        """The model variables, as `model.apply` takes them."""
        if self.batch_stats:
            return {"params": self.params, "batch_stats": self.batch_stats}
        return {"params": self.params}

    def arrays(self) -> dict[str, Any]:
        """The state's array leaves as a plain dict: what a checkpoint holds."""
        return {
            "step": self.step,
            "params": self.params,
            "batch_stats": self.batch_stats,
            "opt_state": self.opt_state,
            "rng": self.rng,
            "lr_scale": self.lr_scale,
        }

    def replace_arrays(self, arrays: dict[str, Any]) -> TrainState:
        """This state with its array leaves taken from `arrays` (the inverse of `arrays()`)."""
        return self.replace(**arrays)


def create_train_state(
    model: Any,
    tx: optax.GradientTransformation,
    *,
    seed: int,
    input_shape: tuple[int, int, int],
    variables: dict[str, Any] | None = None,
) -> TrainState:
    """A fresh state: the model initialised from `seed` (or given `variables`), step 0.

    Args:
      model: a linen Module (e.g. from `jaxcnn.create_model`).
      tx: the optimizer.
      seed: the run's seed. Initialisation uses `fold_in(key(seed), 0)`, the step RNG
        `fold_in(key(seed), 1)`, so the two never share randomness.
      input_shape: (H, W, C) of one example.
      variables: start from these instead of a random initialisation (transfer learning).
    """
    base = jax.random.PRNGKey(seed)

    def build(variables):
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=variables.get("batch_stats", {}),
            opt_state=tx.init(params),
            rng=jax.random.fold_in(base, 1),
            lr_scale=jnp.ones((), jnp.float32),
            apply_fn=model.apply,
            tx=tx,
        )

    # One compiled program builds the whole state: run eagerly, the optimizer's per-leaf
    # zeros would each compile a kernel (on a GPU, ~0.1 s for every distinct shape).
    # It runs once: compiled for speed of compilation (the same values, `xla.py`), unless
    # this call is itself being traced (eval_shape, an outer jit), where only the outermost
    # jit may carry compiler options.
    key = jax.random.fold_in(base, 0)
    traced = any(isinstance(x, Tracer) for x in jax.tree.leaves((key, variables)))
    options = None if traced else run_once_compiler_options()
    if variables is None:
        x = jnp.zeros((1, *input_shape), jnp.float32)
        init = jax.jit(lambda k: build(model.init(k, x, train=False)), compiler_options=options)
        return init(key)
    return jax.jit(build, compiler_options=options)(variables)
