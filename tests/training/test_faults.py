"""Fault injection: a trained model survives kills, full disks, damaged files and rival runs.

Every run here is the short config of `fault_run.py` (LeNet-5 on the digits, 40 steps, an
evaluation and a checkpoint every 4 steps, the newest 2 kept, a metrics row every 3 steps),
in a subprocess where a process has to die. The reference is the same run never
interrupted, keeping all ten checkpoints. After any fault, the newest checkpoint must equal
the reference's of the same step bit for bit, the rerun must end on the reference's final
state bit for bit, ``best/`` must hold the reference's best step, and ``metrics.jsonl``
must hold each row once, at the reference's steps, with the reference's evaluations.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.training import (
    NonFiniteLossError,
    WorkdirInUseError,
    train_and_evaluate,
)
from jaxcnn.training.checkpoint import WorkdirLock, verify

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("fault_run.py")
STEPS = 40
sys.path.insert(0, str(RUNNER.parent))
import fault_run  # noqa: E402  (the runner's config, for the in-process runs)


def env():
    e = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    e.pop("XLA_FLAGS", None)
    return e


def start(workdir, cache, fault=None, **overrides):
    overrides = {"compilation_cache": str(cache), **overrides}
    args = [sys.executable, str(RUNNER), str(workdir), json.dumps(overrides)]
    if fault:
        args.append(json.dumps(fault))
    return subprocess.Popen(
        args, cwd=ROOT, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def run(workdir, cache, fault=None, **overrides):
    proc = start(workdir, cache, fault, **overrides)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def state_arrays(step_dir) -> dict:
    """The `state` item of a checkpoint directory, as numpy."""
    import orbax.checkpoint as ocp

    checkpointer = ocp.StandardCheckpointer()
    path = Path(step_dir) / "state"
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    return jax.tree.map(np.asarray, checkpointer.restore(path, target))


def same(a: dict, b: dict) -> bool:
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    if [p for p, _ in la] != [p for p, _ in lb]:
        return False
    return all(
        x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)
        for (_, x), (_, y) in zip(la, lb, strict=True)
    )


def steps_in(directory) -> list[int]:
    d = Path(directory)
    return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else []


def newest_intact(workdir) -> int | None:
    for s in reversed(steps_in(Path(workdir) / "checkpoints")):
        if verify(str(Path(workdir) / "checkpoints" / str(s)), s) is None:
            return s
    return None


def rows(workdir) -> list[dict]:
    path = Path(workdir) / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def row_keys(rs) -> list[tuple[int, bool]]:
    return [(r["step"], "eval_top1" in r) for r in rs]


def evals(rs) -> list[tuple]:
    return [(r["step"], r["eval_loss"], r["eval_top1"]) for r in rs if "eval_top1" in r]


class Reference:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.checkpoints = {
            s: state_arrays(workdir / "checkpoints" / str(s))
            for s in steps_in(workdir / "checkpoints")
        }
        (self.best,) = steps_in(workdir / "best")
        self.rows = rows(workdir)
        self.final = self.checkpoints[STEPS]

    def check_finished(self, workdir) -> list[str]:
        """What differs between a finished workdir and the reference (empty: nothing)."""
        problems = []
        final = newest_intact(workdir)
        if final != STEPS:
            problems.append(f"newest intact checkpoint {final}, not {STEPS}")
        elif not same(state_arrays(Path(workdir) / "checkpoints" / str(STEPS)), self.final):
            problems.append("final state differs")
        best = steps_in(Path(workdir) / "best")
        if best != [self.best]:
            problems.append(f"best/ holds {best}, not [{self.best}]")
        elif not same(
            state_arrays(Path(workdir) / "best" / str(self.best)), self.checkpoints[self.best]
        ):
            problems.append("best/ state differs")
        problems += self.check_metrics(workdir, final=True)
        return problems

    def check_metrics(self, workdir, final=False) -> list[str]:
        keys = row_keys(rows(workdir))
        if len(keys) != len(set(keys)):
            return [f"metrics.jsonl repeats rows: {sorted(k for k in keys if keys.count(k) > 1)}"]
        want = row_keys(self.rows)
        if final and keys != want:
            return [f"metrics.jsonl rows at {keys}, expected {want}"]
        if final and evals(rows(workdir)) != evals(self.rows):
            return ["evaluations differ from the reference"]
        return []

    def check_killed(self, workdir) -> list[str]:
        """A killed run's workdir: its newest intact checkpoint is the reference's."""
        s = newest_intact(workdir)
        problems = self.check_metrics(workdir)
        if s is not None and not same(
            state_arrays(Path(workdir) / "checkpoints" / str(s)), self.checkpoints[s]
        ):
            problems.append(f"checkpoint {s} differs from the reference's")
        return problems


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One persistent compilation cache for the module's runs: they compile once."""
    return tmp_path_factory.mktemp("compile_cache")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache):
    wd = tmp_path_factory.mktemp("reference")
    rc, _, err = run(wd, cache, keep_checkpoints=100)
    assert rc == 0, err[-3000:]
    ref = Reference(wd)
    assert sorted(ref.checkpoints) == list(range(4, STEPS + 1, 4))
    return ref


