"""Claims and leases: which worker delivers which mail, and taking back what
a dead worker held.

Workers claim due messages with a lease and renew it while they work.  A
channel is delivered by one worker at a time, so that its limits, kept in that
worker's memory, hold.  A worker that dies leaves expired leases behind (or, on
the same machine, a process that no longer exists); ``recover`` puts its
messages back in the queue and counts them against the channel's limits.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select, text, update

from mailroom.clock import Clock
from mailroom.store import schema as t
from mailroom.store.records import Pending, PendingRecipient
from mailroom.store.states import MessageState, RecipientState

LEASE = timedelta(minutes=5)
WORKER_HOST = socket.gethostname()
INTERRUPTED = (
    "the worker stopped during delivery; sending again (the server may "
    "already have received it once)"
)


def worker_id() -> str:
    """This process, as claims and channel leases name it."""
    return f"{WORKER_HOST}:{os.getpid()}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Claims:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock

    def recover(self) -> int:
        """Put back in the queue what dead workers had claimed.

        A claim from this machine whose process is gone is taken back at once;
        any other claim once its lease has run out.  The server may already
        have such a message (RFC 5321 6.1): it is sent again rather than lost,
        and its history says so.
        """
        now = self.clock.now()
        m = t.messages.c
        dead = self._dead_local_workers()
        stale = (m.lease_until < now) | m.claimed_by.in_(dead)
        with self.engine.begin() as conn:
            ids = list(
                conn.scalars(
                    select(m.id).where(m.state == MessageState.sending).where(stale)
                )
            )
            if not ids:
                return 0
            conn.execute(
                update(t.messages)
                .where(m.id.in_(ids))
                .where(m.state == MessageState.sending)
                .values(
                    state=MessageState.queued,
                    lease_until=None,
                    claimed_by=None,
                    reason=INTERRUPTED,
                    updated_at=now,
                )
            )
            conn.execute(
                insert(t.events),
                [
                    {
                        "at": now,
                        "message_id": i,
                        "kind": "interrupted",
                        "detail": INTERRUPTED,
                    }
                    for i in ids
                ],
            )
            self._count_interrupted(conn, ids, now)
        return len(ids)

    def _count_interrupted(
        self, conn: Connection, ids: list[int], now: datetime
    ) -> None:
        # The dead worker may have started a transaction for any of these and
        # its limiter died with it: count each against the channel's limits
        # now, so that the server never sees more than the limit.
        m, r = t.messages.c, t.recipients.c
        rows = conn.execute(
            select(m.id, m.channel_id, func.count(r.id))
            .join(t.recipients)
            .where(m.id.in_(ids))
            .where(r.state.in_([RecipientState.queued, RecipientState.deferred]))
            .group_by(m.id, m.channel_id)
        )
        attempts = [
            {
                "message_id": message_id,
                "channel_id": channel_id,
                "at": now,
                "stage": "interrupted",
                "recipient": None,
                "code": None,
                "enhanced": "",
                "text": "counted against the limits after a worker stopped",
                "reply_class": "interrupted",
                "rcpt_count": count,
            }
            for message_id, channel_id, count in rows
        ]
        if attempts:
            conn.execute(insert(t.attempts), attempts)

    def _dead_local_workers(self) -> list[str]:
        return self._dead_local(t.messages.c.claimed_by)

    def _dead_local(self, column: Any) -> list[str]:
        """Workers named in ``column`` that ran on this machine and are gone."""
        with self.engine.connect() as conn:
            owners = conn.scalars(
                select(column).where(column.like(f"{WORKER_HOST}:%")).distinct()
            ).all()
        return [o for o in owners if not _alive(int(o.rpartition(":")[2]))]

    def claim(self, channel_id: int, limit: int) -> list[Pending]:
        """Take up to ``limit`` due messages of a channel, oldest first.

        One UPDATE ... RETURNING both picks and marks them, so two workers can
        never take the same message (on SQLite the statement holds the write
        lock; on PostgreSQL the rows are locked and skipped by the other).
        """
        now = self.clock.now()
        with self.engine.begin() as conn:
            due = self._due_ids(conn, channel_id, now, limit)
            ids = list(
                conn.scalars(
                    update(t.messages)
                    .where(t.messages.c.id.in_(due))
                    .where(text(t.WAITING_SQL))
                    .values(
                        state=MessageState.sending,
                        lease_until=now + LEASE,
                        claimed_by=worker_id(),
                    )
                    .returning(t.messages.c.id)
                )
            )
            if not ids:
                return []
            return self._load_pending(conn, ids)

    def _due_ids(
        self, conn: Connection, channel_id: int, now: datetime, limit: int
    ) -> Any:
        query = (
            select(t.messages.c.id)
            .where(t.messages.c.channel_id == channel_id)
            .where(text(t.WAITING_SQL))
            .where(t.messages.c.next_attempt_at <= now)
            .order_by(t.messages.c.next_attempt_at, t.messages.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            # Several workers may claim at once; each skips what another holds.
            query = query.with_for_update(skip_locked=True)
        return query

    def take_channel(self, channel_id: int) -> bool:
        """Become the one worker delivering a channel; False if another is.

        The channel's limits live in that worker's memory, so two workers on
        one channel would each allow the full rate.
        """
        now = self.clock.now()
        c = t.channels.c
        me = worker_id()
        free = (
            c.worker.is_(None)
            | (c.worker == me)
            | (c.worker_until < now)
            | c.worker.in_(self._dead_local(c.worker))
        )
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t.channels)
                .where(c.id == channel_id)
                .where(free)
                .values(worker=me, worker_until=now + LEASE)
            )
        return taken.rowcount == 1

    def renew_channel(self, channel_id: int) -> None:
        """Extend this worker's hold on a channel and on its claimed mail."""
        until = self.clock.now() + LEASE
        me = worker_id()
        with self.engine.begin() as conn:
            conn.execute(
                update(t.channels)
                .where(t.channels.c.id == channel_id)
                .where(t.channels.c.worker == me)
                .values(worker_until=until)
            )
            conn.execute(
                update(t.messages)
                .where(t.messages.c.channel_id == channel_id)
                .where(t.messages.c.claimed_by == me)
                .where(t.messages.c.state == MessageState.sending)
                .values(lease_until=until)
            )

    def give_channel(self, channel_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.channels)
                .where(t.channels.c.id == channel_id)
                .where(t.channels.c.worker == worker_id())
                .values(worker=None, worker_until=None)
            )

    def _load_pending(self, conn: Connection, ids: list[int]) -> list[Pending]:
        m = t.messages.c
        rows = conn.execute(
            select(
                m.id,
                m.team_id,
                m.message_id,
                m.sender,
                t.message_contents.c.content,
                m.attempts,
                m.created_at,
            )
            .join(t.message_contents)
            .where(m.id.in_(ids))
            .order_by(m.next_attempt_at, m.id)
        )
        pending = {row.id: Pending(*row) for row in rows}
        r = t.recipients.c
        waiting = {RecipientState.queued, RecipientState.deferred}
        for row in conn.execute(
            select(r.id, r.message_id, r.address, r.kind, r.state)
            .where(r.message_id.in_(ids))
            .where(r.state.in_([*waiting, RecipientState.sent]))
            .order_by(r.id)
        ):
            message = pending[row.message_id]
            if row.state == RecipientState.sent:
                message.already_sent += 1
            else:
                message.recipients.append(
                    PendingRecipient(row.id, row.address, row.kind)
                )
        return list(pending.values())

    def release(self, ids: Iterable[int], when: datetime, reason: str) -> None:
        """Give claimed messages back unsent, to be tried at ``when``."""
        with self.engine.begin() as conn:
            conn.execute(
                update(t.messages)
                .where(t.messages.c.id.in_(list(ids)))
                .where(t.messages.c.state == MessageState.sending)
                .values(
                    state=MessageState.queued,
                    lease_until=None,
                    claimed_by=None,
                    next_attempt_at=when,
                    reason=reason,
                    updated_at=self.clock.now(),
                )
            )
