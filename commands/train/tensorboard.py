"""``DIR/tb/``: the run's scalars as TensorBoard event files (``tensorboard --logdir DIR/tb``).

TensorBoard reads TFRecord files of ``Event`` protobufs. Writing a few scalars a
second needs neither TensorFlow nor the tensorboard package, so this module
writes them itself: each record is ``uint64 length, masked crc32c(length), data,
masked crc32c(data)`` (little-endian), and each ``Event`` is hand-encoded:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3;
              Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

(tensorboard/compat/proto/event.proto and summary.proto.) The x axis (step) is
the run's env steps, as in metrics.jsonl.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from commands.train.summary import EvalRecord

TB_DIR = "tb"
FILE_VERSION = "brain.Event:2"


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the checksum TFRecord uses."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC of ``data``."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def record(data: bytes) -> bytes:
    """One TFRecord around ``data``."""
    length = struct.pack("<Q", len(data))
    return (
        length + struct.pack("<I", masked_crc(length)) + data + struct.pack("<I", masked_crc(data))
    )


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # int64 as protobuf writes it (two's complement)
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def event(wall_time: float, step: int, scalars: Mapping[str, float] | None = None) -> bytes:
    """An Event: the file-version header when ``scalars`` is None, else one summary."""
    head = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if scalars is None:
        return head + _field(3, FILE_VERSION.encode())
    values = b"".join(
        _field(1, _field(1, tag.encode()) + _varint(2 << 3 | 5) + struct.pack("<f", value))
        for tag, value in scalars.items()
    )
    return head + _field(5, values)


class EventWriter:
    """Appends scalar summaries to one event file in ``DIR/tb/`` (opened on first use)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / TB_DIR
        self._file: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
            self._file = open(self.dir / name, "ab")  # noqa: SIM115 (closed by close())
            self._file.write(record(event(time.time(), 0)))
        return self._file

    def scalars(self, step: int, values: Mapping[str, float | int | None]) -> None:
        """Write the values that are numbers, at ``step`` (env steps)."""
        numbers = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
        if not numbers:
            return
        f = self._open()
        f.write(record(event(time.time(), step, numbers)))
        f.flush()

    def close(self) -> None:
        """Close the file (a later ``scalars`` opens a new one)."""
        if self._file is not None:
            self._file.close()
            self._file = None


# metrics.jsonl fields that are plotted (as "train/NAME").
METRICS = (
    "env_steps_per_s",
    "learner_steps",
    "learner_steps_per_s",
    "loss",
    "model_version",
    "replay_size",
    "active_actors",
)


class RunBoard:
    """What a run writes to ``DIR/tb/``: each metrics.jsonl row, and each evaluation once
    (full evaluations only: an early-stopped mean is no score)."""

    def __init__(self, run_dir: Path) -> None:
        self.writer = EventWriter(run_dir)
        self._evals_written = 0

    def poll(self, row: Mapping[str, Any], evals: Sequence[EvalRecord]) -> None:
        """One poll's row and the evaluations that finished since the last one."""
        self.writer.scalars(int(row["env_steps"]), {f"train/{k}": row.get(k) for k in METRICS})
        for rec in evals[self._evals_written :]:
            self.evaluation(rec, "eval")
        self._evals_written = len(evals)

    def evaluation(self, rec: EvalRecord, group: str) -> None:
        """One evaluation as ``GROUP/PRECISION_return`` (and its episode count)."""
        if rec.stopped_early:
            return
        self.writer.scalars(
            rec.env_steps,
            {
                f"{group}/{rec.precision}_return": rec.mean_return,
                f"{group}/{rec.precision}_episodes": rec.episodes,
            },
        )

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()