def finish(workdir, cache, reference):
    rc, out, err = run(workdir, cache)
    assert rc == 0, err[-3000:]
    assert out.strip().splitlines()[-1].startswith("test accuracy:")
    assert reference.check_finished(workdir) == []
    return err


# ---------------------------------------------------------------------- random kills
KILLS = int(os.environ.get("JAXCNN_FAULT_KILLS", "20"))


@pytest.mark.slow
def test_random_kills_resume_bitwise(tmp_path, cache, reference):
    """SIGKILLs at random moments: at the k-th file operation after training starts (inside
    orbax's writes, the commit record, the copy to best/, the removal of old checkpoints),
    at a random step between checkpoints, and after a random delay from outside. After each,
    the newest intact checkpoint is the reference's; each chain of reruns ends bitwise on
    the reference."""
    rng = np.random.default_rng(int(os.environ.get("JAXCNN_FAULT_SEED", "0")))
    counts = {"trials": 0, "killed": 0, "identical": 0, "recovered": 0, "failed": 0}
    failures = []
    chain = 0
    workdir = tmp_path / f"chain{chain}"
    while counts["killed"] < KILLS:
        kind = rng.choice(["file_op", "step", "timer"], p=[0.6, 0.25, 0.15])
        fault = None
        if kind == "file_op":
            fault = {
                "kill_at_file_op": int(rng.integers(1, 330)),
                "after": bool(rng.random() < 0.5),
            }
        elif kind == "step":
            fault = {"signal_at_step": int(rng.integers(1, STEPS)), "signal": "SIGKILL"}
        proc = start(workdir, cache, fault)
        if kind == "timer":
            time.sleep(float(rng.uniform(1.0, 6.0)))
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
        counts["trials"] += 1
        if proc.returncode in (-signal.SIGKILL, 0):
            killed = proc.returncode == -signal.SIGKILL
            counts["killed"] += killed
            check = reference.check_killed if killed else reference.check_finished
            problems = check(workdir)
            if problems:
                failures.append((chain, fault, problems))
            counts["failed" if problems else "identical" if killed else "recovered"] += 1
            if not killed:  # the fault came after the end: this chain is done
                chain += 1
                workdir = tmp_path / f"chain{chain}"
        else:
            failures.append((chain, fault, [f"exit {proc.returncode}: {err[-2000:]}"]))
            counts["failed"] += 1
    if counts["killed"]:  # the last chain, run to its end
        rc, _, err = run(workdir, cache)
        problems = reference.check_finished(workdir) if rc == 0 else [err[-2000:]]
        counts["recovered" if not problems else "failed"] += 1
        if problems:
            failures.append((chain, None, problems))
    print("fault injection:", json.dumps(counts))
    assert not failures, failures
    assert counts["killed"] >= KILLS


# ------------------------------------------------------------ targeted kills and stops
@pytest.mark.slow
@pytest.mark.parametrize(
    "fault",
    [
        {"kill_in": "_publish_best", "min_step": 8},  # a new best committed, not published
        {"kill_in": "_finish", "min_step": 20},  # orbax still writing 20
        {"signal_at_step": 2, "signal": "SIGKILL"},  # rows logged, no checkpoint yet
        {"signal_at_step": 7, "signal": "SIGKILL"},  # rows past the newest checkpoint
    ],
    ids=["before-best", "mid-write", "before-first-checkpoint", "between-checkpoints"],
)
def test_targeted_kill_then_resume(tmp_path, cache, reference, fault):
    if fault.get("kill_in") == "_publish_best":  # the reference improves after step 8
        assert [s for s, *_ in evals(reference.rows) if s > 8 and s == reference.best]
    rc, _, err = run(tmp_path, cache, fault)
    assert rc == -signal.SIGKILL, err[-2000:]
    assert reference.check_killed(tmp_path) == []
    err = finish(tmp_path, cache, reference)
    assert "took over the lock" in err


