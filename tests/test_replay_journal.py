"""The memory replay's journal: what a replica killed with SIGKILL gets back.

Unit tests drive ``JournaledTable`` and ``Journal`` as plain Python; one test
kills a real `actorq serve replay --journal` process with SIGKILL and
restarts it. `actorq train` with the replay killed is in tests/test_faults.py.
"""

from __future__ import annotations

import os
import resource
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import start_service
from test_replay_core import chunk

from actorq.clients import ReplayClient
from actorq.config import ConfigError
from actorq.rpc import channel
from actorq.transitions import Transitions
from services.replay import journal as journal_module
from services.replay.config import ReplayConfig
from services.replay.errors import StoreUnavailableError
from services.replay.factory import build_table
from services.replay.journal import Journal, JournalError
from services.replay.journaled import JournaledTable
from services.replay.resends import SenderMarks


def journaled(path: Path, capacity: int = 100, **settings: object) -> JournaledTable:
    cfg = ReplayConfig(
        capacity=capacity,
        min_size_to_sample=1,
        journal=str(path),
        **settings,  # type: ignore[arg-type]
    )
    table = build_table(cfg)
    assert isinstance(table, JournaledTable)
    return table


def recovered(path: Path, **settings: object) -> JournaledTable:
    """What a replica restarted on path holds (closed again, so the journal is free)."""
    table = journaled(path, **settings)  # type: ignore[arg-type]
    table.close()
    return table


def send(table: JournaledTable, n: int, start: float, actor: str = "a", seq: int = 0) -> int:
    """One commit of n rows numbered from start; seq >= 1: tracked (session 7)."""
    marks = SenderMarks(actor, 7 if seq else 0, (seq,))
    return table.insert_stream([chunk(n, start)], marks).stored


def rows(table: JournaledTable) -> np.ndarray:
    """obs[:, 0] of the live rows, oldest first (the row numbers ``send`` gave)."""
    end = table.store.end_key
    keys = np.arange(end - table.store.size, end, dtype=np.int64)
    return table.store.gather(keys)["obs"][:, 0]


