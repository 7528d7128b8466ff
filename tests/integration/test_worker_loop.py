"""When a worker run ``until_idle`` ends: not a poll later than it needs to."""

from __future__ import annotations

import asyncio

from mailroom.channels.model import Security
from mailroom.channels.registry import ChannelSpec
from mailroom.clock import FakeClock
from mailroom.core import Mailroom
from mailroom.delivery.engine import EngineOptions
from mailroom.sending import OneOff, submit
from mailroom.teams import Team
from tests.support.faults import FaultServer


def queue(mr: Mailroom, team: Team, port: int, *recipients: str) -> list[int]:
    mr.channels.add(
        ChannelSpec(
            name="relay",
            kind="smtp",
            team_id=team.id,
            host="127.0.0.1",
            port=port,
            security=Security.none,
            domains=["example.com"],
        )
    )
    return [
        submit(mr, team, OneOff("alice@example.com", [r], "Hi", "x")).id
        for r in recipients
    ]


def test_a_worker_with_nothing_left_to_wait_for_stops_at_once(
    mr: Mailroom, team: Team, fault_server: FaultServer, clock: FakeClock
) -> None:
    queue(mr, team, fault_server.port, "a@example.net", "b@example.net")
    started = clock.now()

    asyncio.run(mr.delivery(EngineOptions(poll=30.0)).run(until_idle=True))

    assert len(fault_server.received) == 2
    # The loop sleeps only on the clock; it never slept for a poll.
    assert (clock.now() - started).total_seconds() < 30.0


def test_a_retry_due_within_the_poll_is_still_made(
    mr: Mailroom, team: Team, fault_server: FaultServer, clock: FakeClock
) -> None:
    fault_server.script("RCPT", "451 4.3.0 try again", times=1)
    [message_id] = queue(mr, team, fault_server.port, "a@example.net")
    started = clock.now()

    asyncio.run(mr.delivery(EngineOptions(poll=3600.0)).run(until_idle=True))

    assert [m.envelope_rcpts for m in fault_server.received] == [("a@example.net",)]
    assert mr.outbox.count_unsettled([message_id]) == 0
    assert (clock.now() - started).total_seconds() < 3600.0
