"""gRPC edge of the learner: ``actorq serve learner``.

The servicer only answers GetStatus; the work happens in the TrainingLoop
(loop.py) around a Learner (learner.py) around the agent of the configured
algorithm (algorithms.py: DQN in dqn.py, D4PG in d4pg.py).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import grpc
import torch
from grpc_health.v1 import health

from actorq import logs, metrics
from actorq.auth import LEARNER
from actorq.clients import QuantizerClient, ReplayClient
from actorq.config import ConfigError, from_argv
from actorq.rpc import channel, run_until_signalled, service_server
from actorq.v1 import learner_pb2, learner_pb2_grpc
from services.learner.actors import ActorWatch
from services.learner.algorithms import ALGORITHMS
from services.learner.config import LearnerConfig
from services.learner.learner import Learner
from services.learner.loop import TrainingLoop

SERVICE_NAME = learner_pb2.DESCRIPTOR.services_by_name["LearnerService"].full_name

log = logging.getLogger(__name__)


class LearnerServicer(learner_pb2_grpc.LearnerServiceServicer):
    """Reports the training loop's progress."""

    def __init__(self, loop: TrainingLoop, actors: ActorWatch | None = None) -> None:
        self._loop = loop
        self._actors = actors

    def start_watch(self) -> None:
        """Start counting actors (polls replay's stats on a daemon thread)."""
        if self._actors is not None:
            self._actors.start()

    def stop_watch(self) -> None:
        if self._actors is not None:
            self._actors.stop()

    def status(self) -> learner_pb2.LearnerStatus:
        """The loop's status plus the number of actors replay heard from recently."""
        status = self._loop.status()
        if self._actors is not None:
            status.active_actors = self._actors.count()
        return status

    def GetStatus(
        self, request: learner_pb2.LearnerStatusRequest, context: grpc.ServicerContext
    ) -> learner_pb2.LearnerStatus:
        """Training progress, publishing and checkpoint state, actors heard from."""
        return self.status()


def build_server(
    cfg: LearnerConfig, stop_event: threading.Event | None = None
) -> tuple[
    grpc.Server, health.HealthServicer, TrainingLoop, int, list[grpc.Channel], LearnerServicer
]:
    """(server, health, training loop, bound port, channels, servicer); nothing started yet.

    Raises ConfigError for an env the algorithm cannot learn or a checkpoint
    that does not fit. A failed training loop sets stop_event (the process then exits).
    """
    torch.set_num_threads(cfg.torch_threads)
    spaces = ALGORITHMS[cfg.algo].read_spaces(cfg.env)
    learner = Learner(cfg, spaces.obs_dim, spaces.num_actions, spaces.action_bounds)
    channels = [channel(cfg.replay_address, LEARNER), channel(cfg.quantizer_address, LEARNER)]
    loop = TrainingLoop(
        cfg,
        learner,
        ReplayClient(channels[0]),
        QuantizerClient(channels[1]),
        on_failure=stop_event.set if stop_event is not None else None,
    )
    replay = ReplayClient(channels[0])
    watch = ActorWatch(lambda: replay.stats().inserted_by_actor, window_s=cfg.actors_window_s)
    servicer = LearnerServicer(loop, watch)
    server, health_servicer, port = service_server(
        learner_pb2_grpc.add_LearnerServiceServicer_to_server,
        servicer,
        SERVICE_NAME,
        cfg.host,
        cfg.port,
        max_workers=4,
    )
    return server, health_servicer, loop, port, channels, servicer


def main(argv: Sequence[str]) -> None:
    """``actorq serve learner [flags]``: train until SIGTERM, then checkpoint and exit."""
    cfg = from_argv(LearnerConfig, argv, prog="actorq serve learner", section="learner")
    logs.setup("learner")
    stop_event = threading.Event()
    try:
        server, health_servicer, loop, port, channels, servicer = build_server(cfg, stop_event)
    except ConfigError as err:
        raise SystemExit(f"actorq serve learner: {err}") from None
    log.info(
        "serving on %s:%d; env %s, %s, replay %s, quantizer %s",
        cfg.host,
        port,
        cfg.env,
        loop.learner.describe(),
        cfg.replay_address,
        cfg.quantizer_address,
    )
    loop.start()
    servicer.start_watch()
    metrics.serve_from_env("learner", lambda: metrics.learner_samples(servicer.status()))

    def on_stop() -> None:
        servicer.stop_watch()
        loop.stop()
        for ch in channels:
            ch.close()
        log.info(
            "stopped at step %d (checkpoint at step %d, published v%d)",
            loop.learner.steps,
            loop.learner.checkpoint_step,
            loop.publisher.version,
        )

    run_until_signalled(server, health_servicer, on_stop=on_stop, stop_event=stop_event)
    if loop.failed:
        raise SystemExit(f"actorq serve learner: {loop.error}")
