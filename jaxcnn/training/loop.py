"""`train_and_evaluate(config, workdir)`: the training loop.

One function runs every configuration, from LeNet-5 on a laptop CPU to ResNet-50 on many
accelerators. Its contract:

* Re-running the same command on the same workdir continues where the last run stopped —
  after a clean end, a SIGTERM, or a SIGKILL at any step — and on CPU the final parameters are
  bitwise equal to those of a run that was never interrupted: the checkpoint holds the model,
  optimizer and BatchNorm state, the base RNG key, the data iterator's position and the
  reduce-on-plateau tracker, and every random choice is a function of (seed, step) or
  (seed, example position).
* A non-finite loss stops the run with `NonFiniteLossError` (a `FloatingPointError`) naming
  the first bad step, and a checkpoint is never written with non-finite parameters, so the
  newest checkpoint is always a finite one, and the error names it.
* SIGTERM (preemption) finishes the current step, saves, and returns with "preempted": True.
* A checkpoint is one commit (`jaxcnn.training.checkpoint`); resume falls back to the newest
  intact one; a save that fails raises `CheckpointError` (the committed ones are intact); and
  the workdir is locked, so a second run on it is refused while the first one lives.
* Transfer learning (`jaxcnn.transfer`): `init_from` is read only by a run that starts fresh
  (a resumed run restores its own checkpoint); `freeze` / `freeze_all_but_last` layers keep
  their parameters and BatchNorm statistics bit-identical; `head_lr_multiplier` and
  `lr_multipliers` set learning rates per layer group.
* The workdir gets `config.json` (the resolved config), `metrics.jsonl`, TensorBoard events,
  `curves.png` and `checkpoints/`, `best/`.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import os
import signal
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import models
from ..xla import compilation_cache, run_once_compiler_options
from . import steps as steps_lib
from .checkpoint import (
    CheckpointError,
    Checkpoints,
    WorkdirInUseError,
    WorkdirLock,
    write_atomic,
)
from .config import DEFAULTS, ConfigError
from .optim import Plateau, learning_rate_schedule, make_optimizer
from .parallel import DataParallel
from .state import TrainState, create_train_state

log = logging.getLogger("jaxcnn.training")

# curves.png is redrawn after an evaluation at most this often (and always after the last):
# a redraw costs about 0.7 s of matplotlib, a quarter of the default job's training loop
# when it ran after each of its 8 evaluations.
PLOT_EVERY_S = 30.0

# Keys that may differ between the run that wrote a workdir and the one resuming it: they
# change how a run is watched or how fast it goes, never what it computes.
_RESUME_FREE_KEYS = {
    "progress",
    "tensorboard",
    "plot",
    "log_every_steps",
    "async_checkpointing",
    "keep_checkpoints",
    "distributed",
    "compilation_cache",
    "data.worker_count",
    "data.prefetch",
}


class NonFiniteLossError(FloatingPointError):
    """The training loss, or the parameters or optimizer state to checkpoint, became NaN/Inf."""


__all__ = [
    "CheckpointError",
    "ConfigError",
    "NonFiniteLossError",
    "WorkdirInUseError",
    "evaluate",
    "train_and_evaluate",
]


# ----------------------------------------------------------------------------- config
def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a ConfigDict (or mapping / namespace) config."""
    if hasattr(config, "to_dict"):
        d = config.to_dict()
    elif isinstance(config, dict):
        d = config
    else:
        d = vars(config)

    def plain(v):
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        return v

    return plain(d)


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "model_kwargs":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def validate_config(config: Any) -> dict[str, Any]:
    """Check the config's keys against `DEFAULTS`; returns it as a plain dict."""
    d = config_to_dict(config)
    got, want = set(_flatten(d)), set(_flatten(DEFAULTS))
    if got != want:
        parts = []
        if got - want:
            parts.append(f"unknown keys {sorted(got - want)}")
        if want - got:
            parts.append(f"missing keys {sorted(want - got)}")
        raise ConfigError(
            "config: " + "; ".join(parts) + " (start from jaxcnn.training.config.default_config())"
        )
    from .config import check_values

    check_values(d)  # every bad value in one error, before any data or model is built
    return d


