"""Checkpoints: one commit each, verified on resume, the last N plus the best; and the lock
that gives a workdir a single writer.

A checkpoint is a step directory ``checkpoints/<step>/`` holding

* ``state/``: the `TrainState` arrays (step, params, batch_stats, opt_state, rng, lr_scale),
  written by orbax;
* ``extra/``: JSON — the data iterator's position, the reduce-on-plateau tracker, the best
  metric so far and its step, what `load_run` needs to rebuild the model; everything the loop
  needs to continue as if never stopped;
* ``commit.json``: the commit record, written last: the step and every file's size and
  CRC-32.

How a save commits. Orbax writes the arrays and the JSON into a temporary directory and
renames it to ``checkpoints/<step>`` once complete (in a background thread when
asynchronous): that rename is the commit, so the model, the data position and the
best-tracking land together or not at all (the metrics log is cut back to the resumed step
on resume). Then the commit record seals the files (a temporary file, fsync'ed, renamed).
Only after that is the best checkpoint published: ``checkpoints/<step>`` is copied to a
temporary directory under ``best/``, renamed to ``best/<step>``, and the older best removed;
then checkpoints beyond the newest `keep` are removed. Whatever point of this sequence a
process is killed at, `Checkpoints.resume` brings the workdir back to a consistent state: the
newest intact checkpoint, and ``best/`` holding exactly the best step that checkpoint names.

Nothing a user saved is deleted to recover. A damaged step directory (a file truncated,
emptied, changed or missing; or a directory that is not a checkpoint) is renamed to
``<step>.damaged`` (``.damaged-2``, ... if taken) and resume falls back to the next older
one, saying so in one line. Only orbax's own unfinished temporary directories, and copies
this module was in the middle of making or removing, are deleted.

A save that fails (a full disk, a read-only directory) raises `CheckpointError` from the
next `save`, `wait` or `close`, naming the step, the reason and the last good checkpoint;
the checkpoints already committed are untouched.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import socket
import threading
import zlib
from typing import Any

import jax

log = logging.getLogger("jaxcnn.training")

COMMIT_FILE = "commit.json"
_FORMAT = 1
# Names of directories this module makes and may delete: copies in progress, and old
# checkpoints being removed (renamed first, so a half-deleted one never looks like a step).
_PARTIAL = ".partial-"
_REMOVING = ".removing-"
_ORBAX_TMP = ".orbax-checkpoint-tmp"
_ORBAX_COMPLETE = ("_CHECKPOINT_METADATA", "state", "extra")


class CheckpointError(RuntimeError):
    """A checkpoint could not be saved (or committed); the committed ones are intact."""


class WorkdirInUseError(RuntimeError):
    """Another live run holds the workdir's lock."""


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