@pytest.mark.slow
def test_sigterm_says_so_and_exits_75(tmp_path, cache, reference):
    rc, out, err = run(tmp_path, cache, {"signal_at_step": 14, "signal": "SIGTERM"})
    assert rc == 75, err[-2000:]
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM at step 15, checkpoint saved"), out
    assert newest_intact(tmp_path) == 15
    finish(tmp_path, cache, reference)


# ----------------------------------------------------------------------------- disks
@pytest.mark.slow
@pytest.mark.parametrize("at", [STEPS, 20])
def test_full_disk_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, cache, reference, at):
    """Files cannot grow past 100 kB from the save of step `at` on (the state's array files
    are 230 kB): that save fails. The run must fail, loudly, not report a result."""
    rc, out, err = run(tmp_path, cache, {"file_size_limit_at_step": at, "bytes": 100_000})
    assert rc == 1, err[-2000:]
    assert "accuracy" not in out
    assert f"FATAL CheckpointError: could not save the checkpoint of step {at}" in err
    assert f"the last good checkpoint is step {at - 4}" in err
    assert newest_intact(tmp_path) == at - 4
    assert reference.check_killed(tmp_path) == []
    finish(tmp_path, cache, reference)


# ------------------------------------------------------------------- damaged files
def _finished_copy(tmp_path, reference) -> Path:
    wd = tmp_path / "run"
    shutil.copytree(reference.workdir, wd)
    for s in steps_in(wd / "checkpoints")[:-3]:  # as a keep_checkpoints=3 run would leave it
        shutil.rmtree(wd / "checkpoints" / str(s))
    return wd


def _data_file(step_dir: Path) -> Path:
    return max((step_dir / "state").rglob("d/*"), key=lambda p: p.stat().st_size)


DAMAGE = {
    "truncated": lambda d: _data_file(d).write_bytes(_data_file(d).read_bytes()[:1000]),
    "emptied": lambda d: _data_file(d).write_bytes(b""),
    "deleted": lambda d: _data_file(d).unlink(),
    "flipped": lambda d: _flip(_data_file(d)),
    "no-record-no-metadata": lambda d: [
        (d / "commit.json").unlink(),
        (d / "_CHECKPOINT_METADATA").unlink(),
    ],
    "record-emptied": lambda d: (d / "commit.json").write_text(""),
}


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
@pytest.mark.slow
def test_damaged_newest_checkpoint_falls_back(tmp_path, reference, damage, caplog):
    """The newest checkpoint damaged: resume says which one it skipped and why, in one line,
    keeps it aside, and continues from the one before, ending bitwise on the reference."""
    wd = _finished_copy(tmp_path, reference)
    DAMAGE[damage](wd / "checkpoints" / str(STEPS))
    with caplog.at_level(logging.WARNING, logger="jaxcnn.training"):
        res = train_and_evaluate(fault_run.config({"compilation_cache": "off"}), wd)
    assert res["step"] == STEPS
    skipped = [r.getMessage() for r in caplog.records if "skipped checkpoint" in r.getMessage()]
    assert len(skipped) == 1 and skipped[0].startswith(f"resume: skipped checkpoint {STEPS}: ")
    assert "\n" not in skipped[0]
    assert (wd / "checkpoints" / f"{STEPS}.damaged").is_dir()  # kept, not deleted
    assert reference.check_finished(wd) == []


def test_stray_directory_is_set_aside(tmp_path, reference, caplog):
    wd = _finished_copy(tmp_path, reference)
    (wd / "checkpoints" / "999").mkdir()
    (wd / "checkpoints" / "999" / "notes.txt").write_text("mine")
    with caplog.at_level(logging.WARNING, logger="jaxcnn.training"):
        res = train_and_evaluate(fault_run.config({"compilation_cache": "off"}), wd)
    assert res["step"] == STEPS and res["eval_top1"] == reference.rows[-1]["eval_top1"]
    assert any("skipped checkpoint 999: no commit record" in r.getMessage() for r in caplog.records)
    assert (wd / "checkpoints" / "999.damaged" / "notes.txt").read_text() == "mine"
    assert reference.check_finished(wd) == []


@pytest.mark.slow
def test_damaged_best_is_republished(tmp_path, reference):
    wd = _finished_copy(tmp_path, reference)
    shutil.rmtree(wd / "checkpoints" / str(STEPS))  # resume from 36, which names best 36
    _data_file(wd / "best" / str(reference.best)).write_bytes(b"")
    train_and_evaluate(fault_run.config({"compilation_cache": "off"}), wd)
    assert reference.check_finished(wd) == []
    assert (wd / "best" / f"{reference.best}.damaged").is_dir()


