"""One retry policy for every service: which gRPC failures are worth retrying,
how long to wait between tries, and how an outage is logged.

Every caller that talks to another service (the learner's sampler, publisher
and priority writer, the actor's sender and model updater, the launcher's
probes) uses these three pieces, so an outage looks the same in every log:
one warning when it starts, one info line when it ends, nothing in between.
"""

from __future__ import annotations

import logging

import grpc

# Worth retrying: the peer is down, restarting, slow, or the call was cut. Every
# other code is an answer about the request itself, which a retry would repeat.
TRANSIENT: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
    }
)


def is_transient(code: grpc.StatusCode | None) -> bool:
    """Whether a call that failed with this status may succeed if tried again."""
    return code in TRANSIENT


def describe(err: BaseException) -> str:
    """``CODE: details`` for a gRPC error, ``Type: message`` for anything else."""
    if isinstance(err, grpc.RpcError):
        return f"{err.code().name}: {err.details()}"
    return f"{type(err).__name__}: {err}"


class Backoff:
    """Growing waits between retries: first_s, doubling up to max_s; reset on success."""

    def __init__(self, first_s: float = 0.2, max_s: float = 5.0) -> None:
        if not 0 < first_s <= max_s:
            raise ValueError(f"need 0 < first_s <= max_s, got {first_s} and {max_s}")
        self.first_s, self.max_s = first_s, max_s
        self._next = first_s

    def next(self) -> float:
        """Seconds to wait before the next try (the one after waits twice as long)."""
        wait, self._next = self._next, min(self.max_s, self._next * 2)
        return wait

    def reset(self) -> None:
        self._next = self.first_s


class Outage:
    """Logs an outage once when it starts and once when it ends.

    ``failed()`` on every failed try (only the first of a run logs a warning),
    ``recovered()`` on every success (logs only when an outage was on).
    ``failures`` counts the failed tries of the current outage.
    """

    def __init__(
        self,
        log: logging.Logger,
        what: str,
        recovery: str = "{what} works again after {failures} failed tries",
    ) -> None:
        self._log = log
        self.what = what
        # The line logged when an outage ends ({what} and {failures} filled in).
        self.recovery = recovery
        self.failures = 0

    @property
    def active(self) -> bool:
        """Whether the last try failed."""
        return self.failures > 0

    def failed(self, reason: str, action: str = "retrying") -> bool:
        """Count a failed try; the first of an outage logs ``WHAT failed (REASON); ACTION``.

        Returns True when this failure started the outage.
        """
        self.failures += 1
        if self.failures == 1:
            self._log.warning("%s failed (%s); %s", self.what, reason, action)
            return True
        return False

    def recovered(self) -> bool:
        """Close an outage, if one is on (logs ``WHAT works again``); True if one was."""
        if not self.failures:
            return False
        self._log.info(self.recovery.format(what=self.what, failures=self.failures))
        self.failures = 0
        return True
