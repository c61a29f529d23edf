"""The learner's threads: the training loop, the publisher and the priority writer.

Training loop: wait for the quantizer, publish version 1 (the starting
weights, so actors can act), wait for the replay, then
sample -> update -> every publish_every_steps hand a snapshot to the
publisher -> every checkpoint_every_s write a checkpoint.

Publisher: ships the newest snapshot to the quantizer on its own thread. At
most one publish is in flight; a snapshot handed over meanwhile replaces any
older one still waiting, so the quantizer always gets the newest weights and
the update loop never waits on it.

Priority writer: sends each update's new priorities (|TD error| + eps) to the
replay on its own thread. Updates wait in a bounded queue; one UpdatePriorities
call carries everything waiting, a key sampled twice meanwhile sent once with
its newest priority. When the replay falls behind by more than
max_pending_priorities, the oldest updates are dropped and counted: a stale
priority only makes sampling less sharp, while waiting would stall learning.
A replay that samples uniformly refuses the first call (FAILED_PRECONDITION)
and the writer stops sending.

An unreachable replay or quantizer is retried with backoff and logged once
per outage. Errors that retrying cannot fix (the replay refuses our batch
size, the quantizer refuses our network, a batch that does not fit the
network) stop the loop with state "failed" and the reason in ``error``.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import grpc
import numpy as np

from actorq.clients import PrefetchingSampler, QuantizerClient, ReplayClient
from actorq.rpc import wait_healthy
from actorq.v1 import common_pb2, learner_pb2
from services.learner.config import LearnerConfig
from services.learner.learner import Learner, Snapshot

# Worth retrying: the peer is down, restarting, slow or the call was cut.
TRANSIENT = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
    }
)
PROGRESS_LOG_EVERY_S = 30.0

log = logging.getLogger(__name__)


class LearnerFailure(RuntimeError):
    """An error retrying cannot fix; the message says what and why."""


class Backoff:
    """Growing waits for retries: 0.2 s doubling up to max_s, reset on success."""

    def __init__(self, first_s: float = 0.2, max_s: float = 5.0) -> None:
        self.first_s, self.max_s = first_s, max_s
        self._next = first_s

    def next(self) -> float:
        wait, self._next = self._next, min(self.max_s, self._next * 2)
        return wait

    def reset(self) -> None:
        self._next = self.first_s


class RateMeter:
    """Events per second over the last window_s seconds."""

    def __init__(self, window_s: float = 10.0, resolution_s: float = 0.25) -> None:
        self.window_s, self.resolution_s = window_s, resolution_s
        self._points: collections.deque[tuple[float, int]] = collections.deque()
        self._lock = threading.Lock()  # written by the loop, read by GetStatus

    def add(self, total: int, now: float | None = None) -> None:
        """Record the running total (cheap to call every step)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if self._points and now - self._points[-1][0] < self.resolution_s:
                return
            self._points.append((now, total))
            while len(self._points) > 2 and now - self._points[1][0] > self.window_s:
                self._points.popleft()

    def rate(self, total: int, now: float | None = None) -> float:
        """Rate from the oldest point in the window up to (now, total); 0 without history."""
        now = time.monotonic() if now is None else now
        with self._lock:
            points = [p for p in self._points if now - p[0] <= self.window_s]
        if not points or now - points[0][0] <= 0:
            return 0.0
        t0, n0 = points[0]
        return (total - n0) / (now - t0)


