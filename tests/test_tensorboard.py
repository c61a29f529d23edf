"""DIR/tb/ event files, read back with protobuf's own decoder (a TensorBoard Event
message declared here from event.proto/summary.proto) and the CRC-32C check value."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from commands.train.summary import EvalRecord
from commands.train.tensorboard import RunBoard, crc32c, masked_crc


def event_class() -> Any:
    """tensorboard.Event with Summary and Summary.Value: the fields the writer uses."""
    f = descriptor_pb2.FileDescriptorProto(name="tb_event_test.proto", package="tbtest")
    value = f.message_type.add(name="Value")
    value.field.add(name="tag", number=1, type=9, label=1)
    value.field.add(name="simple_value", number=2, type=2, label=1)
    summary = f.message_type.add(name="Summary")
    summary.field.add(name="value", number=1, type=11, label=3, type_name=".tbtest.Value")
    ev = f.message_type.add(name="Event")
    ev.field.add(name="wall_time", number=1, type=1, label=1)
    ev.field.add(name="step", number=2, type=3, label=1)
    ev.field.add(name="file_version", number=3, type=9, label=1)
    ev.field.add(name="summary", number=5, type=11, label=1, type_name=".tbtest.Summary")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tbtest.Event"))


def read_events(path: Path) -> list[Any]:
    data, events, at = path.read_bytes(), [], 0
    event = event_class()
    while at < len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        (length_crc,) = struct.unpack_from("<I", data, at + 8)
        assert length_crc == masked_crc(data[at : at + 8])
        body = data[at + 12 : at + 12 + length]
        (body_crc,) = struct.unpack_from("<I", data, at + 12 + length)
        assert body_crc == masked_crc(body)
        events.append(event.FromString(body))
        at += 16 + length
    return events


def test_crc32c_matches_the_standard_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


def test_a_runs_scalars_and_full_evaluations_are_event_records(tmp_path: Path) -> None:
    board = RunBoard(tmp_path)
    row = {"env_steps": 1200, "loss": 0.5, "learner_steps": 40, "replay_size": None}
    full = EvalRecord(3.0, 2, "int8", 187.5, 20, False, 1000, 0.4)
    early = EvalRecord(4.0, 3, "int8", 10.0, 2, True, 1100, 0.1)
    board.poll(row, [full, early])
    board.poll({**row, "env_steps": 1500, "loss": 0.25}, [full, early])  # no eval twice
    board.close()
    (path,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    events = read_events(path)
    assert events[0].file_version == "brain.Event:2"
    scalars = [
        (e.step, v.tag, round(v.simple_value, 3)) for e in events[1:] for v in e.summary.value
    ]
    assert scalars == [
        (1200, "train/learner_steps", 40.0),
        (1200, "train/loss", 0.5),
        (1000, "eval/int8_return", 187.5),
        (1000, "eval/int8_episodes", 20.0),
        (1500, "train/learner_steps", 40.0),
        (1500, "train/loss", 0.25),
    ]
