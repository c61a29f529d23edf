"""Thin typed clients for the ActorQ services, written once for every caller.

Each wraps a generated stub and speaks numpy on the caller's side; none holds
global state: pass it a channel (``actorq.rpc.channel(address)``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import grpc
import numpy as np

from actorq import tensor
from actorq.rpc import PART_BYTES
from actorq.transitions import SampledBatch, Transitions
from actorq.v1 import (
    actor_pb2,
    actor_pb2_grpc,
    common_pb2,
    learner_pb2,
    learner_pb2_grpc,
    quantizer_pb2,
    quantizer_pb2_grpc,
    replay_pb2,
    replay_pb2_grpc,
)
from actorq.workers import Prefetcher

# Closes an Insert stream (replay.proto, TransitionChunk.commit).
COMMIT = replay_pb2.TransitionChunk(commit=True)


class SampleStream:
    """Iterator over sampled batches whose RPC any thread may cancel.

    (A generator cannot be closed while another thread is blocked inside it,
    so the stream keeps the call object and cancels that.)
    """

    def __init__(self, call: Iterator[replay_pb2.SampleBatch]) -> None:
        self._call = call
        self._unread: list[SampledBatch] = []  # the rest of a message of several, last first

    def __iter__(self) -> SampleStream:
        return self

    def __next__(self) -> SampledBatch:
        if not self._unread:
            self._unread = split_batches(next(self._call))[::-1]
        return self._unread.pop()

    def cancel(self) -> None:
        """Cancel the RPC; a thread iterating gets grpc.RpcError (CANCELLED)."""
        self._call.cancel()  # type: ignore[attr-defined]

    close = cancel


def split_batches(msg: replay_pb2.SampleBatch) -> list[SampledBatch]:
    """The batch_count batches of one SampleBatch message (see replay.proto)."""
    whole = SampledBatch(
        Transitions.from_proto(msg.transitions),
        tensor.from_proto(msg.keys),
        tensor.from_proto(msg.weights),
    )
    return [whole] if msg.batch_count <= 1 else whole.split(msg.batch_count)


class ReplayClient:
    """Insert transition chunks and sample batches from a replay service."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = replay_pb2_grpc.ReplayServiceStub(channel)

    def insert(
        self,
        chunks: Sequence[Transitions],
        actor_id: str = "",
        policy_version: int = 0,
        timeout: float | None = None,
    ) -> replay_pb2.InsertResponse:
        """Send chunks as one Insert stream; they are committed all-or-nothing."""
        msgs = [c.to_proto(actor_id, policy_version) for c in chunks]
        return self.insert_protos(msgs, timeout=timeout)

    def insert_protos(
        self, chunks: Sequence[replay_pb2.TransitionChunk], timeout: float | None = None
    ) -> replay_pb2.InsertResponse:
        """Send pre-encoded chunks as one Insert stream, closed by the commit marker
        (the replay commits nothing of a stream that ends without it)."""
        return self._stub.Insert(iter([*chunks, COMMIT]), timeout=timeout)

    def sample_stream(
        self, batch_size: int, num_batches: int = 0, per_message: int = 1
    ) -> SampleStream:
        """Stream sampled batches (0 = until the stream is cancelled), up to per_message
        of them in each message (the stream hands them out one by one)."""
        call = self._stub.Sample(
            replay_pb2.SampleRequest(
                batch_size=batch_size, num_batches=num_batches, batches_per_message=per_message
            )
        )
        return SampleStream(call)

    def update_priorities(
        self, keys: np.ndarray, priorities: np.ndarray, timeout: float | None = None
    ) -> int:
        """Set the priorities of sampled items; returns how many were still live.

        Raises grpc.RpcError (FAILED_PRECONDITION: the replay samples uniformly).
        """
        resp = self._stub.UpdatePriorities(
            replay_pb2.UpdatePrioritiesRequest(
                keys=tensor.to_proto(keys.astype(np.int64), "keys"),
                priorities=tensor.to_proto(priorities.astype(np.float32), "priorities"),
            ),
            timeout=timeout,
        )
        return int(resp.updated)

    def stats(self, timeout: float = 5.0) -> replay_pb2.ReplayStats:
        return self._stub.GetStats(replay_pb2.ReplayStatsRequest(), timeout=timeout)


