"""The learner's training loop, on a thread of its own.

Wait for the quantizer, publish version 1 (the starting weights, so actors
can act), wait for the replay, then sample -> update -> send the new
priorities to the priority writer (priorities.py) -> every
publish_every_steps hand a snapshot to the publisher (publisher.py) -> every
checkpoint_every_s write a checkpoint.

An unreachable replay or quantizer is retried with backoff and logged once
per outage (``actorq.retry``). Errors that retrying cannot fix (the replay
refuses our batch size, the quantizer refuses our network, a batch that does
not fit the network) stop the loop with state "failed" and the reason in ``error``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

import grpc

from actorq import retry
from actorq.clients import PrefetchingSampler, QuantizerClient, ReplayClient
from actorq.retry import Backoff, Outage, describe
from actorq.rpc import wait_healthy
from actorq.transitions import SampledBatch
from actorq.v1 import learner_pb2
from actorq.workers import RateMeter
from services.learner.config import LearnerConfig
from services.learner.learner import Learner
from services.learner.priorities import PriorityWriter
from services.learner.publisher import Publisher, worth_retrying

PROGRESS_LOG_EVERY_S = 30.0

log = logging.getLogger(__name__)


class LearnerFailure(RuntimeError):
    """An error retrying cannot fix; the message says what and why."""


class LoopTimes:
    """Where the training loop's time goes: warm-up (until the first sampled batch),
    then waiting for batches, update steps, and the rest (snapshots, checkpoints).

    Written by the loop thread only; GetStatus reads plain floats.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_batch: float | None = None
        self.sample_wait_s = 0.0
        self.update_s = 0.0

    def waited(self, since: float, got_batch: bool) -> None:
        """Account a wait for a batch that began at ``since`` (perf_counter)."""
        now = time.perf_counter()
        if self.first_batch is None:
            if got_batch:
                self.first_batch = now  # the wait so far was warm-up
            return
        self.sample_wait_s += now - since

    @property
    def warmup_s(self) -> float:
        end = self.first_batch if self.first_batch is not None else time.perf_counter()
        return end - self.started

    @property
    def loop_s(self) -> float:
        """Seconds since the first sampled batch (0 before it)."""
        return 0.0 if self.first_batch is None else time.perf_counter() - self.first_batch


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
        self.times = LoopTimes()
        self._on_failure = on_failure
        self._last_checkpoint = self._last_log = 0.0  # monotonic times, set when training starts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_safely, name="learner", daemon=True)
        # The first update's one-time costs, paid while the services start and replay
        # fills (Learner.warm_up); the first real update waits for it. Its seconds once
        # it has ended (0 before).
        self.update_warm_up_s = 0.0
        self._warm_up: threading.Thread | None = threading.Thread(
            target=self._warm_up_safely, name="learner-warm-up", daemon=True
        )

    @property
    def failed(self) -> bool:
        return self.state == "failed"

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._warm_up is not None:
            self._warm_up.start()
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

    def _warm_up_safely(self) -> None:
        started = time.perf_counter()
        try:
            seconds = self.learner.warm_up()
            log.info("warmed up the update path in %.2f s (a throwaway copy of the agent)", seconds)
        except Exception as err:  # only a head start: the real first update reports errors
            log.warning("warm-up update on a copy of the agent failed (%s); going on", err)
        self.update_warm_up_s = max(time.perf_counter() - started, 1e-6)

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
        self.times = LoopTimes()  # from here on the loop waits for data or trains
        sampler: PrefetchingSampler | None = None
        backoff, outage = Backoff(), Outage(log, "sampling from replay")
        self._last_checkpoint = self._last_log = time.monotonic()
        try:
            while not self._stop.is_set():
                if cfg.max_learner_steps and self.learner.steps >= cfg.max_learner_steps:
                    self._finish()
                    self._stop.wait()
                    break
                if sampler is None:
                    sampler = PrefetchingSampler(
                        self.replay, cfg.batch_size, cfg.prefetch, cfg.batches_per_message
                    )
                waiting_since = time.perf_counter()
                try:
                    sampled = sampler.next(timeout=0.5)
                except queue.Empty:  # replay still filling, or rate-limited
                    self.times.waited(waiting_since, got_batch=False)
                    continue
                except (grpc.RpcError, EOFError) as err:
                    sampler.close()
                    sampler = None
                    self._check_sample_error(err)
                    outage.failed(describe(err))
                    self.state = "waiting_for_data"
                    self._stop.wait(backoff.next())
                    self.times.waited(waiting_since, got_batch=False)
                    continue
                self.times.waited(waiting_since, got_batch=True)
                if outage.recovered():
                    backoff.reset()
                self._step(sampled)
        finally:
            if sampler is not None:
                sampler.close()

    def _step(self, sampled: SampledBatch) -> None:
        """Train on one batch, then hand on what it produced: priorities, weights,
        checkpoints, progress."""
        cfg = self.cfg
        if self._warm_up is not None:
            self._warm_up.join()
            self._warm_up = None
        started = time.perf_counter()
        try:
            self.learner.train_step(sampled)
        except ValueError as err:  # a batch that cannot belong to this network
            raise LearnerFailure(f"replay sent a batch this learner cannot use: {err}") from None
        self.times.update_s += time.perf_counter() - started
        if self.learner.new_priorities is not None:
            self.priorities.submit(*self.learner.new_priorities)
        self.state = "training"
        steps = self.learner.steps
        self.rate.add(steps)
        if steps % cfg.publish_every_steps == 0:
            self.publisher.submit(self.learner.snapshot())
        now = time.monotonic()
        if cfg.checkpoint_dir and now - self._last_checkpoint >= cfg.checkpoint_every_s:
            self.learner.save_checkpoint(self.publisher.version)
            self._last_checkpoint = time.monotonic()
        if now - self._last_log >= PROGRESS_LOG_EVERY_S:
            self._log_progress()
            self._last_log = now

    def _wait_healthy(self, name: str, address: str) -> bool:
        """Block until the service at address is SERVING; False if stopped first."""
        backoff, outage = Backoff(), Outage(log, f"health check of the {name}")
        while not self._stop.is_set():
            try:
                wait_healthy(address, timeout_s=1.0)
                outage.recovered()
                return True
            except TimeoutError as err:
                outage.failed(str(err), f"waiting for {name} at {address}")
            self._stop.wait(backoff.next())
        return False

    def _publish_initial(self) -> bool:
        """Publish the starting (or resumed) weights so actors can act; False if stopped."""
        backoff, outage = Backoff(), Outage(log, "initial publish")
        while not self._stop.is_set():
            try:
                self.publisher.publish(self.learner.snapshot())
                outage.recovered()
                log.info(
                    "published the %s weights of step %d as v%d",
                    "resumed" if self.learner.resumed_from_step else "initial",
                    self.learner.steps,
                    self.publisher.version,
                )
                return True
            except grpc.RpcError as err:
                # FAILED_PRECONDITION: publish() moved past the versions already served;
                # the retry below publishes the next one.
                if not worth_retrying(err):
                    raise LearnerFailure(
                        f"the quantizer at {self.cfg.quantizer_address} refused the initial "
                        f"weights ({describe(err)})"
                    ) from None
                self.publisher.failures += 1
                outage.failed(describe(err))
            self._stop.wait(backoff.next())
        return False

    def _check_sample_error(self, err: BaseException) -> None:
        # A busy replay (all Sample slots in use) is backed off from like an outage.
        if isinstance(err, grpc.RpcError) and not retry.worth_retrying(err):
            raise LearnerFailure(
                f"the replay at {self.cfg.replay_address} refuses to sample batches of "
                f"{self.cfg.batch_size} ({describe(err)})"
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
            warmup_s=self.times.warmup_s,
            sample_wait_s=self.times.sample_wait_s,
            update_s=self.times.update_s,
            loop_s=self.times.loop_s,
            device=lr.device_name(),
            publishes_refused=self.publisher.refused,
            publish_error=self.publisher.refusal,
            update_warm_up_s=self.update_warm_up_s,
        )