@pytest.mark.slow
def test_falling_back_past_the_best_sets_the_newer_best_aside(tmp_path, reference):
    """The two newest checkpoints damaged: resume from the third, whose best-tracking names
    an older best; best/ of the step to be retrained is kept aside, then published again."""
    wd = _finished_copy(tmp_path, reference)
    for s in (STEPS, STEPS - 4):
        DAMAGE["emptied"](wd / "checkpoints" / str(s))
    assert reference.best == STEPS - 4  # what this test is about: best/ newer than the resume
    train_and_evaluate(fault_run.config({"compilation_cache": "off"}), wd)
    assert (wd / "best" / f"{reference.best}.superseded").is_dir()
    assert reference.check_finished(wd) == []


# ------------------------------------------------------------------------ NaN guard
@pytest.mark.slow
def test_non_finite_parameters_are_never_checkpointed(tmp_path, monkeypatch):
    """The loss at a step is finite but the update it made is not (as at a learning rate of
    1e6): the save of that step is refused, and the error names the newest checkpoint,
    which is finite."""
    import jax.numpy as jnp

    from jaxcnn.training import steps

    original = steps.train_step

    def poisoned(*args, **kwargs):
        new_state, metrics = original(*args, **kwargs)
        scale = jnp.where(new_state.step == 12, jnp.inf, 1.0)  # the update of step 12
        return new_state.replace(
            params=jax.tree.map(lambda p: scale * p, new_state.params)
        ), metrics

    monkeypatch.setattr(steps, "train_step", poisoned)
    cfg = fault_run.config({"compilation_cache": "off"})
    with pytest.raises(NonFiniteLossError, match=r"non-finite values in the state at step 12") as e:
        train_and_evaluate(cfg, tmp_path)
    assert "params/" in str(e.value)
    assert "The newest checkpoint, step 8 in" in str(e.value)
    assert newest_intact(tmp_path) == 8
    arrays = state_arrays(tmp_path / "checkpoints" / "8")
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(arrays))


# ------------------------------------------------------------------------- the lock
def test_a_locked_workdir_is_refused_untouched(tmp_path):
    held = WorkdirLock(str(tmp_path)).acquire()
    try:
        with pytest.raises(WorkdirInUseError, match=rf"in use by pid {os.getpid()} on host"):
            train_and_evaluate(fault_run.config({"compilation_cache": "off"}), tmp_path)
    finally:
        held.release()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lock"]


@pytest.mark.slow
def test_a_stale_lock_is_taken_over(tmp_path, caplog):
    (tmp_path / "lock").write_text(
        json.dumps({"pid": 2**22 + 1, "host": "elsewhere", "started": "2026-01-01T00:00:00"})
    )
    cfg = fault_run.config({"compilation_cache": "off", "num_steps": 4})
    with caplog.at_level(logging.WARNING, logger="jaxcnn.training"):
        res = train_and_evaluate(cfg, tmp_path)
    assert res["step"] == 4
    assert any(
        "took over the lock" in r.getMessage() and "elsewhere" in r.getMessage()
        for r in caplog.records
    )
    assert (tmp_path / "lock").read_text() == ""  # released at the end


@pytest.mark.slow
def test_a_second_run_is_refused_while_the_first_lives(tmp_path, cache, reference):
    first = start(tmp_path, cache, {"signal_at_step": 9, "signal": "SIGSTOP"})
    try:
        deadline = time.time() + 120
        while not any(r["step"] >= 9 for r in rows(tmp_path)):
            assert first.poll() is None and time.time() < deadline, first.stderr.read()[-2000:]
            time.sleep(0.05)
        before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
        rc, _, err = run(tmp_path, cache)
        assert rc == 1
        assert f"FATAL WorkdirInUseError: workdir {tmp_path} is in use by pid {first.pid}" in err
        assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before
    finally:
        first.kill()
        first.communicate(timeout=60)
    finish(tmp_path, cache, reference)


@pytest.mark.slow
def test_two_runs_started_together(tmp_path, cache, reference):
    procs = [start(tmp_path, cache) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    # Either the second waited for nothing (refused while the first held the lock), or it
    # came after the first had finished and resumed a finished run.
    assert codes in ([0, 1], [0, 0]), [err[-1500:] for _, _, err in results]
    for rc, _, err in results:
        if rc == 1:
            assert "FATAL WorkdirInUseError" in err
    assert reference.check_finished(tmp_path) == []
