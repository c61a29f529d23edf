"""gRPC plumbing shared by every service: servers, channels, health, shutdown.

Every ActorQ server serves the standard ``grpc.health.v1.Health`` service and
server reflection, so grpcurl and other generic clients work out of the box.
Message limits are raised deliberately (not left at gRPC's 4 MiB default) to
MAX_MESSAGE_BYTES; anything bigger (FP32 weights and ONNX models of
paper-size policies) is streamed in PART_BYTES pieces.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actorq import tls

# Largest single gRPC message any service accepts. A bigger one is refused by
# gRPC itself with RESOURCE_EXHAUSTED before our code sees it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Piece size for streamed blobs (weights, ONNX models).
PART_BYTES = 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 1),
]

log = logging.getLogger(__name__)


def make_server(max_workers: int = 16) -> grpc.Server:
    """A thread-pool gRPC server with ActorQ's message limits."""
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Accept the clients' keepalive pings (CHANNEL_OPTIONS: every 30 s) even
            # between calls; the default policy answers them with GOAWAY
            # "too_many_pings" and kills long-lived Sample streams.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )


def add_health_and_reflection(
    server: grpc.Server, service_names: Iterable[str]
) -> health.HealthServicer:
    """Register health (all services SERVING) and reflection; returns the health servicer."""
    names = list(service_names)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*names, ""]:
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return health_servicer


def service_server(
    add_servicer: Callable[[Any, grpc.Server], None],
    servicer: Any,
    service_name: str,
    host: str,
    port: int,
    max_workers: int = 16,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """A bound, not yet started server for one ActorQ service: its servicer (added with
    the generated ``add_XServicer_to_server``), health and reflection.

    Returns (server, health servicer, bound port); port 0 picks a free one.
    """
    server = make_server(max_workers=max_workers)
    add_servicer(servicer, server)
    health_servicer = add_health_and_reflection(server, [service_name])
    return server, health_servicer, bind(server, host, port)


def bind(server: grpc.Server, host: str, port: int) -> int:
    """Bind a port (TLS when ACTORQ_TLS_CERT/KEY are set, see actorq/tls.py); port 0
    picks a free one. Returns the bound port."""
    creds = tls.server_credentials()
    address = f"{host}:{port}"
    bound = (
        server.add_secure_port(address, creds)
        if creds is not None
        else server.add_insecure_port(address)
    )
    if bound == 0:
        raise OSError(f"could not bind gRPC server to {host}:{port}")
    return bound


def channel(address: str) -> grpc.Channel:
    """A channel with ActorQ's message limits and keepalive; TLS when ACTORQ_TLS_CA is set.

    A ``dns:///NAME:PORT`` address resolves every address behind NAME (a headless
    Kubernetes Service, a scaled compose service) and spreads calls over them
    round-robin; a plain ``HOST:PORT`` uses one connection.
    """
    options = [*CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin")]
    creds = tls.channel_credentials()
    if creds is not None:
        return grpc.secure_channel(address, creds, options=[*options, *tls.channel_options()])
    return grpc.insecure_channel(address, options=options)


def wait_healthy(address: str, timeout_s: float, service: str = "") -> None:
    """Block until the server at address reports SERVING; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    with channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
            except grpc.RpcError as err:
                last_error = f"{err.code().name}: {err.details()}"
            time.sleep(0.1)
    raise TimeoutError(f"{address} not healthy after {timeout_s:.0f}s ({last_error})")


def run_until_signalled(
    server: grpc.Server,
    health_servicer: health.HealthServicer,
    on_stop: Callable[[], None] | None = None,
    stop_event: threading.Event | None = None,
    grace_s: float = 5.0,
) -> None:
    """Serve until SIGTERM/SIGINT (or stop_event), then shut down gracefully.

    Order: report NOT_SERVING, run the service's own on_stop (flush buffers,
    write a checkpoint), then stop the server letting in-flight RPCs finish.
    """
    stop = stop_event or threading.Event()

    def _handle(signum: int, _frame: object) -> None:
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)
    server.start()
    while not stop.wait(0.5):
        pass
    health_servicer.enter_graceful_shutdown()
    try:
        if on_stop is not None:
            on_stop()
    finally:
        server.stop(grace_s).wait(grace_s + 1)
