"""gRPC edge of the actor: ``actorq serve actor``.

The servicer only reports status; the work happens in ``ActorRunner``'s
threads. On SIGTERM the step loop stops, the partly filled chunk and the send
queue are flushed to replay (bounded by ``stop_flush_s``), then the process exits.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Sequence

import grpc
from grpc_health.v1 import health

from actorq import logs, metrics
from actorq.clients import QuantizerClient, ReplayClient
from actorq.config import ConfigError, from_argv
from actorq.rpc import channel, run_until_signalled, service_server
from actorq.v1 import actor_pb2, actor_pb2_grpc
from services.actor.config import ActorConfig
from services.actor.runner import ActorRunner

SERVICE_NAME = actor_pb2.DESCRIPTOR.services_by_name["ActorService"].full_name

log = logging.getLogger(__name__)


class ActorServicer(actor_pb2_grpc.ActorServiceServicer):
    """GetStatus over an ``ActorRunner``."""

    def __init__(self, runner: ActorRunner) -> None:
        self._runner = runner

    def GetStatus(
        self, request: actor_pb2.ActorStatusRequest, context: grpc.ServicerContext
    ) -> actor_pb2.ActorStatus:
        """Counters, step-time breakdown and model-swap times of this actor."""
        return self._runner.status()


def build_server(
    cfg: ActorConfig,
) -> tuple[grpc.Server, health.HealthServicer, ActorRunner, int, list[grpc.Channel]]:
    """A bound server and a not yet started runner: (server, health, runner, port, channels).

    Raises ConfigError when the env cannot be used. The caller closes the
    channels after stopping the runner.
    """
    channels = [channel(cfg.replay_address), channel(cfg.quantizer_address)]
    try:
        runner = ActorRunner(cfg, ReplayClient(channels[0]), QuantizerClient(channels[1]))
    except BaseException:
        for ch in channels:
            ch.close()
        raise
    server, health_servicer, port = service_server(
        actor_pb2_grpc.add_ActorServiceServicer_to_server,
        ActorServicer(runner),
        SERVICE_NAME,
        cfg.host,
        cfg.port,
        max_workers=4,
    )
    return server, health_servicer, runner, port, channels


def main(argv: Sequence[str] | None = None) -> None:
    """``actorq serve actor [--flags]``: act until SIGTERM/SIGINT."""
    cfg = from_argv(ActorConfig, argv, prog="actorq serve actor", section="actor")
    logger = logs.setup("actor")
    try:
        server, health_servicer, runner, port, channels = build_server(cfg)
    except ConfigError as err:
        # A sentence on stderr and a non-zero exit, not a traceback.
        print(f"actorq serve actor: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    schedule = runner.epsilon_schedule
    logger.info(
        "%s serving on %s:%d (%s %s, replay %s, quantizer %s, %s)",
        runner.actor_id,
        cfg.host,
        port,
        cfg.env,
        cfg.precision,
        cfg.replay_address,
        cfg.quantizer_address,
        f"Gaussian noise sigma {runner.noise_sigma:g}"
        if runner.info.continuous
        else f"epsilon {schedule.start:.3g} -> {schedule.final:.3g} over "
        f"{schedule.decay_steps} steps",
    )
    # A dead step loop stops the server like a signal would (flushing first),
    # and the process exits non-zero so whoever started it notices.
    stop = threading.Event()
    runner.start(on_failure=stop.set)
    metrics.serve_from_env("actor", lambda: metrics.actor_samples(runner.status()))
    try:
        run_until_signalled(server, health_servicer, on_stop=runner.stop, stop_event=stop)
    finally:
        for ch in channels:
            ch.close()
    if runner.state == "failed":
        print(f"actorq serve actor: error: {runner.error}", file=sys.stderr)
        raise SystemExit(1)
