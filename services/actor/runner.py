"""The actor's core: a step loop, a sender and a model updater, each on its own thread.

- Step loop: epsilon-greedy action (discrete) or the policy's action plus
  clipped Gaussian noise (continuous) from the current policy, env.step, n-step
  transitions written into a preallocated chunk buffer; a full chunk is
  encoded once and handed to the send queue. Nothing on this thread waits on
  the network except a full send queue (backpressure, by design: a replay
  whose rate limiter holds inserts back slows the actors down).
- Sender: sends queued chunks as Insert streams, retrying with exponential
  backoff while the replay is unreachable; a chunk leaves the queue only
  once the replay acknowledged it (or refused it as invalid, which is logged).
- Model updater: long-polls the quantizer for a newer version, loads it and
  publishes it through one attribute the step loop reads between steps, so a
  slow quantizer or a slow load never stalls env stepping.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc
import numpy as np

from actorq import tensor
from actorq.clients import FetchedModel
from actorq.config import ConfigError
from actorq.envs import EnvInfo, flat_obs, make_env
from actorq.rpc import MAX_MESSAGE_BYTES
from actorq.v1 import actor_pb2, replay_pb2
from services.actor.config import ActorConfig
from services.actor.exploration import (
    EpsilonSchedule,
    GaussianNoise,
    actor_sigma,
    apex_final_epsilon,
)
from services.actor.nstep import NStepBuilder, Transition
from services.actor.policy import OnnxPolicy, PolicyError, check_fits

log = logging.getLogger(__name__)

# Episodes in the reported mean return.
RETURN_WINDOW = 20
# env_steps_per_s is measured over about this many recent seconds.
RATE_WINDOW_S = 5.0
_RATE_SAMPLE_EVERY_S = 0.25
# Replay answers that retrying the same chunks cannot fix.
_PERMANENT_CODES = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED)
_MAX_BACKOFF_S = 5.0


class TransitionSink(Protocol):
    """Where chunks go (``actorq.clients.ReplayClient`` in the service)."""

    def insert_protos(
        self, chunks: Sequence[replay_pb2.TransitionChunk], timeout: float | None = None
    ) -> replay_pb2.InsertResponse: ...


class ModelSource(Protocol):
    """Where policies come from (``actorq.clients.QuantizerClient`` in the service)."""

    def fetch(
        self, precision: str, newer_than: int = 0, wait_s: float = 0.0, timeout: float | None = None
    ) -> FetchedModel | None: ...


class ChunkQueue:
    """A bounded FIFO of encoded chunks between the step loop and the sender.

    ``put`` waits while full (backpressure); ``put_final`` ignores the bound so
    the step loop can always hand over its last chunk when it stops.
    """

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: deque[tuple[replay_pb2.TransitionChunk, int]] = deque()
        self._cond = threading.Condition()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, chunk: replay_pb2.TransitionChunk, count: int, stop: threading.Event) -> bool:
        """Enqueue, waiting while full; False (not enqueued) if stop is set first."""
        with self._cond:
            while len(self._items) >= self.maxsize:
                if stop.is_set():
                    return False
                self._cond.wait(0.1)
            self._items.append((chunk, count))
            self._cond.notify_all()
            return True

    def put_final(self, chunk: replay_pb2.TransitionChunk, count: int) -> None:
        """Enqueue regardless of the bound (at shutdown)."""
        with self._cond:
            self._items.append((chunk, count))
            self._cond.notify_all()

    def take(self, max_items: int, timeout: float) -> list[tuple[replay_pb2.TransitionChunk, int]]:
        """Up to max_items chunks, waiting up to timeout for the first one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            out: list[tuple[replay_pb2.TransitionChunk, int]] = []
            while self._items and len(out) < max_items:
                out.append(self._items.popleft())
            if out:
                self._cond.notify_all()
            return out


