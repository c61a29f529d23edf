"""The weight publisher: ships the newest snapshot to the quantizer on its own thread.

At most one publish is in flight; a snapshot handed over meanwhile replaces
any older one still waiting, so the quantizer always gets the newest weights
and the update loop never waits on it. An unreachable quantizer is retried
with backoff (with the newest weights by then) and logged once per outage;
weights the quantizer refuses are skipped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import grpc

from actorq.clients import QuantizerClient
from actorq.retry import describe, is_transient
from actorq.v1 import common_pb2
from actorq.workers import BackgroundSender
from services.learner.learner import Snapshot

log = logging.getLogger(__name__)


def worth_retrying(code: grpc.StatusCode | None) -> bool:
    """Whether a publish that failed with this code should be tried again."""
    # FAILED_PRECONDITION: the quantizer already serves that version; publish()
    # moved past it, so the next try publishes a version it takes.
    return is_transient(code) or code == grpc.StatusCode.FAILED_PRECONDITION


class Publisher(BackgroundSender[Snapshot]):
    """Publishes snapshots to the quantizer, newest first, one at a time."""

    def __init__(
        self,
        client: QuantizerClient,
        spec: common_pb2.NetworkSpec,
        precisions: Sequence[str],
        version: int = 0,
    ) -> None:
        super().__init__("publisher", log, "publishing weights")
        self._client = client
        self._spec = spec
        self._precisions = list(precisions)
        self.version = version  # the last version the quantizer accepted
        self.last_publish_ms = 0.0
        self._pending: Snapshot | None = None

    def submit(self, snapshot: Snapshot) -> None:
        """Queue snapshot for publishing, replacing an older one not yet sent; never blocks."""
        with self._cond:
            self._pending = snapshot
            self._cond.notify_all()

    def publish(self, snap: Snapshot) -> None:
        """Publish snap as version + 1 now, on the caller's thread.

        Raises grpc.RpcError. A FAILED_PRECONDITION (the quantizer already
        serves that version: a publish that outlived its deadline, or a restart
        from an older checkpoint) first moves ``version`` up to the newest served
        one, so a retry publishes a version the quantizer takes.
        """
        version = self.version + 1
        started = time.perf_counter()
        try:
            self._client.publish(
                policy_version=version,
                learner_step=snap.learner_step,
                network=self._spec,
                weights=snap.weights,
                calibration_obs=snap.calibration_obs,
                precisions=self._precisions,
            )
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.FAILED_PRECONDITION:
                served = max((a.version for a in self._client.list_models().artifacts), default=0)
                self.version = max(self.version, int(served))
            raise
        self.version = version
        self.last_publish_ms = 1000 * (time.perf_counter() - started)

    # -- BackgroundSender hooks ----------------------------------------------------

    def _has_work(self) -> bool:
        return self._pending is not None

    def _take(self) -> Snapshot:
        snap, self._pending = self._pending, None
        assert snap is not None
        return snap

    def _send(self, snap: Snapshot) -> None:
        self.publish(snap)

    def _requeue(self, snap: Snapshot) -> None:
        if self._pending is None:  # nothing newer came: these are the newest
            self._pending = snap

    def _failed(self, snap: Snapshot, err: grpc.RpcError) -> bool:
        retry = worth_retrying(err.code())
        self.outage.failed(
            f"learner step {snap.learner_step}, {describe(err)}",
            "retrying with the newest weights" if retry else "skipping these weights",
        )
        if retry:
            with self._cond:
                self._requeue(snap)
        return retry
