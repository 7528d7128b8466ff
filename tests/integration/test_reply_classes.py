"""Every reply class, shown against a server that really sends it.

The fault server is a real SMTP server on loopback (aiosmtpd) with STARTTLS and
AUTH; the engine talks to it with certificate checks on.  Time runs on a fake
clock, so waiting for a pause or a retry takes no real time.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pytest
from sqlalchemy import select

from mailroom.channels.model import ChannelStatus, Security
from mailroom.channels.registry import ChannelSpec
from mailroom.clock import FakeClock
from mailroom.core import Mailroom
from mailroom.sending import OneOff, submit
from mailroom.store import schema as t
from mailroom.teams import Team
from tests.support.faults import FaultServer
from tests.support.plugin import FAULT_PASSWORD, FAULT_USERNAME
from tests.support.tls import TestCA


@pytest.fixture
def channel(mr: Mailroom, team: Team, fault_server_tls: FaultServer, tls_ca: TestCA):
    return mr.channels.add(
        ChannelSpec(
            name="relay",
            kind="smtp",
            team_id=team.id,
            host="127.0.0.1",
            port=fault_server_tls.port,
            security=Security.starttls,
            username=FAULT_USERNAME,
            secret=FAULT_PASSWORD,
            domains=["example.com"],
            ca_bundle=str(tls_ca.ca_path),
        )
    )


def send(mr: Mailroom, team: Team, *to: str) -> int:
    request = OneOff("Alice <alice@example.com>", list(to), "Hello", text="Hi there")
    return submit(mr, team, request).id


def message(mr: Mailroom, message_id: int):
    with mr.db.connect() as conn:
        return conn.execute(
            select(t.messages).where(t.messages.c.id == message_id)
        ).one()


def recipients(mr: Mailroom, message_id: int) -> dict[str, str]:
    with mr.db.connect() as conn:
        rows = conn.execute(
            select(t.recipients.c.address, t.recipients.c.state).where(
                t.recipients.c.message_id == message_id
            )
        )
        return {row.address: row.state for row in rows}


def history(mr: Mailroom, message_id: int) -> list[tuple]:
    with mr.db.connect() as conn:
        return conn.execute(
            select(
                t.attempts.c.stage,
                t.attempts.c.code,
                t.attempts.c.enhanced,
                t.attempts.c.reply_class,
            ).where(t.attempts.c.message_id == message_id)
        ).all()


async def run(mr: Mailroom) -> None:
    await mr.delivery().run(until_idle=True)


async def test_transient_recipient_is_retried_with_backoff(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer, clock: FakeClock
) -> None:
    fault_server_tls.script(
        "RCPT", "451 4.3.0 Temporary lookup failure", match="bob@example.net", times=1
    )
    msg = send(mr, team, "carol@example.net", "bob@example.net")

    await run(mr)

    row = message(mr, msg)
    assert row.state == "deferred"
    assert row.attempts == 1
    assert "451 4.3.0" in row.reason
    assert row.next_attempt_at > clock.now() + timedelta(seconds=29)
    assert recipients(mr, msg) == {
        "carol@example.net": "sent",
        "bob@example.net": "deferred",
    }
    assert ("rcpt", 451, "4.3.0", "transient") in history(mr, msg)

    clock.advance(3600)
    await run(mr)

    assert message(mr, msg).state == "sent"
    delivered = [rc for txn in fault_server_tls.received for rc in txn.envelope_rcpts]
    assert sorted(delivered) == ["bob@example.net", "carol@example.net"]


async def test_throttling_pauses_the_channel_without_charging_the_message(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer, clock: FakeClock
) -> None:
    fault_server_tls.script("MAIL", "451 4.7.1 Too many messages, slow down", times=1)
    first = send(mr, team, "carol@example.net")
    second = send(mr, team, "dave@example.net")

    await run(mr)

    paused = mr.channels.get(channel.id)
    assert paused.status is ChannelStatus.paused
    assert "slow down" in paused.status_reason
    for msg in (first, second):
        row = message(mr, msg)
        assert (row.state, row.attempts) == ("queued", 0)
        assert "next try at" in row.reason
    assert fault_server_tls.received == []

    clock.advance(120)
    await run(mr)

    assert [message(mr, m).state for m in (first, second)] == ["sent", "sent"]
    assert message(mr, first).attempts == 1


async def test_auth_failure_disconnects_and_holds_until_new_credentials(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer
) -> None:
    fault_server_tls.script(
        "AUTH",
        "535 5.7.139 Authentication unsuccessful, the user credentials were incorrect",
    )
    first = send(mr, team, "carol@example.net")

    await run(mr)

    down = mr.channels.get(channel.id)
    assert down.status is ChannelStatus.disconnected
    assert "5.7.139" in down.status_reason
    assert "mailroom channel update relay --password" in down.status_reason
    assert message(mr, first).state == "held"
    later = send(mr, team, "dave@example.net")
    assert message(mr, later).state == "held"
    assert "disconnected" in message(mr, later).reason

    fault_server_tls.clear_script()
    assert mr.update_channel(down, secret=FAULT_PASSWORD).queued == 2
    await run(mr)

    assert [message(mr, m).state for m in (first, later)] == ["sent", "sent"]
    rcpts = [txn.envelope_rcpts for txn in fault_server_tls.received]
    assert rcpts == [("carol@example.net",), ("dave@example.net",)]


async def test_a_channel_paused_by_a_wrong_port_goes_again_once_corrected(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    wrong = mr.channels.update(channel, port=closed_port)
    first = send(mr, team, "carol@example.net")

    await run(mr)

    paused = mr.channels.get(channel.id)
    assert paused.status is ChannelStatus.paused
    assert "cannot reach the server" in paused.status_reason
    assert message(mr, first).state == "queued"
    assert wrong.status is ChannelStatus.untested  # the port alone changed

    fixed = mr.update_channel(paused, port=fault_server_tls.port)
    assert fixed.queued == 1
    assert fixed.channel.status is ChannelStatus.connected
    assert fixed.channel.paused_until is None
    await run(mr)  # on the same fake-clock instant: no waiting for the pause

    assert message(mr, first).state == "sent"


@pytest.mark.parametrize(
    ("verb", "reply"),
    [
        ("DATA", "550 5.4.5 Daily user sending quota exceeded"),
        ("DATA", "554 5.2.2 mailbox full; Submission quota exceeded"),
        (
            "RCPT",
            "550 5.1.90 Your message can't be sent because you've reached "
            "your daily limit for message recipients",
        ),
        ("MAIL", "454 Throttling failure: Daily message quota exceeded."),
    ],
)
async def test_quota_pauses_until_the_window_frees(
    mr: Mailroom,
    team: Team,
    channel,
    fault_server_tls: FaultServer,
    clock: FakeClock,
    verb: str,
    reply: str,
) -> None:
    fault_server_tls.script(verb, reply, times=1)
    msg = send(mr, team, "carol@example.net")
    started = clock.now()

    await run(mr)

    row = message(mr, msg)
    assert (row.state, row.attempts) == ("queued", 0)
    assert "quota" in row.reason
    assert row.next_attempt_at >= started + timedelta(hours=1)
    assert mr.channels.get(channel.id).status is ChannelStatus.paused

    clock.advance(3600)
    await run(mr)

    assert message(mr, msg).state == "sent"
    assert len([t for t in fault_server_tls.received if t.accepted]) == 1


async def test_permanent_failure_bounces_one_recipient_and_suppresses_it(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer
) -> None:
    fault_server_tls.script(
        "RCPT",
        "550 5.1.1 <nobody@example.net>: user unknown",
        match="nobody@example.net",
    )
    msg = send(mr, team, "carol@example.net", "nobody@example.net")

    await run(mr)

    assert message(mr, msg).state == "sent"
    assert recipients(mr, msg) == {
        "carol@example.net": "sent",
        "nobody@example.net": "bounced",
    }
    assert mr.teams.suppressed(team.id) == {"nobody@example.net"}
    assert [txn.envelope_rcpts for txn in fault_server_tls.received] == [
        ("carol@example.net",)
    ]

    again = submit(
        mr,
        team,
        OneOff(
            "alice@example.com",
            ["nobody@example.net", "eve@example.net"],
            "Again",
            text="x",
        ),
    )
    assert again.suppressed == ["nobody@example.net"]
    assert list(recipients(mr, again.id)) == ["eve@example.net"]


async def test_every_recipient_refused_is_a_bounced_message(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer
) -> None:
    fault_server_tls.script("RCPT", "550 5.1.1 user unknown")
    msg = send(mr, team, "nobody@example.net")

    await run(mr)

    assert message(mr, msg).state == "bounced"
    assert fault_server_tls.received == []


async def test_sender_refused_fails_the_message_with_the_reason(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer
) -> None:
    fault_server_tls.script("MAIL", "550 5.7.60 SendAsDenied; not allowed to send as")
    msg = send(mr, team, "carol@example.net")

    await run(mr)

    row = message(mr, msg)
    assert row.state == "failed"
    assert "5.7.60" in row.reason


async def test_a_dropped_connection_reconnects_and_loses_nothing(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer, clock: FakeClock
) -> None:
    fault_server_tls.drop_after(3)
    ids = [send(mr, team, f"user{i}@example.net") for i in range(10)]

    for _ in range(10):
        await run(mr)
        clock.advance(3600)

    assert {message(mr, m).state for m in ids} == {"sent"}
    rcpts = sorted(r for txn in fault_server_tls.received for r in txn.envelope_rcpts)
    assert rcpts == sorted(f"user{i}@example.net" for i in range(10))
    assert fault_server_tls.connections > 1


async def test_large_messages_go_out_in_several_transactions(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer
) -> None:
    mr.channels.update(channel, limits=type(channel.limits)(max_recipients=100))
    to = [f"user{i}@example.net" for i in range(250)]
    msg = send(mr, team, *to)

    await run(mr)

    assert message(mr, msg).state == "sent"
    sizes = [len(txn.envelope_rcpts) for txn in fault_server_tls.received]
    assert sizes == [100, 100, 50]
    bodies = {txn.data for txn in fault_server_tls.received}
    assert len(bodies) == 1


async def test_421_on_a_recipient_pauses_the_channel_and_loses_nothing(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer, clock: FakeClock
) -> None:
    fault_server_tls.script(
        "RCPT", "421 4.7.0 Too many connections", match="bob@example.net", times=1
    )
    msg = send(mr, team, "bob@example.net", "carol@example.net")

    await run(mr)

    row = message(mr, msg)
    assert (row.state, row.attempts) == ("queued", 0)
    assert mr.channels.get(channel.id).status is ChannelStatus.paused

    clock.advance(3600)
    await run(mr)

    assert message(mr, msg).state == "sent"
    rcpts = sorted(r for txn in fault_server_tls.received for r in txn.envelope_rcpts)
    assert rcpts == ["bob@example.net", "carol@example.net"]


async def test_a_connection_closed_while_idle_is_replaced_at_once(
    mr: Mailroom, team: Team, channel, fault_server_tls: FaultServer
) -> None:
    fault_server_tls.drop_after(1)
    ids = [send(mr, team, f"user{i}@example.net") for i in range(4)]

    await run(mr)

    rows = [message(mr, m) for m in ids]
    assert [(r.state, r.attempts) for r in rows] == [("sent", 1)] * 4
    assert fault_server_tls.connections == 4
