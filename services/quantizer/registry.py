"""The served models: latest artifact per precision, with long-poll waiting.

A policy version is committed all at once (every precision it was built for
appears together) and versions only go up. Waiters block on one
``threading.Condition``: a commit, a cancelled caller (``wake``) or shutdown
(``close``) wakes them; nothing polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from actorq.v1 import common_pb2


class StaleVersionError(ValueError):
    """A policy version that is not newer than the one already served."""


class RegistryClosedError(RuntimeError):
    """The registry is shutting down; waiting for models has stopped."""


@dataclass(frozen=True)
class StoredArtifact:
    """One servable ONNX model: its metadata and bytes."""

    meta: common_pb2.ModelArtifact
    data: bytes


class ModelRegistry:
    """Latest validated artifact per precision, thread-safe."""

    def __init__(self, precisions: Sequence[str]) -> None:
        self.precisions = tuple(precisions)
        self._cond = threading.Condition()
        self._latest: dict[str, StoredArtifact] = {}
        self._version = 0
        self._versions_built = 0
        self._closed = False

    @property
    def version(self) -> int:
        """The newest committed policy version (0 before the first)."""
        with self._cond:
            return self._version

    @property
    def versions_built(self) -> int:
        """How many policy versions have been committed."""
        with self._cond:
            return self._versions_built

    def check_newer(self, version: int) -> None:
        """StaleVersionError unless version is newer than the served one."""
        with self._cond:
            self._check_newer_locked(version)

    def _check_newer_locked(self, version: int) -> None:
        if version <= self._version:
            raise StaleVersionError(
                f"policy_version {version} is not newer than the served policy_version "
                f"{self._version}; versions must strictly increase"
            )

    def commit(self, version: int, artifacts: Sequence[StoredArtifact]) -> None:
        """Serve all artifacts of one version at once and wake every waiter.

        Raises StaleVersionError (storing nothing) if a newer or equal version
        was committed meanwhile.
        """
        for artifact in artifacts:
            if artifact.meta.version != version:
                raise ValueError(
                    f"artifact {artifact.meta.precision} has version {artifact.meta.version}, "
                    f"committing {version}"
                )
            if artifact.meta.precision not in self.precisions:
                raise ValueError(f"precision {artifact.meta.precision!r} is not served here")
        with self._cond:
            self._check_newer_locked(version)
            for artifact in artifacts:
                self._latest[artifact.meta.precision] = artifact
            self._version = version
            self._versions_built += 1
            self._cond.notify_all()

    def latest(self, precision: str) -> StoredArtifact | None:
        """The newest artifact of precision, or None if none was ever built."""
        with self._cond:
            return self._latest.get(precision)

    def all_latest(self) -> list[StoredArtifact]:
        """The newest artifact of each precision that has one, in configured order."""
        with self._cond:
            return [self._latest[p] for p in self.precisions if p in self._latest]

    def wait_newer(
        self,
        precision: str,
        newer_than: int,
        wait_s: float,
        is_active: Callable[[], bool] = lambda: True,
    ) -> StoredArtifact | None:
        """The latest artifact of precision if its version > newer_than, waiting
        up to wait_s seconds for one; None if none came (or is_active turned
        false, e.g. the caller cancelled; call ``wake`` to make it look again).

        Raises RegistryClosedError when the registry closes while waiting.
        """
        deadline = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            while True:
                found = self._latest.get(precision)
                if found is not None and found.meta.version > newer_than:
                    return found
                if self._closed:
                    raise RegistryClosedError("the quantizer is shutting down")
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not is_active():
                    return None
                self._cond.wait(remaining)

    def wake(self) -> None:
        """Make every waiter re-check its condition (e.g. its caller went away)."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Stop all current and future waits with RegistryClosedError."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
