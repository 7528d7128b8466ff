"""When a worker run ``until_idle`` ends: not a poll later than it needs to."""

from __future__ import annotations

import asyncio

import pytest

from mailroom.clock import FakeClock
from mailroom.core import Mailroom
from mailroom.delivery.engine import EngineOptions
from mailroom.teams import Team
from tests.support.faults import FaultServer
from tests.support.relay import queue_via_relay


def test_a_worker_with_nothing_left_to_wait_for_stops_at_once(
    mr: Mailroom, team: Team, fault_server: FaultServer, clock: FakeClock
) -> None:
    queue_via_relay(mr, team, fault_server.port, "a@example.net", "b@example.net")
    started = clock.now()

    asyncio.run(mr.delivery(EngineOptions(poll=30.0)).run(until_idle=True))

    assert len(fault_server.received) == 2
    # The loop sleeps only on the clock; it never slept for a poll.
    assert (clock.now() - started).total_seconds() < 30.0


@pytest.mark.parametrize(
    ("poll", "retried"),
    [(3600.0, True), (1.0, False)],
    ids=["retry-within-the-poll", "retry-after-the-poll"],
)
def test_a_retry_is_made_when_due_within_the_poll_and_left_otherwise(
    mr: Mailroom,
    team: Team,
    fault_server: FaultServer,
    clock: FakeClock,
    poll: float,
    retried: bool,
) -> None:
    # The first try is deferred; the retry is due some minutes later.
    fault_server.script("RCPT", "451 4.3.0 try again", times=1)
    [message_id] = queue_via_relay(mr, team, fault_server.port, "a@example.net")
    started = clock.now()

    asyncio.run(mr.delivery(EngineOptions(poll=poll)).run(until_idle=True))

    assert len(fault_server.received) == int(retried)
    assert mr.outbox.count_unsettled([message_id]) == int(not retried)
    slept = (clock.now() - started).total_seconds()
    # Slept until the retry when it was within the poll; not at all otherwise.
    assert 0 < slept < poll if retried else slept == 0
