"""Resend protection: a transition is stored once, however often its sender retries.

An actor cannot always know whether a failed Insert was stored (the reply can
be lost after the commit, a deadline can pass just after it), so it sends the
same chunks again. Each chunk carries the sender's ``session`` (random per
sender process) and ``sequence`` (1, 2, 3, ... in sending order); the replay
remembers, per actor_id, the session and the last sequence it committed, and
skips chunks at or below it. Chunks go out oldest first and a resend repeats
a prefix of what is pending, so the ones already stored are always a prefix
of a stream: what is left is committed (all or nothing, as ever).

A new session (the actor restarted) starts afresh. Chunks with session 0
are not tracked (a client that does not number its chunks gets
at-least-once, as before). How the mark is kept: ``SenderLog`` for the
in-memory table, a Redis hash for the Redis table (``redis_lua.INSERT``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from services.replay.errors import InvalidChunkError

# Longest actor_id the replay keeps (stats, resend marks): names, not payloads.
MAX_ACTOR_ID_CHARS = 128
# Senders whose marks the in-memory table keeps (least recently committed dropped
# first): one per actor process that ever inserted, bounded against a caller that
# invents actor ids.
MAX_SENDERS = 4096


@dataclass(frozen=True)
class SenderMarks:
    """Who sent one Insert stream and where its chunks stand in the sender's order."""

    actor_id: str
    session: int  # 0: not tracked
    sequences: tuple[int, ...]  # one per chunk, strictly increasing (zeros when untracked)

    @property
    def tracked(self) -> bool:
        return self.session != 0

    def first_new(self, session: int, last: int) -> int:
        """Index of the first chunk not yet stored, given the sender's stored mark."""
        if not self.tracked or session != self.session:
            return 0
        return sum(1 for s in self.sequences if s <= last)


def check_marks(
    actor_ids: Sequence[str], sessions: Sequence[int], sequences: Sequence[int]
) -> SenderMarks:
    """The marks of a stream's chunks; InvalidChunkError naming the chunk that breaks
    the rules: one actor_id and session per stream; sequences all 0 (untracked) or
    all >= 1 and strictly increasing; actor_id at most MAX_ACTOR_ID_CHARS."""
    actor_id = next((a for a in actor_ids if a), "")
    if len(actor_id) > MAX_ACTOR_ID_CHARS:
        raise InvalidChunkError(
            f"actor_id is {len(actor_id)} characters; at most {MAX_ACTOR_ID_CHARS} are kept"
        )
    session = sessions[0] if sessions else 0
    for i, (a, s) in enumerate(zip(actor_ids, sessions, strict=True)):
        if (a and a != actor_id) or s != session:
            raise InvalidChunkError(
                f"chunk {i}: actor_id {a!r} / session {s} differ from the stream's first "
                f"({actor_id!r} / {session}); one Insert carries one sender's chunks"
            )
    if session == 0:
        if any(sequences):
            raise InvalidChunkError("chunks carry a sequence but no session; set both or neither")
        return SenderMarks(actor_id, 0, tuple(sequences))
    if not actor_id:
        raise InvalidChunkError(
            "chunks carry a session but no actor_id; resends are kept per actor_id"
        )
    previous = 0
    for i, seq in enumerate(sequences):
        if seq <= previous:
            raise InvalidChunkError(
                f"chunk {i}: sequence {seq} does not follow {previous}; a sender numbers its "
                "chunks 1, 2, 3, ... and sends them in that order"
            )
        previous = seq
    return SenderMarks(actor_id, session, tuple(sequences))


class SenderLog:
    """Per actor_id, the session and last sequence committed (the in-memory table's;
    not locked: the table calls it under its own lock)."""

    def __init__(self, max_senders: int = MAX_SENDERS) -> None:
        self._marks: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._max = max_senders

    def first_new(self, marks: SenderMarks) -> int:
        """Index of the first of marks' chunks this table has not stored."""
        if not marks.tracked or marks.actor_id not in self._marks:
            return 0
        session, last = self._marks[marks.actor_id]
        return marks.first_new(session, last)

    def record(self, marks: SenderMarks) -> None:
        """Remember marks' last chunk as committed."""
        if not marks.tracked:
            return
        self._marks[marks.actor_id] = (marks.session, marks.sequences[-1])
        self._marks.move_to_end(marks.actor_id)
        while len(self._marks) > self._max:
            self._marks.popitem(last=False)

    def entries(self) -> list[tuple[str, int, int]]:
        """(actor_id, session, last sequence) of every sender kept, least recent first."""
        return [(actor_id, session, last) for actor_id, (session, last) in self._marks.items()]

    def restore(self, actor_id: str, session: int, last: int) -> None:
        """Take a mark back from a journal (as if its commit had just happened)."""
        self.record(SenderMarks(actor_id, session, (last,)))
