"""The quantizer's guards against a caller that publishes nonsense: version jumps and
models that overflow off the calibration rows."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import numpy as np
import pytest
from conftest import ServiceProcess
from test_quantizer_core import SPEC, upload_messages
from test_quantizer_service import SPEC as SERVICE_SPEC
from test_quantizer_service import weights as service_weights

from actorq import tensor
from actorq.clients import QuantizerClient
from actorq.rpc import channel
from services.learner.learner import Snapshot
from services.learner.publisher import Publisher
from services.quantizer.bench import torch_like_weights
from services.quantizer.config import QuantizerConfig
from services.quantizer.core import Quantizer
from services.quantizer.registry import (
    MAX_POLICY_VERSION,
    ModelRegistry,
    StaleVersionError,
    StoredArtifact,
    VersionJumpError,
)
from services.quantizer.upload import Upload, assemble
from services.quantizer.validate import PROBE_SCALES, ValidationError, probe_rows


def stored(version: int) -> StoredArtifact:
    from actorq.v1 import common_pb2

    return StoredArtifact(common_pb2.ModelArtifact(version=version, precision="fp32"), b"x")


def test_a_version_more_than_max_version_step_past_the_served_one_is_refused() -> None:
    registry = ModelRegistry(["fp32"], max_version_step=10)
    registry.commit(5, [stored(5)])
    with pytest.raises(VersionJumpError, match="jumps 11 past the served policy_version 5"):
        registry.check_newer(16)
    registry.check_newer(15)  # exactly max_version_step: fine
    with pytest.raises(VersionJumpError):
        registry.commit(2**63 - 1, [stored(2**63 - 1)])
    assert registry.version == 5


def test_a_fresh_registry_takes_a_high_first_version_but_not_one_near_int64s_end() -> None:
    registry = ModelRegistry(["fp32"], max_version_step=10)
    registry.check_newer(5000)  # a learner resuming a long run on a restarted quantizer
    with pytest.raises(VersionJumpError, match="beyond"):
        registry.check_newer(MAX_POLICY_VERSION + 1)
    with pytest.raises(StaleVersionError):
        registry.check_newer(0)


def overflowing_upload(scale: float) -> tuple[Upload, np.ndarray]:
    """Weights whose first and last layers are scaled by ``scale``, with calibration
    observations in [-0.01, 0.01]: (the upload, the fp64 outputs on those rows)."""
    weights = torch_like_weights(SPEC)
    for name in ("layers.0.weight", "layers.2.weight"):
        weights[name] = weights[name] * np.float32(scale)
    obs = np.random.default_rng(1).uniform(-0.01, 0.01, (256, SPEC.obs_dim)).astype(np.float32)
    msgs = upload_messages(weights)
    msgs[0].header.calibration_obs.CopyFrom(tensor.to_proto(obs, "calibration_obs"))

    def forward(x: np.ndarray) -> np.ndarray:
        h = x.astype(np.float64)
        for i in range(3):
            h = h @ weights[f"layers.{i}.weight"].T.astype(np.float64) + weights[f"layers.{i}.bias"]
            h = np.maximum(h, 0) if i < 2 else h
        return h

    return assemble(msgs, ["fp32", "int8"], 1 << 20), forward(obs)


def test_weights_near_1e20_finite_on_calibration_but_overflowing_elsewhere_are_refused() -> None:
    upload, on_calibration = overflowing_upload(1e20)
    # The premise: every output on the calibration rows fits in float32 ...
    assert np.abs(on_calibration).max() < np.finfo(np.float32).max
    core = Quantizer(QuantizerConfig())
    # ... yet an observation of 1.0 (100x the calibration range) gives inf.
    with pytest.raises(ValidationError, match="non-finite q_values values on 57 probe"):
        core.publish(upload)
    assert core.registry.all_latest() == []


def test_large_but_sane_weights_are_still_served() -> None:
    upload, _ = overflowing_upload(1e3)
    core = Quantizer(QuantizerConfig())
    assert [m.precision for m in core.publish(upload)] == ["fp32", "int8"]


def test_probes_span_the_observed_range_and_its_widenings() -> None:
    low, high = np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32)
    rows = probe_rows(low, high)
    widest = PROBE_SCALES[-1]
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows.min(axis=0), [-widest, 1 - widest])
    np.testing.assert_allclose(rows.max(axis=0), [widest, 1 + widest])
    np.testing.assert_array_equal(rows, probe_rows(low, high))  # fixed: same range, same rows


def test_the_learner_counts_a_refused_publish_and_moves_past_an_intruders_version(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    """Someone publishes ahead of the learner (within max_version_step): the learner's
    next publish is refused as stale, counted and reported, and the one after lands."""
    quantizer = service_factory("quantizer", ["--max-version-step", "10"])
    with channel(quantizer.address) as ch:
        client = QuantizerClient(ch)
        publisher = Publisher(client, SERVICE_SPEC, ["fp32"])
        snapshot = Snapshot(1, service_weights(), None)
        publisher.publish(snapshot)
        intruder = {"network": SERVICE_SPEC, "weights": service_weights(), "learner_step": 0}
        with pytest.raises(grpc.RpcError) as jump:
            client.publish(policy_version=12, **intruder)  # 11 past v1: refused
        assert jump.value.code() == grpc.StatusCode.OUT_OF_RANGE
        client.publish(policy_version=11, **intruder)
        with pytest.raises(grpc.RpcError):
            publisher.publish(snapshot)  # v2: stale now
        assert publisher.refused == 1
        assert "the quantizer refused v2: FAILED_PRECONDITION" in publisher.refusal
        publisher.publish(snapshot)
        assert (publisher.version, publisher.refusal) == (12, "")
