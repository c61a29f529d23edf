"""The quantizer's core, free of gRPC: an upload in, validated artifacts served.

``Quantizer.publish`` turns one checked upload into an fp32 graph, quantizes
it to int8 if asked, validates every model on the calibration batch and only
then commits all of them to the registry together. Any failure stores nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

import numpy as np
import onnx

from actorq.v1 import common_pb2
from services.quantizer import graph
from services.quantizer.config import QuantizerConfig
from services.quantizer.quantize import quantize_int8, synthetic_calibration
from services.quantizer.registry import ModelRegistry, StoredArtifact
from services.quantizer.upload import Upload, UploadAssembler
from services.quantizer.validate import (
    ACTION_TOLERANCE,
    ObservationRange,
    ValidationError,
    check_onnx,
    compare,
    probe_rows,
    run_model,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Calibration:
    """The observation batch every artifact is checked on (and static_qdq calibrated with)."""

    obs: np.ndarray
    source: str  # "replay" or "synthetic"


def choose_calibration(upload: Upload, rows: int) -> Calibration:
    """The learner's observations (first ``rows``) or a synthetic batch when none came."""
    if upload.calibration_obs is not None:
        obs = np.ascontiguousarray(upload.calibration_obs[:rows], dtype=np.float32)
        return Calibration(obs, "replay")
    obs_dim = int(upload.header.network.obs_dim)
    return Calibration(synthetic_calibration(obs_dim, rows), "synthetic")


def _artifact(
    upload: Upload,
    precision: str,
    data: bytes,
    report: common_pb2.QuantizationReport,
    build_ms: float,
) -> StoredArtifact:
    meta = common_pb2.ModelArtifact(
        version=upload.policy_version,
        precision=precision,
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        network=upload.header.network,
        quantization=report,
        build_ms=build_ms,
        learner_step=upload.header.learner_step,
        created_unix=time.time(),
    )
    return StoredArtifact(meta, data)


class Quantizer:
    """Builds, validates and serves model artifacts for each published policy version."""

    def __init__(self, cfg: QuantizerConfig, registry: ModelRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry or ModelRegistry(cfg.precisions, cfg.max_version_step)
        # One build at a time: builds are CPU-bound and the learner publishes in order.
        self._build_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._rejected = 0
        self._seen = ObservationRange()  # what calibration showed so far (probes span it)

    @property
    def rejected_uploads(self) -> int:
        """Uploads refused so far (bad input, stale version, failed validation)."""
        with self._stats_lock:
            return self._rejected

    def note_rejected(self) -> None:
        """Count one refused upload."""
        with self._stats_lock:
            self._rejected += 1

    def assembler(self) -> UploadAssembler:
        """A fresh assembler for one PublishWeights stream."""
        return UploadAssembler(self.cfg.precisions, self.cfg.max_upload_bytes)

    def publish(self, upload: Upload) -> list[common_pb2.ModelArtifact]:
        """Build and validate every requested precision, then serve them together.

        Raises graph.SpecError / graph.WeightsError (bad weights),
        ValidationError (a model that must not be served),
        registry.StaleVersionError (version not newer) or
        quantize.QuantizationError; nothing is stored in any of those cases.
        """
        version = upload.policy_version
        spec = upload.header.network
        self.registry.check_newer(version)
        with self._build_lock:
            self.registry.check_newer(version)
            calib = choose_calibration(upload, self.cfg.calibration_size)
            output = graph.output_name(spec)
            n = int(calib.obs.shape[0])
            probes = probe_rows(*self._seen.bounds(calib.obs))

            t0 = time.perf_counter()
            fp32_model = graph.build_onnx(spec, upload.weights)
            fp32 = fp32_model.SerializeToString()
            check_onnx(fp32, f"policy_version {version} fp32")
            label = f"policy_version {version} fp32"
            reference = run_model(fp32, calib.obs, output, label, probes)
            fp32_ms = 1000 * (time.perf_counter() - t0)

            built: list[StoredArtifact] = []
            if "fp32" in upload.precisions:
                report = common_pb2.QuantizationReport(
                    method="none",
                    max_abs_err=0.0,
                    action_agreement=1.0,
                    calibration_samples=n,
                    calibration_source=calib.source,
                )
                built.append(_artifact(upload, "fp32", fp32, report, fp32_ms))
            if "int8" in upload.precisions:
                built.append(self._build_int8(upload, fp32_model, calib, reference, output, probes))
            self.registry.commit(version, built)
            if calib.source == "replay":  # real observations only widen what probes span
                self._seen.note(calib.obs)
        log.info(
            "serving policy_version %d (learner_step %d): %s",
            version,
            upload.header.learner_step,
            ", ".join(
                f"{a.meta.precision} {a.meta.size_bytes} B in {a.meta.build_ms:.0f} ms"
                + (
                    f" (max_abs_err {a.meta.quantization.max_abs_err:.2e}, "
                    f"agreement {a.meta.quantization.action_agreement:.3f})"
                    if a.meta.precision != "fp32"
                    else ""
                )
                for a in built
            ),
        )
        return [a.meta for a in built]

    def _build_int8(
        self,
        upload: Upload,
        fp32_model: onnx.ModelProto,
        calib: Calibration,
        reference: np.ndarray,
        output: str,
        probes: np.ndarray,
    ) -> StoredArtifact:
        version = upload.policy_version
        label = f"policy_version {version} int8"
        t0 = time.perf_counter()
        data = quantize_int8(
            fp32_model,
            self.cfg.int8_method,
            calib.obs,
            workdir=self.cfg.workdir or None,
            **self.cfg.int8_options(),
        )
        check_onnx(data, label)
        values = run_model(data, calib.obs, output, label, probes)
        action_range = graph.action_range(upload.header.network)
        cmp = compare(reference, values, action_range)
        build_ms = 1000 * (time.perf_counter() - t0)
        if cmp.action_agreement < self.cfg.min_action_agreement:
            what = (
                "greedy actions agree with fp32"
                if action_range is None
                else f"actions are within {ACTION_TOLERANCE:g} of the action range of fp32"
            )
            raise ValidationError(
                f"{label}: {what} on {cmp.action_agreement:.3f} of "
                f"{cmp.samples} calibration rows, below min_action_agreement "
                f"{self.cfg.min_action_agreement}"
            )
        report = common_pb2.QuantizationReport(
            method=self.cfg.int8_method,
            max_abs_err=cmp.max_abs_err,
            action_agreement=cmp.action_agreement,
            calibration_samples=cmp.samples,
            calibration_source=calib.source,
        )
        return _artifact(upload, "int8", data, report, build_ms)
