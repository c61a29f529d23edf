"""gRPC edge of the quantizer: ``actorq serve quantizer``.

The servicer only translates: stream messages into the core's assembler and
publish, registry answers into ModelPart streams, core exceptions into status
codes. Everything else lives in plain Python (core, registry, upload, graph).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import grpc
from grpc_health.v1 import health

from actorq import logs, metrics
from actorq.config import from_argv
from actorq.rpc import (
    PART_BYTES,
    run_until_signalled,
    service_server,
)
from actorq.v1 import quantizer_pb2, quantizer_pb2_grpc
from services.quantizer.config import QuantizerConfig
from services.quantizer.core import Quantizer
from services.quantizer.graph import SpecError, WeightsError
from services.quantizer.quantize import QuantizationError
from services.quantizer.registry import RegistryClosedError, StaleVersionError
from services.quantizer.upload import InvalidUploadError, UploadTooLargeError
from services.quantizer.validate import ValidationError

SERVICE_NAME = quantizer_pb2.DESCRIPTOR.services_by_name["QuantizerService"].full_name

log = logging.getLogger(__name__)

# Core exception -> status code for a refused upload.
_PUBLISH_ERRORS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (UploadTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (StaleVersionError, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidUploadError, grpc.StatusCode.INVALID_ARGUMENT),
    (SpecError, grpc.StatusCode.INVALID_ARGUMENT),
    (WeightsError, grpc.StatusCode.INVALID_ARGUMENT),
    (ValidationError, grpc.StatusCode.INVALID_ARGUMENT),
    (QuantizationError, grpc.StatusCode.INTERNAL),
)


class QuantizerServicer(quantizer_pb2_grpc.QuantizerServiceServicer):
    """PublishWeights / GetModel / ListModels over a ``Quantizer`` core."""

    def __init__(self, core: Quantizer) -> None:
        self._core = core
        self._registry = core.registry

    def PublishWeights(
        self, request_iterator: Iterator[quantizer_pb2.WeightsUpload], context: grpc.ServicerContext
    ) -> quantizer_pb2.PublishResponse:
        """Reassemble one upload, build and validate its artifacts, serve them."""
        assembler = self._core.assembler()
        try:
            for message in request_iterator:
                had_header = assembler.header is not None
                assembler.add(message)
                if not had_header and assembler.header is not None:
                    # Refuse a stale version before its weights are streamed.
                    self._registry.check_newer(assembler.header.policy_version)
            upload = assembler.finish()
            artifacts = self._core.publish(upload)
        except tuple(exc for exc, _code in _PUBLISH_ERRORS) as err:
            code = next(c for exc, c in _PUBLISH_ERRORS if isinstance(err, exc))
            self._core.note_rejected()
            header = assembler.header
            where = ""
            if header is not None and not str(err).startswith("policy_version"):
                where = f"policy_version {header.policy_version}: "
            log.warning("refused upload (%s): %s%s", code.name, where, err)
            context.abort(code, f"{where}{err}")
        return quantizer_pb2.PublishResponse(
            policy_version=upload.policy_version, artifacts=artifacts
        )

    def GetModel(
        self, request: quantizer_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> Iterator[quantizer_pb2.ModelPart]:
        """Stream the newest artifact newer than request.newer_than, long-polling
        up to request.wait_s; not_modified if none came but one exists."""
        precision = request.precision
        if precision not in self._registry.precisions:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"precision {precision!r} is not served here; use one of "
                f"{list(self._registry.precisions)}",
            )
        if request.newer_than < 0:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"newer_than must be >= 0, got {request.newer_than}",
            )
        max_wait = self._core.cfg.max_wait_s
        if not (math.isfinite(request.wait_s) and 0 <= request.wait_s <= max_wait):
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"wait_s must be between 0 and {max_wait} seconds, got {request.wait_s}",
            )
        # A cancelled or expired call wakes the waiters so this one stops waiting.
        context.add_callback(self._registry.wake)
        try:
            found = self._registry.wait_newer(
                precision, request.newer_than, request.wait_s, context.is_active
            )
        except RegistryClosedError as err:
            context.abort(grpc.StatusCode.UNAVAILABLE, str(err))
        if not context.is_active():
            return
        if found is None:
            if self._registry.latest(precision) is None:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"no {precision} model has been published yet (waited {request.wait_s:g} s)",
                )
            yield quantizer_pb2.ModelPart(not_modified=True)
            return
        yield quantizer_pb2.ModelPart(artifact=found.meta)
        data = found.data
        for offset in range(0, len(data), PART_BYTES):
            if not context.is_active():
                return
            yield quantizer_pb2.ModelPart(data=data[offset : offset + PART_BYTES])

    def ListModels(
        self, request: quantizer_pb2.ListModelsRequest, context: grpc.ServicerContext
    ) -> quantizer_pb2.ListModelsResponse:
        """Latest artifact per precision plus build/reject counters."""
        return list_models(self._core)


def list_models(core: Quantizer) -> quantizer_pb2.ListModelsResponse:
    """What the quantizer serves: latest artifact per precision, build/reject counters."""
    return quantizer_pb2.ListModelsResponse(
        artifacts=[a.meta for a in core.registry.all_latest()],
        versions_built=core.registry.versions_built,
        rejected_uploads=core.rejected_uploads,
    )


def build_server(
    cfg: QuantizerConfig,
) -> tuple[grpc.Server, health.HealthServicer, Quantizer, int]:
    """A bound (not yet started) quantizer server: (server, health, core, port)."""
    core = Quantizer(cfg)
    server, health_servicer, port = service_server(
        quantizer_pb2_grpc.add_QuantizerServiceServicer_to_server,
        QuantizerServicer(core),
        SERVICE_NAME,
        cfg.host,
        cfg.port,
        cfg.max_workers,
    )
    return server, health_servicer, core, port


def main(argv: Sequence[str] | None = None) -> None:
    """``actorq serve quantizer [--flags]``: serve until SIGTERM/SIGINT."""
    cfg = from_argv(QuantizerConfig, argv, prog="actorq serve quantizer", section="quantizer")
    logger = logs.setup("quantizer")
    server, health_servicer, core, port = build_server(cfg)
    logger.info(
        "serving on %s:%d (precisions %s, int8 method %s)",
        cfg.host,
        port,
        ",".join(cfg.precisions),
        cfg.int8_method,
    )
    metrics.serve_from_env("quantizer", lambda: metrics.quantizer_samples(list_models(core)))
    run_until_signalled(server, health_servicer, on_stop=core.registry.close)