class ChunkBuilder:
    """Preallocated columnar rows of one TransitionChunk, filled one transition at a time.

    Actions are int64 [size] for discrete envs (action_dim 0) and float32
    [size, action_dim] for continuous ones, the two layouts replay accepts.
    """

    def __init__(self, size: int, obs_dim: int, actor_id: str, action_dim: int = 0) -> None:
        self.size = size
        self.actor_id = actor_id
        self.obs = np.zeros((size, obs_dim), np.float32)
        self.next_obs = np.zeros((size, obs_dim), np.float32)
        self.action = (
            np.zeros((size, action_dim), np.float32) if action_dim else np.zeros(size, np.int64)
        )
        self.reward = np.zeros(size, np.float32)
        self.discount = np.zeros(size, np.float32)
        self.rows = 0
        # Oldest policy version in the chunk (staleness is counted from it).
        self.policy_version = 0

    def __len__(self) -> int:
        return self.rows

    def add(self, tr: Transition, policy_version: int) -> bool:
        """Write one row; True when the chunk is full (call ``take``)."""
        i = self.rows
        if i == 0:
            self.policy_version = policy_version
        self.obs[i] = tr.obs
        self.action[i] = tr.action
        self.reward[i] = tr.reward
        self.discount[i] = tr.discount
        self.next_obs[i] = tr.next_obs
        self.rows = i + 1
        return self.rows == self.size

    def take(self) -> tuple[replay_pb2.TransitionChunk, int]:
        """The filled rows encoded as a chunk (a copy), and their count; empties the builder."""
        n = self.rows
        chunk = replay_pb2.TransitionChunk(
            obs=tensor.to_proto(self.obs[:n], "obs"),
            action=tensor.to_proto(self.action[:n], "action"),
            reward=tensor.to_proto(self.reward[:n], "reward"),
            discount=tensor.to_proto(self.discount[:n], "discount"),
            next_obs=tensor.to_proto(self.next_obs[:n], "next_obs"),
            actor_id=self.actor_id,
            policy_version=self.policy_version,
        )
        self.rows = 0
        return chunk, n


