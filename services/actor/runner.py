"""The actor's core: a step loop, a sender and a model updater, each on its own thread.

- Step loop (here): epsilon-greedy action (discrete) or the policy's action
  plus clipped Gaussian noise (continuous) from the current policy, env.step,
  n-step transitions written into a preallocated chunk buffer; a full chunk is
  encoded once and handed to the send queue (``chunks``). Nothing on this
  thread waits on the network except a full send queue (backpressure, by
  design: a replay whose rate limiter holds inserts back slows the actors down).
- Sender (``sender.ChunkSender``): sends queued chunks as Insert streams,
  retrying while the replay is unreachable; a chunk leaves the queue only once
  the replay acknowledged it (or refused it for good, which is logged).
- Model updater (``updater.ModelUpdater``): long-polls the quantizer for a
  newer version, loads it and swaps it into the ``PolicySlot`` the step loop
  reads between steps, so a slow quantizer or a slow load never stalls stepping.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from actorq.config import ConfigError
from actorq.envs import EnvInfo, flat_obs, make_env
from actorq.rpc import MAX_MESSAGE_BYTES
from actorq.v1 import actor_pb2
from actorq.workers import RateMeter
from services.actor.chunks import ChunkBuilder, ChunkQueue, chunk_row_bytes
from services.actor.config import ActorConfig
from services.actor.exploration import (
    EpsilonSchedule,
    GaussianNoise,
    actor_sigma,
    apex_final_epsilon,
)
from services.actor.nstep import NStepBuilder
from services.actor.policy import OnnxPolicy, RandomPolicy
from services.actor.sender import ChunkSender, TransitionSink
from services.actor.status import ActorSignals, StepTimes
from services.actor.updater import ModelSource, ModelUpdater, PolicySlot

log = logging.getLogger(__name__)

# Episodes in the reported mean return.
RETURN_WINDOW = 20
# env_steps_per_s is measured over about this many recent seconds...
RATE_WINDOW_S = 5.0
# ...from a (time, env_steps) point recorded this often by the step loop.
RATE_SAMPLE_EVERY_S = 0.25


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
        self.env, self.info = make_env(cfg.env, seed=cfg.actor_seed)
        self._check_chunk_fits(self.info)
        final = apex_final_epsilon(cfg.eps_final, cfg.apex_alpha, cfg.actor_index, cfg.num_actors)
        self.epsilon_schedule = EpsilonSchedule(cfg.eps_start, final, cfg.eps_decay_steps)
        # Continuous actions explore with Gaussian noise instead (epsilon then stays 0).
        self.noise_sigma = actor_sigma(cfg.noise_sigma, cfg.actor_index, cfg.num_actors)

        # Threads and their signals.
        signals = ActorSignals()
        self._stop = signals.stop
        self._loop_done = signals.stepping_done
        self._errors = signals.errors
        self._on_failure: Callable[[], None] | None = None
        self._step_thread: threading.Thread | None = None
        self._slot = PolicySlot(self.info)
        if cfg.random_until_model and not self.info.continuous:
            self._slot.act_randomly(cfg.actor_seed)
        self._queue = ChunkQueue(cfg.max_pending_chunks)
        self._sender = ChunkSender(sink, self._queue, cfg, signals)
        self._updater = (
            ModelUpdater(models, self._slot, cfg, signals) if models is not None else None
        )

        # Status of the step loop (written by it, read by status()).
        self.state = "waiting_for_model"
        self.env_steps = 0
        self.episodes = 0
        self.epsilon = 0.0 if self.info.continuous else self.epsilon_schedule(0)
        self.mean_episode_return = 0.0
        self._returns: deque[float] = deque(maxlen=RETURN_WINDOW)
        self._times = StepTimes()
        self._rate = RateMeter(RATE_WINDOW_S, RATE_SAMPLE_EVERY_S)

        # What the step loop builds transitions with (one run per runner).
        info = self.info
        self._nstep = NStepBuilder(cfg.n_step, cfg.gamma)
        self._chunks = ChunkBuilder(cfg.chunk_size, info.obs_dim, self.actor_id, info.action_dim)
        self._noise = (
            GaussianNoise(self.noise_sigma, info.action_low, info.action_high, cfg.actor_seed)
            if info.action_low is not None and info.action_high is not None
            else None
        )

    def _check_chunk_fits(self, info: EnvInfo) -> None:
        row_bytes = chunk_row_bytes(info)
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
        self._step_thread = threading.Thread(
            target=self._step_loop, name=f"{self.actor_id}-step-loop", daemon=True
        )
        self._step_thread.start()
        self._sender.start()
        if self._updater is not None:
            self._updater.start()

    def set_policy(self, policy: OnnxPolicy) -> None:
        """Serve this policy from the next step on (the updater swaps policies in the same
        way); PolicyError, keeping the current one, if it does not fit the env."""
        self._slot.install(policy)

    @property
    def policy(self) -> OnnxPolicy | RandomPolicy | None:
        """The policy the step loop uses now (None before the first one; random before it
        with random_until_model)."""
        return self._slot.policy

    @property
    def error(self) -> str:
        """The latest unresolved problem (empty when none)."""
        return self._errors.text

    def wait_finished(self, timeout: float | None = None) -> bool:
        """Wait until the step loop has ended (max_env_steps, stop or failure)."""
        return self._loop_done.wait(timeout)

    def stop(self, flush_s: float | None = None) -> None:
        """Stop stepping, then send what was collected for up to flush_s seconds."""
        flush_s = self.cfg.stop_flush_s if flush_s is None else flush_s
        self._stop.set()
        if self._step_thread is not None:
            self._loop_done.wait(5.0)
        # The updater is not waited for: it may sit in a long poll, and closing
        # its channel ends the call.
        self._sender.flush(flush_s)
        unsent = self._queue.drain()
        if unsent:
            self._sender.transitions_dropped += unsent
            # Info when the run is ending anyway (the replay stopping too, or its limiter
            # holding the last chunks): nothing acknowledged was lost, and stopping
            # sooner than the learner has caught up is how a run ends.
            reason = self._sender.gave_up_reason
            log.log(
                logging.INFO if reason else logging.WARNING,
                "%d transitions were not sent before shutdown (%s)",
                unsent,
                reason or self.error or f"replay did not take them within {flush_s:g} s",
            )
        if self._sender.in_flight:
            log.warning(
                "an Insert of %d chunks was still unanswered at shutdown; the replay may or "
                "may not have stored it",
                self._sender.in_flight,
            )
        log.info(
            "stopped after %d env steps, %d episodes; %d transitions sent",
            self.env_steps,
            self.episodes,
            self._sender.transitions_sent,
        )
        if self.state != "failed":
            self.state = "stopped"
        self.env.close()

    # ----------------------------------------------------------- step loop

    def _step_loop(self) -> None:
        try:
            while not self._slot.ready.wait(0.2):
                if self._stop.is_set():
                    return
            if not self._stop.is_set():
                self._run_steps()
        except Exception as err:
            self.state = "failed"
            self._errors.set(f"step loop failed: {type(err).__name__}: {err}")
            log.exception("step loop failed")
            if self._on_failure is not None:
                self._on_failure()
        finally:
            self._loop_done.set()

    def _run_steps(self) -> None:
        """Act until stopped or max_env_steps, then hand over the open n-step windows."""
        obs = flat_obs(self.env.reset(seed=self.cfg.actor_seed)[0])
        self.state = "running"
        log.info(
            "stepping %s with %s%s",
            self.info.env_id,
            "random actions until the first model"
            if isinstance(self._slot.policy, RandomPolicy)
            else f"model v{self._slot.newest_seen}",
            f", Gaussian noise sigma {self.noise_sigma:g}" if self._noise is not None else "",
        )
        obs = self._step_until_stopped(obs)
        # The episode in progress is cut here: its open windows bootstrap from
        # the last observation like a time limit, so every step is sent once.
        chunks = self._chunks
        version = policy.version if (policy := self._slot.policy) is not None else 0
        for tr in self._nstep.flush(obs, terminated=False):
            if chunks.add(tr, version):
                self._hand_off(chunks)
        if len(chunks):
            self._hand_off(chunks)

    def _step_until_stopped(self, obs: np.ndarray) -> np.ndarray:
        """The hot loop: act, env.step, n-step windows into chunks, timings; returns the
        last observation. What it touches per step is hoisted into locals first."""
        env, slot, stop, times, rate = self.env, self._slot, self._stop, self._times, self._rate
        nstep, chunks, noise = self._nstep, self._chunks, self._noise
        schedule, num_actions = self.epsilon_schedule, self.info.num_actions
        rng = random.Random(self.cfg.actor_seed)
        explore, random_action, perf = rng.random, rng.randrange, time.perf_counter
        max_steps, steps, epsilon = self.cfg.max_env_steps, self.env_steps, self.epsilon
        episode_return = 0.0
        t_prev = next_rate_sample = perf()
        while not stop.is_set():
            policy = slot.policy  # swapped by the updater between steps
            assert policy is not None
            action: int | np.ndarray
            if noise is None:
                epsilon = schedule(steps)
                t0 = perf()
                # Inference runs on every step, exploring or not, so throughput and the
                # inference time do not depend on epsilon (as in Ape-X).
                greedy = policy.act(obs)
                t1 = perf()
                action = random_action(num_actions) if explore() < epsilon else greedy
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
                    send_s += self._hand_off(chunks)
            if terminated or truncated:
                obs, episode_return = self._end_episode(episode_return), 0.0
            else:
                obs = next_obs
            steps += 1
            self.env_steps = steps
            self.epsilon = epsilon
            t3 = perf()
            times.steps += 1
            times.inference_s += t1 - t0
            times.env_s += t2 - t1
            times.send_s += send_s
            times.total_s += t3 - t_prev
            t_prev = t3
            if t3 >= next_rate_sample:
                rate.add(steps, t3)
                next_rate_sample = t3 + RATE_SAMPLE_EVERY_S
            if max_steps and steps >= max_steps:
                log.info("reached max_env_steps %d", max_steps)
                self.state = "stopped"
                break
        return obs

    def _end_episode(self, episode_return: float) -> np.ndarray:
        """Count a finished episode's return; the next episode's first observation."""
        self.episodes += 1
        self._returns.append(episode_return)
        self.mean_episode_return = sum(self._returns) / len(self._returns)
        return flat_obs(self.env.reset()[0])

    def _hand_off(self, chunks: ChunkBuilder) -> float:
        """Queue the built chunk, waiting while the queue is full (backpressure);
        returns the seconds it took."""
        started = time.perf_counter()
        chunk, count = chunks.take()
        if not self._queue.put(chunk, count, self._stop):
            self._queue.put_final(chunk, count)  # stopping: stop() flushes the queue
        return time.perf_counter() - started

    # --------------------------------------------------------------- status

    def steps_per_s(self) -> float:
        """Env steps per second over about the last RATE_WINDOW_S seconds (0 when
        nothing stepped within them, e.g. held back by replay)."""
        if self.state != "running":
            return 0.0
        return self._rate.rate(self.env_steps, time.perf_counter())

    def status(self) -> actor_pb2.ActorStatus:
        """A snapshot of counters and timings (fields may be a step apart)."""
        policy = self._slot.policy
        sender = self._sender
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
            breakdown=self._times.breakdown(),
            swap=self._updater.swap_times() if self._updater else actor_pb2.SwapTimes(),
            transitions_sent=sender.transitions_sent,
            send_failures=sender.failures,
            pending_chunks=len(self._queue) + sender.in_flight,
            error=self.error,
            send_rpc_s=sender.rpc_s,
        )
