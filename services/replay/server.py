"""gRPC edge of the replay: ``actorq serve replay``.

The servicer only translates: TransitionChunk messages into numpy columns
for the table, sampled batches into SampleBatch messages, table exceptions
into status codes. Storing, sampling and rate limiting live in ``table``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health

from actorq import logs, metrics, tensor
from actorq.config import from_argv
from actorq.retry import BUSY_METADATA, DOWN_METADATA_KEY
from actorq.rpc import (
    MAX_BATCHES_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    DependencyWatch,
    run_until_signalled,
    service_server,
)
from actorq.v1 import replay_pb2, replay_pb2_grpc
from actorq.workers import Prefetcher
from services.replay.checks import batch_row_bytes
from services.replay.config import ReplayConfig
from services.replay.errors import (
    BatchTooLargeError,
    InvalidChunkError,
    RedisRefusedError,
    StoreUnavailableError,
    TableClosedError,
    TableMismatchError,
    TooManyTransitionsError,
    WaitAbandonedError,
    WaitTimeoutError,
)
from services.replay.factory import build_table
from services.replay.intake import BufferFullError, InsertBudget, InsertIntake, InsertTooLargeError
from services.replay.journal import JournalError
from services.replay.sampler import PrioritiesNotSupportedError
from services.replay.store import is_redis_url
from services.replay.table import SampledBatch, Table

SERVICE_NAME = replay_pb2.DESCRIPTOR.services_by_name["ReplayService"].full_name

# Room left in a sampled batch's message for the protobuf framing around the arrays.
_BATCH_HEADROOM_BYTES = 64 * 1024
# Drawn-but-unsent bytes one Sample stream may hold (prefetch_depth): a few batches
# of the usual size, two of the largest.
SAMPLE_BUFFER_BYTES = 2 * MAX_MESSAGE_BYTES

log = logging.getLogger(__name__)

# What a call may fail with after its input was accepted (the store's own troubles).
_STORE_ERRORS = (StoreUnavailableError, TableMismatchError)

# Table exception -> status code, first match wins.
_ERRORS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (TooManyTransitionsError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InsertTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BufferFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (BatchTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PrioritiesNotSupportedError, grpc.StatusCode.FAILED_PRECONDITION),
    (WaitTimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (TableClosedError, grpc.StatusCode.UNAVAILABLE),
    (StoreUnavailableError, grpc.StatusCode.UNAVAILABLE),  # Redis down or restarting
    (TableMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (ValueError, grpc.StatusCode.INVALID_ARGUMENT),  # invalid chunks, signature, batch size
)


def _code(err: Exception) -> grpc.StatusCode:
    return next(code for exc, code in _ERRORS if isinstance(err, exc))


def encode_batches(batches: Sequence[SampledBatch]) -> replay_pb2.SampleBatch:
    """Sampled batches (one or more, of one size) as one SampleBatch message, their rows
    one batch after the other."""
    if len(batches) == 1:
        return encode_batch(batches[0])
    joined = SampledBatch(
        {name: np.concatenate([b.columns[name] for b in batches]) for name in batches[0].columns},
        np.concatenate([b.keys for b in batches]),
        np.concatenate([b.weights for b in batches]),
    )
    msg = encode_batch(joined)
    msg.batch_count = len(batches)
    return msg


def batches_per_message(table: Table, batch_size: int, asked: int) -> int:
    """Batches one message carries: ``asked`` (0: 1), fewer where they would not fit
    (before the first insert, rows of the smallest possible size are assumed)."""
    asked = max(1, asked)
    if table.max_batch_bytes is None:
        return asked
    per_batch = max(1, batch_size) * batch_row_bytes(table.signature)
    return max(1, min(asked, table.max_batch_bytes // per_batch))


def encode_batch(batch: SampledBatch) -> replay_pb2.SampleBatch:
    """A sampled batch as a SampleBatch message."""
    cols = batch.columns
    return replay_pb2.SampleBatch(
        transitions=replay_pb2.TransitionChunk(
            obs=tensor.to_proto(cols["obs"], "obs"),
            action=tensor.to_proto(cols["action"], "action"),
            reward=tensor.to_proto(cols["reward"], "reward"),
            discount=tensor.to_proto(cols["discount"], "discount"),
            next_obs=tensor.to_proto(cols["next_obs"], "next_obs"),
        ),
        keys=tensor.to_proto(batch.keys, "keys"),
        weights=tensor.to_proto(batch.weights, "weights"),
    )


class ReplayServicer(replay_pb2_grpc.ReplayServiceServicer):
    """Insert / Sample / UpdatePriorities / GetStats over a ``Table`` (memory or Redis)."""

    def __init__(
        self,
        table: Table,
        sample_prefetch: int = 0,
        max_insert_bytes: int = 64 * 1024 * 1024,
        max_buffered_insert_bytes: int = 256 * 1024 * 1024,
    ) -> None:
        self._table = table
        self._sample_prefetch = sample_prefetch
        self._max_insert_bytes = max_insert_bytes
        self._budget = InsertBudget(max_buffered_insert_bytes)

    def _abort(self, context: grpc.ServicerContext, rpc: str, err: Exception) -> None:
        code = _code(err)
        # A Redis outage fails every call; the table logs it once per outage instead.
        if not isinstance(err, StoreUnavailableError):
            log.warning("refused %s (%s): %s", rpc, code.name, err)
        else:  # say what is down, for callers that show it (the launcher's progress line)
            where = getattr(self._table, "location", "the store")
            context.set_trailing_metadata(((DOWN_METADATA_KEY, f"Redis at {where}"),))
        context.abort(code, str(err))

    def Insert(
        self, request_iterator: Iterator[replay_pb2.TransitionChunk], context: grpc.ServicerContext
    ) -> replay_pb2.InsertResponse:
        """Collect the stream's chunks up to its commit marker, then commit those its
        sender had not stored before, all at once (or none)."""
        table = self._table
        intake = InsertIntake(
            self._budget, self._max_insert_bytes, table.max_insert_transitions, table.max_abs_reward
        )
        try:
            return self._insert(intake, request_iterator, context)
        finally:
            intake.release()

    def _insert(
        self,
        intake: InsertIntake,
        request_iterator: Iterator[replay_pb2.TransitionChunk],
        context: grpc.ServicerContext,
    ) -> replay_pb2.InsertResponse:
        table = self._table
        try:
            for msg in request_iterator:
                intake.add(msg)  # refuses before keeping a chunk that breaks a bound
            if not intake.complete:
                if not context.is_active():
                    return replay_pb2.InsertResponse()  # cut short: nobody to answer
                raise InvalidChunkError(
                    "the Insert stream ended without its commit marker (a TransitionChunk "
                    "with only commit set, after the last chunk); nothing was stored"
                )
            marks = intake.marks()
        except BufferFullError as err:
            context.set_trailing_metadata((BUSY_METADATA,))
            self._abort(context, "Insert", err)
        except ValueError as err:
            table.note_rejected()
            self._abort(context, "Insert", err)
        if not context.is_active():  # cut or cancelled after the marker: store nothing
            return replay_pb2.InsertResponse()
        # A blocked insert wakes as soon as its caller goes away.
        context.add_callback(table.wake)
        try:
            done = table.insert_stream(
                intake.chunks,
                marks,
                should_continue=context.is_active,
                timeout=context.time_remaining(),
            )
        except WaitAbandonedError:
            return replay_pb2.InsertResponse()  # nobody is listening any more
        except (ValueError, WaitTimeoutError, TableClosedError, *_STORE_ERRORS) as err:
            self._abort(context, "Insert", err)
        return replay_pb2.InsertResponse(
            chunks=len(intake.chunks),
            transitions=intake.transitions,
            size=done.size,
            duplicates=done.duplicates,
        )

    def Sample(
        self, request: replay_pb2.SampleRequest, context: grpc.ServicerContext
    ) -> Iterator[replay_pb2.SampleBatch]:
        """Stream batches until num_batches are sent (0: until the client cancels)."""
        table = self._table
        if (
            request.num_batches < 0
            or not 0 <= request.batches_per_message <= MAX_BATCHES_PER_MESSAGE
        ):
            table.note_rejected()
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"num_batches must be >= 0 and batches_per_message in [0, {MAX_BATCHES_PER_MESSAGE}] "
                "(num_batches 0 streams until cancelled; batches_per_message 0 sends one "
                f"batch per message), got {request.num_batches} and "
                f"{request.batches_per_message}",
            )
        context.add_callback(table.wake)
        prefetcher: Prefetcher[replay_pb2.SampleBatch] | None = None
        batches: Iterable[replay_pb2.SampleBatch]
        depth = prefetch_depth(table, request.batch_size, self._sample_prefetch)
        if depth:
            batches = prefetcher = prefetched_batches(table, request, context.is_active, depth)
        else:
            batches = _drawn_batches(table, request, context.is_active)
        try:
            yield from batches
        except WaitAbandonedError:
            return  # nobody is listening any more
        except _SAMPLE_ERRORS as err:
            self._abort(context, "Sample", err)
        finally:
            if prefetcher is not None:
                prefetcher.close()

    def UpdatePriorities(
        self, request: replay_pb2.UpdatePrioritiesRequest, context: grpc.ServicerContext
    ) -> replay_pb2.UpdatePrioritiesResponse:
        """Pass priorities to the sampler (FAILED_PRECONDITION for uniform sampling)."""
        try:
            keys = tensor.from_proto(request.keys)
            priorities = tensor.from_proto(request.priorities)
            updated = self._table.update_priorities(keys, priorities)
        except (ValueError, PrioritiesNotSupportedError) as err:
            self._table.note_rejected()
            self._abort(context, "UpdatePriorities", err)
        except _STORE_ERRORS as err:
            self._abort(context, "UpdatePriorities", err)
        return replay_pb2.UpdatePrioritiesResponse(updated=updated)

    def GetStats(
        self, request: replay_pb2.ReplayStatsRequest, context: grpc.ServicerContext
    ) -> replay_pb2.ReplayStats:
        """Counters, limiter settings and per-actor activity."""
        try:
            stats = self._table.stats()
        except _STORE_ERRORS as err:
            self._abort(context, "GetStats", err)
        return replay_pb2.ReplayStats(**dataclasses.asdict(stats))


# What ends a Sample stream with a status (WaitAbandonedError: the caller left).
_SAMPLE_ERRORS = (ValueError, TableClosedError, *_STORE_ERRORS)


def _drawn_batches(
    table: Table,
    request: replay_pb2.SampleRequest,
    is_active: Callable[[], bool],
    group: int = 1,
) -> Iterator[replay_pb2.SampleBatch]:
    """Encoded messages of up to batches_per_message batches each, drawn up to ``group``
    (at least batches_per_message) at a time (one store call, for Redis one round
    trip) but never past num_batches; the table's error ends it."""
    sent = 0
    while request.num_batches == 0 or sent < request.num_batches:
        # Never more drawn at once than one message holds (or the prefetch depth).
        per = batches_per_message(table, request.batch_size, request.batches_per_message)
        want = max(group, per)
        count = want if request.num_batches == 0 else min(want, request.num_batches - sent)
        batches = table.sample_many(request.batch_size, count, should_continue=is_active)
        # Again: an insert during the wait may have fixed the row size just now.
        per = batches_per_message(table, request.batch_size, request.batches_per_message)
        for first in range(0, len(batches), per):
            yield encode_batches(batches[first : first + per])
        sent += len(batches)


