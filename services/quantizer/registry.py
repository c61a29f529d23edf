"""The served models: latest artifact per precision, with long-poll waiting.

A policy version is committed all at once (every precision it was built for
appears together) and versions only go up. What is served is one immutable
snapshot, replaced whole by a commit, so readers never wait for a lock and
never see half a version. Waiters block on one ``threading.Condition``: a
commit, a cancelled caller (``wake``) or shutdown (``close``) wakes them;
nothing polls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

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


@dataclass(frozen=True)
class _Served:
    """One moment of the registry: the newest version and its artifacts."""

    version: int = 0  # newest committed policy version (0 before the first)
    versions_built: int = 0  # how many versions were committed
    latest: Mapping[str, StoredArtifact] = field(default_factory=dict)

    def check_newer(self, version: int) -> None:
        if version <= self.version:
            raise StaleVersionError(
                f"policy_version {version} is not newer than the served policy_version "
                f"{self.version}; versions must strictly increase"
            )


class ModelRegistry:
    """Latest validated artifact per precision, thread-safe."""

    def __init__(self, precisions: Sequence[str]) -> None:
        self.precisions = tuple(precisions)
        self._cond = threading.Condition()  # guards commits and closing; wakes waiters
        self._served = _Served()
        self._closed = False

    @property
    def version(self) -> int:
        """The newest committed policy version (0 before the first)."""
        return self._served.version

    @property
    def versions_built(self) -> int:
        """How many policy versions have been committed."""
        return self._served.versions_built

    def check_newer(self, version: int) -> None:
        """StaleVersionError unless version is newer than the served one."""
        self._served.check_newer(version)

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
            served = self._served
            served.check_newer(version)
            latest = {**served.latest, **{a.meta.precision: a for a in artifacts}}
            self._served = _Served(version, served.versions_built + 1, latest)
            self._cond.notify_all()

    def latest(self, precision: str) -> StoredArtifact | None:
        """The newest artifact of precision, or None if none was ever built."""
        return self._served.latest.get(precision)

    def all_latest(self) -> list[StoredArtifact]:
        """The newest artifact of each precision that has one, in configured order."""
        latest = self._served.latest
        return [latest[p] for p in self.precisions if p in latest]

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
                found = self._served.latest.get(precision)
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
        # Set before the notify, which takes the lock: no waiter can miss it.
        self._closed = True
        self.wake()