def test_a_reopened_journal_gives_back_rows_counters_and_resend_marks(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    first = journaled(path)
    send(first, 5, 0, "a", seq=1)
    send(first, 3, 5, "b")
    send(first, 4, 8, "a", seq=2)
    first.sample(4)
    send(first, 2, 12, "b")
    before = first.stats()
    first.close()

    again = journaled(path)
    after = again.stats()
    assert again.recovered == 14
    assert list(rows(again)) == list(range(14))
    assert (after.size, after.inserted, after.insert_calls) == (14, 14, 4)
    assert after.inserted_by_actor == {"a": 9, "b": 5}
    assert after.actor_last_seen_unix == before.actor_last_seen_unix
    assert after.sampled == 4  # as of the last commit
    assert (again.limiter.inserts, again.limiter.samples, again.limiter.deletes) == (14, 4, 0)
    # actor a resends its second chunk (its reply was lost): skipped, as before the restart
    assert send(again, 4, 8, "a", seq=2) == 0
    assert send(again, 1, 14, "a", seq=3) == 1
    again.close()
    assert recovered(path).stats().inserted_by_actor == {"a": 10, "b": 5}


def test_only_the_newest_capacity_transitions_come_back(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    table = journaled(path, capacity=10)
    for i in range(5):
        send(table, 4, 4 * i)
    table.close()
    again = journaled(path, capacity=10)
    assert list(rows(again)) == list(range(10, 20))
    stats = again.stats()
    assert (stats.size, stats.inserted, stats.evicted) == (10, 20, 10)
    again.close()
    smaller = journaled(path, capacity=3)  # restarted with a smaller capacity
    assert list(rows(smaller)) == [17, 18, 19]
    assert smaller.stats().evicted == 17


def test_the_journal_is_compacted_and_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "_MIN_COMPACT_BYTES", 0)
    path = tmp_path / "journal"
    table = journaled(path, capacity=50)
    row = table.store.signature.transition_bytes if table.store.signature else 41
    largest = 0
    for i in range(60):
        send(table, 7, 7 * i, f"actor-{i % 3}", seq=i + 1)
        largest = max(largest, path.stat().st_size)
    # 420 rows went in; the file never held more than about twice the capacity's worth
    assert largest < 4 * 50 * row
    before = table.stats()
    table.close()
    assert not Path(f"{path}.tmp").exists()
    kinds = [r.kind for r in Journal(path).records()]
    assert kinds[0] == journal_module.SNAPSHOT and len(kinds) < 15
    again = journaled(path, capacity=50)
    assert list(rows(again)) == list(range(420 - 50, 420))
    after = again.stats()
    assert (after.inserted, after.insert_calls, after.evicted) == (420, 60, 370)
    assert after.inserted_by_actor == before.inserted_by_actor
    assert send(again, 7, 413, "actor-2", seq=60) == 0  # the marks survived compaction


def two_commits(path: Path) -> int:
    """A closed journal of two 5-transition commits (keys 0-4, 5-9); the bytes of the first."""
    table = journaled(path)
    send(table, 5, 0)
    whole = path.stat().st_size
    send(table, 5, 5)
    table.close()
    return whole


def test_a_torn_last_record_is_dropped_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    whole = two_commits(path)
    with open(path, "r+b") as f:  # a kill in the middle of the second record's write
        f.truncate(whole + 30)
    again = journaled(path)
    assert again.recovered == 5
    assert path.stat().st_size == whole  # the torn bytes are gone before new appends
    send(again, 2, 100)
    again.close()
    assert list(rows(recovered(path))) == [0, 1, 2, 3, 4, 100, 101]


def test_a_corrupt_record_and_all_after_it_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    whole = two_commits(path)
    data = bytearray(path.read_bytes())
    data[whole + 60] ^= 0xFF  # a flipped byte in the second record's body
    path.write_bytes(bytes(data))
    assert list(rows(recovered(path))) == [0, 1, 2, 3, 4]
    path.write_bytes(b"garbage, not a journal" * 10)
    assert recovered(path).recovered == 0


def test_a_journal_of_another_layout_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    table = journaled(path)
    send(table, 5, 0)
    table.close()
    with pytest.raises(JournalError, match="does not fit this table.*move it away"):
        journaled(path, obs_dim=8, action_dim=0)


def test_a_journal_in_use_by_another_replica_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    table = journaled(path)
    with pytest.raises(JournalError, match="in use by another replay process"):
        journaled(path)
    table.close()
    recovered(path)  # free again once its replica is gone


def test_a_commit_the_disk_refuses_is_not_acknowledged_nor_half_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    table = journaled(path, capacity=1000)
    send(table, 5, 0)
    whole = path.stat().st_size
    # A real write error: files of this process may not grow past `whole` + 100 bytes.
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (whole + 100, limits[1]))
    try:
        with pytest.raises(StoreUnavailableError, match="journal cannot be written"):
            send(table, 50, 5)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, previous)
    assert table.stats().size == 5 and path.stat().st_size == whole
    send(table, 2, 55)  # the disk has room again: appends go on after the whole records
    table.close()
    assert list(rows(recovered(path))) == [0, 1, 2, 3, 4, 55, 56]


def test_an_unusable_journal_path_is_one_sentence(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        ReplayConfig(journal=str(a_file / "journal"))
    with pytest.raises(JournalError, match="cannot be opened for writing"):
        Journal(a_file / "journal")
    with pytest.raises(ConfigError, match="for a memory store"):
        ReplayConfig(journal=str(tmp_path / "j"), store="redis://127.0.0.1:6379/0")
    blocked = tmp_path / "blocked"
    blocked.mkdir(mode=0o500)
    if not os.access(blocked, os.W_OK):  # root may write anywhere
        with pytest.raises(ConfigError, match="not writable by this process"):
            ReplayConfig(journal=str(blocked / "journal"))


def test_a_replay_killed_with_sigkill_keeps_every_acknowledged_transition(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    args = ["--capacity", "1000", "--min-size-to-sample", "1", "--journal", str(path)]
    svc = start_service("replay", args, tmp_path / "first")
    acked = 0
    try:
        with channel(svc.address) as ch:
            client = ReplayClient(ch)
            for i in range(4):
                chunks = [Transitions(**chunk(50, 100 * i + 50 * j)) for j in range(2)]
                acked += client.insert(chunks, actor_id="actor-0").transitions
        os.kill(svc.proc.pid, signal.SIGKILL)
        svc.proc.wait(10)
    finally:
        svc.stop()
    restarted = start_service("replay", args, tmp_path / "second")
    try:
        with channel(restarted.address) as ch:
            client = ReplayClient(ch)
            stats = client.stats()
            (batch,) = list(client.sample_stream(batch_size=64, num_batches=1))
        assert acked == 400
        assert (stats.size, stats.inserted_by_actor["actor-0"]) == (acked, acked)
        assert set(batch.transitions.obs[:, 0].astype(int)) <= set(range(400))
        log = restarted.log_tail()
        assert f"recovered {acked} transitions" in log, log
    finally:
        restarted.stop()
