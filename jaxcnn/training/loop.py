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

from ..xla import compilation_cache
from . import finetune
from .checkpoint import CheckpointError, Checkpoints, WorkdirInUseError, WorkdirLock
from .config import ConfigError, TrainConfig, parse_config, save_or_compare
from .engine import Engine, build_engine
from .parallel import DataParallel, global_replicated, initialize_distributed
from .state import TrainState

log = logging.getLogger("jaxcnn.training")

# curves.png is redrawn after an evaluation at most this often (and always after the last):
# a redraw costs about 0.7 s of matplotlib, a quarter of the default job's training loop
# when it ran after each of its 8 evaluations.
PLOT_EVERY_S = 30.0


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


def train_and_evaluate(config: Any, workdir: str) -> dict[str, Any]:
    """Train `config.model` on `config.data`, evaluating and checkpointing into `workdir`.

    Args:
      config: a `TrainConfig`, or an `ml_collections.ConfigDict` / plain dict of its keys
        (`jaxcnn.training.config` documents every key).
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
    t0 = time.time()
    c = parse_config(config)  # every bad key and value, before anything is built
    folder = c.compilation_cache
    if folder == "off":
        return _locked_run(c, workdir, t0)
    with compilation_cache(folder or os.path.join(os.path.abspath(workdir), "compile_cache")):
        return _locked_run(c, workdir, t0)


def _locked_run(c: TrainConfig, workdir: str, t0: float) -> dict[str, Any]:
    if c.distributed:
        initialize_distributed()
    workdir = os.path.abspath(workdir)
    if jax.process_index() != 0:
        return _run(c, workdir, t0)
    os.makedirs(workdir, exist_ok=True)
    # One writer per workdir: taken before anything in it is read or written, held until
    # the last checkpoint is committed. Other processes of the same run share it.
    with WorkdirLock(workdir):
        return _run(c, workdir, t0)


def _run(c: TrainConfig, workdir: str, t0: float) -> dict[str, Any]:
    from .. import data as data_lib
    from .metrics import MetricWriter

    is_main = jax.process_index() == 0
    save_or_compare(c, workdir, write=is_main)
    datasets = data_lib.create_datasets(
        c.data, seed=c.seed, batch_size=c.batch_size, eval_batch_size=c.eval_batch_size
    )
    engine = build_engine(c, datasets)
    ckpts = Checkpoints(
        workdir, keep=c.keep_checkpoints, keep_best=c.keep_best, async_save=c.async_checkpointing
    )
    writer = MetricWriter(workdir, tensorboard=c.tensorboard, plot=c.plot, enabled=is_main)
    try:
        run = _Run(engine, datasets, ckpts, writer, is_main=is_main)
        result = run.train()
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
    result.update(wall_s=time.time() - t0)
    return result


class _Run:
    """One run's loop state: the training state, the data position, the step, the best
    evaluation so far, and the helpers that log, evaluate and save."""

    def __init__(self, engine: Engine, datasets: Any, ckpts: Checkpoints, writer: Any, *, is_main):
        from .metrics import Progress

        self.engine, self.par, self.config = engine, engine.par, engine.config
        self.datasets, self.ckpts, self.writer = datasets, ckpts, writer
        self.train_iter = iter(datasets.train)
        self.best: dict[str, Any] = {"value": None, "step": None}
        self.state, self.start = self._initial_state()
        # The engine keeps the state the run starts from, not a second (unused) copy of the
        # random initialisation on the devices.
        engine.state = self.state
        self.step = self.start
        self.data_state = self.train_iter.get_state()
        # Rows past the resumed step (all rows, starting fresh) are about to be logged again.
        writer.truncate_after(self.start)
        self.log = _TrainLog(engine, writer, start=self.start)
        self.progress = Progress(
            engine.total_steps, initial=self.start, enabled=self.config.progress and is_main
        )
        # The curves are redrawn at an evaluation PLOT_EVERY_S after the last drawing (or the
        # start), and at the end: a run shorter than that draws them once.
        self.t_plot = time.time()
        h, w, ch = engine.spec.image_shape
        self.run_info = {  # what `load_run` needs to rebuild the model without the config
            "model": self.config.model,
            "model_kwargs": dict(self.config.model_kwargs),
            "num_classes": engine.spec.num_classes,
            "image_shape": [h, w, ch],
            "mean": list(datasets.mean),
            "std": list(datasets.std),
            "dtype": self.config.dtype,
        }

    # ------------------------------------------------------------------ start
    def _initial_state(self) -> tuple[TrainState, int]:
        """The newest intact checkpoint's state (damaged newer ones are set aside, with a
        warning each); else `init_from`'s weights; else the random initialisation."""
        e, c = self.engine, self.config
        fresh = e.par.get_state(e.state)
        resumed = self.ckpts.resume(global_replicated(fresh.arrays()))
        if resumed is not None:
            start, arrays, extra = resumed
            self.train_iter.set_state(extra["data"])
            if e.plateau is not None:
                e.plateau.state = dict(extra["plateau"])
            self.best = dict(extra["best"])
            log.info("resumed from %s at step %d", self.ckpts.directory, start)
            return e.par.put_state(fresh.replace_arrays(jax.device_get(arrays))), start
        if not c.init_from:
            return e.state, 0
        # Only a run that starts fresh reads init_from: a resumed one restores its own state.
        variables, report = finetune.initialize_from(
            c.init_from,
            e.variables,
            model=c.model,
            mapping=c.init_mapping,
            model_kwargs=dict(c.model_kwargs),
            input_shape=e.spec.image_shape,
        )
        log.info(
            "init_from %s: copied %d layers; new: %s",
            report["source"],
            len(report["copied"]),
            ", ".join(report["new"]) or "none",
        )
        return e.start_from(variables), 0

    # ------------------------------------------------------------------- loop
    def train(self) -> dict[str, Any]:
        e, c = self.engine, self.config
        eval_every = e.steps_every(c.eval_every_epochs)
        ckpt_every = e.steps_every(c.checkpoint_every_epochs)
        result: dict[str, Any] = {"preempted": False}
        feed = _Feed(self.train_iter, self.par, depth=max(1, c.data.prefetch))
        if self.datasets.skipped:
            self.progress.write(f"skipped {len(self.datasets.skipped)} corrupt image files")
        with _Preemption(sync_every=c.log_every_steps) as preempt, self.progress:
            while self.step < e.total_steps:
                if preempt.reached(self.step):
                    self._stop_preempted()
                    result["preempted"] = True
                    break
                batch, self.data_state = feed.next(remaining=e.total_steps - self.step)
                self.state, metrics = e.train_step(self.state, batch)
                self.step += 1
                self.log.add(self.step, metrics)
                self.progress.update(1)
                last = self.step == e.total_steps
                is_eval = self.step % eval_every == 0 or last
                is_ckpt = self.step % ckpt_every == 0 or last
                if self.step % c.log_every_steps == 0 or is_eval or is_ckpt:
                    self.log.flush(self.step, self.state, self.ckpts, self.progress)
                is_best = False
                if is_eval:
                    ev, is_best = self._evaluate()
                    result.update(ev)
                    self.log.restart_clock()  # evaluation time is not training time
                if is_ckpt or is_best:
                    self._save(is_best=is_best)
            if not result["preempted"] and "eval_top1" not in result:
                # Resumed a finished run: report its final evaluation.
                result.update(evaluate(self.par, e.eval_step, self.state, self.datasets.eval))
        spe = e.spec.steps_per_epoch
        result.update(
            step=self.step, epoch=self.step / spe, train_images_per_s=self.log.images_per_s()
        )
        return result

    def _stop_preempted(self) -> None:
        """SIGTERM: save the step reached (unless just saved), let the saves commit, say so."""
        self.log.check_finite(self.ckpts)
        if self.step not in (self.ckpts.latest_step(), self.ckpts.last_saved):
            self._save()
        self.ckpts.wait()
        self.writer.plot()  # the curves may lag the metrics by up to PLOT_EVERY_S
        self.progress.write(f"SIGTERM: saved step {self.step}; rerun the command to resume")

    def _evaluate(self) -> tuple[dict[str, Any], bool]:
        """Evaluate, log, redraw the curves if due, track the best, step the plateau."""
        e, c = self.engine, self.config
        ev = evaluate(self.par, e.eval_step, self.state, self.datasets.eval)
        epoch = self.step / e.spec.steps_per_epoch
        self.writer.write(self.step, {"epoch": epoch, **_floats(ev)})
        if self.step == e.total_steps or time.time() - self.t_plot >= PLOT_EVERY_S:
            self.writer.plot()
            self.t_plot = time.time()
        value = ev.get(c.best_metric)
        is_best = value is not None and (self.best["value"] is None or value > self.best["value"])
        if is_best:
            self.best = {"value": value, "step": self.step}
        if e.plateau is not None:
            scale = e.plateau.update(ev[c.schedule.plateau_metric])
            self.state = self.state.replace(lr_scale=self.par.put_state(np.float32(scale)))
        return ev, is_best

    def _save(self, *, is_best: bool = False) -> None:
        """Checkpoint the current step, refusing to save non-finite values."""
        e = self.engine
        host_state = self.par.get_state(self.state)
        bad = _non_finite(self.par, host_state.arrays())
        if bad:
            self.ckpts.wait()
            raise NonFiniteLossError(
                f"non-finite values in the state at step {self.step} ({', '.join(bad[:3])}"
                + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                + "); stopped without saving them. "
                + _newest_checkpoint(self.ckpts)
            )
        extra = {
            "data": self.data_state,
            "plateau": None if e.plateau is None else e.plateau.state,
            "best": self.best,
            "epoch": self.step / e.spec.steps_per_epoch,
            "run": self.run_info,
        }
        self.ckpts.save(self.step, global_replicated(host_state.arrays()), extra, best=is_best)


