"""TensorBoard event files (`jaxcnn.training.events`) against tensorboardX's protobuf schema
and CRC-32C, neither of which this module uses."""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest

from jaxcnn.training import events


def _records(path):
    """(data, length crc, data crc) of every TFRecord in the file, checking the framing."""
    with open(path, "rb") as f:
        data = f.read()
    pos, out = 0, []
    while pos < len(data):
        assert pos + 12 <= len(data), "truncated record header"
        (length,) = struct.unpack("<Q", data[pos : pos + 8])
        (length_crc,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        body = data[pos + 12 : pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])
        out.append((data[pos : pos + 8], length_crc, body, body_crc))
        pos += 16 + length
    assert pos == len(data)
    return out


def _events(path):
    from tensorboardX.proto.event_pb2 import Event

    return [Event.FromString(body) for _, _, body, _ in _records(path)]


def test_crc32c_matches_the_standard_check_value_and_tensorboardx(torch):
    from tensorboardX.crc32c import crc32c as reference
    from tensorboardX.record_writer import masked_crc32c as masked_reference

    assert events.crc32c(b"123456789") == 0xE3069283  # CRC-32C's published check value
    rng = np.random.default_rng(0)
    for n in (0, 1, 7, 64, 1000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert events.crc32c(data) == reference(data)
        assert events.masked_crc32c(data) == masked_reference(data)


def test_event_file_parses_as_tensorflow_events(tmp_path):
    writer = events.EventFileWriter(str(tmp_path / "tb"))
    writer.add_scalars(10, {"train_loss": 0.5, "learning_rate": 0.1})
    writer.add_scalars(2**40, {"eval_top1": 0.75})
    writer.add_scalars(11, {"nan": math.nan, "inf": -math.inf, "int": 3})
    writer.close()
    (name,) = os.listdir(tmp_path / "tb")
    assert name.startswith("events.out.tfevents.")
    for length, length_crc, body, body_crc in _records(writer.path):
        assert events.masked_crc32c(length) == length_crc
        assert events.masked_crc32c(body) == body_crc
    first, *rest = _events(writer.path)
    assert first.file_version == "brain.Event:2" and first.wall_time > 1.7e9
    got = [(e.step, {v.tag: v.simple_value for v in e.summary.value}) for e in rest]
    assert got[0] == (10, {"train_loss": np.float32(0.5), "learning_rate": np.float32(0.1)})
    assert got[1] == (2**40, {"eval_top1": 0.75})
    assert got[2][0] == 11 and math.isnan(got[2][1]["nan"])
    assert got[2][1]["inf"] == -math.inf and got[2][1]["int"] == 3.0
    assert all(not e.HasField("session_log") for e in rest)


def test_purge_step_writes_a_session_start(tmp_path):
    from tensorboardX.proto.event_pb2 import SessionLog

    writer = events.EventFileWriter(str(tmp_path), purge_step=21)
    writer.add_scalars(21, {"x": 1.0})
    writer.close()
    evs = _events(writer.path)
    assert evs[1].step == 21 and evs[1].session_log.status == SessionLog.START
    assert evs[2].summary.value[0].tag == "x"


def test_varints_match_protobuf_for_large_and_negative_steps():
    from tensorboardX.proto.event_pb2 import Event

    for step in (0, 1, 127, 128, 300, 2**31, 2**62, -1, -(2**40)):
        parsed = Event.FromString(events.event(step, wall_time=1.5))
        assert parsed.step == step and parsed.wall_time == 1.5


def test_two_writers_never_share_a_file_and_flush_makes_events_readable(tmp_path):
    a = events.EventFileWriter(str(tmp_path))
    b = events.EventFileWriter(str(tmp_path))
    assert a.path != b.path
    a.add_scalars(1, {"x": 2.0})
    a.flush()
    assert [e.step for e in _events(a.path)] == [0, 1]  # readable before close
    a.close()
    b.close()
    a.close()  # closing twice is harmless


@pytest.mark.parametrize("bad, error", [({"": 1.0}, ValueError), ({"x": "1"}, TypeError)])
def test_bad_scalars_are_named(tmp_path, bad, error):
    writer = events.EventFileWriter(str(tmp_path))
    with pytest.raises(error, match="scalar"):
        writer.add_scalars(1, bad)
    writer.close()
