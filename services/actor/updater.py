"""The actor's model updater: long-poll the quantizer, load a newer policy, swap it in.

The step loop reads the policy from a ``PolicySlot`` once per step; the
updater (or a test, through ``ActorRunner.set_policy``) replaces it whole, so
a slow quantizer or a slow load never stalls env stepping. An unreachable
quantizer is retried with backoff and logged once per outage (``actorq.retry``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import grpc

from actorq.clients import FetchedModel
from actorq.envs import EnvInfo
from actorq.retry import Backoff, Outage, describe
from actorq.v1 import actor_pb2
from services.actor.config import ActorConfig
from services.actor.policy import OnnxPolicy, PolicyError, RandomPolicy, check_fits
from services.actor.status import ActorSignals

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """Where policies come from (``actorq.clients.QuantizerClient`` in the service)."""

    def fetch(
        self, precision: str, newer_than: int = 0, wait_s: float = 0.0, timeout: float | None = None
    ) -> FetchedModel | None: ...


class PolicySlot:
    """The policy the step loop acts with, replaced whole between two steps."""

    def __init__(self, info: EnvInfo) -> None:
        self.info = info
        # A RandomPolicy only until the first served one (random_until_model).
        self.policy: OnnxPolicy | RandomPolicy | None = None
        # Newest version fetched, loaded or refused: the next fetch asks for a newer one.
        self.newest_seen = 0
        self.ready = threading.Event()  # set once the first policy is in

    def install(self, policy: OnnxPolicy) -> None:
        """Serve this policy from the next step on; PolicyError if it does not fit the env."""
        check_fits(policy, self.info)
        self.policy = policy
        self.newest_seen = max(self.newest_seen, policy.version)
        self.ready.set()

    def act_randomly(self, seed: int) -> None:
        """Step with uniformly random actions until the first served policy (discrete)."""
        self.policy = RandomPolicy(self.info.num_actions, seed)
        self.ready.set()

    def refuse(self, version: int) -> None:
        """Skip a version that could not be served (a newer one may be fine)."""
        self.newest_seen = max(self.newest_seen, version)


class ModelUpdater:
    """Fetches newer policies into a PolicySlot on a thread of its own.

    It polls until the actor stops or stepping ends; nobody waits for it to
    end (it may sit in a long poll; closing its channel ends the call).
    """

    def __init__(
        self, models: ModelSource, slot: PolicySlot, cfg: ActorConfig, signals: ActorSignals
    ) -> None:
        self._models = models
        self._slot = slot
        self._precision = cfg.precision
        self._wait_s = cfg.model_wait_s
        self._threads = cfg.inference_threads
        self._errors = signals.errors
        self._stop = signals.stop
        self._stepping_done = signals.stepping_done
        self._backoff = Backoff()
        self._outage = Outage(log, "model fetch")
        self.swaps = 0
        self._pull_s_sum = 0.0
        self._load_s_sum = 0.0
        self.last_pull_s = 0.0
        self.last_load_s = 0.0
        self._thread = threading.Thread(
            target=self._run, name=f"{cfg.name}-model-updater", daemon=True
        )

    def start(self) -> None:
        """Start polling on the updater's thread."""
        self._thread.start()

    def swap_times(self) -> actor_pb2.SwapTimes:
        """How many swaps, and their mean and last pull and load times."""
        swaps = self.swaps
        return actor_pb2.SwapTimes(
            swaps=swaps,
            pull_ms=self._pull_s_sum * 1e3 / swaps if swaps else 0.0,
            load_ms=self._load_s_sum * 1e3 / swaps if swaps else 0.0,
            last_pull_ms=self.last_pull_s * 1e3,
            last_load_ms=self.last_load_s * 1e3,
        )

    def _run(self) -> None:
        while not self._stop.is_set() and not self._stepping_done.is_set():
            try:
                fetched = self._models.fetch(
                    self._precision, newer_than=self._slot.newest_seen, wait_s=self._wait_s
                )
            except grpc.RpcError as err:
                if self._stop.is_set():
                    return
                if err.code() == grpc.StatusCode.NOT_FOUND:
                    continue  # nothing published yet; the quantizer already waited
                self._outage.failed(describe(err), "retrying with backoff")
                self._stop.wait(self._backoff.next())
                continue
            except RuntimeError as err:  # a truncated or headerless stream
                log.warning("model fetch incomplete: %s", err)
                self._stop.wait(self._backoff.next())
                continue
            if self._outage.recovered():
                self._backoff.reset()
            if fetched is not None:
                self._load(fetched)

    def _load(self, fetched: FetchedModel) -> None:
        version = int(fetched.artifact.version)
        started = time.perf_counter()
        try:
            policy = OnnxPolicy(fetched.data, version, self._precision, self._threads)
            load_s = time.perf_counter() - started
            self._slot.install(policy)
        except PolicyError as err:
            # Keep acting with the previous policy; a newer version may be fine.
            self._slot.refuse(version)
            self._errors.set(str(err))
            log.error("refused model: %s", err)
            return
        self.swaps += 1
        self.last_pull_s = fetched.transfer_s
        self.last_load_s = load_s
        self._pull_s_sum += fetched.transfer_s
        self._load_s_sum += load_s
        self._errors.clear("model")
        # The first model is news; every later swap (one per publish) only at debug.
        log.log(
            logging.INFO if self.swaps == 1 else logging.DEBUG,
            "swapped to model v%d (%s, %d bytes): pull %.1f ms, load %.1f ms",
            version,
            self._precision,
            policy.size_bytes,
            fetched.transfer_s * 1e3,
            load_s * 1e3,
        )