class _Feed:
    """Training batches placed on the devices up to `depth` steps ahead of the step using
    them, each with the data iterator's state after it (what a checkpoint of that step saves)."""

    def __init__(self, train_iter: Any, par: DataParallel, *, depth: int):
        self.train_iter, self.par, self.depth = train_iter, par, depth
        self.queue: collections.deque = collections.deque()

    def next(self, *, remaining: int) -> tuple[dict[str, jax.Array], Any]:
        while len(self.queue) < self.depth and len(self.queue) < remaining:
            batch = next(self.train_iter)
            self.queue.append((self.par.put_batch(batch), self.train_iter.get_state()))
        return self.queue.popleft()


class _TrainLog:
    """Training metrics: kept on the device between rows, checked for NaN/Inf at each row,
    averaged into one metrics row (and the progress bar) every `log_every_steps`."""

    def __init__(self, engine: Engine, writer: Any, *, start: int):
        self.engine, self.writer, self.start = engine, writer, start
        self.pending: list[tuple[int, dict]] = []  # (step, device metrics) not yet logged
        self.rates: list[float] = []
        self.t_log = time.time()

    def add(self, step: int, metrics: dict[str, jax.Array]) -> None:
        self.pending.append((step, metrics))

    def restart_clock(self) -> None:
        self.t_log = time.time()

    def images_per_s(self) -> float:
        """The median training rate over the rows after the first (which includes compiling)."""
        return float(np.median(self.rates)) if self.rates else math.nan

    def check_finite(self, ckpts: Checkpoints) -> None:
        """Raise `NonFiniteLossError` at the first pending step whose loss is NaN/Inf."""
        bad = _first_non_finite(self.pending, self.engine.par)
        if bad is None:
            return
        ckpts.wait()
        lr = self.engine.learning_rate(bad - 1)
        raise NonFiniteLossError(
            f"non-finite training loss at step {bad} (lr {lr:.3g}); stopped. "
            + _newest_checkpoint(ckpts)
        )

    def flush(self, step: int, state: TrainState, ckpts: Checkpoints, progress: Any) -> None:
        self.check_finite(ckpts)
        e = self.engine
        row = _mean_rows([m for _, m in self.pending])
        now = time.time()
        ips = len(self.pending) * e.config.batch_size / (now - self.t_log)
        if step - len(self.pending) > self.start:  # the first interval includes compilation
            self.rates.append(ips)
        self.t_log = now
        lr = e.learning_rate(step - 1) * float(e.par.fetch(state.lr_scale))
        self.writer.write(
            step,
            {
                "epoch": step / e.spec.steps_per_epoch,
                "train_loss": row["loss"],
                "train_top1": row["top1"],
                "train_top5": row["top5"],
                "learning_rate": lr,
                "images_per_s": ips,
            },
        )
        progress.update(0, loss=row["loss"], acc=row["top1"], img_s=ips)
        self.pending = []


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


def _newest_checkpoint(ckpts: Checkpoints) -> str:
    last = ckpts.latest_step()
    if last is None:
        return "There is no checkpoint yet"
    return f"The newest checkpoint, step {last} in {ckpts.directory}, is finite"


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


def _floats(d: dict) -> dict:
    return {k: v for k, v in d.items() if k.startswith("eval_") and isinstance(v, float)}


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
