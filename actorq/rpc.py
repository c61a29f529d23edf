"""gRPC plumbing shared by every service: servers, channels, health, shutdown.

Every ActorQ server serves the standard ``grpc.health.v1.Health`` service and
server reflection, so grpcurl and other generic clients work out of the box.
Message limits are raised deliberately (not left at gRPC's 4 MiB default) to
MAX_MESSAGE_BYTES; anything bigger (FP32 weights and ONNX models of
paper-size policies) is streamed in PART_BYTES pieces.

Every server checks callers' tokens when one is configured (``actorq.auth``)
and gives each long-lived method its own concurrency budget on top of a
reserve of threads for everything else (``actorq.limits``), so idle long polls
and streams never starve health. Every channel presents the process's token
and, with mutual TLS, its certificate (``actorq.tls``).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from actorq import auth, tls
from actorq.limits import CallLimits
from actorq.malformed import MalformedRequests

# Largest single gRPC message any service accepts. A bigger one is refused by
# gRPC itself with RESOURCE_EXHAUSTED before our code sees it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Piece size for streamed blobs (weights, ONNX models).
PART_BYTES = 1024 * 1024
# Most sampled batches one SampleBatch message may carry (SampleRequest.batches_per_message).
MAX_BATCHES_PER_MESSAGE = 64

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.enable_retries", 1),
    # Server-streaming calls (Sample, GetModel) are read on the calling thread. Without
    # it gRPC Python polls them on a thread of the channel's, started anew each time the
    # channel's last stream has ended: one thread per call for a caller that opens short
    # streams back to back (the learner's Sample calls, ~100 a second).
    (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1),
]

# A health wait reconnects every 100 ms: with gRPC's default backoff (1 s, growing) a
# server that starts listening just after a refused attempt is seen up to a second late,
# and `actorq train` waits on every service's health before anything counts as started.
HEALTH_POLL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 100),
]

log = logging.getLogger(__name__)


def make_server(
    max_workers: int = 16,
    limits: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> grpc.Server:
    """A thread-pool gRPC server with ActorQ's message limits, the token check when a
    token is configured in env (default: the process environment), and the
    per-method concurrency ``limits`` (full method name -> calls at once).

    The pool holds max_workers threads for unlimited calls (health, status, stats)
    plus every limited method's budget, so the limited ones cannot take the former.
    Raises auth.AuthConfigError for token settings that cannot work.
    """
    accepted = auth.accepted_tokens(env)
    call_limits = CallLimits(limits or {})
    # Auth first: a refused caller's request is never even parsed, nor takes a slot.
    interceptors: list[grpc.ServerInterceptor] = [MalformedRequests(), call_limits]
    if accepted is not None:
        interceptors.insert(0, auth.AuthInterceptor(accepted))
        log.info("callers need a token (roles accepted: %s)", ", ".join(accepted.roles))
    threads = max_workers + call_limits.threads
    return grpc.server(
        futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        interceptors=interceptors,
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


# A health "service" that is SERVING for as long as the process serves at all, whatever
# its dependencies do: for liveness probes, which should restart a hung process but not
# one waiting for its Redis (readiness probes, compose and the launcher check "").
LIVENESS = "liveness"


def add_health_and_reflection(
    server: grpc.Server, service_names: Iterable[str]
) -> health.HealthServicer:
    """Register health (all services SERVING, ``LIVENESS`` too) and reflection; returns
    the health servicer."""
    names = list(service_names)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in [*names, "", LIVENESS]:
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


def method_name(service_name: str, method: str) -> str:
    """``/package.Service/Method``: how interceptors and limits name a method."""
    return f"/{service_name}/{method}"


def set_serving(health_servicer: health.HealthServicer, service_name: str, serving: bool) -> None:
    """Report the server ("") and service_name SERVING or NOT_SERVING (e.g. while a store
    it depends on is unreachable, so readiness probes take it out of rotation);
    ``LIVENESS`` stays SERVING."""
    status = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (service_name, ""):
        health_servicer.set(name, status)


class DependencyWatch:
    """Keeps a service's health honest about a dependency (a store it cannot serve
    without): every period_s it asks ``problem()`` ('' when fine, else why not) and
    reports NOT_SERVING while there is one, SERVING again once it is gone, logging
    each change once."""

    def __init__(
        self,
        health_servicer: health.HealthServicer,
        service_name: str,
        problem: Callable[[], str],
        period_s: float = 1.0,
    ) -> None:
        self._health, self._name, self._problem = health_servicer, service_name, problem
        self._period_s = period_s
        self._stop = threading.Event()
        self.current: str | None = None  # the last problem seen ('' fine; None: not checked)
        self._thread = threading.Thread(target=self._run, name="dependency-watch", daemon=True)

    def check(self) -> str:
        """Check now and report; the problem found ('' if none)."""
        problem = self._problem()
        # Log a change of state, not of wording (one outage's errors differ in detail).
        if self.current is None or bool(problem) != bool(self.current):
            if problem:
                log.warning("reporting NOT_SERVING: %s", problem)
            elif self.current is not None:
                log.info("reporting SERVING again: the dependency answers")
            set_serving(self._health, self._name, not problem)
            self.current = problem
        return problem

    def start(self) -> None:
        """Check once now (so the first health answer is already right), then keep checking."""
        self.check()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self.check()


def service_server(
    add_servicer: Callable[[Any, grpc.Server], None],
    servicer: Any,
    service_name: str,
    host: str,
    port: int,
    max_workers: int = 16,
    limits: Mapping[str, int] | None = None,
) -> tuple[grpc.Server, health.HealthServicer, int]:
    """A bound, not yet started server for one ActorQ service: its servicer (added with
    the generated ``add_XServicer_to_server``), health and reflection.

    ``limits``: the service's long-lived methods (short names, e.g. ``GetModel``) ->
    how many may run at once; ``max_workers``: threads for everything else.
    Returns (server, health servicer, bound port); port 0 picks a free one.
    """
    full = {method_name(service_name, m): n for m, n in (limits or {}).items()}
    server = make_server(max_workers=max_workers, limits=full)
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


def channel(
    address: str,
    role: str | None = None,
    env: Mapping[str, str] | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel with ActorQ's message limits and keepalive; TLS when ACTORQ_TLS_CA is
    set (with a client certificate for mutual TLS); every call carries the token of
    ``role`` (``actorq.auth.client_token``) when one is set.

    env: where the TLS and token variables are read (default: the process environment).
    A ``dns:///NAME:PORT`` address resolves every address behind NAME (a headless
    Kubernetes Service, a scaled compose service) and spreads calls over them
    round-robin; a plain ``HOST:PORT`` uses one connection. ``options``: more channel
    arguments (after ActorQ's, so they win).
    """
    options = [*CHANNEL_OPTIONS, ("grpc.lb_policy_name", "round_robin"), *options]
    token = auth.client_token(env, role)
    creds = tls.channel_credentials(env)
    if creds is not None:
        ch = grpc.secure_channel(address, creds, options=[*options, *tls.channel_options(env)])
    else:
        ch = grpc.insecure_channel(address, options=options)
    if token:
        return grpc.intercept_channel(ch, auth.TokenInterceptor(token))
    return ch


def wait_healthy(address: str, timeout_s: float, service: str = "") -> None:
    """Block until the server at address reports SERVING; TimeoutError otherwise."""
    deadline = time.monotonic() + timeout_s
    last_error = "no answer"
    with channel(address, options=HEALTH_POLL_OPTIONS) as ch:
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
