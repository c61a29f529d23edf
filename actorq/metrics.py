"""Prometheus metrics of one service process, served on ``ACTORQ_METRICS_PORT``.

Metrics are read at scrape time from what each service already counts (the
same numbers its gRPC status reports), so nothing is added to an actor's step
loop or the learner's update. A service hands ``serve_from_env`` a function
returning ``Sample``s; counters end in ``_total`` and rates are left to
Prometheus (``rate(actorq_replay_inserted_transitions_total[1m])``), except
where the service already measures a rate itself (steps/s).

The port is off (0) unless set: ``actorq train`` starts every service on one
host, where one fixed port would collide. The images set it to 9100. The
endpoint listens on 127.0.0.1 unless ``ACTORQ_METRICS_HOST`` says otherwise
(a container sets 0.0.0.0 for Prometheus to reach it): the numbers are not
secret, but nothing is served to a network nobody asked for.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

# prometheus_client is imported where metrics are served: every service imports this
# module, the port is off in `actorq train`, and each import delays every service's start.
if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

METRICS_PORT_ENV = "ACTORQ_METRICS_PORT"
METRICS_HOST_ENV = "ACTORQ_METRICS_HOST"
DEFAULT_METRICS_HOST = "127.0.0.1"
PREFIX = "actorq_"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One metric value: name without the ``actorq_`` prefix (counters end in ``_total``)."""

    name: str
    help: str
    value: float
    kind: str = "gauge"
    labels: Mapping[str, str] = field(default_factory=dict)


