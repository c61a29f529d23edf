"""Actor service configuration (flags, ACTORQ_* env, or the ``actor:`` file section)."""

from __future__ import annotations

import math
import socket
import zlib
from dataclasses import dataclass

from actorq.config import ConfigError, opt
from actorq.network import PRECISIONS

DEFAULT_PORT = 50054
# In actor_id: replaced by the host name (a container's or pod's own name).
HOSTNAME_PLACEHOLDER = "{hostname}"


@dataclass
class ActorConfig:
    """Everything an actor can be told; defaults are the tested CartPole setting."""

    host: str = opt("127.0.0.1", "interface to listen on (0.0.0.0 for all)")
    port: int = opt(DEFAULT_PORT, "gRPC port for GetStatus (0 picks a free one)")
    actor_id: str = opt(
        "",
        "name sent with every chunk and shown in replay stats (empty: actor-{actor_index}); "
        "'{hostname}' in it is replaced by the host name, which makes the replicas of one "
        "container spec distinct (their env and exploration seeds too)",
    )
    actor_index: int = opt(0, "this actor's index in 0..num_actors-1 (seed and epsilon)")
    num_actors: int = opt(1, "how many actors the run has (for the Ape-X epsilon ladder)")
    env: str = opt(
        "CartPole-v1",
        "Gymnasium env id (flat Box observations; Discrete or bounded Box actions) or a "
        "dm_control task as dmc:DOMAIN-TASK, e.g. dmc:cartpole-balance",
    )
    seed: int = opt(0, "run seed; this actor seeds its env and exploration with seed*1000+index")
    precision: str = opt("int8", "precision of the served model to run: 'fp32' or 'int8'")
    replay_address: str = opt("127.0.0.1:50051", "host:port of the replay service")
    quantizer_address: str = opt("127.0.0.1:50052", "host:port of the quantizer service")
    n_step: int = opt(3, "transitions span n env steps (n-step return)")
    gamma: float = opt(0.99, "discount per env step")
    eps_start: float = opt(1.0, "exploration epsilon at this actor's first env step")
    eps_final: float = opt(
        0.05, "epsilon after the decay (the base of the Ape-X ladder when apex_alpha > 0)"
    )
    eps_decay_steps: int = opt(
        10_000, "env steps of this actor over which epsilon falls linearly to its final value"
    )
    apex_alpha: float = opt(
        0.0,
        "Ape-X epsilon ladder: actor i of N ends at eps_final ** (1 + apex_alpha * i/(N-1)) "
        "(Horgan et al. use eps_final 0.4, alpha 7); 0 gives every actor eps_final",
    )
    noise_sigma: list[float] = opt(
        [0.3],
        "continuous actions: std of the Gaussian exploration noise added to the policy's "
        "action, as a fraction of half the action range (0.3 on [-1, 1] actions); one "
        "value for every actor or one per actor (actor i uses entry i); actions are "
        "clipped to the bounds",
    )
    chunk_size: int = opt(64, "transitions per TransitionChunk sent to replay")
    max_pending_chunks: int = opt(
        16,
        "chunks queued for sending before the step loop waits (backpressure from a "
        "rate-limited or unreachable replay, never dropped data)",
    )
    max_chunks_per_insert: int = opt(8, "most queued chunks sent in one Insert stream")
    insert_timeout_s: float = opt(
        60.0,
        "deadline of one Insert stream (incl. time blocked by replay's rate limiter); "
        "an expired one is retried",
    )
    max_env_steps: int = opt(0, "stop stepping after this many env steps of this actor (0: never)")
    model_wait_s: float = opt(10.0, "long-poll wait of one model fetch from the quantizer")
    stop_flush_s: float = opt(
        10.0, "at shutdown, how long to keep trying to send the queued transitions"
    )
    inference_threads: int = opt(1, "onnxruntime intra-op threads (one core per actor)")
    random_until_model: bool = opt(
        False,
        "discrete actions: step with uniformly random actions (policy version 0) until the "
        "first served policy arrives, instead of waiting for it",
    )

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"precision {self.precision!r} is not supported; use one of {list(PRECISIONS)}"
            )
        if self.num_actors < 1:
            raise ConfigError(f"num_actors must be at least 1, got {self.num_actors}")
        if not 0 <= self.actor_index < self.num_actors:
            raise ConfigError(
                f"actor_index {self.actor_index} is outside 0..{self.num_actors - 1} "
                f"(num_actors {self.num_actors})"
            )
        if not self.env:
            raise ConfigError("env is empty; name a Gymnasium env id such as CartPole-v1")
        if self.n_step < 1:
            raise ConfigError(f"n_step must be at least 1, got {self.n_step}")
        if not 0.0 < self.gamma <= 1.0:
            raise ConfigError(f"gamma must be in (0, 1], got {self.gamma}")
        for name in ("eps_start", "eps_final"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {value}")
        if self.eps_decay_steps < 0:
            raise ConfigError(f"eps_decay_steps must be >= 0, got {self.eps_decay_steps}")
        if not (math.isfinite(self.apex_alpha) and self.apex_alpha >= 0):
            raise ConfigError(f"apex_alpha must be a finite number >= 0, got {self.apex_alpha}")
        if not self.noise_sigma or len(self.noise_sigma) not in (1, self.num_actors):
            raise ConfigError(
                f"noise_sigma has {len(self.noise_sigma)} values for {self.num_actors} actors; "
                "give one value for every actor or exactly one per actor"
            )
        if not all(math.isfinite(s) and s >= 0 for s in self.noise_sigma):
            raise ConfigError(f"noise_sigma values must be finite and >= 0, got {self.noise_sigma}")
        for name in ("chunk_size", "max_pending_chunks", "max_chunks_per_insert"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_env_steps < 0:
            raise ConfigError(f"max_env_steps must be >= 0 (0: no limit), got {self.max_env_steps}")
        for name in ("model_wait_s", "insert_timeout_s", "stop_flush_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number of seconds > 0, got {value}")
        if self.inference_threads < 1:
            raise ConfigError(f"inference_threads must be at least 1, got {self.inference_threads}")
        for name in ("replay_address", "quantizer_address"):
            if ":" not in getattr(self, name):
                raise ConfigError(f"{name} {getattr(self, name)!r} is not host:port")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port {self.port} is outside 0..65535")

    @property
    def name(self) -> str:
        """The actor id sent with chunks: actor_id ({hostname} filled in), or actor-{actor_index}."""
        if not self.actor_id:
            return f"actor-{self.actor_index}"
        return self.actor_id.replace(HOSTNAME_PLACEHOLDER, socket.gethostname())

    @property
    def actor_seed(self) -> int:
        """Seed of this actor's env and exploration: distinct per actor and run seed.

        Replicas named after their host all have actor_index 0, so their name's
        CRC-32 keeps their seeds apart.
        """
        if HOSTNAME_PLACEHOLDER in self.actor_id:
            return self.seed * 1000 + zlib.crc32(self.name.encode()) % 1000
        return self.seed * 1000 + self.actor_index