# ----------------------------------------------------------------------- commit records
def _crc32(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(root: str) -> list[str]:
    """Every file under `root` (relative paths, sorted), the commit record excepted."""
    out = []
    for dirpath, _, names in os.walk(root):
        for name in names:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            if rel != COMMIT_FILE:
                out.append(rel)
    return sorted(out)


def _fsync_dir(path: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str, text: str) -> None:
    """Write `text` to `path` whole or not at all: a temporary file, fsync'ed, renamed."""
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(os.path.dirname(path))


def write_commit(path: str, step: int) -> None:
    """Write the commit record of the complete step directory `path`."""
    files = {}
    for rel in _files(path):
        full = os.path.join(path, rel)
        files[rel] = [os.path.getsize(full), _crc32(full)]
    record = {"format": _FORMAT, "step": int(step), "files": files}
    write_atomic(os.path.join(path, COMMIT_FILE), json.dumps(record, indent=1) + "\n")


def verify(path: str, step: int | None = None) -> str | None:
    """None if `path` is a complete checkpoint whose files match its record, else why not.

    A step directory without a commit record is accepted when orbax finished it (its
    ``_CHECKPOINT_METADATA`` is written before orbax's final rename): a checkpoint written
    before commit records existed, or one whose process died between orbax's rename and the
    record. Its files cannot be checked; `Checkpoints.resume` skips it if it fails to restore.
    """
    record_path = os.path.join(path, COMMIT_FILE)
    if not os.path.isfile(record_path):
        if _orbax_complete(path):
            return None
        return "no commit record (cut off while saving, or not a checkpoint)"
    try:
        with open(record_path) as f:
            record = json.load(f)
        files = record["files"]
        if step is not None and int(record["step"]) != step:
            return f"its commit record is for step {record['step']}"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable commit record ({type(e).__name__}: {e})"
    for rel, (size, crc) in sorted(files.items()):
        full = os.path.join(path, rel)
        if not os.path.isfile(full):
            return f"{rel} is missing"
        got = os.path.getsize(full)
        if got != size:
            return f"{rel} has {got} bytes, expected {size}"
        if _crc32(full) != crc:
            return f"{rel} does not match its checksum"
    return None


def _orbax_complete(path: str) -> bool:
    return all(os.path.exists(os.path.join(path, p)) for p in _ORBAX_COMPLETE)


def _recorded(path: str) -> bool:
    return os.path.isfile(os.path.join(path, COMMIT_FILE))


def _steps(directory: str) -> list[int]:
    if not os.path.isdir(directory):
        return []
    return sorted(int(p) for p in os.listdir(directory) if p.isdigit())


def _remove(path: str) -> None:
    """Delete a directory this module owns: renamed out of the step namespace first."""
    if not os.path.exists(path):
        return
    parent, name = os.path.split(path)
    doomed = os.path.join(parent, f"{_REMOVING}{name}-{os.getpid()}")
    os.rename(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _set_aside(path: str, suffix: str) -> str:
    """Rename `path` to ``path.<suffix>`` (``-2``, ``-3``, ... if taken); returns the new path."""
    target, n = f"{path}.{suffix}", 1
    while os.path.exists(target):
        n += 1
        target = f"{path}.{suffix}-{n}"
    os.rename(path, target)
    return target


# ------------------------------------------------------------------------ checkpoints
class Checkpoints:
    """The workdir's checkpoints (``checkpoints/`` and ``best/``).

    Args:
      workdir: the run directory.
      keep: how many of the most recent checkpoints to keep.
      keep_best: also keep the best checkpoint (the step the caller marks ``best=True``) in
        ``best/``.
      async_save: write in a background thread; errors surface at the next save/wait/close.
    """

    def __init__(
        self, workdir: str, *, keep: int = 3, keep_best: bool = True, async_save: bool = True
    ):
        if keep < 1:
            raise ValueError(f"keep_checkpoints must be >= 1; got {keep}")
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")
        self.best_directory = os.path.join(os.path.abspath(workdir), "best")
        self.keep, self.keep_best, self.async_save = keep, keep_best, async_save
        self.primary = jax.process_index() == 0
        self.last_saved: int | None = None  # the step of the newest save started here
        self._checkpointer = None
        self._thread: threading.Thread | None = None
        # A failed background save, surfaced by the next save/wait/close: (the error, its
        # step, what was being done).
        self._failure: tuple[BaseException, int, str] | None = None
        if self.primary:
            os.makedirs(self.directory, exist_ok=True)

    def _orbax(self):
        if self._checkpointer is None:
            ocp = _ocp()
            handler = ocp.CompositeCheckpointHandler()
            self._checkpointer = (
                ocp.AsyncCheckpointer(handler) if self.async_save else ocp.Checkpointer(handler)
            )
        return self._checkpointer

    # -- reading ------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        """The newest committed step (its files not re-read), or None."""
        for step in reversed(_steps(self.directory)):
            path = os.path.join(self.directory, str(step))
            if _recorded(path) or all(
                os.path.exists(os.path.join(path, p)) for p in _ORBAX_COMPLETE
            ):
                return step
        return None

    def restore(self, step: int, target: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(state arrays, extra) of checkpoint `step`, laid out like `target`.

        `target` is a state-arrays tree (e.g. of a freshly created state) whose shapes, dtypes
        and shardings the restored arrays take.
        """
        ocp = _ocp()
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
        restored = ocp.Checkpointer(ocp.CompositeCheckpointHandler()).restore(
            os.path.join(self.directory, str(step)),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract), extra=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["extra"]

    def resume(self, target: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, Any]] | None:
        """Restore the newest intact checkpoint: (step, state arrays, extra), or None.

        Newer step directories that fail verification (or restoring) are renamed to
        ``<step>.damaged`` with one warning line each, and the next older one is tried;
        unfinished temporary directories are deleted. Then ``best/`` is brought in line with
        the restored checkpoint's best-tracking (`reconcile_best`).
        """
        _barrier("jaxcnn_resume")  # every process lists the same directories
        self._clean_temporaries()
        for step in reversed(_steps(self.directory)):
            path = os.path.join(self.directory, str(step))
            reason = verify(path, step)
            if reason is None:
                try:
                    arrays, extra = self.restore(step, target)
                except Exception as e:
                    if _recorded(path):  # its files match their record: not damage on disk
                        raise CheckpointError(
                            f"checkpoint {path} is intact but cannot be restored into this "
                            f"run ({type(e).__name__}: {e}); was it written by another model "
                            "or another jaxcnn version? Use a new --workdir."
                        ) from e
                    reason = f"it does not restore ({type(e).__name__}: {e})"
                else:
                    self.reconcile_best(step, (extra.get("best") or {}).get("step"))
                    return step, arrays, extra
            self._skip(path, reason)
        self.reconcile_best(None, None)
        return None

    def _skip(self, path: str, reason: str) -> None:
        if self.primary:
            moved = _set_aside(path, "damaged")
            log.warning(
                "resume: skipped checkpoint %s: %s; kept it as %s",
                os.path.basename(path),
                reason,
                os.path.relpath(moved, os.path.dirname(self.directory)),
            )
        _barrier("jaxcnn_skip_" + os.path.basename(path))

    def _clean_temporaries(self) -> None:
        if not self.primary:
            return
        for directory in (self.directory, self.best_directory):
            if not os.path.isdir(directory):
                continue
            for name in os.listdir(directory):
                if _ORBAX_TMP in name or name.startswith((_PARTIAL, _REMOVING)):
                    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)

    def reconcile_best(self, step: int | None, best_step: int | None) -> None:
        """Make ``best/`` hold exactly `best_step`, as the checkpoint of `step` records.

        A kill between a checkpoint's commit and the publication of ``best/`` leaves ``best/``
        behind: it is published now from ``checkpoints/<best_step>``. A leftover older best
        (a kill before it was removed) is removed; any other step in ``best/`` (from steps
        the resumed run will retrain) is set aside as ``best/<s>.superseded``.
        """
        if not self.primary:
            return
        for s in _steps(self.best_directory):
            path = os.path.join(self.best_directory, str(s))
            if best_step is not None and s < best_step:
                _remove(path)
            elif s != best_step:
                _set_aside(path, "superseded")
        if best_step is None or not self.keep_best:
            return
        path = os.path.join(self.best_directory, str(best_step))
        if os.path.exists(path) and verify(path, best_step) is not None:
            _set_aside(path, "damaged")
        if not os.path.exists(path):
            self._publish_best(best_step)

    # -- writing ------------------------------------------------------------------------
    def save(
        self, step: int, state_arrays: dict[str, Any], extra: dict[str, Any], *, best: bool = False
    ) -> None:
        """Start saving checkpoint `step`; `best=True` also publishes it as ``best/``.

        Waits for the previous save first (raising its error, if any). The arrays are read
        before this returns (orbax copies device arrays to the host), so the caller may go on.

        Raises:
          CheckpointError: this save (when synchronous) or the previous one failed.
        """
        self.wait()
        ocp = _ocp()
        path = os.path.join(self.directory, str(step))
        if self.primary and os.path.exists(path):
            # A directory of this step that is not a verified checkpoint the caller skipped
            # (e.g. left by a run resumed from an older one): keep it, out of the way.
            _set_aside(path, "damaged")
        _barrier(f"jaxcnn_save_{step}")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state_arrays), extra=ocp.args.JsonSave(extra)
        )
        try:
            self._orbax().save(path, args=args)
        except Exception as e:
            self._fail(step, e)
        self.last_saved = step
        if self.async_save:
            self._thread = threading.Thread(
                target=self._finish, args=(step, best), name=f"jaxcnn-commit-{step}", daemon=True
            )
            self._thread.start()
        else:
            self._finish(step, best)
            self._raise()

    def _finish(self, step: int, best: bool) -> None:
        """Wait for orbax, then commit, publish the best and drop old checkpoints."""
        doing = "save the checkpoint"
        try:
            if self.async_save:
                checkpointer = self._orbax()
                assert isinstance(checkpointer, _ocp().AsyncCheckpointer)  # by async_save
                checkpointer.wait_until_finished()
            if self.primary:
                doing = "write the commit record of the checkpoint"
                write_commit(os.path.join(self.directory, str(step)), step)
                if best and self.keep_best:
                    doing = f"copy the checkpoint to {self.best_directory}"
                    self._publish_best(step)
                doing = (
                    f"remove older checkpoints (keep_checkpoints={self.keep}) after the checkpoint"
                )
                for old in _steps(self.directory)[: -self.keep]:
                    if old < step:
                        _remove(os.path.join(self.directory, str(old)))
        except BaseException as e:  # surfaced by the caller's next save/wait/close
            self._failure = (e, step, doing)

    def _publish_best(self, step: int) -> None:
        source = os.path.join(self.directory, str(step))
        if verify(source, step) is not None:
            log.warning("best/: checkpoint %d is not available to publish as the best", step)
            return
        os.makedirs(self.best_directory, exist_ok=True)
        tmp = os.path.join(self.best_directory, f"{_PARTIAL}{step}-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        _fsync_tree(tmp)
        final = os.path.join(self.best_directory, str(step))
        if os.path.exists(final):
            _remove(final)
        os.rename(tmp, final)
        _fsync_dir(self.best_directory)
        for old in _steps(self.best_directory):
            if old != step:
                _remove(os.path.join(self.best_directory, str(old)))

    def _fail(self, step: int, error: BaseException, doing: str = "save the checkpoint") -> None:
        last = self.latest_step()
        raise CheckpointError(
            f"could not {doing} of step {step} in {self.directory} "
            f"({type(error).__name__}: {error}); "
            + (
                f"the last good checkpoint is step {last}"
                if last is not None
                else "there is no earlier checkpoint"
            )
        ) from error

    def _raise(self) -> None:
        if self._failure is not None:
            error, step, doing = self._failure
            self._failure = None
            self._fail(step, error, doing)

    def wait(self) -> None:
        """Block until every started save is committed.

        Raises:
          CheckpointError: a save failed (the committed checkpoints are intact).
        """
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._raise()

    def close(self) -> None:
        """`wait`, then release orbax's resources; raises `CheckpointError` like `wait`."""
        try:
            self.wait()
        finally:
            if self._checkpointer is not None:
                with contextlib.suppress(Exception):
                    self._checkpointer.close()
                self._checkpointer = None


def _fsync_tree(root: str) -> None:
    for dirpath, _, names in os.walk(root):
        for name in names:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        _fsync_dir(dirpath)


def _barrier(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# ------------------------------------------------------------------------------ lock
class WorkdirLock:
    """An exclusive lock on a workdir, held by the one process that writes it.

    The lock is an advisory `flock` on ``<workdir>/lock``, which the kernel drops when the
    holder dies however it dies, so a lock left by a killed run is taken over (with a log
    line naming the run that is gone). The file records the holder's pid, host and start
    time, for the message another run gets. Where the file system has no `flock`, the record
    alone decides: a holder on this host that no longer runs is taken over; one on another
    host is refused.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(os.path.abspath(workdir), "lock")
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        """Take the lock.

        Raises:
          WorkdirInUseError: another live run holds it (the message names its pid and host).
        """
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            holder = _read_holder(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise WorkdirInUseError(self._in_use(holder)) from None
            except OSError:  # no flock on this file system: judge by the record alone
                if holder and _alive(holder):
                    raise WorkdirInUseError(self._in_use(holder)) from None
            holder = _read_holder(fd)  # re-read: the holder may have finished meanwhile
            if holder and (holder.get("pid"), holder.get("host")) != (
                os.getpid(),
                socket.gethostname(),
            ):
                log.warning(
                    "took over the lock of %s: a run (pid %s on %s, started %s) that ended "
                    "without releasing it",
                    os.path.dirname(self.path),
                    holder.get("pid"),
                    holder.get("host"),
                    holder.get("started"),
                )
            me = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _in_use(self, holder: dict | None) -> str:
        who = "another process"
        if holder:
            who = f"pid {holder.get('pid')} on host {holder.get('host')}"
            who += f" (started {holder.get('started')})"
        return (
            f"workdir {os.path.dirname(self.path)} is in use by {who}: one run writes a "
            "workdir at a time. Wait for that run to end (or stop it), or use another --workdir."
        )

    def release(self) -> None:
        """Clear the record and drop the lock (the file stays: deleting it would race)."""
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkdirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 4096, 0).decode()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _alive(holder: dict) -> bool:
    if holder.get("host") != socket.gethostname():
        return True  # cannot tell: assume it runs
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, KeyError, TypeError, ValueError):
        return True
    return True


# ------------------------------------------------------------------------- load_run
def load_run(workdir: str, *, step: int | None = None, best: bool = False):
    """The trained model of a workdir, ready for inference, visualisation or transfer.

    Args:
      workdir: a directory written by `train_and_evaluate`.
      step: which checkpoint (default: the newest verified one, or the best one with
        `best=True`).
      best: read ``best/`` (best validation metric) instead of ``checkpoints/``.

    Returns:
      (model, variables, info): the linen Module (float32 compute), its
      ``{"params", "batch_stats"?}`` as arrays on the default device, and a dict with "model",
      "model_kwargs", "num_classes", "image_shape" (H, W, C), "mean", "std" (the input
      normalisation the model was trained with), "step" and "epoch".

    Raises:
      FileNotFoundError: no checkpoint in the workdir.
      ValueError: `step` is not among the checkpoints, or it fails verification.
    """
    from .. import models

    ocp = _ocp()
    root = os.path.join(os.path.abspath(workdir), "best" if best else "checkpoints")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"no checkpoints in {workdir} (looked for {root})")
    steps = _steps(root)
    if not steps:
        raise FileNotFoundError(f"no complete checkpoint in {root}")
    if step is None:
        skipped = []
        for s in reversed(steps):
            reason = verify(os.path.join(root, str(s)), s)
            if reason is None:
                step = s
                break
            skipped.append(f"{s} ({reason})")
        if step is None:
            raise FileNotFoundError(f"no intact checkpoint in {root}: {'; '.join(skipped)}")
        if skipped:
            log.warning("load_run: skipped checkpoints %s", "; ".join(skipped))
    elif step not in steps:
        raise ValueError(f"no checkpoint for step {step} in {root}; there are {steps}")
    else:
        reason = verify(os.path.join(root, str(step)), step)
        if reason is not None:
            raise ValueError(f"checkpoint {step} in {root} is damaged: {reason}")
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
