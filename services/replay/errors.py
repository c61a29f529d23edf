"""What a replay call can fail with: the table's domain errors, no gRPC in sight.

The servicer maps each to a status code (``server._ERRORS``); the tables and
the Redis connection layer raise them. ValueError subclasses are refusals of
the request itself (INVALID_ARGUMENT unless mapped otherwise); the rest say
why a valid request could not be served now.
"""

from __future__ import annotations


class InvalidChunkError(ValueError):
    """A transition chunk that cannot be stored, with the field and the reason."""


class TooManyTransitionsError(ValueError):
    """An Insert carrying more transitions than max_insert_transitions."""


class BatchTooLargeError(ValueError):
    """A batch whose bytes would not fit in one gRPC message."""


class TableClosedError(RuntimeError):
    """The table is shutting down; waiting has stopped."""


class StoreUnavailableError(RuntimeError):
    """The store (Redis) cannot be reached now; the call changed nothing it acknowledged."""


class RedisRefusedError(StoreUnavailableError):
    """Redis answered but will not let us in (password, ACL): UNAVAILABLE until fixed,
    and a replica starting up stops at once rather than serving failures."""


class TableMismatchError(RuntimeError):
    """The shared table in Redis was created with other settings than this replica's."""


class WaitAbandonedError(Exception):
    """The caller went away (cancelled RPC) while waiting on the rate limiter."""


class WaitTimeoutError(TimeoutError):
    """The caller's deadline passed while waiting on the rate limiter."""
