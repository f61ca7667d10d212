"""One training run with an injected fault, for tests/training/test_faults.py.

    python tests/training/fault_run.py WORKDIR OVERRIDES_JSON [FAULT_JSON]

Runs `train_and_evaluate(small fault-test config + OVERRIDES, WORKDIR)` the way
`python -m train` does (same exit codes and last stdout line), after arranging FAULT:

* ``{"kill_at_file_op": k, "after": bool}``: SIGKILL this process at the k-th file-system
  operation (rename, replace, fsync, copytree, rmtree, unlink, open for writing) made after
  training starts (the first checkpoint save), before or after it is carried out. The
  background commit thread counts too, so kills land inside orbax's writes, the commit
  record, the copy to ``best/`` and the removal of old checkpoints.
* ``{"kill_in": name, "min_step": s}``: SIGKILL on the first entry into
  ``Checkpoints.<name>(step, ...)`` with step >= s (e.g. "_publish_best": that checkpoint
  is committed, not yet published as the best).
* ``{"signal_at_step": s, "signal": "SIGTERM" | "SIGKILL" | "SIGSTOP"}``: send the signal
  to this process right after the first metrics row at or past step s is written (between
  checkpoints, or before the first one); SIGSTOP holds the run, alive, with its lock.
* ``{"file_size_limit_at_step": s, "bytes": n}``: from the save of step s on, files may not
  grow beyond n bytes (RLIMIT_FSIZE, as a full disk would refuse the writes).
"""

from __future__ import annotations

import builtins
import json
import os
import resource
import shutil
import signal
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def config(overrides: dict):
    from jaxcnn.training import default_config

    c = default_config()
    c.batch_size = 64
    c.eval_batch_size = 120
    c.num_steps = 40
    c.data.random_crop_padding = 2
    c.optimizer.learning_rate = 0.05
    c.eval_every_epochs = 4 / 22  # 22 steps an epoch: evaluate and save every 4 steps
    c.checkpoint_every_epochs = 4 / 22
    c.keep_checkpoints = 2
    c.log_every_steps = 3
    c.progress = False
    c.tensorboard = False
    c.plot = False
    from tests.helpers import set_keys

    return set_keys(c, overrides)


def kill_at_file_op(k: int, after: bool) -> None:
    """Patch the file operations to count calls once armed and SIGKILL at the k-th."""
    lock = threading.Lock()
    state = {"armed": False, "count": 0}

    def tick():
        with lock:
            if not state["armed"]:
                return False
            state["count"] += 1
            return state["count"] == k

    def wrap(module, name):
        original = getattr(module, name)

        def patched(*args, **kwargs):
            hit = tick()
            if hit and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                return original(*args, **kwargs)
            finally:  # an operation that raised (and is caught by its caller) counts too
                if hit:
                    os.kill(os.getpid(), signal.SIGKILL)

        setattr(module, name, patched)

    for module, name in [
        (os, "rename"),
        (os, "replace"),
        (os, "fsync"),
        (os, "unlink"),
        (os, "remove"),
        (shutil, "copytree"),
        (shutil, "rmtree"),
    ]:
        wrap(module, name)
    original_open = builtins.open

    def counting_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            hit = tick()
            if hit and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                return original_open(file, mode, *args, **kwargs)
            finally:
                if hit:
                    os.kill(os.getpid(), signal.SIGKILL)
        return original_open(file, mode, *args, **kwargs)

    builtins.open = counting_open
    arm_on_first_save(lambda ckpts, step: state.update(armed=True))


def arm_on_first_save(callback) -> None:
    """Call `callback(checkpoints, step)` at the start of every checkpoint save."""
    from jaxcnn.training import checkpoint

    original = checkpoint.Checkpoints.save

    def save(self, step, *args, **kwargs):
        callback(self, step)
        return original(self, step, *args, **kwargs)

    checkpoint.Checkpoints.save = save


def main() -> int:
    workdir, overrides = sys.argv[1], json.loads(sys.argv[2])
    fault = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    if "kill_at_file_op" in fault:
        kill_at_file_op(int(fault["kill_at_file_op"]), bool(fault.get("after")))
    if "file_size_limit_at_step" in fault:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write then fails with EFBIG

        def limit(ckpts, step):
            if step >= fault["file_size_limit_at_step"]:
                ckpts.wait()  # the saves before this one complete normally
                n = int(fault["bytes"])
                resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))

        arm_on_first_save(limit)
    if "signal_at_step" in fault:
        from jaxcnn.training import metrics

        original_write = metrics.MetricWriter.write
        sig = getattr(signal, fault["signal"])

        def write(self, step, values):
            original_write(self, step, values)
            if step >= fault["signal_at_step"] and not write.sent:
                write.sent = True
                os.kill(os.getpid(), sig)

        write.sent = False
        metrics.MetricWriter.write = write
    if "kill_in" in fault:
        from jaxcnn.training import checkpoint

        original_method = getattr(checkpoint.Checkpoints, fault["kill_in"])

        def method(self, step, *args, **kwargs):
            if step >= fault["min_step"]:
                os.kill(os.getpid(), signal.SIGKILL)
            return original_method(self, step, *args, **kwargs)

        setattr(checkpoint.Checkpoints, fault["kill_in"], method)

    from jaxcnn.training import (
        CheckpointError,
        NonFiniteLossError,
        WorkdirInUseError,
        train_and_evaluate,
    )
    from train.__main__ import PREEMPTED_EXIT_CODE, format_result

    try:
        result = train_and_evaluate(config(overrides), workdir)
    except (CheckpointError, WorkdirInUseError, NonFiniteLossError) as e:
        sys.stderr.write(f"FATAL {type(e).__name__}: {e}\n")
        return 1
    print(format_result(result), flush=True)
    return PREEMPTED_EXIT_CODE if result.get("preempted") else 0


if __name__ == "__main__":
    sys.exit(main())