class PrefetchingSampler:
    """Keeps up to ``prefetch`` sampled batches ready on a background thread.

    The learner's update step then never waits on the network as long as the
    replay can keep up. Errors from the stream are re-raised on ``next()``.

    Batches are requested ``prefetch`` at a time (one Sample call each), the next
    call only once the previous one's batches are taken. One endless stream would
    let HTTP/2 buffer hundreds of drawn batches between replay and learner: the
    replay's rate limiter counts a batch as sampled when it is drawn, so a slow
    learner would then train on batches drawn minutes earlier while the limiter
    let actors insert as if it had trained on them. This way at most about
    2 x prefetch batches are drawn and not yet trained on.
    """

    def __init__(
        self, client: ReplayClient, batch_size: int, prefetch: int = 4, per_message: int = 1
    ) -> None:
        self._call: SampleStream | None = None

        def batches() -> Iterator[SampledBatch]:
            while True:
                self._call = client.sample_stream(batch_size, prefetch, per_message)
                received = 0
                for batch in self._call:
                    received += 1
                    yield batch
                if received < prefetch:  # the replay ended the call early
                    return

        self._prefetcher = Prefetcher(batches, prefetch, "replay-prefetch", cancel=self._cancel)

    def _cancel(self) -> None:
        if self._call is not None:
            self._call.cancel()

    def next(self, timeout: float | None = None) -> SampledBatch:
        """The next batch; queue.Empty on timeout; the stream's error if it failed
        (EOFError if the replay ended it)."""
        try:
            return self._prefetcher.next(timeout)
        except EOFError:
            raise EOFError("the replay ended the sample stream") from None

    def close(self) -> None:
        self._prefetcher.close()


@dataclass
class FetchedModel:
    artifact: common_pb2.ModelArtifact
    data: bytes
    # Seconds from the artifact header's arrival to the last byte: the pull
    # itself, without the long-poll wait that came before it.
    transfer_s: float = 0.0


class QuantizerClient:
    """Publish FP32 weights and fetch served ONNX artifacts."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = quantizer_pb2_grpc.QuantizerServiceStub(channel)

    def publish(
        self,
        *,
        policy_version: int,
        learner_step: int,
        network: common_pb2.NetworkSpec,
        weights: Mapping[str, np.ndarray],
        calibration_obs: np.ndarray | None = None,
        precisions: Sequence[str] = (),
        timeout: float | None = 120.0,
    ) -> quantizer_pb2.PublishResponse:
        """Stream one weights blob (header, then tensors in PART_BYTES pieces)."""

        def messages() -> Iterator[quantizer_pb2.WeightsUpload]:
            header = quantizer_pb2.WeightsHeader(
                policy_version=policy_version,
                learner_step=learner_step,
                network=network,
                precisions=list(precisions),
            )
            if calibration_obs is not None:
                header.calibration_obs.CopyFrom(
                    tensor.to_proto(calibration_obs.astype(np.float32), "calibration_obs")
                )
            yield quantizer_pb2.WeightsUpload(header=header)
            for name, array in weights.items():
                for piece, offset in tensor.split_parts(array, name, PART_BYTES):
                    yield quantizer_pb2.WeightsUpload(
                        tensor=quantizer_pb2.TensorPart(tensor=piece, offset=offset)
                    )

        return self._stub.PublishWeights(messages(), timeout=timeout)

    def fetch(
        self, precision: str, newer_than: int = 0, wait_s: float = 0.0, timeout: float | None = None
    ) -> FetchedModel | None:
        """The latest artifact newer than ``newer_than`` or None if none came within wait_s.

        Raises grpc.RpcError (NOT_FOUND when nothing was ever published and
        wait_s ran out; INVALID_ARGUMENT for an unknown precision).
        """
        request = quantizer_pb2.GetModelRequest(
            precision=precision, newer_than=newer_than, wait_s=wait_s
        )
        deadline = timeout if timeout is not None else wait_s + 60.0
        artifact: common_pb2.ModelArtifact | None = None
        parts: list[bytes] = []
        header_at = 0.0
        for msg in self._stub.GetModel(request, timeout=deadline):
            which = msg.WhichOneof("part")
            if which == "not_modified":
                return None
            if which == "artifact":
                artifact = msg.artifact
                header_at = time.perf_counter()
            elif which == "data":
                parts.append(msg.data)
        if artifact is None:
            raise RuntimeError(f"quantizer sent no artifact header for precision {precision!r}")
        data = b"".join(parts)
        if len(data) != artifact.size_bytes:
            raise RuntimeError(
                f"model v{artifact.version}: got {len(data)} bytes, header says {artifact.size_bytes}"
            )
        return FetchedModel(artifact, data, time.perf_counter() - header_at)

    def list_models(self, timeout: float = 5.0) -> quantizer_pb2.ListModelsResponse:
        return self._stub.ListModels(quantizer_pb2.ListModelsRequest(), timeout=timeout)


class LearnerClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = learner_pb2_grpc.LearnerServiceStub(channel)

    def status(self, timeout: float = 5.0) -> learner_pb2.LearnerStatus:
        return self._stub.GetStatus(learner_pb2.LearnerStatusRequest(), timeout=timeout)


class ActorClient:
    def __init__(self, channel: grpc.Channel) -> None:
        self._stub = actor_pb2_grpc.ActorServiceStub(channel)

    def status(self, timeout: float = 5.0) -> actor_pb2.ActorStatus:
        return self._stub.GetStatus(actor_pb2.ActorStatusRequest(), timeout=timeout)
