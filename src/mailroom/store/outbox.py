"""The outbox: every message, recipient and attempt, durably.

A message is committed here before anything reports it accepted, and every
outcome of a delivery round is written here in one transaction.  Claims and
leases (which worker delivers what) are in ``claims``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    func,
    insert,
    select,
    update,
)

from mailroom.clock import Clock
from mailroom.store import schema as t
from mailroom.store.claims import Claims
from mailroom.store.database import insert_new
from mailroom.store.fastpath import PreparedSet
from mailroom.store.records import AttemptRow, NewMessage, Outcome, Pending, Send
from mailroom.store.states import MessageState, RecipientState, sources_of

# The longest window any channel limit looks back over (recipients per 24 h).
HISTORY = timedelta(hours=24)

# Prepared once: the hot path of delivery writes these for every message.
_UPDATE_RECIPIENT = (
    update(t.recipients)
    .where(t.recipients.c.id == bindparam("b_id"))
    .values(
        state=bindparam("b_state"),
        reply=bindparam("b_reply"),
        updated_at=bindparam("b_now"),
    )
)
# Only a claimed message takes an outcome; anything else was changed meanwhile.
_UPDATE_MESSAGE = (
    update(t.messages)
    .where(t.messages.c.id == bindparam("b_id"))
    .where(t.messages.c.state == MessageState.sending)
    .values(
        state=bindparam("b_state"),
        reason=bindparam("b_reason"),
        lease_until=None,
        claimed_by=None,
        updated_at=bindparam("b_now"),
        next_attempt_at=bindparam("b_next"),
        attempts=t.messages.c.attempts + bindparam("b_charge"),
        sent_at=bindparam("b_sent_at"),
    )
)
_ATTEMPT_COLUMNS = (
    "message_id",
    "channel_id",
    "at",
    "stage",
    "recipient",
    "code",
    "enhanced",
    "text",
    "reply_class",
    "rcpt_count",
)
_FAST = PreparedSet(
    recipient=_UPDATE_RECIPIENT,
    message=_UPDATE_MESSAGE,
    attempt=insert(t.attempts).values(
        {name: bindparam(name) for name in _ATTEMPT_COLUMNS}
    ),
)


def _recipient_rows(outcome: Outcome, now: datetime) -> list[dict[str, Any]]:
    return [
        {"b_id": rid, "b_state": state, "b_reply": reply[:2000], "b_now": now}
        for rid, (state, reply) in outcome.recipient_states.items()
    ]


def _attempt_rows(
    message_id: int, channel_id: int, outcome: Outcome, now: datetime
) -> list[dict[str, Any]]:
    return [
        {
            "message_id": message_id,
            "channel_id": channel_id,
            "at": attempt.at or now,
            "stage": attempt.stage,
            "recipient": attempt.recipient,
            "code": attempt.code,
            "enhanced": attempt.enhanced,
            "text": attempt.text[:2000],
            "reply_class": attempt.reply_class,
            "rcpt_count": attempt.rcpt_count,
        }
        for attempt in outcome.attempts
    ]


def _message_row(message_id: int, outcome: Outcome, now: datetime) -> dict[str, Any]:
    return {
        "b_id": message_id,
        "b_state": str(outcome.state),
        "b_reason": outcome.reason,
        "b_now": now,
        "b_next": outcome.next_attempt_at or now,
        "b_charge": 1 if outcome.charge_attempt else 0,
        "b_sent_at": now if outcome.state is MessageState.sent else None,
    }


class Outbox:
    def __init__(self, engine: Engine, clock: Clock) -> None:
        self.engine = engine
        self.clock = clock
        self.claims = Claims(engine, clock)

    # Acceptance -----------------------------------------------------------

    def accept(self, items: Sequence[NewMessage]) -> list[int]:
        """Commit messages and their recipients; returns their ids in order."""
        if not items:
            return []
        now = self.clock.now()
        with self.engine.begin() as conn:
            ids = self._insert_messages(conn, items, now)
            rows = [
                {
                    "message_id": msg_id,
                    "address": address,
                    "kind": kind,
                    "state": RecipientState.queued,
                    "updated_at": now,
                }
                for msg_id, item in zip(ids, items, strict=True)
                for address, kind in item.recipients
            ]
            conn.execute(insert(t.recipients), rows)
        return ids

    def _insert_messages(
        self, conn: Connection, items: Sequence[NewMessage], now: datetime
    ) -> list[int]:
        rows = [
            {
                "team_id": item.team_id,
                "channel_id": item.channel_id,
                "campaign_id": item.campaign_id,
                "message_id": item.message_id,
                "sender": item.sender,
                "state": item.state,
                "reason": item.reason,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for item in items
        ]
        # One multi-row INSERT ... RETURNING, ids in the order given.
        statement = insert(t.messages).returning(
            t.messages.c.id, sort_by_parameter_order=True
        )
        ids = list(conn.scalars(statement, rows))
        contents = [
            {"message_id": msg_id, "content": item.content}
            for msg_id, item in zip(ids, items, strict=True)
        ]
        conn.execute(insert(t.message_contents), contents)
        return ids

    # Claims and outcomes ---------------------------------------------------

    def record(self, message: Pending, channel_id: int, outcome: Outcome) -> None:
        """Write one delivery round's outcome in one transaction."""
        self.record_many([(message, channel_id, outcome)])

    def record_many(self, rounds: Sequence[tuple[Pending, int, Outcome]]) -> None:
        """Write several rounds' outcomes in one transaction (a group commit)."""
        now = self.clock.now()
        recipients, attempts, messages = [], [], []
        for message, channel_id, outcome in rounds:
            recipients += _recipient_rows(outcome, now)
            attempts += _attempt_rows(message.id, channel_id, outcome, now)
            messages.append(_message_row(message.id, outcome, now))

        with self.engine.begin() as conn:
            if recipients:
                _FAST.executemany(conn, "recipient", recipients)
            if attempts:
                _FAST.executemany(conn, "attempt", attempts)
            _FAST.executemany(conn, "message", messages)
            for message, _channel_id, outcome in rounds:
                for address, reason in outcome.suppress:
                    self._suppress(conn, message.team_id, address, reason, now)

    def _suppress(
        self,
        conn: Connection,
        team_id: int | None,
        address: str,
        reason: str,
        now: datetime,
    ) -> None:
        if team_id is None:
            return
        row = {
            "team_id": team_id,
            "address": address.lower(),
            "reason": reason,
            "created_at": now,
        }
        # Another worker may suppress the same address at the same moment.
        insert_new(conn, t.suppressions, row)

    def cancel(
        self, *, message_id: int | None = None, campaign_id: int | None = None
    ) -> int:
        """Withdraw waiting messages (one, or a campaign's); returns how many.

        A message already being sent, or settled, is left as it is.
        """
        m = t.messages.c
        query = select(m.id).where(m.state.in_(sources_of(MessageState.cancelled)))
        if message_id is not None:
            query = query.where(m.id == message_id)
        if campaign_id is not None:
            query = query.where(m.campaign_id == campaign_id)
        now = self.clock.now()
        with self.engine.begin() as conn:
            ids = list(conn.scalars(query))
            if ids:
                self._cancel_ids(conn, ids, now)
        return len(ids)

    def _cancel_ids(self, conn: Connection, ids: list[int], now: datetime) -> None:
        waiting = [RecipientState.queued, RecipientState.deferred]
        conn.execute(
            update(t.messages)
            .where(t.messages.c.id.in_(ids))
            .values(
                state=MessageState.cancelled,
                reason="cancelled before it was sent",
                updated_at=now,
            )
        )
        conn.execute(
            update(t.recipients)
            .where(t.recipients.c.message_id.in_(ids))
            .where(t.recipients.c.state.in_(waiting))
            .values(state=RecipientState.cancelled, updated_at=now)
        )

    # Channel-wide changes --------------------------------------------------

    def hold_channel(self, channel_id: int, reason: str) -> int:
        """Hold a disconnected channel's waiting mail; it is never failed."""
        return self._move_channel_mail(
            channel_id,
            [MessageState.queued, MessageState.deferred],
            MessageState.held,
            reason,
        )

    def resume_channel(self, channel_id: int) -> int:
        """Queue a reconnected channel's held mail again, in its original order."""
        return self._move_channel_mail(
            channel_id, [MessageState.held], MessageState.queued, ""
        )

    def wake_channel(self, channel_id: int) -> int:
        """Make a channel's waiting mail due now (its pause has been lifted)."""
        now = self.clock.now()
        waiting = [MessageState.queued, MessageState.deferred]
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.messages)
                .where(t.messages.c.channel_id == channel_id)
                .where(t.messages.c.state.in_(waiting))
                .where(t.messages.c.next_attempt_at > now)
                .values(next_attempt_at=now, reason="", updated_at=now)
            )
        return result.rowcount or 0

    def defer_channel(self, channel_id: int, when: datetime, reason: str) -> int:
        """Show every waiting message of a channel why and until when it waits."""
        now = self.clock.now()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.messages)
                .where(t.messages.c.channel_id == channel_id)
                .where(
                    t.messages.c.state.in_([MessageState.queued, MessageState.deferred])
                )
                .where(t.messages.c.next_attempt_at < when)
                .values(next_attempt_at=when, reason=reason, updated_at=now)
            )
        return result.rowcount or 0

    def _move_channel_mail(
        self,
        channel_id: int,
        sources: list[MessageState],
        target: MessageState,
        reason: str,
    ) -> int:
        now = self.clock.now()
        with self.engine.begin() as conn:
            result = conn.execute(
                update(t.messages)
                .where(t.messages.c.channel_id == channel_id)
                .where(t.messages.c.state.in_(sources))
                .values(
                    state=target,
                    reason=reason,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )
        return result.rowcount or 0

    # Reading ----------------------------------------------------------------

    def history(self, channel_id: int) -> list[Send]:
        """Transactions of the last 24 hours, to seed the channel's limiter."""
        since = self.clock.now() - HISTORY
        a = t.attempts.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(a.at, a.rcpt_count)
                .where(a.channel_id == channel_id)
                .where(a.rcpt_count > 0)
                .where(a.at > since)
                .order_by(a.at)
            )
            return [Send(row.at, row.rcpt_count) for row in rows]

    def next_due(self, channel_ids: Sequence[int]) -> datetime | None:
        """The earliest time a waiting message of these channels is due."""
        if not channel_ids:
            return None
        with self.engine.connect() as conn:
            due: datetime | None = conn.scalar(
                select(func.min(t.messages.c.next_attempt_at))
                .where(t.messages.c.channel_id.in_(list(channel_ids)))
                .where(
                    t.messages.c.state.in_([MessageState.queued, MessageState.deferred])
                )
            )
            return due

    def next_due_of(self, ids: Sequence[int]) -> datetime | None:
        """The earliest time one of these waiting messages is due."""
        m = t.messages.c
        with self.engine.connect() as conn:
            due: datetime | None = conn.scalar(
                select(func.min(m.next_attempt_at))
                .where(m.id.in_(list(ids)))
                .where(m.state.in_([MessageState.queued, MessageState.deferred]))
            )
            return due

    def count_unsettled(self, ids: Sequence[int] | None = None) -> int:
        waiting = [
            MessageState.queued,
            MessageState.deferred,
            MessageState.sending,
        ]
        query = select(func.count()).where(t.messages.c.state.in_(waiting))
        if ids is not None:
            query = query.where(t.messages.c.id.in_(list(ids)))
        with self.engine.connect() as conn:
            return int(conn.scalar(query) or 0)

    def add_attempts(
        self, message_id: int, channel_id: int, attempts: list[AttemptRow]
    ) -> None:
        """Keep attempts that ended before any outcome (a refused connection)."""
        outcome = Outcome(state=MessageState.queued, attempts=attempts)
        rows = _attempt_rows(message_id, channel_id, outcome, self.clock.now())
        with self.engine.begin() as conn:
            conn.execute(insert(t.attempts), rows)

    def add_event(
        self,
        kind: str,
        detail: str,
        *,
        channel_id: int | None = None,
        message_id: int | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(t.events).values(
                    at=self.clock.now(),
                    kind=kind,
                    detail=detail,
                    channel_id=channel_id,
                    message_id=message_id,
                )
            )
