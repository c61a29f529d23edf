"""The quantizer as a real `actorq serve quantizer` process, spoken to over gRPC.

Most tests share one module-scoped server (starting a process per test would
dominate the run time); each reads the version currently served, so they do
not depend on their order. Every refused upload is checked for its status
code, a message naming the problem, and that the previous version is still
the one served and the refused version number can still be published.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import ServiceProcess, start_service

from actorq import tensor
from actorq.clients import QuantizerClient
from actorq.ort import make_session
from actorq.retry import is_busy
from actorq.rpc import channel
from actorq.v1 import common_pb2, quantizer_pb2, quantizer_pb2_grpc
from services.quantizer.bench import torch_like_weights

SPEC = common_pb2.NetworkSpec(
    kind="dqn_mlp", obs_dim=4, hidden_sizes=[64, 64], output_dim=2, activation="relu"
)
CALIBRATION_SIZE = 64


@pytest.fixture(scope="module")
def quantizer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    svc = start_service(
        "quantizer",
        ["--calibration-size", str(CALIBRATION_SIZE)],
        tmp_path_factory.mktemp("quantizer"),
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def client(quantizer: ServiceProcess) -> Iterator[QuantizerClient]:
    with channel(quantizer.address) as ch:
        yield QuantizerClient(ch)


@pytest.fixture
def served(client: QuantizerClient) -> int:
    """The policy version served now (publishing a first one if there is none)."""
    listed = client.list_models()
    if not listed.artifacts:
        publish(client, 1)
        return 1
    return max(a.version for a in listed.artifacts)


def weights(spec: common_pb2.NetworkSpec = SPEC, seed: int = 0) -> dict[str, np.ndarray]:
    return torch_like_weights(spec, seed)


def obs_batch(rows: int = 100, obs_dim: int = 4) -> np.ndarray:
    return np.random.default_rng(1).standard_normal((rows, obs_dim)).astype(np.float32)


def publish(client: QuantizerClient, version: int, **kw: Any) -> quantizer_pb2.PublishResponse:
    kw.setdefault("network", SPEC)
    kw.setdefault("weights", weights(kw["network"]))
    return client.publish(policy_version=version, learner_step=10 * version, **kw)


def refused(call: Callable[[], object], code: grpc.StatusCode) -> str:
    """Run call, assert it fails with code, return the status message."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    err = info.value
    assert err.code() == code, f"{err.code()}: {err.details()}"
    return str(err.details())


def assert_still_serving(client: QuantizerClient, version: int) -> None:
    """Both precisions still serve `version`, and version + 1 is still free to publish."""
    for precision in ("fp32", "int8"):
        model = client.fetch(precision)
        assert model is not None and model.artifact.version == version
    assert publish(client, version + 1).policy_version == version + 1


def raw_publish(address: str, messages: list[quantizer_pb2.WeightsUpload]) -> None:
    with channel(address) as ch:
        quantizer_pb2_grpc.QuantizerServiceStub(ch).PublishWeights(iter(messages), timeout=30)


def header(version: int) -> quantizer_pb2.WeightsUpload:
    return quantizer_pb2.WeightsUpload(
        header=quantizer_pb2.WeightsHeader(policy_version=version, network=SPEC)
    )


def piece(name: str, array: np.ndarray, offset: int, nbytes: int) -> quantizer_pb2.WeightsUpload:
    whole = tensor.to_proto(array, name)
    part = common_pb2.Tensor(
        name=name, dtype=whole.dtype, shape=whole.shape, data=whole.data[offset : offset + nbytes]
    )
    return quantizer_pb2.WeightsUpload(tensor=quantizer_pb2.TensorPart(tensor=part, offset=offset))


def all_pieces(ws: dict[str, np.ndarray]) -> list[quantizer_pb2.WeightsUpload]:
    return [piece(name, a, 0, a.nbytes) for name, a in ws.items()]


# --- serving -----------------------------------------------------------------


def test_published_version_is_served_in_fp32_and_int8(client: QuantizerClient, served: int) -> None:
    version = served + 1
    response = publish(client, version, calibration_obs=obs_batch(100))
    assert [(a.precision, a.version) for a in response.artifacts] == [
        ("fp32", version),
        ("int8", version),
    ]
    for precision in ("fp32", "int8"):
        model = client.fetch(precision)
        assert model is not None
        meta = model.artifact
        assert (meta.version, meta.precision, meta.learner_step) == (
            version,
            precision,
            10 * version,
        )
        assert meta.sha256 == hashlib.sha256(model.data).hexdigest()
        assert meta.network == SPEC
        assert meta.build_ms > 0 and meta.created_unix > 0