def prefetch_depth(table: Table, batch_size: int, prefetch: int) -> int:
    """How many batches a Sample stream draws ahead: ``prefetch``, fewer when its
    batches are big, so one stream holds at most about SAMPLE_BUFFER_BYTES drawn
    but not yet sent (a batch the table's layout is not known for yet counts as
    the largest a message allows). 0: prefetching off."""
    if prefetch == 0:
        return 0
    signature = table.signature
    per_batch = (
        max(1, batch_size) * batch_row_bytes(signature)
        if signature is not None
        else (table.max_batch_bytes or MAX_MESSAGE_BYTES)
    )
    return max(1, min(prefetch, SAMPLE_BUFFER_BYTES // per_batch))


def prefetched_batches(
    table: Table,
    request: replay_pb2.SampleRequest,
    is_active: Callable[[], bool],
    depth: int,
) -> Prefetcher[replay_pb2.SampleBatch]:
    """``_drawn_batches`` run ahead on a thread of its own, ``depth`` batches drawn
    at a time: up to 2 x depth batches are drawn before the client takes them.

    The thread blocks on Redis (or numpy) with the GIL released while the
    gRPC thread serialises and sends the previous batches; drawing several
    per store call saves Redis a round trip and script run per batch.
    Closing the prefetcher makes a draw waiting on the limiter give up.
    """
    closed = threading.Event()

    def should_continue() -> bool:
        return is_active() and not closed.is_set()

    def cancel() -> None:
        closed.set()
        table.wake()

    per = max(1, request.batches_per_message)
    return Prefetcher(
        lambda: _drawn_batches(table, request, should_continue, depth),
        max(1, -(-depth // per)),  # messages of up to ``per`` batches: depth batches
        "sample-prefetch",
        cancel,
    )


def build_server(
    cfg: ReplayConfig,
) -> tuple[grpc.Server, health.HealthServicer, Table, int]:
    """A bound (not yet started) replay server: (server, health, table, port)."""
    table = build_table(cfg, max_batch_bytes=MAX_MESSAGE_BYTES - _BATCH_HEADROOM_BYTES)
    servicer = ReplayServicer(
        table, cfg.sample_prefetch, cfg.max_insert_bytes, cfg.max_buffered_insert_bytes
    )
    server, health_servicer, port = service_server(
        replay_pb2_grpc.add_ReplayServiceServicer_to_server,
        servicer,
        SERVICE_NAME,
        cfg.host,
        cfg.port,
        cfg.max_workers,
        limits={"Insert": cfg.max_insert_streams, "Sample": cfg.max_sample_streams},
    )
    return server, health_servicer, table, port


def main(argv: Sequence[str] | None = None) -> None:
    """``actorq serve replay [--flags]``: serve until SIGTERM/SIGINT."""
    cfg = from_argv(ReplayConfig, argv, prog="actorq serve replay", section="replay")
    logger = logs.setup("replay")
    try:
        server, health_servicer, table, port = build_server(cfg)
    except JournalError as err:
        raise SystemExit(f"actorq serve replay: {err}") from None
    watch: DependencyWatch | None = None
    if is_redis_url(cfg.store):
        _attach(table, logger)
        # NOT_SERVING while Redis cannot be reached: probes take the replica out.
        watch = DependencyWatch(health_servicer, SERVICE_NAME, _store_check(table))
        watch.start()
    ratio = (
        f"samples_per_insert {cfg.samples_per_insert:g}, "
        f"error_buffer {cfg.effective_error_buffer:g}"
        if cfg.samples_per_insert > 0
        else "no ratio limit"
    )
    logger.info(
        "serving on %s:%d (%s store%s, capacity %d, %s sampler, min_size_to_sample %d, %s)",
        cfg.host,
        port,
        cfg.store_label,
        f" journaled in {cfg.journal}" if cfg.journal else "",
        cfg.capacity,
        cfg.sampler,
        cfg.min_size_to_sample,
        ratio,
    )
    metrics.serve_from_env(
        "replay",
        lambda: metrics.replay_samples(replay_pb2.ReplayStats(**dataclasses.asdict(table.stats()))),
    )

    def on_stop() -> None:
        if watch is not None:
            watch.stop()
        table.close()

    run_until_signalled(server, health_servicer, on_stop=on_stop)


def _store_check(table: Table) -> Callable[[], str]:
    """What the health watch asks: '' while the Redis table answers, else why not."""
    from services.replay.redis_table import RedisTable  # a Redis store: redis-py is there

    assert isinstance(table, RedisTable)
    return table.store_problem


def _attach(table: Table, logger: logging.Logger) -> None:
    """Check the shared table at start: other settings stop us; Redis down does not.

    A replica is stateless, so it may start before Redis: it reports
    NOT_SERVING, calls fail with UNAVAILABLE until Redis answers, and the first
    that reaches it (or the health watch) creates or checks the table.
    """
    from services.replay.redis_table import RedisTable  # a Redis store: redis-py is there

    assert isinstance(table, RedisTable)
    try:
        table.attach()
    except (TableMismatchError, RedisRefusedError) as err:  # retrying will not help
        raise SystemExit(f"actorq serve replay: {err}") from None
    except StoreUnavailableError:  # the table logged it
        logger.warning(
            "health reports NOT_SERVING until Redis answers; then the table is created or checked"
        )
        return
    for warning in table.persistence_warnings():
        logger.warning("%s", warning)
