"""Several workers on one outbox: each message goes out once, limits hold."""

from __future__ import annotations

import asyncio
import collections
import os
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

from sqlalchemy import update

from mailroom.channels.model import Security
from mailroom.channels.registry import ChannelSpec
from mailroom.clock import FakeClock
from mailroom.core import Mailroom
from mailroom.sandbox import SandboxServer
from mailroom.sending import OneOff, submit
from mailroom.store import schema as t
from mailroom.store.claims import WORKER_HOST
from mailroom.store.database import insert_new
from mailroom.teams import Team
from tests.support.faults import FaultServer
from tests.support.plugin import SANDBOX_PASSWORD


def mailroom(home: Path, *args: str, stdin: str = "") -> subprocess.Popen[str]:
    env = {**os.environ, "MAILROOM_HOME": str(home), "MAILROOM_LANG": "en"}
    env.pop("MAILROOM_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "mailroom", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def run(home: Path, *args: str, stdin: str = "") -> str:
    process = mailroom(home, *args)
    output, _ = process.communicate(stdin, timeout=120)
    assert process.returncode == 0, output
    return output


def test_four_workers_at_once_send_each_message_once(
    tmp_path: Path, sandbox_server: SandboxServer
) -> None:
    home = tmp_path / "home"
    run(home, "init")
    run(
        home,
        "team",
        "add",
        "sales",
        "--domain",
        "example.com",
        "--member",
        "ava@example.com",
    )
    run(
        home,
        "channel",
        "add",
        "relay",
        "--kind",
        "sandbox",
        "--host",
        "127.0.0.1",
        "--port",
        str(sandbox_server.port),
        "--username",
        "sandbox",
        "--ca-bundle",
        str(sandbox_server.ca_path),
        "--domain",
        "example.com",
        "--password-stdin",
        stdin=SANDBOX_PASSWORD.reveal() + "\n",
    )
    contacts = tmp_path / "leads.csv"
    contacts.write_text(
        "email\n" + "".join(f"lead{i}@example.net\n" for i in range(300)), "utf-8"
    )
    run(
        home,
        "campaign",
        "send",
        "--contacts",
        str(contacts),
        "--from",
        "ava@example.com",
        "--subject",
        "Hi",
        "--text",
        "Hello",
    )

    workers = [mailroom(home, "worker", "--until-idle") for _ in range(4)]
    for worker in workers:
        worker.communicate(timeout=120)

    # A worker that found the channel taken ends early; the rest is sent by
    # a last pass, as a scheduler's next run would.
    run(home, "worker", "--until-idle")
    counts = collections.Counter(
        r for m in sandbox_server.delivered() for r in m.envelope_rcpts
    )
    assert len(counts) == 300
    assert set(counts.values()) == {1}


def test_a_channel_held_by_another_live_worker_is_left_alone(
    mr: Mailroom, team: Team, fault_server: FaultServer, clock: FakeClock
) -> None:
    channel = mr.channels.add(
        ChannelSpec(
            name="relay",
            kind="smtp",
            team_id=team.id,
            host="127.0.0.1",
            port=fault_server.port,
            security=Security.none,
            domains=["example.com"],
        )
    )
    submit(mr, team, OneOff("alice@example.com", ["bob@example.net"], "Hi", "x"))
    with mr.db.begin() as conn:
        conn.execute(
            update(t.channels)
            .where(t.channels.c.id == channel.id)
            .values(
                worker="elsewhere:1", worker_until=clock.now() + timedelta(seconds=60)
            )
        )

    worked = asyncio.run(mr.delivery().run_once())

    assert worked is False
    assert fault_server.received == []

    clock.advance(61)
    asyncio.run(mr.delivery().run_once())

    assert len(fault_server.received) == 1


def test_mail_a_dead_worker_held_counts_against_the_limit(
    mr: Mailroom, team: Team, fault_server: FaultServer, clock: FakeClock
) -> None:
    channel = mr.channels.add(
        ChannelSpec(
            name="relay",
            kind="smtp",
            team_id=team.id,
            host="127.0.0.1",
            port=fault_server.port,
            security=Security.none,
            domains=["example.com"],
            limits={"per_minute": 3},
        )
    )
    for i in range(3):
        submit(mr, team, OneOff("alice@example.com", [f"u{i}@example.net"], "Hi", "x"))
    claimed = mr.outbox.claims.claim(channel.id, 3)
    with mr.db.begin() as conn:
        conn.execute(
            update(t.messages)
            .where(t.messages.c.id.in_([m.id for m in claimed]))
            .values(claimed_by=f"{WORKER_HOST}:{dead_pid()}")
        )

    asyncio.run(mr.delivery().run(until_idle=True))

    # The dead worker may have sent all three in this minute: none goes yet.
    assert fault_server.received == []

    clock.advance(61)
    asyncio.run(mr.delivery().run(until_idle=True))

    assert len(fault_server.received) == 3


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_two_workers_suppressing_one_address_at_once_both_commit(
    mr: Mailroom, team: Team, clock: FakeClock
) -> None:
    row = {"team_id": team.id, "address": "gone@example.net"}
    row |= {"reason": "bounced: 550 5.1.1", "created_at": clock.now()}
    errors: list[BaseException] = []

    def second_worker() -> None:
        try:
            with mr.db.begin() as conn:
                insert_new(conn, t.suppressions, row)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    with mr.db.begin() as first:
        insert_new(first, t.suppressions, row)
        # The second writer starts while the first has not committed yet.
        other = threading.Thread(target=second_worker)
        other.start()
        other.join(0.3)
    other.join(10)

    assert not other.is_alive()
    assert errors == []
    assert mr.teams.suppressed(team.id) == {"gone@example.net"}