def test_int8_report_compares_with_fp32_on_the_learners_observations(
    client: QuantizerClient, served: int
) -> None:
    response = publish(client, served + 1, calibration_obs=obs_batch(100))
    report = response.artifacts[1].quantization
    assert report.method == "dynamic"
    assert report.calibration_source == "replay"
    assert report.calibration_samples == CALIBRATION_SIZE  # 100 rows sent, 64 used
    assert 0 < report.max_abs_err < 0.05
    assert report.action_agreement >= 0.9


def test_without_observations_the_report_says_synthetic(
    client: QuantizerClient, served: int
) -> None:
    response = publish(client, served + 1)
    assert {a.quantization.calibration_source for a in response.artifacts} == {"synthetic"}


def test_served_int8_model_runs_and_agrees_with_fp32(client: QuantizerClient, served: int) -> None:
    obs = obs_batch(64)
    fp32 = client.fetch("fp32")
    int8 = client.fetch("int8")
    assert fp32 is not None and int8 is not None
    q32 = make_session(fp32.data).run(["q_values"], {"obs": obs})[0]
    q8 = make_session(int8.data).run(["q_values"], {"obs": obs})[0]
    assert q8.shape == (64, 2)
    assert np.mean(q8.argmax(1) == q32.argmax(1)) >= 0.9


def test_an_upload_may_ask_for_fewer_precisions(client: QuantizerClient, served: int) -> None:
    response = publish(client, served + 1, precisions=["fp32"])
    assert [a.precision for a in response.artifacts] == ["fp32"]
    fp32, int8 = client.fetch("fp32"), client.fetch("int8")
    assert fp32 is not None and fp32.artifact.version == served + 1
    assert int8 is not None and int8.artifact.version <= served


def test_list_models_counts_built_versions_and_refusals(
    client: QuantizerClient, served: int
) -> None:
    before = client.list_models()
    publish(client, served + 1)
    refused(lambda: publish(client, served + 1), grpc.StatusCode.FAILED_PRECONDITION)
    after = client.list_models()
    assert after.versions_built == before.versions_built + 1
    assert after.rejected_uploads == before.rejected_uploads + 1
    assert {(a.precision, a.version) for a in after.artifacts} == {
        ("fp32", served + 1),
        ("int8", served + 1),
    }


def test_paper_size_policy_streams_through_and_int8_is_four_times_smaller(
    client: QuantizerClient, served: int
) -> None:
    big = common_pb2.NetworkSpec(
        kind="dqn_mlp", obs_dim=4, hidden_sizes=[2048, 2048, 2048], output_dim=2
    )
    ws = weights(big)
    assert ws["layers.1.weight"].nbytes > 4 * 1024 * 1024  # above gRPC's default message cap
    publish(client, served + 1, network=big, weights=ws, calibration_obs=obs_batch(64))
    fp32, int8 = client.fetch("fp32"), client.fetch("int8")
    assert fp32 is not None and int8 is not None
    assert fp32.artifact.version == int8.artifact.version == served + 1
    assert fp32.artifact.size_bytes > 32 * 1024 * 1024
    assert fp32.artifact.size_bytes / int8.artifact.size_bytes >= 3.9
    assert int8.artifact.sha256 == hashlib.sha256(int8.data).hexdigest()


# --- refused uploads ---------------------------------------------------------


def test_stale_version_is_refused_naming_both_versions(
    client: QuantizerClient, served: int
) -> None:
    publish(client, served + 2)
    message = refused(lambda: publish(client, served + 1), grpc.StatusCode.FAILED_PRECONDITION)
    assert f"policy_version {served + 1} is not newer" in message
    assert f"served policy_version {served + 2}" in message
    assert_still_serving(client, served + 2)


