"""TensorBoard event files for scalars, written with the standard library only.

TensorBoard reads ``events.out.tfevents.*`` files: a sequence of records, each

    uint64 length | uint32 masked CRC-32C of the length | data | uint32 masked CRC-32C of data

(little-endian; "masked" is ``((crc >> 15) | (crc << 17)) + 0xA282EAD8`` mod 2**32), where
data is a serialized ``tensorflow.Event`` protocol buffer. A scalar needs four of its fields:

    Event        { double wall_time = 1; int64 step = 2; string file_version = 3;
                   Summary summary = 5; SessionLog session_log = 7; }
    Summary      { repeated Value value = 1; }
    Summary.Value{ string tag = 1; float simple_value = 2; }
    SessionLog   { SessionStatus status = 1; }   // START = 1

This module encodes exactly those (about 100 lines), so that writing curves needs no
protobuf runtime and no TensorBoard client library, and importing it is free. A file starts
with ``file_version = "brain.Event:2"``; `EventFileWriter(purge_step=s)` then writes a
``SessionLog.START`` at step s, which makes TensorBoard hide the events of older files at
steps >= s (how a resumed run replaces the rows it logs again).
"""

from __future__ import annotations

import os
import socket
import struct
import time

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_SESSION_START = 1


def _crc32c_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # Castagnoli, bit-reversed
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli) of `data`, as TFRecord files use it."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


# ----------------------------------------------------------------------------- protobuf


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # int64: negative values take ten bytes, as protobuf writes them
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def event(
    step: int,
    *,
    wall_time: float,
    scalars: dict[str, float] | None = None,
    file_version: str | None = None,
    session_start: bool = False,
) -> bytes:
    """A serialized ``Event`` with the given step and wall time and at most one payload."""
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(int(step))
    if file_version is not None:
        out += _bytes_field(3, file_version.encode())
    if scalars:
        summary = b"".join(
            _bytes_field(
                1,
                _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", float(value)),
            )
            for tag, value in scalars.items()
        )
        out += _bytes_field(5, summary)
    if session_start:
        out += _bytes_field(7, _key(1, 0) + _varint(_SESSION_START))
    return out


# ----------------------------------------------------------------------------- writer


class EventFileWriter:
    """Appends scalar events to one new event file in `logdir`.

    Args:
      logdir: the directory (created if missing); TensorBoard reads every event file in it.
      purge_step: if given, TensorBoard discards the events of older files at steps >= this.

    The file is ``events.out.tfevents.<unix time>.<host>.<pid>.<n>``, unique per writer.
    Events are buffered and written by `flush` (also called by `add_scalars` every
    `flush_every_s` seconds) and `close`.
    """

    _count = 0

    def __init__(self, logdir: str, *, purge_step: int | None = None, flush_every_s: float = 10):
        os.makedirs(logdir, exist_ok=True)
        now = time.time()
        EventFileWriter._count += 1
        name = (
            f"events.out.tfevents.{int(now)}.{socket.gethostname()}.{os.getpid()}."
            f"{EventFileWriter._count}"
        )
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "wb")  # closed by close()
        self._flush_every_s = flush_every_s
        self._last_flush = now
        self._file.write(record(event(0, wall_time=now, file_version=FILE_VERSION)))
        if purge_step is not None:
            self._file.write(record(event(purge_step, wall_time=now, session_start=True)))
        self.flush()

    def add_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """One event holding every (tag, value) of `scalars` at `step` (NaN/inf as they are)."""
        for tag, value in scalars.items():
            if not isinstance(tag, str) or not tag:
                raise ValueError(f"scalar tags must be non-empty strings; got {tag!r}")
            if not isinstance(value, float | int) or isinstance(value, bool):
                raise TypeError(f"scalar {tag!r} must be a float; got {type(value).__name__}")
        now = time.time()
        values = {tag: float(value) for tag, value in scalars.items()}
        self._file.write(record(event(step, wall_time=now, scalars=values)))
        if now - self._last_flush >= self._flush_every_s:
            self.flush()

    def flush(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._last_flush = time.time()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()
