"""Checkpoints with orbax: asynchronous, atomic, the last N plus the best, resumable exactly.

A checkpoint is a step directory holding two items:

* "state": the `TrainState` arrays (step, params, batch_stats, opt_state, rng, lr_scale);
* "extra": JSON — the data iterator's position, the reduce-on-plateau tracker, the best
  metric so far and anything else the loop needs to continue as if never stopped.

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a
crash mid-save leaves the previous checkpoints intact and the partial one invisible (and
cleaned up when the next manager opens the directory). Saves run in a background thread; the
training loop waits for the previous one before starting the next.

Layout under the workdir: ``checkpoints/<step>/`` (the most recent `keep`) and
``best/<step>/`` (the one with the best validation metric).
"""

from __future__ import annotations

import os
from typing import Any

import jax


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


class Checkpoints:
    """The workdir's checkpoint managers.

    Args:
      workdir: the run directory.
      keep: how many of the most recent checkpoints to keep.
      keep_best: also keep the best checkpoint (by a metric, higher is better) in ``best/``.
      async_save: save in a background thread.
    """

    def __init__(
        self, workdir: str, *, keep: int = 3, keep_best: bool = True, async_save: bool = True
    ):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1; got {keep}")
        ocp = _ocp()
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.best_directory = os.path.join(os.path.abspath(workdir), "best")

        def manager(path, n):
            options = ocp.CheckpointManagerOptions(
                max_to_keep=n,
                create=True,
                enable_async_checkpointing=async_save,
                cleanup_tmp_directories=True,
            )
            return ocp.CheckpointManager(path, options=options, item_names=("state", "extra"))

        self._last = manager(self.directory, keep)
        self.last_saved: int | None = None  # the step of the newest save started by this object
        self._best = manager(self.best_directory, 1) if keep_best else None

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self._last.latest_step()

    def best_step(self) -> int | None:
        return None if self._best is None else self._best.latest_step()

    def save(
        self, step: int, state_arrays: dict[str, Any], extra: dict[str, Any], *, best: bool = False
    ) -> None:
        """Start saving (asynchronously unless disabled); `best=True` also saves to ``best/``.

        The arrays must not be donated or changed before the save has read them; orbax copies
        device arrays to the host before `save` returns, so the caller may continue.
        """
        ocp = _ocp()
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state_arrays), extra=ocp.args.JsonSave(extra)
        )
        self._last.save(step, args=args, force=True)
        self.last_saved = step
        if best and self._best is not None:
            self._best.save(step, args=args, force=True)

    def restore(
        self, step: int | None, target: dict[str, Any], *, best: bool = False
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state arrays, extra) of checkpoint `step` (default: latest), laid out like `target`.

        `target` is a state-arrays tree (e.g. of a freshly created state) whose shapes, dtypes
        and shardings the restored arrays take.
        """
        ocp = _ocp()
        manager = self._best if best else self._last
        if manager is None:
            raise ValueError("no best checkpoints are kept (keep_best=False)")
        if step is None:
            step = manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {manager.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["extra"]

    def wait(self) -> None:
        """Block until every started save is complete on disk."""
        self._last.wait_until_finished()
        if self._best is not None:
            self._best.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self._last.close()
        if self._best is not None:
            self._best.close()


def load_run(workdir: str, *, step: int | None = None, best: bool = False):
    """The trained model of a workdir, ready for inference, visualisation or transfer.

    Args:
      workdir: a directory written by `train_and_evaluate`.
      step: which checkpoint (default: the newest, or the best one with `best=True`).
      best: read ``best/`` (best validation metric) instead of ``checkpoints/``.

    Returns:
      (model, variables, info): the linen Module (float32 compute), its
      ``{"params", "batch_stats"?}`` as arrays on the default device, and a dict with "model",
      "model_kwargs", "num_classes", "image_shape" (H, W, C), "mean", "std" (the input
      normalisation the model was trained with), "step" and "epoch".
    """
    from .. import models

    ocp = _ocp()
    root = os.path.join(os.path.abspath(workdir), "best" if best else "checkpoints")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no checkpoints in {workdir} (looked for {root})")
    steps = sorted(int(p) for p in os.listdir(root) if p.isdigit())
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint in {root}")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {root}; there are {steps}")
    path = os.path.join(root, str(step))
    extra = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(os.path.join(path, "extra"))
    if "run" not in extra:
        raise ValueError(f"{path} was written by an older jaxcnn without model information")
    info = dict(extra["run"], step=step, epoch=extra.get("epoch"))
    checkpointer = ocp.StandardCheckpointer()
    state_path = os.path.join(path, "state")
    # Restore onto this process's default device, whatever topology wrote the checkpoint.
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    meta = checkpointer.metadata(state_path)
    meta = getattr(meta, "item_metadata", meta)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    arrays = checkpointer.restore(state_path, target)
    variables = {"params": arrays["params"]}
    if arrays["batch_stats"]:
        variables["batch_stats"] = arrays["batch_stats"]
    model = models.create_model(
        info["model"], num_classes=info["num_classes"], **info["model_kwargs"]
    )
    return model, variables, info