def test_unknown_precision_is_refused(client: QuantizerClient, served: int) -> None:
    message = refused(
        lambda: publish(client, served + 1, precisions=["fp16"]), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "unknown precision 'fp16'" in message
    assert_still_serving(client, served)


def test_unknown_network_kind_is_refused(client: QuantizerClient, served: int) -> None:
    spec = common_pb2.NetworkSpec()
    spec.CopyFrom(SPEC)
    spec.kind = "lstm"
    message = refused(
        lambda: publish(client, served + 1, network=spec, weights=weights()),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "network.kind 'lstm' is not supported" in message
    assert_still_serving(client, served)


def test_missing_tensor_is_refused_by_name(client: QuantizerClient, served: int) -> None:
    ws = weights()
    del ws["layers.2.bias"]
    message = refused(
        lambda: publish(client, served + 1, weights=ws), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "missing tensors ['layers.2.bias']" in message
    assert_still_serving(client, served)


def test_unexpected_tensor_is_refused_by_name(client: QuantizerClient, served: int) -> None:
    ws = {**weights(), "layers.3.weight": np.zeros((2, 2), np.float32)}
    message = refused(
        lambda: publish(client, served + 1, weights=ws), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "unexpected tensor 'layers.3.weight'" in message
    assert_still_serving(client, served)


def test_wrong_shape_is_refused_by_name(client: QuantizerClient, served: int) -> None:
    ws = weights()
    ws["layers.1.weight"] = np.zeros((64, 32), np.float32)
    message = refused(
        lambda: publish(client, served + 1, weights=ws), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "'layers.1.weight' has shape [64, 32], expected [64, 64]" in message
    assert_still_serving(client, served)


def test_non_float32_tensor_is_refused_by_name(client: QuantizerClient, served: int) -> None:
    ws = weights()
    ws["layers.0.bias"] = ws["layers.0.bias"].astype(np.float64)
    message = refused(
        lambda: publish(client, served + 1, weights=ws), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "'layers.0.bias' has dtype FLOAT64, expected FLOAT32" in message
    assert_still_serving(client, served)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_are_refused_and_never_served(
    client: QuantizerClient, served: int, bad: float
) -> None:
    ws = weights()
    ws["layers.1.weight"][5, 7] = bad
    message = refused(
        lambda: publish(client, served + 1, weights=ws), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "'layers.1.weight' has 1 non-finite values" in message
    assert_still_serving(client, served)


def test_weights_whose_outputs_overflow_are_refused(client: QuantizerClient, served: int) -> None:
    ws = {name: np.full_like(a, 1e30) for name, a in weights().items()}
    message = refused(
        lambda: publish(client, served + 1, weights=ws), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "non-finite q_values" in message
    assert_still_serving(client, served)


def test_calibration_obs_of_the_wrong_width_is_refused(
    client: QuantizerClient, served: int
) -> None:
    message = refused(
        lambda: publish(client, served + 1, calibration_obs=obs_batch(10, obs_dim=5)),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "calibration_obs must be float32 [rows >= 1, obs_dim=4]" in message
    assert_still_serving(client, served)


def test_calibration_obs_with_nan_is_refused(client: QuantizerClient, served: int) -> None:
    obs = obs_batch(10)
    obs[3, 1] = np.nan
    message = refused(
        lambda: publish(client, served + 1, calibration_obs=obs), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "calibration_obs contains NaN or inf" in message
    assert_still_serving(client, served)


def test_tensor_before_header_is_refused(
    quantizer: ServiceProcess, client: QuantizerClient, served: int
) -> None:
    messages = [*all_pieces(weights())[:1], header(served + 1), *all_pieces(weights())[1:]]
    message = refused(
        lambda: raw_publish(quantizer.address, messages), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "first message of a PublishWeights stream must be the header" in message
    assert_still_serving(client, served)


def test_second_header_is_refused(
    quantizer: ServiceProcess, client: QuantizerClient, served: int
) -> None:
    messages = [header(served + 1), header(served + 1), *all_pieces(weights())]
    message = refused(
        lambda: raw_publish(quantizer.address, messages), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "exactly one header" in message
    assert_still_serving(client, served)


def test_empty_stream_is_refused(
    quantizer: ServiceProcess, client: QuantizerClient, served: int
) -> None:
    message = refused(lambda: raw_publish(quantizer.address, []), grpc.StatusCode.INVALID_ARGUMENT)
    assert "needs a header" in message
    assert_still_serving(client, served)


def test_gap_between_tensor_parts_is_refused(
    quantizer: ServiceProcess, client: QuantizerClient, served: int
) -> None:
    ws = weights()
    w1 = ws.pop("layers.1.weight")
    messages = [
        header(served + 1),
        *all_pieces(ws),
        piece("layers.1.weight", w1, 0, 1000),
        piece("layers.1.weight", w1, 2000, w1.nbytes - 2000),
    ]
    message = refused(
        lambda: raw_publish(quantizer.address, messages), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "'layers.1.weight': piece at offset 2000, expected offset 1000" in message
    assert_still_serving(client, served)


def test_parts_disagreeing_on_shape_are_refused(
    quantizer: ServiceProcess, client: QuantizerClient, served: int
) -> None:
    ws = weights()
    w1 = ws.pop("layers.1.weight")
    second = piece("layers.1.weight", w1, 1000, w1.nbytes - 1000)
    second.tensor.tensor.shape[:] = [32, 128]
    messages = [header(served + 1), *all_pieces(ws), piece("layers.1.weight", w1, 0, 1000), second]
    message = refused(
        lambda: raw_publish(quantizer.address, messages), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "'layers.1.weight': a piece says FLOAT32 [32, 128]" in message
    assert_still_serving(client, served)


def test_tensor_with_too_many_bytes_is_refused(
    quantizer: ServiceProcess, client: QuantizerClient, served: int
) -> None:
    ws = weights()
    b0 = ws.pop("layers.0.bias")
    extra = piece("layers.0.bias", b0, 0, b0.nbytes)
    extra.tensor.tensor.data += b"\0\0\0\0"
    message = refused(
        lambda: raw_publish(quantizer.address, [header(served + 1), *all_pieces(ws), extra]),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "'layers.0.bias': pieces carry 260 bytes, but dtype and shape need 256" in message
    assert_still_serving(client, served)


def test_upload_over_the_size_cap_is_refused(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    svc = service_factory("quantizer", ["--max-upload-bytes", "65536"])
    with channel(svc.address) as ch:
        client = QuantizerClient(ch)
        publish(client, 1)  # 64x64: ~19 KB
        big = common_pb2.NetworkSpec(
            kind="dqn_mlp", obs_dim=4, hidden_sizes=[256, 256], output_dim=2
        )
        message = refused(
            lambda: publish(client, 2, network=big, weights=weights(big)),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        )
        assert "exceeds max_upload_bytes=65536" in message
        assert_still_serving(client, 1)


# --- fetching ----------------------------------------------------------------


def test_fetch_of_unknown_precision_is_refused(client: QuantizerClient, served: int) -> None:
    message = refused(lambda: client.fetch("int4"), grpc.StatusCode.INVALID_ARGUMENT)
    assert "precision 'int4' is not served here" in message


def test_negative_wait_is_refused(client: QuantizerClient, served: int) -> None:
    message = refused(
        lambda: client.fetch("int8", wait_s=-1.0, timeout=5), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert "wait_s must be between 0 and" in message


def test_fetch_says_not_modified_when_nothing_newer_comes(
    client: QuantizerClient, served: int
) -> None:
    started = time.monotonic()
    assert client.fetch("int8", newer_than=served, wait_s=0.3) is None
    assert 0.25 <= time.monotonic() - started < 3.0


def test_fetch_before_any_publish_is_not_found_after_waiting(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    svc = service_factory("quantizer")
    with channel(svc.address) as ch:
        message = refused(
            lambda: QuantizerClient(ch).fetch("int8", wait_s=0.2), grpc.StatusCode.NOT_FOUND
        )
    assert "no int8 model has been published yet" in message


def test_long_poll_returns_promptly_when_a_new_version_is_published(
    client: QuantizerClient, served: int
) -> None:
    published_at: list[float] = []

    def publish_later() -> None:
        time.sleep(0.3)
        publish(client, served + 1)
        published_at.append(time.monotonic())

    publisher = threading.Thread(target=publish_later)
    publisher.start()
    model = client.fetch("int8", newer_than=served, wait_s=30.0)
    returned_at = time.monotonic()
    publisher.join()
    assert model is not None and model.artifact.version == served + 1
    assert returned_at - published_at[0] < 1.0


def test_long_polls_past_their_budget_are_refused_busy_and_cancelled_ones_free_it(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    svc = service_factory("quantizer", ["--max-model-polls", "2", "--max-workers", "1"])
    with channel(svc.address) as ch:
        stub = quantizer_pb2_grpc.QuantizerServiceStub(ch)
        request = quantizer_pb2.GetModelRequest(precision="fp32", wait_s=60.0)
        polls = [stub.GetModel(request, timeout=90) for _ in range(2)]
        time.sleep(0.3)
        # Both slots are waiting: a third poll is refused at once, marked busy ...
        with pytest.raises(grpc.RpcError) as info:
            next(stub.GetModel(request, timeout=5))
        assert is_busy(info.value), info.value.details()
        # ... while short calls still have their own thread.
        assert stub.ListModels(quantizer_pb2.ListModelsRequest(), timeout=5).versions_built == 0
        for poll in polls:
            poll.cancel()
        time.sleep(0.3)
        # The cancelled polls gave their slots back: a new one waits (and times out).
        short = quantizer_pb2.GetModelRequest(precision="fp32", wait_s=0.2)
        refused(lambda: next(stub.GetModel(short, timeout=5)), grpc.StatusCode.NOT_FOUND)
