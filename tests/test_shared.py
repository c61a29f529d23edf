"""The shared floor: tensor codec, typed config, generated code currency."""

from __future__ import annotations

import dataclasses
import filecmp
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actorq import config, tensor
from actorq.v1 import common_pb2

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "uint8", "int8", "bool"])
def test_tensor_round_trip_keeps_dtype_shape_and_values(dtype: str) -> None:
    arr = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    back = tensor.from_proto(tensor.to_proto(arr, "x"))
    assert back.dtype == arr.dtype
    assert back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_tensor_decode_rejects_byte_count_that_does_not_match_shape() -> None:
    msg = tensor.to_proto(np.zeros((4, 3), np.float32), "obs")
    msg.shape[:] = [4, 4]
    with pytest.raises(tensor.TensorError, match=r"'obs'.*48 bytes.*need 64"):
        tensor.from_proto(msg)


def test_tensor_decode_rejects_unknown_dtype() -> None:
    msg = common_pb2.Tensor(name="w", dtype=0, shape=[1], data=b"\0\0\0\0")
    with pytest.raises(tensor.TensorError, match="'w'.*unsupported dtype"):
        tensor.from_proto(msg)


def test_tensor_decode_is_read_only_view_unless_asked() -> None:
    msg = tensor.to_proto(np.ones(3, np.float32))
    assert not tensor.from_proto(msg).flags.writeable
    assert tensor.from_proto(msg, writable=True).flags.writeable


def test_split_parts_reassembles_to_the_original_bytes() -> None:
    arr = np.random.default_rng(0).standard_normal((100, 7)).astype(np.float32)
    parts = list(tensor.split_parts(arr, "w", part_bytes=1000))
    assert len(parts) == 3
    assert b"".join(p.data for p, _ in parts) == arr.tobytes()
    assert [off for _, off in parts] == [0, 1000, 2000]


@dataclasses.dataclass
class _Inner:
    lr: float = config.opt(0.001, "learning rate")
    sizes: list[int] = config.opt([64, 64], "hidden sizes")


@dataclasses.dataclass
class _Outer:
    port: int = config.opt(1, "port")
    name: str = config.opt("a", "name")
    flag: bool = config.opt(False, "a switch")
    inner: _Inner = dataclasses.field(default_factory=_Inner)


def test_config_precedence_is_defaults_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("svc:\n  port: 2\n  name: file\n  inner:\n    lr: 0.5\n")
    env = {"ACTORQ_NAME": "env", "ACTORQ_INNER_SIZES": "8,16"}
    cfg = config.load(_Outer, section="svc", file=f, env=env, flags={"port": "3"})
    assert cfg.port == 3  # flag beats file
    assert cfg.name == "env"  # env beats file
    assert cfg.inner.lr == 0.5  # file beats default
    assert cfg.inner.sizes == [8, 16]
    assert cfg.flag is False


def test_config_rejects_unknown_keys_and_bad_values(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("svc:\n  prot: 2\n")
    with pytest.raises(config.ConfigError, match="unknown setting 'prot'"):
        config.load(_Outer, section="svc", file=f, env={})
    with pytest.raises(config.ConfigError, match="ACTORQ_PORT: cannot read 'abc' as int"):
        config.load(_Outer, env={"ACTORQ_PORT": "abc"})


def test_generated_protobuf_code_is_current(tmp_path: Path) -> None:
    """actorq/v1/*_pb2*.py must be what `make proto` generates from proto/."""
    protos = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "proto").rglob("*.proto"))
    cmd = [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}"]
    cmd += [f"--pyi_out={tmp_path}", f"--grpc_python_out={tmp_path}", *protos]
    subprocess.run(cmd, cwd=ROOT, check=True)
    generated = sorted(p.name for p in (tmp_path / "actorq" / "v1").iterdir())
    checked_in = sorted(p.name for p in (ROOT / "actorq" / "v1").glob("*_pb2*"))
    assert generated == checked_in
    stale = [
        n
        for n in generated
        if not filecmp.cmp(tmp_path / "actorq/v1" / n, ROOT / "actorq/v1" / n, shallow=False)
    ]
    assert not stale, f"run `make proto`: stale generated files {stale}"


def test_services_meet_only_through_the_shared_floor() -> None:
    """No service imports another service's code: they talk over gRPC, and share actorq/."""
    import ast

    root = Path(__file__).resolve().parent.parent / "services"
    crossings = []
    for path in sorted(root.glob("*/*.py")):
        own = path.parent.name
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            for name in names:
                parts = name.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] != own:
                    crossings.append(f"{path.relative_to(root.parent)} imports {name}")
    assert not crossings, crossings
