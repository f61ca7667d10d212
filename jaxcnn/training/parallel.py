"""Data parallelism, in one place: jit over a device mesh (default), pmap, or one device.

All three run the same pure `train_step` / `eval_step` on the same *global* batch and give
the same result (up to float summation order):

* "jit": a 1-D `Mesh` of every device (all processes after `jax.distributed.initialize`),
  the batch sharded along it with `NamedSharding(mesh, P("data"))`, the state replicated.
  The program is written for the global batch; XLA inserts the gradient all-reduce, and
  BatchNorm's means over the batch axis are global means — synchronised BatchNorm for free.
* "pmap": the classic alternative (Flax's imagenet example): each local device gets a slice
  and an explicit `axis_name`; gradients and metrics are `pmean`-ed. BatchNorm statistics are
  synchronised by the model itself, configured with the same axis:
  ``models.configure_batch_norm(model, axis_name=par.bn_axis_name)`` (the training loop does
  this).
* "none": one device, no collectives.

Each process feeds only its own slice of the global batch (`jaxcnn.data` produces exactly that
slice); `put_batch` assembles the global array.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from ..xla import compiler_options
from .state import TrainState

MODES = ("jit", "pmap", "none")
PMAP_AXIS = "batch"


def step_rng(state: TrainState) -> jax.Array:
    """The key of the step `state` is about to take: fold_in(base key, step)."""
    return jax.random.fold_in(state.rng, state.step)


class DataParallel:
    """Places state and batches, and compiles steps, for one parallelism mode.

    Args:
      mode: "jit", "pmap" or "none".
      devices: the devices to use; default: all (`jax.devices()`, every process) for "jit",
        the local ones for "pmap", the first local one for "none".
    """

    def __init__(self, mode: str = "jit", devices: list | None = None):
        if mode not in MODES:
            raise ValueError(f"parallel must be one of {MODES}; got {mode!r}")
        self.mode = mode
        if mode == "none":
            if jax.process_count() > 1:
                raise ValueError(
                    f"parallel='none' runs on one device, but there are {jax.process_count()} "
                    "processes; use 'jit' or 'pmap'"
                )
            devices = list(devices or jax.local_devices()[:1])[:1]
        elif mode == "pmap":
            if jax.process_count() > 1:
                # jax.pmap is now built on shard_map; its multi-process form is not what this
                # engine tests. The default mode covers every process.
                raise ValueError(
                    "parallel='pmap' is supported within one process; with "
                    f"{jax.process_count()} processes use parallel='jit'"
                )
            devices = list(devices or jax.local_devices())
        else:
            devices = list(devices or jax.devices())
        self.devices = devices
        self.mesh = Mesh(np.asarray(devices), ("data",))
        self._replicated = NamedSharding(self.mesh, P())
        self._sharded = NamedSharding(self.mesh, P("data"))
        # pmap's inputs: a leading axis of one entry per device, laid out over the devices.
        self._stacked = NamedSharding(Mesh(np.asarray(devices), (PMAP_AXIS,)), P(PMAP_AXIS))
        # jaxcnn's XLA options for this platform (`jaxcnn.xla`); pmap takes none.
        self.compiler_options = compiler_options(devices[0].platform)

    # ------------------------------------------------------------------ sizes
    @property
    def num_devices(self) -> int:
        """Devices taking part in a step (all processes for "jit")."""
        return len(self.devices)

    @property
    def bn_axis_name(self) -> str | None:
        """The mapped axis BatchNorm must synchronise its batch statistics over in this mode.

        `PMAP_AXIS` ("batch") for "pmap", where each device sees only its slice of the batch;
        None for "jit" (the program sees the global batch, so its means are global already)
        and "none". Configure the model with it before building the state:
        ``models.configure_batch_norm(model, axis_name=par.bn_axis_name)``.
        """
        return PMAP_AXIS if self.mode == "pmap" else None

    @property
    def num_local_devices(self) -> int:
        return sum(d.process_index == jax.process_index() for d in self.devices)

    def check_batch_size(self, global_batch: int, what: str = "batch_size") -> None:
        """A clear error unless the global batch splits evenly over the devices."""
        if global_batch % self.num_devices:
            raise ValueError(
                f"{what} ({global_batch}) must be divisible by the number of devices "
                f"({self.num_devices}, mode {self.mode!r})"
            )

    # -------------------------------------------------------------- placement
    def put_state(self, state: Any) -> Any:
        """The state (or any pytree) on the devices: replicated (jit/none) or stacked per
        device (pmap)."""
        if self.mode == "pmap":
            n = len(self.devices)
            return jax.tree.map(
                lambda x: jax.device_put(jnp.stack([jnp.asarray(x)] * n), self._stacked), state
            )
        if jax.process_count() == 1:
            return jax.device_put(state, self._replicated)

        def put(x):  # every process holds the same value; assemble the global array
            host = np.asarray(jax.device_get(x))
            return jax.make_array_from_callback(host.shape, self._replicated, lambda i: host[i])

        return jax.tree.map(put, state)

    def get_state(self, state: TrainState) -> TrainState:
        """The state as one copy (for checkpoints and evaluation on the host)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: x[0], state)
        return state

    def put_batch(self, batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
        """This process's slice of the global batch -> device arrays.

        jit: one global array per key, sharded over the mesh (each process contributes its
        rows); pmap: (local devices, rows per device, ...); none: one array.
        """
        if self.mode == "pmap":
            n = self.num_local_devices

            def split(x):
                if x.shape[0] % n:
                    raise ValueError(
                        f"per-process batch ({x.shape[0]}) must be divisible by the local "
                        f"device count ({n}) for pmap"
                    )
                return jax.device_put(x.reshape(n, x.shape[0] // n, *x.shape[1:]), self._stacked)

            return {k: split(np.asarray(v)) for k, v in batch.items()}
        if self.mode == "none":
            return jax.device_put(batch, self.devices[0])
        return {
            k: jax.make_array_from_process_local_data(self._sharded, np.asarray(v))
            for k, v in batch.items()
        }

    # -------------------------------------------------------------- compiling
    def compile_train_step(self, train_step: Callable, *, donate: bool = True) -> Callable:
        """`(state, batch) -> (state, metrics)` running `train_step(state, batch, rng)` with
        `rng = fold_in(state.rng, state.step)`; metrics come back replicated (one copy for
        pmap). `train_step` must accept `axis_name=` (bind other options with partial).

        Under pmap, BatchNorm statistics are synchronised only if the model in the state's
        `apply_fn` was configured with `bn_axis_name` (`models.configure_batch_norm`);
        otherwise each device normalises with the statistics of its own slice.
        """
        donate_argnums = (0,) if donate else ()
        if self.mode == "pmap":

            def body(state, batch):
                # Different dropout masks per device: fold in the device's position.
                rng = jax.random.fold_in(step_rng(state), jax.lax.axis_index(PMAP_AXIS))
                return train_step(state, batch, rng, axis_name=PMAP_AXIS)

            return jax.pmap(
                body, axis_name=PMAP_AXIS, devices=self.devices, donate_argnums=donate_argnums
            )

        def body(state, batch):
            return train_step(state, batch, step_rng(state), axis_name=None)

        if self.mode == "none":
            return jax.jit(
                body, donate_argnums=donate_argnums, compiler_options=self.compiler_options
            )
        return jax.jit(
            body,
            in_shardings=(self._replicated, self._sharded),
            out_shardings=(self._replicated, self._replicated),
            donate_argnums=donate_argnums,
            compiler_options=self.compiler_options,
        )

    def compile_eval_step(self, eval_step: Callable) -> Callable:
        """`(state, batch) -> sums` replicated (pmap: psum over devices)."""
        if self.mode == "pmap":

            def body(state, batch):
                return eval_step(state, batch, axis_name=PMAP_AXIS)

            return jax.pmap(body, axis_name=PMAP_AXIS, devices=self.devices)

        def body(state, batch):
            return eval_step(state, batch, axis_name=None)

        if self.mode == "none":
            return jax.jit(body, compiler_options=self.compiler_options)
        return jax.jit(
            body,
            in_shardings=(self._replicated, self._sharded),
            out_shardings=self._replicated,
            compiler_options=self.compiler_options,
        )

    def fetch(self, tree: Any) -> Any:
        """Device metrics -> host numpy (first device's copy under pmap)."""
        if self.mode == "pmap":
            return jax.tree.map(lambda x: np.asarray(jax.device_get(x[0])), tree)
        # Replicated arrays of a multi-process mesh are not fully addressable: read the local copy.
        return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), tree)


def initialize_distributed() -> None:
    """`jax.distributed.initialize`, once, before any other JAX call of the run.

    On clusters JAX recognises (Cloud TPU, SLURM, Open MPI, ...) everything is detected.
    Elsewhere set JAX_COORDINATOR_ADDRESS (host:port of process 0), JAX_NUM_PROCESSES and
    JAX_PROCESS_ID in each process's environment. CPU processes talk through gloo.
    """
    if jax.distributed.is_initialized():
        return
    # Only affects the CPU backend; needed for cross-process collectives of CPU devices.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = {}
    for key, env in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
        if os.environ.get(env):
            kwargs[key] = int(os.environ[env])
    jax.distributed.initialize(**kwargs)


def global_replicated(tree: Any) -> Any:
    """`tree` as arrays replicated over every device of every process (checkpoint layout)."""
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("d",)), P())

    def put(x):
        if (
            isinstance(x, jax.Array)
            and x.sharding.is_fully_replicated
            and x.sharding.device_set == set(jax.devices())
        ):
            return x
        host = np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)