def _check_and_save_config(cfg: dict, workdir: str, *, write: bool) -> None:
    """Save the resolved config; refuse to resume a workdir trained with a different one."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        from .config import read_saved_config

        saved = read_saved_config(path)  # a truncated or foreign file: says what to do
        a, b = _flatten(saved), _flatten(json.loads(json.dumps(cfg)))
        defaults = _flatten(json.loads(json.dumps(DEFAULTS)))
        # A key the saved config lacks was added to the engine after that run started; at
        # its default it asks for what the run did without it, so it is no difference.
        diff = sorted(
            k
            for k in set(a) | set(b)
            if a.get(k) != b.get(k)
            and k not in _RESUME_FREE_KEYS
            and not (k not in a and k in defaults and b.get(k) == defaults[k])
        )
        if diff:
            shown = ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diff[:8])
            raise ConfigError(
                f"workdir {workdir} holds a run with a different config ({shown}); resuming it "
                "would mix two runs. Use a new --workdir, or the saved config "
                f"({path}) to continue."
            )
        return
    if write:
        write_atomic(path, json.dumps(cfg, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------------ preemption
class _Preemption:
    """SIGTERM -> a flag checked at step boundaries (the previous handler is restored).

    With several processes, all must stop at the same step (the save is collective), so they
    agree through an all-gather of the flag; that costs a host round trip, so it happens only
    every `sync_every` steps: a multi-process run stops at the next multiple of it.
    """

    def __init__(self, sync_every: int = 1):
        self.requested = False
        self.sync_every = max(1, sync_every)
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def reached(self, step: int) -> bool:
        """Whether every process is to stop before taking step `step + 1`."""
        if jax.process_count() == 1:
            return self.requested
        if step % self.sync_every:
            return False
        from jax.experimental import multihost_utils

        flag = np.asarray([1 if self.requested else 0], np.int32)
        return bool(np.max(multihost_utils.process_allgather(flag)))


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


# ------------------------------------------------------------------------------ loop
def _global_replicated(tree: Any) -> Any:
    """`tree` as arrays replicated over every device of every process (checkpoint layout)."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    sharding = NamedSharding(Mesh(np.asarray(jax.devices()), ("d",)), PartitionSpec())

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


def _mean_rows(rows: list[dict[str, jax.Array]]) -> dict[str, float]:
    stacked = jax.device_get({k: jnp.stack([r[k] for r in rows]) for k in rows[0]})
    return {k: float(np.mean(v)) for k, v in stacked.items()}


@jax.jit
def _finite_leaves(tree: Any) -> list[jax.Array]:
    leaves = jax.tree.leaves(tree)
    return [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(x.dtype, jnp.inexact)]


