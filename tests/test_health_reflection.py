"""Every service answers the standard health check and server reflection."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import ServiceProcess, free_port
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from actorq.rpc import channel

UNREACHABLE = f"127.0.0.1:{free_port()}"  # nothing listens: services must still come up

CASES = {
    "replay": ([], "actorq.v1.ReplayService"),
    "quantizer": ([], "actorq.v1.QuantizerService"),
    "learner": (
        [
            "--env",
            "CartPole-v1",
            "--replay-address",
            UNREACHABLE,
            "--quantizer-address",
            UNREACHABLE,
        ],
        "actorq.v1.LearnerService",
    ),
    "actor": (
        [
            "--env",
            "CartPole-v1",
            "--replay-address",
            UNREACHABLE,
            "--quantizer-address",
            UNREACHABLE,
        ],
        "actorq.v1.ActorService",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_service_serves_health_and_reflection(
    name: str, service_factory: Callable[..., ServiceProcess]
) -> None:
    args, full_name = CASES[name]
    svc = service_factory(name, args)
    with channel(svc.address) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        for service in ("", full_name):
            resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        listed = set(ProtoReflectionDescriptorDatabase(ch).get_services())
    assert {
        full_name,
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= listed


@pytest.mark.parametrize("name", list(CASES))
def test_service_stops_cleanly_on_sigterm(
    name: str, service_factory: Callable[..., ServiceProcess]
) -> None:
    args, _ = CASES[name]
    svc = service_factory(name, args)
    assert svc.stop(timeout=30) == 0, svc.log()
