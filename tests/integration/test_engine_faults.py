"""Faults that are ours or the server's, and never stop the other messages."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy import select

from mailroom.core import Mailroom
from mailroom.delivery.engine import EngineOptions
from mailroom.sandbox import LoopbackListener
from mailroom.store import schema as t
from mailroom.teams import Team
from tests.support.faults import FaultServer
from tests.support.relay import queue_via_relay


class Plain:
    """A server with no SMTPUTF8; DATA to silent@ is never answered."""

    def __init__(self) -> None:
        self.received: list[tuple[str, ...]] = []

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        if "silent@example.net" in envelope.rcpt_tos:
            await asyncio.sleep(3600)
        self.received.append(tuple(envelope.rcpt_tos))
        return "250 2.0.0 OK"


@pytest.fixture
def plain() -> Iterator[tuple[Plain, LoopbackListener]]:
    handler = Plain()
    listener = LoopbackListener(lambda loop: SMTP(handler, loop=loop))
    listener.start()
    yield handler, listener
    listener.stop()


def states(mr: Mailroom, ids: list[int]) -> list[tuple[Any, ...]]:
    with mr.db.connect() as conn:
        rows = conn.execute(
            select(t.messages.c.state, t.messages.c.reason)
            .where(t.messages.c.id.in_(ids))
            .order_by(t.messages.c.id)
        )
        return [tuple(row) for row in rows]


def test_a_message_this_server_cannot_take_fails_alone(
    mr: Mailroom, team: Team, plain: tuple[Plain, LoopbackListener]
) -> None:
    handler, listener = plain
    ids = queue_via_relay(
        mr,
        team,
        listener.port,
        "first@example.net",
        "josé@example.net",
        "last@example.net",
    )

    asyncio.run(mr.delivery().run(until_idle=True))

    [first, unicode, last] = states(mr, ids)
    assert first[0] == last[0] == "sent"
    assert unicode[0] == "failed"
    assert "SMTPUTF8" in unicode[1]
    assert handler.received == [("first@example.net",), ("last@example.net",)]


def test_a_server_that_never_answers_data_defers_and_the_worker_goes_on(
    mr: Mailroom, team: Team, plain: tuple[Plain, LoopbackListener]
) -> None:
    handler, listener = plain
    ids = queue_via_relay(
        mr, team, listener.port, "silent@example.net", "next@example.net"
    )

    engine = mr.delivery(EngineOptions(timeout=0.5))
    asyncio.run(engine.run(until_idle=True))

    [silent, following] = states(mr, ids)
    assert silent[0] == "deferred"
    assert "no reply within 0.5 s" in silent[1]
    assert following[0] == "sent"
    assert handler.received == [("next@example.net",)]
    # The content went out, so the try is in the history and, since the
    # server may have taken it, counts against the channel's limits.
    with mr.db.connect() as conn:
        attempts = conn.execute(
            select(
                t.attempts.c.stage, t.attempts.c.rcpt_count, t.attempts.c.text
            ).where(t.attempts.c.message_id == ids[0])
        ).all()
    assert [(stage, count) for stage, count, _ in attempts] == [("data", 1)]
    assert "no reply within 0.5 s" in attempts[0].text


def refuse_outcome_of(mr: Mailroom, message_id: int) -> None:
    """Make the database refuse to record this message as sent."""
    with mr.db.begin() as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE UPDATE ON messages "
                f"WHEN NEW.id = {message_id} AND NEW.state = 'sent' "
                "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"
            )
            return
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
            f"IF NEW.id = {message_id} AND NEW.state = 'sent' THEN "
            "RAISE EXCEPTION 'refused by a test trigger'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE UPDATE ON messages "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )


def test_an_outcome_the_database_refuses_costs_only_the_next_transaction(
    mr: Mailroom,
    team: Team,
    plain: tuple[Plain, LoopbackListener],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler, listener = plain
    to = [f"lead{i}@example.net" for i in range(6)]
    ids = queue_via_relay(mr, team, listener.port, *to)
    refuse_outcome_of(mr, ids[2])

    asyncio.run(mr.delivery().run(until_idle=True))

    got = states(mr, ids)
    assert [state for state, _ in got] == [
        "sent", "sent", "sending", "deferred", "sent", "sent",
    ]  # fmt: skip
    # The message after it was given up before its final ".", so the server
    # discarded it; the refused one stays claimed until its lease runs out.
    assert "previous outcome could not be recorded" in got[3][1]
    assert handler.received == [(to[i],) for i in (0, 1, 2, 4, 5)]
    assert "the outcome could not be recorded" in caplog.text


def test_a_refused_outcome_no_session_waited_for_leaves_no_unread_error(
    mr: Mailroom, team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    # Pipelining and two sessions, so the commit lingers; the message after
    # the refused one bounces at RCPT and never reaches the final "." that
    # would have waited for that commit.
    with FaultServer(pipelining=True) as server:
        server.script("RCPT", "550 5.1.1 no such user", match="gone@example.net")
        to = ["a@example.net", "gone@example.net"] * 3
        ids = queue_via_relay(mr, team, server.port, *to)
        relay = mr.channels.find(team.id, "relay")
        mr.channels.update(relay, connections=2)
        refuse_outcome_of(mr, ids[0])

        # Small claims, so that both sessions have mail to send.
        asyncio.run(mr.delivery(EngineOptions(batch=2)).run(until_idle=True))
        gc.collect()

    assert "never retrieved" not in caplog.text
    assert states(mr, ids)[0][0] == "sending"  # on record as claimed, still
    assert [state for state, _ in states(mr, ids)[1:]] == [
        "bounced", "sent", "bounced", "sent", "bounced",
    ]  # fmt: skip
