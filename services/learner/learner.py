"""The learner's core, without a network: an agent (built by the configured row
of ``algorithms.ALGORITHMS``) plus what the service keeps around it (recent
observations for int8 calibration, counters, checkpoints).

``TrainingLoop`` (loop.py) feeds it batches from replay and ships its
snapshots to the quantizer; tests drive it directly.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from actorq.config import ConfigError, to_dict
from actorq.transitions import SampledBatch, Transitions
from services.learner import checkpoint
from services.learner.algorithms import ALGORITHMS, Agent, EnvSpaces, random_transitions
from services.learner.config import LearnerConfig

CHECKPOINT_FORMAT = 1

log = logging.getLogger(__name__)


@dataclass
class Snapshot:
    """FP32 weights copied off the online network, ready to publish."""

    learner_step: int
    weights: dict[str, np.ndarray]
    # Recent sampled observations (newest first) or None before the first batch.
    calibration_obs: np.ndarray | None


def make_agent(cfg: LearnerConfig, spaces: EnvSpaces) -> Agent:
    """The configured algorithm for these spaces (DQN needs num_actions, D4PG the
    bounds), its networks on the configured device; ConfigError for a device torch
    cannot use."""
    from services.learner.common import resolve_device  # torch: only for an agent

    algorithm = ALGORITHMS[cfg.algo]
    return algorithm.build(algorithm.settings(cfg), spaces, cfg.seed, resolve_device(cfg.device))


class Learner:
    """An agent, its recent observations and its checkpoint; resumes from one if present."""

    def __init__(
        self,
        cfg: LearnerConfig,
        obs_dim: int,
        num_actions: int = 0,
        action_bounds: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.cfg = cfg
        self.spaces = EnvSpaces(obs_dim, num_actions, action_bounds)
        self.agent = make_agent(cfg, self.spaces)
        self.loss = 0.0
        self.mean_q = 0.0
        self.td_abs = 0.0
        self.transitions_sampled = 0
        # (keys, priorities) the latest train_step produced for prioritized replay.
        self.new_priorities: tuple[np.ndarray, np.ndarray] | None = None
        # Policy version the quantizer last accepted when the checkpoint was written.
        self.resumed_version = 0
        self.resumed_from_step = 0
        self.checkpoint_step = 0
        self.last_checkpoint_unix = 0.0
        self._calib = np.zeros((cfg.calibration_size, obs_dim), np.float32)
        self._calib_next = 0  # ring position of the next row to write
        self._calib_rows = 0
        # Held by each update and checkpoint: a final checkpoint from another thread
        # must not see a half-applied Adam step.
        self._lock = threading.Lock()
        if cfg.checkpoint_dir:
            self._resume(cfg.checkpoint_dir)

    @property
    def steps(self) -> int:
        """Completed updates."""
        return self.agent.steps

    def describe(self) -> str:
        """The algorithm and its network sizes (for the log)."""
        algorithm = ALGORITHMS[self.cfg.algo]
        networks = algorithm.describe(algorithm.settings(self.cfg), self.spaces)
        return f"{algorithm.name} {networks} on {self.device_name()}"

    def device_name(self) -> str:
        """Where the networks train: ``cpu (N torch threads)`` or ``cuda:0 (GPU name)``."""
        import torch  # the agent exists, so torch is loaded already

        device = self.agent.device
        if device.type == "cpu":
            return f"cpu ({torch.get_num_threads()} torch threads)"
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"

    def warm_up(self, updates: int = 2) -> float:
        """Pay the first update's one-time costs before real batches arrive: building
        an optimizer imports torch._dynamo (1.0-1.4 CPU-seconds, torch 2.13), the first backward
        pass allocates and, on CUDA, creates the cuBLAS handles and loads kernels. They
        are paid by ``updates`` updates of a throwaway copy of the agent on random
        transitions; the agent itself, its step count and torch's random state are
        untouched (no update draws random numbers). Returns the seconds it took."""
        started = time.perf_counter()
        with self._lock:
            clone = copy.deepcopy(self.agent)
        batch = random_transitions(self.spaces, self.cfg.batch_size, np.random.default_rng(0))
        weights = np.ones(len(batch), np.float32)
        for _ in range(updates):
            clone.update(batch, weights)
        return time.perf_counter() - started

    def train_step(self, sampled: SampledBatch | Transitions) -> dict[str, float]:
        """One update on a sampled batch (replay importance weights included).

        Afterwards ``new_priorities`` holds (keys, |TD error| + priority_epsilon)
        for the batch's items when the batch came with keys and the agent
        computes priorities; otherwise None.
        """
        if isinstance(sampled, SampledBatch):
            transitions, weights, keys = sampled.transitions, sampled.weights, sampled.keys
        else:
            transitions, weights, keys = sampled, None, None
        # Counted before the step count moves, so a status read never shows fewer
        # transitions than steps * batch size.
        self.transitions_sampled += len(transitions)
        with self._lock:
            metrics = self.agent.update(transitions, weights)
            td_abs = self.agent.last_td_abs
        self.new_priorities = (
            None
            if keys is None or td_abs is None
            else (keys, td_abs + np.float32(self.cfg.priority_epsilon))
        )
        self.loss, self.mean_q, self.td_abs = metrics["loss"], metrics["mean_q"], metrics["td_abs"]
        self._remember(np.asarray(transitions.obs, np.float32))
        return metrics

    def _remember(self, obs: np.ndarray) -> None:
        """Keep the newest calibration_size observations in a ring."""
        cap = len(self._calib)
        rows = obs[-cap:]
        idx = (self._calib_next + np.arange(len(rows))) % cap
        self._calib[idx] = rows
        self._calib_next = int((self._calib_next + len(rows)) % cap)
        self._calib_rows = min(cap, self._calib_rows + len(rows))

    def calibration_obs(self) -> np.ndarray | None:
        """Copies of the most recent sampled observations, newest first (None: none yet)."""
        if self._calib_rows == 0:
            return None
        cap = len(self._calib)
        idx = (self._calib_next - 1 - np.arange(self._calib_rows)) % cap
        return self._calib[idx]  # fancy indexing copies

    def snapshot(self) -> Snapshot:
        """The current weights and calibration observations, copied."""
        with self._lock:
            weights = self.agent.policy_weights()
        return Snapshot(self.steps, weights, self.calibration_obs())

    # -- checkpoints -----------------------------------------------------------

    def save_checkpoint(self, published_version: int) -> Path | None:
        """Write the checkpoint (no-op without checkpoint_dir); returns its path."""
        if not self.cfg.checkpoint_dir:
            return None
        started = time.perf_counter()
        with self._lock:
            step, saved_unix = self.steps, time.time()
            state = {
                "format": CHECKPOINT_FORMAT,
                "agent": self.agent.state_dict(),
                "learner_step": step,
                "published_version": int(published_version),
                "transitions_sampled": self.transitions_sampled,
                "config": to_dict(self.cfg),
                "saved_unix": saved_unix,
            }
            path = checkpoint.save(self.cfg.checkpoint_dir, state)
        self.checkpoint_step = step
        self.last_checkpoint_unix = saved_unix
        log.info(
            "checkpoint at step %d (published v%d) written to %s in %.0f ms",
            self.checkpoint_step,
            published_version,
            path,
            1000 * (time.perf_counter() - started),
        )
        return path

    def _resume(self, directory: str) -> None:
        try:
            state = checkpoint.load_latest(directory)
        except checkpoint.CheckpointError as err:
            raise ConfigError(str(err)) from None
        if state is None:
            log.info("no checkpoint in %s; starting from scratch", directory)
            return
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ConfigError(
                f"checkpoint {checkpoint.path_in(directory)} has format {state.get('format')!r}, "
                f"this learner reads format {CHECKPOINT_FORMAT}; move it away to start afresh"
            )
        try:
            self.agent.load_state_dict(state["agent"])
        except ValueError as err:
            raise ConfigError(
                f"checkpoint {checkpoint.path_in(directory)} does not fit this config: {err}; "
                "use another checkpoint_dir or move the checkpoint away"
            ) from None
        saved_env = state.get("config", {}).get("env")
        if saved_env != self.cfg.env:
            log.warning(
                "checkpoint was trained on env %r, now training on %r", saved_env, self.cfg.env
            )
        self.resumed_version = int(state["published_version"])
        self.resumed_from_step = self.steps
        self.transitions_sampled = int(state.get("transitions_sampled", 0))
        self.checkpoint_step = self.steps
        self.last_checkpoint_unix = float(state.get("saved_unix", 0.0))
        log.info(
            "resumed from %s at step %d (published v%d)",
            checkpoint.path_in(directory),
            self.steps,
            self.resumed_version,
        )
