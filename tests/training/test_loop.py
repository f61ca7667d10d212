"""train_and_evaluate end to end: outputs, exact resume after SIGTERM, the NaN
guard, a refused config change, TFDS mock data, and two processes through jax.distributed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxcnn.data import digits
from jaxcnn.training import NonFiniteLossError, default_config, load_run, train_and_evaluate
from jaxcnn.training.checkpoint import Checkpoints
from tests.helpers import set_keys

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass
class _StepOnly:
    """The one field of a TrainState that the augmentation wrapper reads."""

    step: jax.Array


def small_config(**overrides):
    """LeNet-5 on the digits, short: 3 epochs of batch 64 (66 steps)."""
    c = default_config()
    c.model = "lenet5"
    c.batch_size = 64
    c.eval_batch_size = 120
    c.num_epochs = 3.0
    c.data.random_crop_padding = 2
    c.optimizer.learning_rate = 0.05
    c.eval_every_epochs = 1.0
    c.checkpoint_every_epochs = 1.0
    c.log_every_steps = 11
    c.progress = False
    return set_keys(c, overrides)


def final_arrays(workdir) -> dict:
    """The newest checkpoint's arrays, as numpy (restored onto this process's first device,
    whatever topology wrote them)."""
    import orbax.checkpoint as ocp

    ck = Checkpoints(str(workdir), async_save=False)
    path = Path(ck.directory) / str(ck.latest_step()) / "state"
    ck.close()
    checkpointer = ocp.StandardCheckpointer()
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    meta = checkpointer.metadata(path)
    meta = getattr(meta, "item_metadata", meta)
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    return jax.tree.map(np.asarray, checkpointer.restore(path, target))


def assert_bitwise_equal(a: dict, b: dict):
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape, path
        assert np.array_equal(x, y), f"{jax.tree_util.keystr(path)} differs"


@pytest.mark.slow
def test_run_writes_everything(tmp_path):
    res = train_and_evaluate(small_config(), tmp_path)
    assert res["step"] == 66 and not res["preempted"]
    assert 0.5 < res["eval_top1"] <= 1.0 and res["eval_count"] == 359
    assert res["eval_correct"] == round(res["eval_top1"] * 359)
    for name in ("config.json", "metrics.jsonl", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tensorboard").iterdir())
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [22, 44, 66]
    assert len(list((tmp_path / "best").iterdir())) == 1
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval_top1" in r]
    assert [r["step"] for r in evals] == [22, 44, 66]
    assert evals[-1]["eval_top1"] == pytest.approx(res["eval_top1"])
    assert all("train_loss" in r for r in rows if "eval_top1" not in r)
    # load_run rebuilds the model; on the test images it scores what the run reported.
    model, variables, info = load_run(tmp_path)
    assert info["step"] == 66 and info["num_classes"] == 10
    test = digits("test")
    x = np.stack([test[i]["image"] for i in range(len(test))]).astype(np.float32) / 255
    x = (x - np.float32(info["mean"][0])) / np.float32(info["std"][0])
    labels = np.asarray([test[i]["label"] for i in range(len(test))])
    pred = np.argmax(model.apply(variables, x, train=False), -1)
    assert int(np.sum(pred == labels)) == res["eval_correct"]
    # Re-running the finished run trains nothing and reports the same evaluation.
    again = train_and_evaluate(small_config(), tmp_path)
    assert again["step"] == 66 and again["eval_top1"] == res["eval_top1"]


def test_device_augmentation_is_the_train_steps_first_act():
    """With data.augment_on="device", the step the loop compiles augments the uint8 batch
    with the key of (seed, step) before anything else, so a resumed run draws the same."""
    import jax.numpy as jnp

    from jaxcnn.data import device_augment
    from jaxcnn.training import engine

    spec = device_augment.AugmentSpec(
        image_size=32, input_hw=(32, 32), source_channels=1, channels=1, mean=(0.3,),
        std=(0.2,), random_crop_padding=2, random_rotation=15.0, random_scale=0.15,
    )  # fmt: skip

    def inner(state, batch, rng, *, axis_name=None):
        return state, {"image": batch["image"]}  # what the training step would see

    step = engine.augmenting(inner, spec, seed=7)
    images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 1), dtype=np.uint8)
    seen = jax.jit(lambda t, b: step(_StepOnly(step=t), b, None)[1]["image"])(
        jnp.asarray(5, jnp.int32), {"image": images, "label": np.arange(8)}
    )
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(7), engine._AUGMENT_TAG), 5)
    want = device_augment.augment_batch(images, key, spec)
    # jit and eager fuse differently: 1e-4 is 0.005 of one uint8 step after normalisation.
    np.testing.assert_allclose(np.asarray(seen), np.asarray(want), rtol=0, atol=1e-4)
    other = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(7), engine._AUGMENT_TAG), 6)
    assert not np.allclose(np.asarray(seen), device_augment.augment_batch(images, other, spec))


@pytest.mark.slow
def test_host_augmentation_still_trains(tmp_path):
    res = train_and_evaluate(small_config(num_epochs=1.0, **{"data.augment_on": "host"}), tmp_path)
    assert res["step"] == 22 and res["eval_top1"] > 0.5


def test_changed_config_is_refused(tmp_path):
    train_and_evaluate(small_config(num_epochs=1.0), tmp_path)
    before = (tmp_path / "config.json").read_text()
    with pytest.raises(ValueError, match=r"optimizer.learning_rate: 0.05 -> 0.1"):
        train_and_evaluate(
            small_config(num_epochs=1.0, **{"optimizer.learning_rate": 0.1}), tmp_path
        )
    assert (tmp_path / "config.json").read_text() == before


@pytest.mark.slow
def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    # The learning rate warms up to an absurd value: the loss diverges after a few epochs.
    cfg = small_config(
        num_epochs=6.0,
        **{
            "optimizer.learning_rate": 1e5,
            "schedule.warmup_epochs": 5.0,
            "schedule.name": "constant",
        },
    )
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at step (\d+)") as e:
        train_and_evaluate(cfg, tmp_path)
    bad = int(e.value.args[0].split("at step ")[1].split()[0])
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir())
    assert steps and steps[-1] < bad
    arrays = final_arrays(tmp_path)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(arrays["params"]))


@pytest.mark.slow
def test_sigterm_right_after_a_checkpoint(tmp_path, monkeypatch):
    """A stop requested at a step that was just checkpointed must not save it twice."""
    from jaxcnn.training import loop

    monkeypatch.setattr(loop._Preemption, "reached", lambda self, step: step == 22)
    res = train_and_evaluate(small_config(), tmp_path)  # checkpoints every 22 steps
    assert res["preempted"] and res["step"] == 22
    monkeypatch.undo()
    res = train_and_evaluate(small_config(), tmp_path)
    assert res["step"] == 66 and not res["preempted"]


@pytest.mark.slow
def test_tfds_mock_mnist_one_epoch(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")  # part of the install
    cfg = small_config(
        num_epochs=1.0,
        eval_batch_size=64,
        **{
            "data.source": "tfds",
            "data.name": "mnist",
            "data.image_size": 32,
            "data.random_crop_padding": 0,
        },
    )
    with tfds.testing.mock_data(num_examples=128, policy=tfds.testing.MockPolicy.USE_CODE):
        res = train_and_evaluate(cfg, tmp_path)
    assert res["step"] == 2 and res["eval_count"] == 128
    assert np.isfinite(res["eval_loss"])


# ------------------------------------------------------------------ subprocess runs
def cli(workdir, *flags):
    return [
        sys.executable,
        "-m",
        "train",
        f"--workdir={workdir}",
        "--config.progress=False",
        "--config.num_epochs=16",
        "--config.checkpoint_every_epochs=1",
        "--config.eval_every_epochs=4",
        "--config.async_checkpointing=False",
        *flags,
    ]


def env():
    e = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    e.pop("XLA_FLAGS", None)
    return e


def wait_for_checkpoint(proc, workdir: Path, min_step: int, timeout=240):
    t0 = time.time()
    ck = workdir / "checkpoints"
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            pytest.fail(f"the run ended before step {min_step}: {proc.stderr.read()[-3000:]}")
        done = [int(p.name) for p in ck.iterdir() if p.name.isdigit()] if ck.is_dir() else []
        if done and max(done) >= min_step:
            return max(done)
        time.sleep(0.02)
    pytest.fail("no checkpoint appeared")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: the same 16-epoch run (352 steps), never stopped."""
    wd = tmp_path_factory.mktemp("clean")
    subprocess.run(cli(wd), check=True, cwd=ROOT, env=env(), capture_output=True, timeout=600)
    return final_arrays(wd)