class ActorRunner:
    """Steps one env with the newest served policy and streams transitions to replay.

    ``start()`` launches the threads, ``status()`` is safe to call from any
    thread, ``stop()`` ends stepping and flushes what was collected.
    Raises ConfigError at construction when the env cannot be used.
    """

    def __init__(
        self,
        cfg: ActorConfig,
        sink: TransitionSink,
        models: ModelSource | None,
    ) -> None:
        self.cfg = cfg
        self.actor_id = cfg.name
        self._sink = sink
        self._models = models
        self.env, self.info = make_env(cfg.env, seed=cfg.actor_seed)
        self._check_chunk_fits(self.info)
        final = apex_final_epsilon(cfg.eps_final, cfg.apex_alpha, cfg.actor_index, cfg.num_actors)
        self.epsilon_schedule = EpsilonSchedule(cfg.eps_start, final, cfg.eps_decay_steps)
        # Continuous actions explore with Gaussian noise instead (epsilon then stays 0).
        self.noise_sigma = actor_sigma(cfg.noise_sigma, cfg.actor_index, cfg.num_actors)
        self._queue = ChunkQueue(cfg.max_pending_chunks)

        # Threads and their signals.
        self._stop = threading.Event()  # stop stepping and polling for models
        self._loop_done = threading.Event()  # the step loop has handed over its last chunk
        self._policy_ready = threading.Event()
        self._on_failure: Callable[[], None] | None = None
        self._flush_deadline: float | None = None  # sender gives up after this at shutdown
        self._threads: list[threading.Thread] = []

        # Published by the updater, read once per step by the step loop.
        self._policy: OnnxPolicy | None = None
        self._newest_seen = 0  # newest version fetched, loaded or refused

        # Status (written by one thread each, read by status()).
        self.state = "waiting_for_model"
        self.error = ""
        self.env_steps = 0
        self.episodes = 0
        self.epsilon = 0.0 if self.info.continuous else self.epsilon_schedule(0)
        self.mean_episode_return = 0.0
        self._returns: deque[float] = deque(maxlen=RETURN_WINDOW)
        self._timed_steps = 0
        self._env_s = 0.0
        self._inference_s = 0.0
        self._send_s = 0.0
        self._total_s = 0.0
        self._rate_lock = threading.Lock()
        self._last_step_t = 0.0
        self._rate_samples: deque[tuple[float, int]] = deque(
            maxlen=int(RATE_WINDOW_S / _RATE_SAMPLE_EVERY_S) + 2
        )
        self.transitions_sent = 0
        self.transitions_dropped = 0
        self.send_failures = 0
        self.send_rpc_s = 0.0
        self._inflight_chunks = 0
        self.swaps = 0
        self._pull_s_sum = 0.0
        self._load_s_sum = 0.0
        self.last_pull_s = 0.0
        self.last_load_s = 0.0

    def _check_chunk_fits(self, info: EnvInfo) -> None:
        # obs + next_obs (float32) dominate; action int64 or float32 [A], reward/discount float32.
        action_bytes = 4 * info.action_dim if info.continuous else 8
        row_bytes = 2 * 4 * info.obs_dim + action_bytes + 4 + 4
        chunk_bytes = self.cfg.chunk_size * row_bytes
        if chunk_bytes > MAX_MESSAGE_BYTES // 2:
            raise ConfigError(
                f"chunk_size {self.cfg.chunk_size} makes {chunk_bytes} byte chunks for "
                f"{info.env_id} (obs_dim {info.obs_dim}); keep a chunk under "
                f"{MAX_MESSAGE_BYTES // 2} bytes, e.g. chunk_size "
                f"{max(1, MAX_MESSAGE_BYTES // 2 // row_bytes)}"
            )

    # ------------------------------------------------------------- control

    def start(self, on_failure: Callable[[], None] | None = None) -> None:
        """Start the step loop, the sender and (with a model source) the updater.

        ``on_failure`` is called (on the step loop's thread) if the loop dies.
        """
        self._on_failure = on_failure
        targets = [("step-loop", self._step_loop), ("sender", self._send_loop)]
        if self._models is not None:
            targets.append(("model-updater", self._model_loop))
        for name, target in targets:
            thread = threading.Thread(target=target, name=f"{self.actor_id}-{name}", daemon=True)
            thread.start()
            # The updater is left out: it may sit in a long poll, and stopping
            # never needs to wait for it (closing its channel ends the call).
            if name != "model-updater":
                self._threads.append(thread)

    def set_policy(self, policy: OnnxPolicy) -> None:
        """Serve this policy from the next step on (the updater calls this too)."""
        check_fits(policy, self.info)
        self._policy = policy
        self._newest_seen = max(self._newest_seen, policy.version)
        self._policy_ready.set()

    @property
    def policy(self) -> OnnxPolicy | None:
        """The policy the step loop uses now (None before the first one)."""
        return self._policy

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Wait until the step loop has ended (max_env_steps, stop or failure)."""
        return self._loop_done.wait(timeout)

    def stop(self, flush_s: float | None = None) -> None:
        """Stop stepping, then send what was collected for up to flush_s seconds."""
        flush_s = self.cfg.stop_flush_s if flush_s is None else flush_s
        self._stop.set()
        if self._threads:
            self._loop_done.wait(5.0)
        self._flush_deadline = time.monotonic() + flush_s
        for thread in self._threads:
            thread.join(max(0.0, self._flush_deadline - time.monotonic()) + 1.0)
        unsent = sum(count for _chunk, count in self._queue.take(len(self._queue) + 1, 0.0))
        if unsent:
            self.transitions_dropped += unsent
            log.error(
                "%d transitions were not sent before shutdown (%s)",
                unsent,
                self.error or f"replay did not take them within {flush_s:g} s",
            )
        if self._inflight_chunks:
            log.error(
                "an Insert of %d chunks was still unanswered at shutdown; the replay may or "
                "may not have stored it",
                self._inflight_chunks,
            )
        log.info(
            "stopped after %d env steps, %d episodes; %d transitions sent",
            self.env_steps,
            self.episodes,
            self.transitions_sent,
        )
        if self.state != "failed":
            self.state = "stopped"
        self.env.close()

    # ----------------------------------------------------------- step loop

    def _step_loop(self) -> None:
        try:
            while not self._policy_ready.wait(0.2):
                if self._stop.is_set():
                    return
            if not self._stop.is_set():
                self._run_steps()
        except Exception as err:
            self.state = "failed"
            self.error = f"step loop failed: {type(err).__name__}: {err}"
            log.exception("step loop failed")
            if self._on_failure is not None:
                self._on_failure()
        finally:
            self._loop_done.set()

    def _run_steps(self) -> None:
        cfg, info = self.cfg, self.info
        env = self.env
        schedule = self.epsilon_schedule
        rng = random.Random(cfg.actor_seed)
        explore, random_action = rng.random, rng.randrange
        nstep = NStepBuilder(cfg.n_step, cfg.gamma)
        chunks = ChunkBuilder(cfg.chunk_size, info.obs_dim, self.actor_id, info.action_dim)
        noise = (
            GaussianNoise(self.noise_sigma, info.action_low, info.action_high, cfg.actor_seed)
            if info.action_low is not None and info.action_high is not None
            else None
        )
        max_steps = cfg.max_env_steps
        perf = time.perf_counter

        obs = flat_obs(env.reset(seed=cfg.actor_seed)[0])
        episode_return = 0.0
        epsilon = self.epsilon
        self.state = "running"
        log.info(
            "stepping %s with model v%d%s",
            info.env_id,
            self._newest_seen,
            f", Gaussian noise sigma {self.noise_sigma:g}" if noise is not None else "",
        )
        steps = self.env_steps
        t_prev = perf()
        next_rate_sample = t_prev
        while not self._stop.is_set():
            policy = self._policy  # swapped by the updater between steps
            assert policy is not None
            action: int | np.ndarray
            if noise is None:
                epsilon = schedule(steps)
                t0 = perf()
                # Inference runs on every step, exploring or not, so throughput and the
                # inference time do not depend on epsilon (as in Ape-X).
                greedy = policy.act(obs)
                t1 = perf()
                action = random_action(info.num_actions) if explore() < epsilon else greedy
            else:
                t0 = perf()
                mean = policy.action(obs)
                t1 = perf()
                action = noise(mean)  # a new array: the policy reuses its output buffer
            raw_next, reward, terminated, truncated, _ = env.step(action)
            t2 = perf()
            next_obs = flat_obs(raw_next)
            r = float(reward)
            episode_return += r
            send_s = 0.0
            for tr in nstep.add(obs, action, r, terminated, truncated, next_obs):
                if chunks.add(tr, policy.version):
                    ts = perf()
                    self._hand_off(chunks)
                    send_s += perf() - ts
            if terminated or truncated:
                self.episodes += 1
                self._returns.append(episode_return)
                self.mean_episode_return = sum(self._returns) / len(self._returns)
                episode_return = 0.0
                obs = flat_obs(env.reset()[0])
            else:
                obs = next_obs
            steps += 1
            self.env_steps = steps
            self.epsilon = epsilon
            t3 = perf()
            self._timed_steps += 1
            self._inference_s += t1 - t0
            self._env_s += t2 - t1
            self._send_s += send_s
            self._total_s += t3 - t_prev
            t_prev = t3
            self._last_step_t = t3
            if t3 >= next_rate_sample:
                with self._rate_lock:
                    self._rate_samples.append((t3, steps))
                next_rate_sample = t3 + _RATE_SAMPLE_EVERY_S
            if max_steps and steps >= max_steps:
                log.info("reached max_env_steps %d", max_steps)
                self.state = "stopped"
                break
        # The episode in progress is cut here: its open windows bootstrap from
        # the last observation like a time limit, so every step is sent once.
        version = policy.version if (policy := self._policy) is not None else 0
        for tr in nstep.flush(obs, terminated=False):
            if chunks.add(tr, version):
                self._hand_off(chunks)
        if len(chunks):
            self._hand_off(chunks)

    def _hand_off(self, chunks: ChunkBuilder) -> None:
        """Queue the built chunk, waiting while the queue is full (backpressure)."""
        chunk, count = chunks.take()
        if not self._queue.put(chunk, count, self._stop):
            self._queue.put_final(chunk, count)  # stopping: stop() flushes the queue

    # --------------------------------------------------------------- sender

    def _send_loop(self) -> None:
        # Chunks taken from the queue but not yet acknowledged, oldest first.
        pending: list[tuple[replay_pb2.TransitionChunk, int]] = []
        per_insert = self.cfg.max_chunks_per_insert
        backoff = 0.1
        failures_this_outage = 0
        while True:
            if not pending:
                pending = self._queue.take(per_insert, 0.2)
                if not pending:
                    # Done once stopping, the step loop has handed over its last
                    # chunk, and everything queued was sent.
                    if self._stop.is_set() and self._loop_done.is_set() and not len(self._queue):
                        return
                    continue
            self._inflight_chunks = len(pending)
            timeout = self.cfg.insert_timeout_s
            if self._flush_deadline is not None:
                remaining = self._flush_deadline - time.monotonic()
                if remaining <= 0:
                    for chunk, count in pending:
                        self._queue.put_final(chunk, count)
                    self._inflight_chunks = 0
                    return  # stop() counts and logs what is left
                timeout = min(timeout, remaining)
            batch = pending[:per_insert]
            started = time.perf_counter()
            try:
                self._sink.insert_protos([chunk for chunk, _ in batch], timeout=timeout)
            except grpc.RpcError as err:
                self.send_rpc_s += time.perf_counter() - started
                self.send_failures += 1
                code = err.code()
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and len(batch) > 1:
                    # Too many transitions for one Insert: send fewer chunks per stream.
                    per_insert = max(1, len(batch) // 2)
                    log.warning(
                        "replay refused %d chunks in one Insert (%s); sending %d per Insert",
                        len(batch),
                        err.details(),
                        per_insert,
                    )
                    continue
                if code in _PERMANENT_CODES or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    # The replay will refuse these chunks whatever we do; keep
                    # acting and say so loudly rather than stall for ever.
                    lost = sum(count for _, count in batch)
                    self.transitions_dropped += lost
                    self.error = f"replay refused {lost} transitions: {code.name}: {err.details()}"
                    log.error("%s", self.error)
                    pending = pending[len(batch) :]
                    self._inflight_chunks = len(pending)
                    continue
                if code == grpc.StatusCode.DEADLINE_EXCEEDED and self._flush_deadline is None:
                    # Held back by the replay's rate limiter for a whole deadline:
                    # backpressure, not an outage; nothing was stored, try again.
                    continue
                self.error = f"replay insert failed: {code.name}: {err.details()}"
                if code == grpc.StatusCode.UNAVAILABLE and self._flush_deadline is not None:
                    # Shutting down and the replay is gone (often stopping too):
                    # waiting out the flush deadline would only delay the exit.
                    for chunk, count in pending:
                        self._queue.put_final(chunk, count)
                    self._inflight_chunks = 0
                    return  # stop() counts and logs what is left
                if failures_this_outage == 0:
                    log.warning(
                        "replay insert failed (%s: %s); holding %d chunks and retrying "
                        "with backoff until it answers",
                        code.name,
                        err.details(),
                        len(pending),
                    )
                failures_this_outage += 1
                self._backoff_wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                continue
            self.send_rpc_s += time.perf_counter() - started
            self.transitions_sent += sum(count for _, count in batch)
            pending = pending[len(batch) :]
            self._inflight_chunks = len(pending)
            if failures_this_outage:
                log.info("replay reachable again after %d failed inserts", failures_this_outage)
                failures_this_outage = 0
                backoff = 0.1
                if self.error.startswith("replay insert"):
                    self.error = ""

    def _backoff_wait(self, seconds: float) -> None:
        if self._flush_deadline is not None:
            seconds = min(seconds, max(0.0, self._flush_deadline - time.monotonic()))
        time.sleep(seconds)

    # -------------------------------------------------------- model updater

    def _model_loop(self) -> None:
        assert self._models is not None
        backoff = 0.5
        failures_this_outage = 0
        while not self._stop.is_set() and not self._loop_done.is_set():
            try:
                fetched = self._models.fetch(
                    self.cfg.precision,
                    newer_than=self._newest_seen,
                    wait_s=self.cfg.model_wait_s,
                )
            except grpc.RpcError as err:
                if self._stop.is_set():
                    return
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # nothing published yet; the quantizer already waited
                if failures_this_outage == 0:
                    log.warning(
                        "model fetch failed (%s: %s); retrying with backoff",
                        err.code().name,
                        err.details(),
                    )
                failures_this_outage += 1
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            except RuntimeError as err:  # a truncated or headerless stream
                log.warning("model fetch incomplete: %s", err)
                self._stop.wait(backoff)
                continue
            if failures_this_outage:
                log.info("quantizer reachable again after %d failed fetches", failures_this_outage)
                failures_this_outage, backoff = 0, 0.5
            if fetched is not None:
                self._load(fetched)

    def _load(self, fetched: FetchedModel) -> None:
        version = int(fetched.artifact.version)
        started = time.perf_counter()
        try:
            policy = OnnxPolicy(
                fetched.data, version, self.cfg.precision, self.cfg.inference_threads
            )
            load_s = time.perf_counter() - started
            self.set_policy(policy)
        except PolicyError as err:
            # Keep acting with the previous policy; a newer version may be fine.
            self._newest_seen = max(self._newest_seen, version)
            self.error = str(err)
            log.error("refused model: %s", err)
            return
        self.swaps += 1
        self.last_pull_s = fetched.transfer_s
        self.last_load_s = load_s
        self._pull_s_sum += fetched.transfer_s
        self._load_s_sum += load_s
        if self.error.startswith("model"):
            self.error = ""
        log.info(
            "swapped to model v%d (%s, %d bytes): pull %.1f ms, load %.1f ms",
            version,
            self.cfg.precision,
            policy.size_bytes,
            fetched.transfer_s * 1e3,
            load_s * 1e3,
        )

    # --------------------------------------------------------------- status

    def steps_per_s(self) -> float:
        """Env steps per second over about the last RATE_WINDOW_S seconds."""
        now = time.perf_counter()
        with self._rate_lock:
            samples = list(self._rate_samples)
        if not samples or self.state != "running" or now - self._last_step_t > RATE_WINDOW_S:
            return 0.0  # nothing stepped within the window (e.g. held back by replay)
        old_t, old_steps = samples[0]
        for t, s in samples:
            if now - t <= RATE_WINDOW_S:
                break
            old_t, old_steps = t, s
        elapsed = now - old_t
        return (self.env_steps - old_steps) / elapsed if elapsed > 0 else 0.0

    def status(self) -> actor_pb2.ActorStatus:
        """A snapshot of counters and timings (fields may be a step apart)."""
        n = self._timed_steps
        per_step_us = 1e6 / n if n else 0.0
        env_us = self._env_s * per_step_us
        inference_us = self._inference_s * per_step_us
        send_us = self._send_s * per_step_us
        other_us = max(0.0, self._total_s * per_step_us - env_us - inference_us - send_us)
        policy = self._policy
        swaps = self.swaps
        return actor_pb2.ActorStatus(
            actor_id=self.actor_id,
            precision=self.cfg.precision,
            env=self.cfg.env,
            state=self.state,
            env_steps=self.env_steps,
            episodes=self.episodes,
            env_steps_per_s=self.steps_per_s(),
            model_version=policy.version if policy else 0,
            model_bytes=policy.size_bytes if policy else 0,
            epsilon=self.epsilon,
            mean_episode_return=self.mean_episode_return,
            breakdown=actor_pb2.StepBreakdown(
                env_us=env_us, inference_us=inference_us, send_us=send_us, other_us=other_us
            ),
            swap=actor_pb2.SwapTimes(
                swaps=swaps,
                pull_ms=self._pull_s_sum * 1e3 / swaps if swaps else 0.0,
                load_ms=self._load_s_sum * 1e3 / swaps if swaps else 0.0,
                last_pull_ms=self.last_pull_s * 1e3,
                last_load_ms=self.last_load_s * 1e3,
            ),
            transitions_sent=self.transitions_sent,
            send_failures=self.send_failures,
            pending_chunks=len(self._queue) + self._inflight_chunks,
            error=self.error,
            send_rpc_s=self.send_rpc_s,
        )
