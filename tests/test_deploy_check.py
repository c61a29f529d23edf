"""deploy/compose_stack.py's accounting of acknowledged transitions, without Docker:
what each actor's processes counted as acknowledged against what Redis holds."""

from __future__ import annotations

import re
from typing import Any

from deploy import ROOT, deploy_script

check = deploy_script("compose_stack")


def stopped(sent: int) -> str:
    """The line an actor logs when it stops (services/actor/runner.py)."""
    return f"... INFO stopped after 9 env steps, 1 episodes; {sent} transitions sent\n"


def gen(container: str, actor_id: str, sent: int, killed: bool = False) -> Any:
    return check.Generation(container, actor_id, f"start-{sent}", sent, killed)


def test_a_stopped_actor_counts_what_it_logged_and_nothing_is_lost_when_redis_holds_it() -> None:
    gens = [gen("c1", "actor-h1", 90)]
    result = check.tally({"c1": "h1"}, gens, {"c1": stopped(100)}, {"actor-h1": 100})
    t = result["actor-h1"]
    assert (t.acked, t.in_redis, t.lost, t.exact) == (100, 100, 0, True)
    assert t.accounted == t.processes == 1


def test_transitions_redis_does_not_hold_are_lost() -> None:
    result = check.tally({"c1": "h1"}, [], {"c1": stopped(100)}, {"actor-h1": 60})
    assert result["actor-h1"].lost == 40


def test_duplicates_in_redis_are_not_a_loss() -> None:
    # At-least-once delivery: an insert whose reply was lost is stored twice.
    result = check.tally({"c1": "h1"}, [], {"c1": stopped(100)}, {"actor-h1": 128})
    assert result["actor-h1"].lost == 0


def test_a_killed_process_counts_as_last_polled_and_its_restart_as_logged() -> None:
    gens = [gen("c1", "actor-h1", 500, killed=True), gen("c1", "actor-h1", 70)]
    result = check.tally({"c1": "h1"}, gens, {"c1": stopped(80)}, {"actor-h1": 580})
    t = result["actor-h1"]
    assert (t.acked, t.lost, t.exact, t.processes, t.accounted) == (580, 0, False, 2, 2)


def test_a_process_that_died_without_being_killed_by_the_check_is_unaccounted() -> None:
    gens = [gen("c1", "actor-h1", 500), gen("c1", "actor-h1", 70)]
    t = check.tally({"c1": "h1"}, gens, {"c1": stopped(80)}, {"actor-h1": 580})["actor-h1"]
    assert t.accounted == 1 and t.processes == 2


def test_an_actor_the_poller_never_reached_is_named_after_its_host() -> None:
    result = check.tally({"c2": "abc"}, [], {"c2": stopped(7)}, {"actor-abc": 7})
    assert result["actor-abc"].acked == 7


def test_the_check_reads_the_line_the_actor_really_logs_when_it_stops() -> None:
    source = (ROOT / "services" / "actor" / "runner.py").read_text()
    (fmt,) = re.findall(r'"(stopped after %d env steps, %d episodes; %d transitions sent)"', source)
    assert check.STOPPED.search(fmt % (12, 3, 456)).group(1) == "456"