@pytest.mark.slow
def test_sigterm_then_rerun_resumes_bitwise(tmp_path, uninterrupted):
    """`python -m train` stopped the way schedulers stop it, then run again. (A SIGKILL at
    any moment is tests/training/test_faults.py's subject: 20 random kills, each resumed
    bitwise.)"""
    proc = subprocess.Popen(
        cli(tmp_path),
        cwd=ROOT,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen = wait_for_checkpoint(proc, tmp_path, min_step=22)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    steps = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
    assert proc.returncode == 75, err[-3000:]  # stopped, saved, resumable
    last = out.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGTERM at step "), out
    stopped = int(last.split("at step ")[1].split(",")[0])
    assert stopped == steps[-1] >= seen and stopped < 352
    res = subprocess.run(
        cli(tmp_path), cwd=ROOT, env=env(), capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "test accuracy" in res.stdout
    assert_bitwise_equal(final_arrays(tmp_path), uninterrupted)
    # metrics.jsonl has no duplicated steps after the resume
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["step"], "eval_top1" in r) for r in rows]
    assert len(keys) == len(set(keys))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    """Two CPU processes (one device each, gloo collectives) vs one process with one device,
    same global batch: the same final parameters up to float summation order."""
    flags = [
        "--config.num_epochs=2",
        "--config.checkpoint_every_epochs=2",
        "--config.eval_every_epochs=4",
    ]
    one = tmp_path / "one"
    subprocess.run(
        cli(one, *flags), check=True, cwd=ROOT, env=env(), capture_output=True, timeout=600
    )
    two = tmp_path / "two"
    port = free_port()
    procs = []
    for pid in range(2):
        e = env() | {
            "JAX_COORDINATOR_ADDRESS": f"localhost:{port}",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": str(pid),
        }
        procs.append(
            subprocess.Popen(
                cli(two, *flags, "--config.distributed=True"),
                cwd=ROOT,
                env=e,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    a, b = final_arrays(one), final_arrays(two)
    assert int(a["step"]) == int(b["step"]) == 44
    for x, y in zip(jax.tree.leaves(a["params"]), jax.tree.leaves(b["params"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)
    acc1 = outs[0][0].split("test accuracy: ")[1].split("%")[0]
    assert "test accuracy" in outs[0][0]
    assert float(acc1) > 50


_CACHE_PROBE = """
import collections, json, sys
import jax
import jax.monitoring
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
events = collections.Counter()
jax.monitoring.register_event_listener(lambda name, **kw: events.update([name]))
sys.path.insert(0, {tests!r})
from tests.training.test_loop import small_config
from jaxcnn.training import train_and_evaluate
res = train_and_evaluate(small_config(num_steps=3, **json.loads(sys.argv[2])), sys.argv[1])
print(json.dumps({{"hits": events["/jax/compilation_cache/cache_hits"],
                  "misses": events["/jax/compilation_cache/cache_misses"],
                  "top1": res["eval_top1"]}}))
"""


@pytest.mark.slow
def test_compilation_cache_lets_a_repeated_run_skip_compilation(tmp_path):
    # Each run in a fresh process, so only the on-disk cache can carry compiled programs.
    def run(workdir, **overrides):
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                _CACHE_PROBE.format(tests=str(ROOT)),
                str(workdir),
                json.dumps(overrides),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=ROOT,
            check=False,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run(tmp_path / "a")
    assert first["misses"] > 0 and list((tmp_path / "a" / "compile_cache").iterdir())
    # The same config in another workdir, pointed at the first one's cache: every program
    # it compiles (train step, eval step, initialisation) is read back, none recompiled.
    shared = str(tmp_path / "a" / "compile_cache")
    second = run(tmp_path / "b", compilation_cache=shared)
    assert second["hits"] >= 2 and second["misses"] == 0
    assert second["top1"] == first["top1"]
    # "off" leaves the cache alone: nothing is written in the workdir.
    run(tmp_path / "c", compilation_cache="off")
    assert not (tmp_path / "c" / "compile_cache").exists()