def _non_finite(par: DataParallel, arrays: dict[str, Any]) -> list[str]:
    """The paths of the state's floating arrays that hold a NaN or an infinity."""
    flags = par.fetch(_finite_leaves(arrays))
    paths = [
        jax.tree_util.keystr(path, simple=True, separator="/")
        for path, x in jax.tree_util.tree_leaves_with_path(arrays)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return [p for p, ok in zip(paths, flags, strict=True) if not ok]


def _first_non_finite(pending: list[tuple[int, dict]], par: DataParallel) -> int | None:
    if not pending:
        return None
    losses = par.fetch(jnp.stack([m["total_loss"] for _, m in pending]))
    bad = np.flatnonzero(~np.isfinite(losses))
    return None if bad.size == 0 else pending[int(bad[0])][0]


def evaluate(par: DataParallel, p_eval, state: TrainState, eval_loader) -> dict[str, float]:
    """Loss, top-1 and top-5 over one pass of `eval_loader` (padding masked out)."""
    totals = None
    for batch in eval_loader:
        sums = p_eval(state, par.put_batch(batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("the evaluation data set is empty")
    t = par.fetch(totals)
    n = float(t["count"])
    return {
        "eval_loss": float(t["loss_sum"]) / n,
        "eval_top1": float(t["top1_correct"]) / n,
        "eval_top5": float(t["top5_correct"]) / n,
        "eval_correct": round(float(t["top1_correct"])),
        "eval_count": round(n),
    }


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Train `config.model` on `config.data`, evaluating and checkpointing into `workdir`.

    Args:
      config: an `ml_collections.ConfigDict` (see `jaxcnn.training.config.DEFAULTS` for every
        key), or a plain dict of the same keys.
      workdir: the run directory; created if needed. If it holds a checkpoint of the same
        config, training resumes from it.

    Returns:
      The final evaluation ("eval_top1", "eval_top5", "eval_loss", "eval_correct",
      "eval_count"), with "step", "epoch", "wall_s", "preempted" (True if stopped by SIGTERM)
      and "train_images_per_s".

    Raises:
      NonFiniteLossError: the loss or the state became NaN/Inf (the message names the step
        and the newest checkpoint, which is finite).
      CheckpointError: a checkpoint could not be saved (the message names the last good
        one); or the newest intact checkpoint does not fit this run.
      WorkdirInUseError: another live run holds the workdir.
      ConfigError: a bad config (a `ValueError`), or a workdir holding a different run.
    """
    folder = validate_config(config)["compilation_cache"]
    if folder == "off":
        return _train_and_evaluate(config, workdir)
    with compilation_cache(folder or os.path.join(os.path.abspath(workdir), "compile_cache")):
        return _train_and_evaluate(config, workdir)


def _train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    t0 = time.time()
    cfg = validate_config(config)
    _check_transfer_keys(_attrs(cfg))
    if cfg["distributed"]:
        initialize_distributed()
    workdir = os.path.abspath(workdir)
    is_main = jax.process_index() == 0
    if not is_main:
        return _run(cfg, workdir, t0)
    os.makedirs(workdir, exist_ok=True)
    # One writer per workdir: taken before anything in it is read or written, held until
    # the last checkpoint is committed. Other processes of the same run share it.
    with WorkdirLock(workdir):
        return _run(cfg, workdir, t0)


def _run(cfg: dict, workdir: str, t0: float) -> dict[str, Any]:
    from .. import data as data_lib
    from .metrics import MetricWriter, Progress

    is_main = jax.process_index() == 0
    _check_and_save_config(cfg, workdir, write=is_main)
    c = _attrs(cfg)

    par = DataParallel(c.parallel)
    par.check_batch_size(c.batch_size)
    par.check_batch_size(c.eval_batch_size, "eval_batch_size")
    datasets = data_lib.create_datasets(
        c.data, seed=c.seed, batch_size=c.batch_size, eval_batch_size=c.eval_batch_size
    )
    steps_per_epoch = datasets.train.steps_per_epoch
    total_steps = int(c.num_steps) if c.num_steps > 0 else round(c.num_epochs * steps_per_epoch)
    if total_steps < 1:
        raise ValueError(f"num_epochs/num_steps give no training steps ({total_steps})")

    def every(epochs: float) -> int:
        return max(1, round(epochs * steps_per_epoch))

    eval_every, ckpt_every = every(c.eval_every_epochs), every(c.checkpoint_every_epochs)
    dtypes = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    if c.dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}; got {c.dtype!r}")
    model = models.create_model(
        c.model, num_classes=datasets.num_classes, dtype=dtypes[c.dtype], **dict(c.model_kwargs)
    )
    schedule = learning_rate_schedule(
        c.optimizer, c.schedule, steps_per_epoch=steps_per_epoch, total_steps=total_steps
    )
    input_shape = tuple(datasets.image_shape)
    init_vars = jax.jit(
        lambda k: model.init(k, jnp.zeros((1, *input_shape)), train=False),
        compiler_options=run_once_compiler_options(),
    )(jax.random.fold_in(jax.random.PRNGKey(c.seed), 0))
    ckpts = Checkpoints(
        workdir, keep=c.keep_checkpoints, keep_best=c.keep_best, async_save=c.async_checkpointing
    )
    frozen, lr_multipliers = _fine_tuning(c, model, input_shape)
    # BatchNorm: statistics synchronised over the pmap axis (if any), frozen layers' fixed.
    model = models.configure_batch_norm(model, axis_name=par.bn_axis_name, frozen=frozen)
    tx = make_optimizer(
        c.optimizer, schedule, init_vars["params"], frozen=frozen, lr_multipliers=lr_multipliers
    )
    state = create_train_state(model, tx, seed=c.seed, input_shape=input_shape, variables=init_vars)
    # The newest intact checkpoint (damaged newer ones are set aside, with a warning each).
    resumed = ckpts.resume(_global_replicated(state.arrays()))
    if c.init_from and resumed is None:
        # Only a run that starts fresh reads init_from: a resumed one restores its own state.
        from .. import transfer

        init_vars, report = transfer.initialize_from(
            c.init_from,
            init_vars,
            model=c.model,
            mapping=c.init_mapping,
            model_kwargs=dict(c.model_kwargs),
            input_shape=input_shape,
        )
        log.info(
            "init_from %s: copied %d layers; new: %s",
            report["source"],
            len(report["copied"]),
            ", ".join(report["new"]) or "none",
        )
        state = create_train_state(
            model, tx, seed=c.seed, input_shape=input_shape, variables=init_vars
        )
    plateau = None
    if c.schedule.name == "plateau":
        plateau = Plateau(
            patience=c.schedule.plateau_patience,
            gamma=c.schedule.gamma,
            min_scale=c.schedule.min_learning_rate / c.optimizer.learning_rate,
        )

    writer = MetricWriter(workdir, tensorboard=c.tensorboard, plot=c.plot, enabled=is_main)
    train_iter = iter(datasets.train)
    best = {"value": None, "step": None}
    start = 0
    if resumed is not None:
        start, arrays, extra = resumed
        state = state.replace_arrays(jax.device_get(arrays))
        train_iter.set_state(extra["data"])
        if plateau is not None:
            plateau.state = dict(extra["plateau"])
        best = dict(extra["best"])
        log.info("resumed from %s at step %d", ckpts.directory, start)
    # Rows past the resumed step (all rows, starting fresh) are about to be logged again.
    writer.truncate_after(start)
    state = par.put_state(state)

    train_step = functools.partial(
        steps_lib.train_step,
        label_smoothing=c.label_smoothing,
        aux_loss_weight=c.aux_loss_weight,
        frozen=frozen,
    )
    if datasets.augment is not None:  # data.augment_on == "device"
        train_step = augmenting(train_step, datasets.augment, seed=c.seed)
    p_train = par.compile_train_step(train_step)
    p_eval = par.compile_eval_step(steps_lib.eval_step)

    def save(step: int, data_state: Any, *, is_best: bool = False) -> None:
        host_state = par.get_state(state)
        bad = _non_finite(par, host_state.arrays())
        if bad:
            ckpts.wait()
            last = ckpts.latest_step()
            raise NonFiniteLossError(
                f"non-finite values in the state at step {step} ({', '.join(bad[:3])}"
                + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                + "); stopped without saving them. "
                + (
                    f"The newest checkpoint, step {last} in {ckpts.directory}, is finite"
                    if last is not None
                    else "There is no checkpoint yet"
                )
            )
        extra = {
            "data": data_state,
            "plateau": None if plateau is None else plateau.state,
            "best": best,
            "epoch": step / steps_per_epoch,
            "run": run_info,  # what `load_run` needs to rebuild the model without the config
        }
        ckpts.save(step, _global_replicated(host_state.arrays()), extra, best=is_best)

    run_info = {
        "model": c.model,
        "model_kwargs": dict(c.model_kwargs),
        "num_classes": datasets.num_classes,
        "image_shape": list(input_shape),
        "mean": list(datasets.mean),
        "std": list(datasets.std),
        "dtype": c.dtype,
    }
    progress = Progress(total_steps, initial=start, enabled=c.progress and is_main)
    if datasets.skipped:
        progress.write(f"skipped {len(datasets.skipped)} corrupt image files")
    result: dict[str, Any] = {"preempted": False}
    queue: collections.deque = collections.deque()
    data_state = train_iter.get_state()
    pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet checked/logged
    t_log, imgs_per_s = time.time(), []
    # The curves are redrawn at an evaluation PLOT_EVERY_S after the last drawing (or the
    # start), and at the end: a run shorter than that draws them once.
    t_plot = time.time()
    step = start

    def check_finite() -> None:
        bad = _first_non_finite(pending, par)
        if bad is not None:
            ckpts.wait()
            last = ckpts.latest_step()
            raise NonFiniteLossError(
                f"non-finite training loss at step {bad} (lr {float(schedule(bad - 1)):.3g}); "
                f"stopped. The newest checkpoint, step {last} in {ckpts.directory}, is finite"
                if last is not None
                else f"non-finite training loss at step {bad}; stopped before any checkpoint"
            )

    try:
        with _Preemption(sync_every=c.log_every_steps) as preempt, progress:
            while step < total_steps:
                if preempt.reached(step):
                    check_finite()
                    if step not in (ckpts.latest_step(), ckpts.last_saved):  # maybe just saved
                        save(step, data_state)
                    ckpts.wait()
                    writer.plot()  # the curves may lag the metrics by up to PLOT_EVERY_S
                    progress.write(f"SIGTERM: saved step {step}; rerun the command to resume")
                    result["preempted"] = True
                    break
                while len(queue) < max(1, c.data.prefetch) and step + len(queue) < total_steps:
                    batch = next(train_iter)
                    queue.append((par.put_batch(batch), train_iter.get_state()))
                batch, data_state = queue.popleft()
                state, metrics = p_train(state, batch)
                step += 1
                pending.append((step, metrics))
                progress.update(1)
                is_eval = step % eval_every == 0 or step == total_steps
                is_ckpt = step % ckpt_every == 0 or step == total_steps
                if step % c.log_every_steps == 0 or is_eval or is_ckpt:
                    check_finite()
                    row = _mean_rows([m for _, m in pending])
                    now = time.time()
                    ips = len(pending) * c.batch_size / (now - t_log)
                    if step - len(pending) > start:  # the first interval includes compilation
                        imgs_per_s.append(ips)
                    t_log = now
                    lr = float(schedule(step - 1)) * float(par.fetch(state.lr_scale))
                    writer.write(
                        step,
                        {
                            "epoch": step / steps_per_epoch,
                            "train_loss": row["loss"],
                            "train_top1": row["top1"],
                            "train_top5": row["top5"],
                            "learning_rate": lr,
                            "images_per_s": ips,
                        },
                    )
                    progress.update(0, loss=row["loss"], acc=row["top1"], img_s=ips)
                    pending = []
                is_best = False
                if is_eval:
                    ev = evaluate(par, p_eval, state, datasets.eval)
                    writer.write(step, {"epoch": step / steps_per_epoch, **_floats(ev)})
                    if step == total_steps or time.time() - t_plot >= PLOT_EVERY_S:
                        writer.plot()
                        t_plot = time.time()
                    value = ev.get(c.best_metric)
                    if value is not None and (best["value"] is None or value > best["value"]):
                        best = {"value": value, "step": step}
                        is_best = True
                    if plateau is not None:
                        scale = plateau.update(ev[c.schedule.plateau_metric])
                        state = state.replace(lr_scale=par.put_state(np.float32(scale)))
                    result.update(ev)
                    t_log = time.time()  # evaluation time is not training time
                if is_ckpt or is_best:
                    save(step, data_state, is_best=is_best)
            if not result["preempted"] and "eval_top1" not in result:
                # Resumed a finished run: report its final evaluation.
                result.update(evaluate(par, p_eval, state, datasets.eval))
    except BaseException:
        try:  # commit what was saved before the failure; the failure itself is what to raise
            ckpts.close()
        except CheckpointError as e:
            log.error("%s", e)
        raise
    else:
        ckpts.close()  # a failed last save is an error, never a finished run
    finally:
        writer.close()
    result.update(
        step=step,
        epoch=step / steps_per_epoch,
        wall_s=time.time() - t0,
        train_images_per_s=float(np.median(imgs_per_s)) if imgs_per_s else math.nan,
    )
    return result


def _check_transfer_keys(c: Any) -> None:
    """The transfer keys' simple checks, before any data or model is built."""
    if c.init_mapping not in ("auto", "strict", "vgg_stages"):
        raise ValueError(
            f"init_mapping must be 'auto', 'strict' or 'vgg_stages'; got {c.init_mapping!r}"
        )
    if not isinstance(c.init_from, str):
        raise TypeError(f"init_from must be a path string ('' for none); got {c.init_from!r}")
    if not isinstance(c.freeze_all_but_last, int) or c.freeze_all_but_last < -1:
        raise ValueError(
            f"freeze_all_but_last must be an int >= 0, or -1 (off); got {c.freeze_all_but_last!r}"
        )


def _fine_tuning(c: Any, model: Any, input_shape: tuple[int, ...]) -> tuple[tuple, Any]:
    """(frozen layer paths, learning-rate multipliers or None) from the transfer keys."""
    freezing = bool(c.freeze) or c.freeze_all_but_last >= 0
    scaling = bool(c.lr_multipliers) or c.head_lr_multiplier != 1.0
    if not (freezing or scaling):
        return (), None
    from .. import transfer

    frozen = ()
    if freezing:
        frozen = transfer.frozen_layers(
            model,
            c.freeze,
            all_but_last=None if c.freeze_all_but_last < 0 else c.freeze_all_but_last,
            input_shape=input_shape,
        )
        log.info("frozen layers: %s", ", ".join(frozen))
    multipliers = None
    if scaling:
        multipliers = transfer.lr_multipliers(
            model,
            c.lr_multipliers,
            head_multiplier=c.head_lr_multiplier,
            input_shape=input_shape,
        )
    return frozen, multipliers


# The purpose tag of the device augmentation's keys: fold_in(key(seed), tag), then the step.
_AUGMENT_TAG = 0x617567


def augmenting(train_step: Any, spec: Any, *, seed: int) -> Any:
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


def _floats(d: dict) -> dict:
    return {k: v for k, v in d.items() if k.startswith("eval_") and isinstance(v, float)}


class _attrs:
    """Attribute access over a plain dict (nested dicts too, model_kwargs excepted)."""

    def __init__(self, d: dict):
        for k, v in d.items():
            setattr(self, k, _attrs(v) if isinstance(v, dict) and k != "model_kwargs" else v)
