"""Optional TLS on the gRPC channels: a TLS server serves TLS clients and refuses plaintext."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from conftest import ServiceProcess
from grpc_health.v1 import health_pb2, health_pb2_grpc

from actorq import tls
from actorq.clients import ReplayClient
from actorq.rpc import channel


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 (it is its own CA)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every process started from here (and this one) serves and dials TLS."""
    cert, key = make_cert(tmp_path)
    monkeypatch.setenv(tls.TLS_CERT_ENV, str(cert))
    monkeypatch.setenv(tls.TLS_KEY_ENV, str(key))
    monkeypatch.setenv(tls.TLS_CA_ENV, str(cert))
    return cert


def test_a_tls_replay_answers_a_client_that_trusts_its_ca(
    tls_env: Path, service_factory: Callable[..., ServiceProcess]
) -> None:
    replay = service_factory("replay")
    with channel(replay.address) as ch:
        assert ReplayClient(ch).stats().capacity > 0


def test_a_tls_replay_refuses_a_plaintext_client(
    tls_env: Path, service_factory: Callable[..., ServiceProcess]
) -> None:
    replay = service_factory("replay")
    with grpc.insecure_channel(replay.address) as ch, pytest.raises(grpc.RpcError) as err:
        health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_trusts_another_ca_is_refused(
    tls_env: Path, tmp_path: Path, service_factory: Callable[..., ServiceProcess],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    replay = service_factory("replay")
    other = tmp_path / "other"
    other.mkdir()
    other_cert, _ = make_cert(other)
    monkeypatch.setenv(tls.TLS_CA_ENV, str(other_cert))
    with channel(replay.address) as ch, pytest.raises(grpc.RpcError) as err:
        ReplayClient(ch).stats(timeout=3)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_is_off_without_the_env_vars() -> None:
    assert tls.server_credentials({}) is None
    assert tls.channel_credentials({}) is None


def test_a_cert_without_its_key_is_refused_naming_the_missing_variable(tmp_path: Path) -> None:
    with pytest.raises(tls.TLSConfigError, match="ACTORQ_TLS_KEY is unset"):
        tls.server_credentials({tls.TLS_CERT_ENV: str(tmp_path / "cert.pem")})


def test_an_unreadable_ca_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(tls.TLSConfigError, match="ACTORQ_TLS_CA=.*missing.pem"):
        tls.channel_credentials({tls.TLS_CA_ENV: str(tmp_path / "missing.pem")})