class Publisher:
    """Publishes snapshots to the quantizer, newest first, one at a time."""

    def __init__(
        self,
        client: QuantizerClient,
        spec: common_pb2.NetworkSpec,
        precisions: Sequence[str],
        version: int = 0,
    ) -> None:
        self._client = client
        self._spec = spec
        self._precisions = list(precisions)
        self.version = version  # the last version the quantizer accepted
        self.last_publish_ms = 0.0
        self.failures = 0
        self._pending: Snapshot | None = None
        self._in_flight = False
        self._cond = threading.Condition()
        self._stopping = False
        self._failing = False  # log once per run of failures
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, snapshot: Snapshot) -> None:
        """Queue snapshot for publishing, replacing an older one not yet sent; never blocks."""
        with self._cond:
            self._pending = snapshot
            self._cond.notify_all()

    def idle(self) -> bool:
        """Nothing waiting and nothing in flight."""
        with self._cond:
            return self._pending is None and not self._in_flight

    def wait_idle(self, timeout: float) -> bool:
        """Block until idle() or timeout; returns idle()."""
        with self._cond:
            return self._cond.wait_for(
                lambda: self._pending is None and not self._in_flight, timeout
            )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the publish in flight (waiting up to timeout for it)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

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

    def _run(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None or self._stopping)
                if self._stopping:
                    return
                snap, self._pending = self._pending, None
                self._in_flight = True
            assert snap is not None
            retry_after = 0.0
            try:
                self.publish(snap)
                if self._failing:
                    log.info("publishing works again: v%d", self.version)
                self._failing = False
                backoff.reset()
            except grpc.RpcError as err:
                self.failures += 1
                code = err.code()
                if not self._failing:
                    log.warning(
                        "publishing learner step %d failed (%s: %s); %s",
                        snap.learner_step,
                        code.name,
                        err.details(),
                        "retrying with the newest weights"
                        if code in TRANSIENT or code == grpc.StatusCode.FAILED_PRECONDITION
                        else "skipping these weights",
                    )
                    self._failing = True
                if code in TRANSIENT or code == grpc.StatusCode.FAILED_PRECONDITION:
                    retry_after = backoff.next()
                    with self._cond:
                        if self._pending is None:  # nothing newer came: these are the newest
                            self._pending = snap
            finally:
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()
            if retry_after:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, retry_after)


