"""What an actor's status says while stepping is held back by replay."""

from __future__ import annotations

import threading
import time

from test_actor_runner import RecordingSink, config, policy, wait_for

from services.actor.runner import RATE_WINDOW_S, ActorRunner


def test_env_steps_per_s_is_zero_once_nothing_stepped_within_the_window() -> None:
    gate = threading.Event()  # the replay holds every Insert until set
    cfg = config(chunk_size=8, max_pending_chunks=1, max_chunks_per_insert=1)
    runner = ActorRunner(cfg, RecordingSink(gate), models=None)
    runner.set_policy(policy())
    runner.start()
    try:
        wait_for(lambda: runner.status().pending_chunks == 2)  # 1 queued + 1 in the held insert
        assert runner.status().env_steps_per_s > 0
        time.sleep(RATE_WINDOW_S + 0.5)
        held = runner.status()
    finally:
        gate.set()
        runner.stop(flush_s=2.0)
    assert (held.state, held.env_steps_per_s) == ("running", 0.0)
