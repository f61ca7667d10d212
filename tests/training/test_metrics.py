"""MetricWriter (metrics.jsonl, TensorBoard, curves.png) and the Progress bar."""

from __future__ import annotations

import glob
import json
import math
import os
import struct
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from jaxcnn.training import metrics as metrics_lib
from jaxcnn.training.metrics import MetricWriter, Progress

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOT_SHAPE = (
    round(metrics_lib.PLOT_SIZE_INCHES[1] * metrics_lib.PLOT_DPI),
    round(metrics_lib.PLOT_SIZE_INCHES[0] * metrics_lib.PLOT_DPI),
)


def _strict_json(line: str):
    """json.loads that refuses Python's NaN/Infinity extensions: only standard JSON passes."""

    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


def _lines(workdir) -> list[str]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return f.read().splitlines()


def _train_row(step, steps_per_epoch=10):
    return {
        "epoch": step / steps_per_epoch,
        "train_loss": 2.0 / (1 + step),
        "train_top1": min(0.99, 0.1 + step / 100),
        "train_top5": min(1.0, 0.5 + step / 100),
        "learning_rate": 0.1 * 0.5 ** (step // 20),
        "images_per_s": 5000.0,
    }


def _eval_row(step, steps_per_epoch=10):
    return {
        "epoch": step / steps_per_epoch,
        "eval_loss": 1.5 / (1 + step),
        "eval_top1": min(0.98, 0.1 + step / 110),
        "eval_top5": 0.9,
    }


def _tensorboard_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from every event file under `logdir` (TFRecord framing)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4  # length, its crc, the record, its crc
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


# ------------------------------------------------------------------------- write / read


def test_write_read_roundtrip_with_every_scalar_kind(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(0, {"train_loss": 2.5, "train_top1": np.float32(0.125), "flag": True})
    writer.write(np.int64(10), {"train_loss": jnp.float32(0.55), "count": np.int32(7)})
    writer.write(jnp.asarray(20, jnp.int32), {"learning_rate": jnp.bfloat16(0.5)})
    writer.close()

    rows = writer.read()
    assert rows == [
        {"step": 0, "train_loss": 2.5, "train_top1": 0.125, "flag": 1.0},
        # float32 values are written as their shortest decimal, not 0.550000011920929
        {"step": 10, "train_loss": 0.55, "count": 7.0},
        {"step": 20, "learning_rate": 0.5},
    ]
    assert all(type(row["step"]) is int for row in rows)
    for line in _lines(tmp_path):
        assert isinstance(_strict_json(line), dict)


def test_each_row_is_on_disk_and_fsynced_before_write_returns(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    writer = MetricWriter(tmp_path, tensorboard=False)
    for step in range(3):
        writer.write(step, {"train_loss": 1.0})
        # Read by a second handle while the writer is still open: nothing sits in a buffer.
        assert len(_lines(tmp_path)) == step + 1
        assert len(synced) == step + 1
    writer.close()


def test_non_finite_values_are_valid_json_strings_and_read_back_as_floats(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(
        5,
        {
            "train_loss": float("nan"),
            "a": jnp.float32(jnp.inf),
            "b": np.float64(-np.inf),
            "c": 1.0,
        },
    )
    writer.close()
    (line,) = _lines(tmp_path)
    assert _strict_json(line) == {
        "step": 5,
        "train_loss": "NaN",
        "a": "Infinity",
        "b": "-Infinity",
        "c": 1.0,
    }
    (row,) = writer.read()
    assert math.isnan(row["train_loss"])
    assert row["a"] == math.inf and row["b"] == -math.inf and row["c"] == 1.0


@pytest.mark.parametrize(
    "step, metrics, error, match",
    [
        (-1, {"a": 1.0}, ValueError, "step: expected an integer >= 0, got -1"),
        (1.5, {"a": 1.0}, TypeError, "step: expected an integer, got float"),
        (True, {"a": 1.0}, TypeError, "step: expected an integer, got bool"),
        (1, {"step": 1.0}, ValueError, "must not contain the key 'step'"),
        (1, {"a": np.zeros(3)}, ValueError, r"metrics\['a'\].*shape \(3,\)"),
        (1, {"a": "0.5"}, TypeError, r"metrics\['a'\]: expected a real number.*str"),
        (1, {"a": None}, TypeError, r"metrics\['a'\]: expected a real number.*NoneType"),
        (1, {"a": np.complex64(1j)}, TypeError, r"metrics\['a'\].*complex64"),
        (1, [("a", 1.0)], TypeError, "metrics: expected a mapping"),
    ],
)
def test_write_rejects_bad_input_naming_the_argument(tmp_path, step, metrics, error, match):
    writer = MetricWriter(tmp_path, tensorboard=False)
    with pytest.raises(error, match=match):
        writer.write(step, metrics)
    assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


# ------------------------------------------------------------------------- resume


def test_truncate_after_keeps_rows_up_to_step_and_later_writes_append(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    for step in range(0, 60, 10):
        writer.write(step, _train_row(step))
        if step % 20 == 0:
            writer.write(step, _eval_row(step))
    assert writer.truncate_after(30) == 6  # train rows 0..30 and eval rows at 0, 20
    assert [r["step"] for r in writer.read()] == [0, 0, 10, 20, 20, 30]
    # The open append handle was replaced: new rows land in the rewritten file.
    writer.write(40, _train_row(40))
    writer.close()
    assert [r["step"] for r in writer.read()] == [0, 0, 10, 20, 20, 30, 40]
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]  # no temporary file left


def test_truncate_after_drops_a_torn_last_line_with_a_warning(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(10, {"train_loss": 1.0})
    writer.write(20, {"train_loss": float("nan")})
    writer.close()
    with open(os.path.join(tmp_path, "metrics.jsonl"), "a") as f:
        f.write('{"step": 30, "train_lo')  # what a SIGKILL mid-write leaves

    with pytest.warns(RuntimeWarning, match="metrics.jsonl:3: dropping"):
        assert len(writer.read()) == 2
    with pytest.warns(RuntimeWarning, match="torn"):
        assert writer.truncate_after(20) == 2
    lines = _lines(tmp_path)
    assert [_strict_json(line)["step"] for line in lines] == [10, 20]
    assert _strict_json(lines[1])["train_loss"] == "NaN"  # non-finite values survive


def test_truncate_after_with_no_log_is_a_no_op(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    assert writer.truncate_after(100) == 0
    assert writer.read() == []
    assert not os.path.exists(os.path.join(tmp_path, "metrics.jsonl"))


def test_a_row_appended_after_a_torn_line_is_not_lost(tmp_path):
    # Without truncate_after, a new row must still start on its own line.
    with open(os.path.join(tmp_path, "metrics.jsonl"), "w") as f:
        f.write('{"step": 1, "a": 1.0}\n{"step": 2, "a"')
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(3, {"a": 3.0})
    writer.close()
    with pytest.warns(RuntimeWarning):
        rows = writer.read()
    assert rows == [{"step": 1, "a": 1.0}, {"step": 3, "a": 3.0}]


def test_unparsable_rows_in_the_middle_are_dropped_not_fatal(tmp_path):
    with open(os.path.join(tmp_path, "metrics.jsonl"), "w") as f:
        f.write('{"step": 1}\n[1, 2]\n{"no_step": 1}\n\n{"step": 2}\n')
    with pytest.warns(RuntimeWarning) as record:
        rows = MetricWriter(tmp_path).read()
    assert rows == [{"step": 1}, {"step": 2}]
    assert len(record) == 2  # the list and the row without a step; blank lines are skipped


# ------------------------------------------------------------------------- TensorBoard


def test_tensorboard_event_file_holds_the_scalars_after_close(tmp_path):
    writer = MetricWriter(tmp_path, plot=False)
    writer.write(10, {"train_loss": 0.5, "learning_rate": 0.1})
    writer.write(20, {"train_loss": 0.25, "learning_rate": 0.1})
    writer.close()
    files = glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*"))
    assert files
    scalars = _tensorboard_scalars(os.path.join(tmp_path, "tensorboard"))
    assert scalars["train_loss"] == [(10, 0.5), (20, 0.25)]
    assert [s for s, _ in scalars["learning_rate"]] == [10, 20]


def test_tensorboard_off_writes_no_events(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(1, {"train_loss": 0.5})
    writer.close()
    assert not os.path.exists(os.path.join(tmp_path, "tensorboard"))


def test_after_truncate_the_new_event_file_purges_later_steps(tmp_path):
    from tensorboardX.proto.event_pb2 import Event, SessionLog

    writer = MetricWriter(tmp_path, plot=False)
    for step in (10, 20, 30):
        writer.write(step, {"train_loss": 1.0 / step})
    writer.truncate_after(20)
    writer.write(30, {"train_loss": 0.01})
    writer.close()
    # TensorBoard hides events at steps >= a SessionLog.START's step (purge_step).
    starts = []
    for path in glob.glob(os.path.join(tmp_path, "tensorboard", "events.out.tfevents.*")):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                starts.append(event.step)
    assert starts == [21]


# ------------------------------------------------------------------------- plot


def _check_png(path):
    import matplotlib.image

    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == PLOT_SHAPE
    # Something was drawn: not a blank canvas.
    assert float(np.std(image[..., :3])) > 0.01


@pytest.mark.parametrize("with_eval", [False, True], ids=["train_only", "train_and_eval"])
def test_plot_writes_a_valid_png(tmp_path, with_eval):
    pyplot_loaded = "matplotlib.pyplot" in sys.modules
    writer = MetricWriter(tmp_path, tensorboard=False)
    for step in range(10, 110, 10):
        writer.write(step, _train_row(step))
        if with_eval and step % 50 == 0:
            writer.write(step, _eval_row(step))
    path = writer.plot()
    writer.close()
    assert path == os.path.join(tmp_path, "curves.png")
    _check_png(path)
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "metrics.jsonl"]  # no temp file
    # The plot is drawn on a bare Figure + Agg canvas: pyplot (global state) stays unloaded.
    assert ("matplotlib.pyplot" in sys.modules) == pyplot_loaded


def test_plot_handles_no_rows_missing_epochs_and_non_finite_values(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    _check_png(writer.plot())  # nothing logged yet
    writer.write(1, {"train_loss": float("nan"), "learning_rate": 0.0})  # no epoch key
    writer.write(2, {"train_loss": math.inf, "train_top1": 0.5, "learning_rate": 0.1})
    writer.write(3, {"eval_top1": 0.75})
    _check_png(writer.plot())  # x falls back to the step; lr 0 rules out a log scale
    writer.close()


def test_plot_replaces_the_previous_image(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False)
    writer.write(1, _train_row(1))
    path = writer.plot()
    with open(path, "rb") as f:
        first = f.read()
    writer.write(2, _eval_row(2))
    writer.plot()
    with open(path, "rb") as f:
        second = f.read()
    writer.close()
    assert first != second
    _check_png(path)


def test_plot_off_draws_nothing(tmp_path):
    writer = MetricWriter(tmp_path, tensorboard=False, plot=False)
    writer.write(1, _train_row(1))
    assert writer.plot() is None
    writer.close()
    assert not os.path.exists(os.path.join(tmp_path, "curves.png"))


# ------------------------------------------------------------------------- disabled


def test_disabled_writer_writes_nothing_at_all(tmp_path):
    workdir = os.path.join(tmp_path, "run")
    writer = MetricWriter(workdir, enabled=False)
    writer.write(1, _train_row(1))
    writer.flush()
    assert writer.plot() is None
    assert writer.truncate_after(0) == 0
    assert writer.read() == []
    writer.close()
    assert not os.path.exists(workdir)


def test_disabled_writer_still_rejects_bad_input(tmp_path):
    # A bug on process 1 should not hide until the run goes single-process.
    writer = MetricWriter(tmp_path, enabled=False)
    with pytest.raises(ValueError, match="step"):
        writer.write(-1, {"a": 1.0})


def test_workdir_type_is_checked():
    with pytest.raises(TypeError, match="workdir: expected a path"):
        MetricWriter(3)


def test_writer_as_context_manager_closes_and_can_reopen(tmp_path):
    with MetricWriter(tmp_path) as writer:
        writer.write(1, {"a": 1.0})
    assert writer._file is None and writer._summary_writer is None
    writer.write(2, {"a": 2.0})  # reopens for appending
    writer.close()
    writer.close()  # idempotent
    assert [r["step"] for r in writer.read()] == [1, 2]


# ------------------------------------------------------------------------- Progress


def test_progress_bar_on_stderr(capsys):
    with Progress(100, initial=10, desc="fit") as bar:
        bar.update(5, loss=jnp.float32(0.123456), acc=0.98, img_s=5120.7, n=3)
        bar.write("epoch 1 done")
        bar.update(85)
    out, err = capsys.readouterr()
    assert out == ""
    assert "fit" in err
    assert "15/100" in err and "100/100" in err
    assert "loss=0.1235, acc=0.98, img_s=5121, n=3" in err
    assert "epoch 1 done\n" in err


def test_progress_disabled_prints_messages_plainly_and_no_bar(capsys):
    bar = Progress(100, enabled=False)
    bar.update(50, loss=0.5)
    bar.write("hello")
    bar.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "hello\n"


def test_progress_write_after_close_still_prints(capsys):
    bar = Progress(3)
    bar.update(3)
    bar.close()
    bar.close()  # idempotent
    capsys.readouterr()
    bar.write("after")
    assert capsys.readouterr().err == "after\n"


@pytest.mark.parametrize("kwargs", [{"total_steps": -1}, {"total_steps": 10, "initial": 1.5}])
def test_progress_rejects_bad_counts(kwargs):
    with pytest.raises(ValueError, match="expected an integer >= 0"):
        Progress(**kwargs, enabled=False)


def test_postfix_format_is_compact():
    text = metrics_lib._format_postfix(
        {"loss": np.float32(0.000123456), "acc": 0.98765, "img_s": 12345.6, "step": 7, "x": "y"}
    )
    assert text == "loss=0.0001235, acc=0.9877, img_s=12346, step=7, x=y"