class PriorityWriter:
    """Sends new priorities to the replay on its own thread; ``submit`` never blocks."""

    def __init__(
        self, client: ReplayClient, max_pending: int = 65_536, timeout_s: float = 10.0
    ) -> None:
        self._client = client
        self.max_pending = max_pending
        self.timeout_s = timeout_s
        self.sent = 0  # priorities the replay accepted (live or not by then)
        self.dropped = 0  # priorities dropped because the replay fell behind
        self.failures = 0  # UpdatePriorities calls that failed
        self.enabled = True  # False once the replay said it samples uniformly
        # Oldest first; each entry one update's (keys, priorities).
        self._pending: collections.deque[tuple[np.ndarray, np.ndarray]] = collections.deque()
        self._pending_count = 0
        self._in_flight = False
        self._cond = threading.Condition()
        self._stopping = False
        self._failing = False  # log once per run of failures
        self._thread = threading.Thread(target=self._run, name="priority-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, keys: np.ndarray, priorities: np.ndarray) -> None:
        """Queue priorities for keys; drops (and counts) the oldest waiting past max_pending."""
        with self._cond:
            if not self.enabled:
                return
            self._push(keys, priorities, newest=True)
            self._cond.notify_all()

    def _push(self, keys: np.ndarray, priorities: np.ndarray, newest: bool) -> None:
        """Under the lock: add an update (newest, or back at the old end after a failed
        send), then drop the oldest until the bound holds."""
        if newest:
            self._pending.append((keys, priorities))
        else:
            self._pending.appendleft((keys, priorities))
        self._pending_count += len(keys)
        while self._pending_count > self.max_pending:
            old_keys, _ = self._pending.popleft()
            self._pending_count -= len(old_keys)
            self.dropped += len(old_keys)

    @property
    def pending(self) -> int:
        """Priorities waiting to be sent."""
        with self._cond:
            return self._pending_count

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing waits or is in flight (or timeout); True if so."""
        with self._cond:
            return self._cond.wait_for(
                lambda: (not self._pending or not self.enabled) and not self._in_flight, timeout
            )

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the call in flight (waiting up to timeout for it); what still
        waits is dropped: the learner is going away, and so, often, is the replay."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _take(self) -> tuple[np.ndarray, np.ndarray]:
        """Under the lock: everything waiting, one priority per key (the newest)."""
        keys = np.concatenate([k for k, _ in self._pending])
        priorities = np.concatenate([p for _, p in self._pending])
        self._pending.clear()
        self._pending_count = 0
        # np.unique keeps the first of equal keys: reverse so that is the newest.
        keys, first = np.unique(keys[::-1], return_index=True)
        return keys, priorities[::-1][first]

    def _run(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._stopping)
                if self._stopping:
                    return
                keys, priorities = self._take()
                self._in_flight = True
            retry_after = 0.0
            try:
                self._client.update_priorities(keys, priorities, timeout=self.timeout_s)
                self.sent += len(keys)
                if self._failing:
                    log.info("sending priorities to replay works again")
                self._failing = False
                backoff.reset()
            except grpc.RpcError as err:
                retry_after = self._failed(err, keys, priorities, backoff)
            finally:
                with self._cond:
                    self._in_flight = False
                    self._cond.notify_all()
            if retry_after:
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, retry_after)

    def _failed(
        self, err: grpc.RpcError, keys: np.ndarray, priorities: np.ndarray, backoff: Backoff
    ) -> float:
        """Handle a failed send; returns seconds to wait before the next one."""
        code = err.code()
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            log.info("the replay samples uniformly (%s); not sending priorities", err.details())
            with self._cond:
                self.enabled = False
                self._pending.clear()
                self._pending_count = 0
            return 0.0
        self.failures += 1
        transient = code in TRANSIENT
        if not self._failing and not self._stopping:
            log.warning(
                "sending %d priorities to replay failed (%s); %s",
                len(keys),
                _describe(err),
                "retrying" if transient else "dropping them",
            )
            self._failing = True
        with self._cond:
            if transient:  # older than anything submitted meanwhile
                self._push(keys, priorities, newest=False)
            else:
                self.dropped += len(keys)
        return backoff.next() if transient else 0.0


class TrainingLoop:
    """Runs a Learner against a replay and a quantizer on a background thread."""

    def __init__(
        self,
        cfg: LearnerConfig,
        learner: Learner,
        replay: ReplayClient,
        quantizer: QuantizerClient,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.learner = learner
        self.replay = replay
        self.publisher = Publisher(
            quantizer, learner.agent.network_spec(), cfg.precisions, learner.resumed_version
        )
        self.priorities = PriorityWriter(replay, cfg.max_pending_priorities)
        self.state = "starting"
        self.error = ""
        self.rate = RateMeter()
        self._on_failure = on_failure
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_safely, name="learner", daemon=True)

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self.publisher.start()
        self.priorities.start()
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop updating, let an in-flight publish finish, write a final checkpoint."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.publisher.stop(timeout=timeout / 3)
        self.priorities.stop(timeout=timeout / 6)
        self.learner.save_checkpoint(self.publisher.version)
        if not self.failed:
            self.state = "stopped"

    def _run_safely(self) -> None:
        try:
            self._run()
        except LearnerFailure as err:
            log.error("learner failed: %s", err)
            self._fail(str(err))
        except Exception as err:  # a bug: report it with its traceback, then stop the process
            log.exception("learner loop failed")
            self._fail(f"{type(err).__name__}: {err}")

    def _fail(self, error: str) -> None:
        self.error = error
        self.state = "failed"
        if self._on_failure is not None:
            self._on_failure()

    # -- the loop --------------------------------------------------------------

    def _run(self) -> None:
        cfg = self.cfg
        if not self._wait_healthy("quantizer", cfg.quantizer_address):
            return
        if not self._publish_initial():
            return
        if not self._wait_healthy("replay", cfg.replay_address):
            return
        self.state = "waiting_for_data"
        sampler: PrefetchingSampler | None = None
        backoff = Backoff()
        outage = False
        last_ckpt = last_log = time.monotonic()
        try:
            while not self._stop.is_set():
                if cfg.max_learner_steps and self.learner.steps >= cfg.max_learner_steps:
                    self._finish()
                    self._stop.wait()
                    break
                if sampler is None:
                    sampler = PrefetchingSampler(self.replay, cfg.batch_size, cfg.prefetch)
                try:
                    sampled = sampler.next(timeout=0.5)
                except queue.Empty:  # replay still filling, or rate-limited
                    continue
                except (grpc.RpcError, EOFError) as err:
                    sampler.close()
                    sampler = None
                    self._check_sample_error(err)
                    if not outage:
                        log.warning("sampling from replay failed (%s); retrying", _describe(err))
                        outage = True
                    self.state = "waiting_for_data"
                    self._stop.wait(backoff.next())
                    continue
                if outage:
                    log.info("sampling from replay works again")
                    outage = False
                    backoff.reset()
                try:
                    self.learner.train_step(sampled)
                except ValueError as err:  # a batch that cannot belong to this network
                    raise LearnerFailure(
                        f"replay sent a batch this learner cannot use: {err}"
                    ) from None
                if self.learner.new_priorities is not None:
                    self.priorities.submit(*self.learner.new_priorities)
                self.state = "training"
                steps = self.learner.steps
                self.rate.add(steps)
                if steps % cfg.publish_every_steps == 0:
                    self.publisher.submit(self.learner.snapshot())
                now = time.monotonic()
                if cfg.checkpoint_dir and now - last_ckpt >= cfg.checkpoint_every_s:
                    self.learner.save_checkpoint(self.publisher.version)
                    last_ckpt = time.monotonic()
                if now - last_log >= PROGRESS_LOG_EVERY_S:
                    self._log_progress()
                    last_log = now
        finally:
            if sampler is not None:
                sampler.close()

    def _wait_healthy(self, name: str, address: str) -> bool:
        """Block until the service at address is SERVING; False if stopped first."""
        backoff = Backoff()
        logged = False
        while not self._stop.is_set():
            try:
                wait_healthy(address, timeout_s=1.0)
                if logged:
                    log.info("%s at %s is up", name, address)
                return True
            except TimeoutError as err:
                if not logged:
                    log.warning("waiting for %s at %s (%s)", name, address, err)
                    logged = True
            self._stop.wait(backoff.next())
        return False

    def _publish_initial(self) -> bool:
        """Publish the starting (or resumed) weights so actors can act; False if stopped."""
        backoff = Backoff()
        logged = False
        while not self._stop.is_set():
            try:
                self.publisher.publish(self.learner.snapshot())
                log.info(
                    "published the %s weights of step %d as v%d",
                    "resumed" if self.learner.resumed_from_step else "initial",
                    self.learner.steps,
                    self.publisher.version,
                )
                return True
            except grpc.RpcError as err:
                code = err.code()
                # FAILED_PRECONDITION: publish() moved past the versions already served;
                # the retry below publishes the next one.
                if code not in TRANSIENT and code != grpc.StatusCode.FAILED_PRECONDITION:
                    raise LearnerFailure(
                        f"the quantizer at {self.cfg.quantizer_address} refused the initial "
                        f"weights ({_describe(err)})"
                    ) from None
                self.publisher.failures += 1
                if not logged:
                    log.warning("initial publish failed (%s); retrying", _describe(err))
                    logged = True
            self._stop.wait(backoff.next())
        return False

    def _check_sample_error(self, err: BaseException) -> None:
        if isinstance(err, grpc.RpcError) and err.code() not in TRANSIENT:
            raise LearnerFailure(
                f"the replay at {self.cfg.replay_address} refuses to sample batches of "
                f"{self.cfg.batch_size} ({_describe(err)})"
            )

    def _finish(self) -> None:
        """max_learner_steps reached: publish the final weights, checkpoint, idle."""
        steps = self.learner.steps
        if steps % self.cfg.publish_every_steps:
            self.publisher.submit(self.learner.snapshot())
        self.learner.save_checkpoint(self.publisher.version)
        self.state = "stopped"
        log.info("reached max_learner_steps %d; no more updates", steps)

    def _log_progress(self) -> None:
        lr = self.learner
        log.info(
            "step %d (%.1f/s) loss %.4g mean_q %.4g | published v%d (%.0f ms, %d failures)",
            lr.steps,
            self.rate.rate(lr.steps),
            lr.loss,
            lr.mean_q,
            self.publisher.version,
            self.publisher.last_publish_ms,
            self.publisher.failures,
        )

    # -- status ----------------------------------------------------------------

    def status(self) -> learner_pb2.LearnerStatus:
        """A consistent-enough view for GetStatus (plain reads, no locks on the hot path)."""
        lr = self.learner
        steps = lr.steps
        return learner_pb2.LearnerStatus(
            state=self.state,
            learner_steps=steps,
            learner_steps_per_s=self.rate.rate(steps),
            loss=lr.loss,
            mean_q=lr.mean_q,
            published_version=self.publisher.version,
            last_publish_ms=self.publisher.last_publish_ms,
            publish_failures=self.publisher.failures,
            checkpoint_step=lr.checkpoint_step,
            last_checkpoint_unix=lr.last_checkpoint_unix,
            resumed_from_step=lr.resumed_from_step,
            error=self.error,
            transitions_sampled=lr.transitions_sampled,
            priorities_sent=self.priorities.sent,
            priorities_dropped=self.priorities.dropped,
        )


def _describe(err: BaseException) -> str:
    if isinstance(err, grpc.RpcError):
        return f"{err.code().name}: {err.details()}"
    return f"{type(err).__name__}: {err}"