class CallbackCollector:
    """Asks ``read`` for the current samples at every scrape (a prometheus_client
    collector: the registry calls ``collect``)."""

    def __init__(self, read: Callable[[], Iterable[Sample]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            samples = list(self._read())
        except Exception as err:  # a scrape must not take the service down
            log.warning("metrics: reading the service's state failed: %s", err)
            return
        families: dict[str, Any] = {}
        for s in samples:
            full = PREFIX + s.name
            key = full.removesuffix("_total") if s.kind == "counter" else full
            family = families.get(key)
            if family is None:
                cls = CounterMetricFamily if s.kind == "counter" else GaugeMetricFamily
                family = cls(key, s.help, labels=sorted(s.labels))
                families[key] = family
            family.add_metric([s.labels[k] for k in sorted(s.labels)], float(s.value))
        yield from families.values()


def registry_for(read: Callable[[], Iterable[Sample]]) -> CollectorRegistry:
    """A registry of this process's ActorQ metrics (no global default registry)."""
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(CallbackCollector(read))
    return registry


def port_from_env(env: Mapping[str, str] | None = None) -> int:
    """The metrics port from ``ACTORQ_METRICS_PORT`` (0: metrics off); ValueError if invalid."""
    env = os.environ if env is None else env
    raw = env.get(METRICS_PORT_ENV, "").strip() or "0"
    try:
        port = int(raw)
    except ValueError:
        raise ValueError(
            f"{METRICS_PORT_ENV}={raw!r} is not a port number (0 turns metrics off)"
        ) from None
    if not 0 <= port <= 65535:
        raise ValueError(f"{METRICS_PORT_ENV}={port} is outside 0..65535")
    return port


def serve_from_env(
    service: str,
    read: Callable[[], Iterable[Sample]],
    env: Mapping[str, str] | None = None,
) -> int | None:
    """Serve /metrics on ACTORQ_METRICS_PORT (host ACTORQ_METRICS_HOST, default 127.0.0.1).

    Returns the port, or None when metrics are off. The HTTP server runs on a
    daemon thread for the life of the process.
    """
    env = os.environ if env is None else env
    port = port_from_env(env)
    if port == 0:
        return None
    from prometheus_client import start_http_server

    host = env.get(METRICS_HOST_ENV) or DEFAULT_METRICS_HOST
    registry = registry_for(read)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    bound = int(server.server_port)
    log.info("%s metrics on http://%s:%d/metrics", service, host, bound)
    return bound


# What each service exposes, read from the same status messages its gRPC API returns.


def actor_samples(status: Any) -> list[Sample]:
    """An ``ActorStatus``: env steps, step-time breakdown, model version in use."""
    labels = {"actor_id": status.actor_id, "precision": status.precision}
    b = status.breakdown
    return [
        Sample("actor_env_steps_total", "env steps taken", status.env_steps, "counter", labels),
        Sample("actor_episodes_total", "episodes finished", status.episodes, "counter", labels),
        Sample(
            "actor_env_steps_per_second",
            "env steps per second",
            status.env_steps_per_s,
            labels=labels,
        ),
        Sample(
            "actor_env_step_seconds", "mean env.step time per step", b.env_us / 1e6, labels=labels
        ),
        Sample(
            "actor_inference_seconds",
            "mean policy inference time per step",
            b.inference_us / 1e6,
            labels=labels,
        ),
        Sample(
            "actor_model_version",
            "policy version the actor runs",
            status.model_version,
            labels=labels,
        ),
        Sample(
            "actor_model_bytes", "size of the ONNX model in use", status.model_bytes, labels=labels
        ),
        Sample("actor_epsilon", "exploration epsilon", status.epsilon, labels=labels),
        Sample(
            "actor_transitions_sent_total",
            "transitions sent to replay",
            status.transitions_sent,
            "counter",
            labels,
        ),
        Sample(
            "actor_send_failures_total",
            "failed Insert calls",
            status.send_failures,
            "counter",
            labels,
        ),
        Sample(
            "actor_pending_chunks", "chunks queued for replay", status.pending_chunks, labels=labels
        ),
        Sample("actor_model_swaps_total", "model swaps", status.swap.swaps, "counter", labels),
    ]


def replay_samples(stats: Any) -> list[Sample]:
    """A ``ReplayStats``: size, inserts and samples (rates via Prometheus rate())."""
    samples = [
        Sample("replay_size", "transitions held", stats.size),
        Sample("replay_capacity", "transitions the table can hold", stats.capacity),
        Sample(
            "replay_inserted_transitions_total", "transitions inserted", stats.inserted, "counter"
        ),
        Sample("replay_sampled_transitions_total", "transitions sampled", stats.sampled, "counter"),
        Sample("replay_evicted_transitions_total", "transitions evicted", stats.evicted, "counter"),
        Sample(
            "replay_insert_calls_total", "Insert calls committed", stats.insert_calls, "counter"
        ),
        Sample("replay_sample_batches_total", "batches sampled", stats.sample_batches, "counter"),
        Sample(
            "replay_rejected_calls_total",
            "calls refused as invalid",
            stats.rejected_calls,
            "counter",
        ),
        Sample(
            "replay_insert_blocked_seconds_total",
            "seconds inserts waited on the rate limiter",
            stats.insert_blocked_s,
            "counter",
        ),
        Sample(
            "replay_sample_blocked_seconds_total",
            "seconds samples waited on the rate limiter",
            stats.sample_blocked_s,
            "counter",
        ),
        Sample(
            "replay_observed_samples_per_insert",
            "sampled / inserted",
            stats.observed_samples_per_insert,
        ),
    ]
    for actor_id, count in stats.inserted_by_actor.items():
        samples.append(
            Sample(
                "replay_actor_inserted_transitions_total",
                "transitions inserted per actor",
                count,
                "counter",
                {"actor_id": actor_id},
            )
        )
    return samples


def learner_samples(status: Any) -> list[Sample]:
    """A ``LearnerStatus``: steps, steps/s, loss, published version, actors heard from."""
    return [
        Sample("learner_steps_total", "updates done", status.learner_steps, "counter"),
        Sample("learner_steps_per_second", "updates per second", status.learner_steps_per_s),
        Sample("learner_loss", "loss of the latest update", status.loss),
        Sample("learner_mean_q", "mean Q-value of the latest batch", status.mean_q),
        Sample(
            "learner_published_version", "newest policy version published", status.published_version
        ),
        Sample(
            "learner_publish_failures_total", "failed publishes", status.publish_failures, "counter"
        ),
        Sample(
            "learner_checkpoint_step",
            "update step of the latest checkpoint",
            status.checkpoint_step,
        ),
        Sample(
            "learner_transitions_sampled_total",
            "transitions trained on",
            status.transitions_sampled,
            "counter",
        ),
        Sample(
            "learner_active_actors",
            "actors whose inserts replay counted recently",
            status.active_actors,
        ),
    ]


def quantizer_samples(models: Any) -> list[Sample]:
    """A ``ListModelsResponse``: versions built, build time and int8 error per precision."""
    samples = [
        Sample(
            "quantizer_versions_built_total",
            "policy versions built",
            models.versions_built,
            "counter",
        ),
        Sample(
            "quantizer_rejected_uploads_total",
            "uploads refused",
            models.rejected_uploads,
            "counter",
        ),
    ]
    for a in models.artifacts:
        labels = {"precision": a.precision}
        samples += [
            Sample("quantizer_latest_version", "newest version served", a.version, labels=labels),
            Sample(
                "quantizer_build_seconds",
                "build time of the newest version",
                a.build_ms / 1e3,
                labels=labels,
            ),
            Sample(
                "quantizer_model_bytes", "size of the newest model", a.size_bytes, labels=labels
            ),
            Sample(
                "quantizer_max_abs_error",
                "largest |output - fp32 output| on calibration rows (0 for fp32)",
                a.quantization.max_abs_err,
                labels=labels,
            ),
            Sample(
                "quantizer_action_agreement",
                "fraction of calibration rows whose greedy action matches fp32",
                a.quantization.action_agreement,
                labels=labels,
            ),
        ]
    return samples
