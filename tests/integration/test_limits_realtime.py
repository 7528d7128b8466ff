"""Limits in real time against a real server: the server's own clock decides.

The simulated-week tests run on a fake clock; these run on the wall clock, in a
short window, and time every MAIL FROM where the server receives it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailroom.channels.model import Security
from mailroom.channels.registry import ChannelSpec
from mailroom.clock import SystemClock
from mailroom.config import Settings
from mailroom.core import Mailroom
from mailroom.sandbox import LoopbackListener
from mailroom.sending import OneOff, submit


class Timing:
    """An aiosmtpd handler that notes when each MAIL FROM arrives."""

    def __init__(self) -> None:
        self.mail_times: list[float] = []

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        options: list[str],
    ) -> str:
        self.mail_times.append(time.monotonic())
        envelope.mail_from = address
        return "250 2.1.0 OK"

    async def handle_DATA(self, *args: Any) -> str:
        return "250 2.0.0 OK"


@pytest.fixture
def timing_server() -> Iterator[tuple[Timing, LoopbackListener]]:
    timing = Timing()
    listener = LoopbackListener(lambda loop: SMTP(timing, loop=loop))
    listener.start()
    yield timing, listener
    listener.stop()


@pytest.fixture
def real_mr(tmp_path: Path) -> Iterator[Mailroom]:
    url = f"sqlite:///{tmp_path / 'mailroom.db'}"
    core = Mailroom.init(Settings(tmp_path / "home", url), SystemClock())
    yield core
    core.close()


def setup_channel(mr: Mailroom, port: int, **limits: Any) -> None:
    team = mr.teams.add("acme", ["example.com"], ["alice@example.com"])
    mr.channels.add(
        ChannelSpec(
            name="relay",
            kind="smtp",
            team_id=team.id,
            host="127.0.0.1",
            port=port,
            security=Security.none,
            domains=["example.com"],
            limits=limits,
        )
    )
    for i in range(6):
        submit(mr, team, OneOff("alice@example.com", [f"u{i}@example.net"], "Hi", "x"))


def test_min_interval_holds_on_the_servers_clock(
    real_mr: Mailroom, timing_server: tuple[Timing, LoopbackListener]
) -> None:
    timing, listener = timing_server
    setup_channel(real_mr, listener.port, min_interval=0.3)

    asyncio.run(real_mr.delivery().run(until_idle=True))

    gaps = [b - a for a, b in itertools.pairwise(timing.mail_times)]
    assert len(timing.mail_times) == 6
    # The server's clock, not ours: allow the scheduler a few milliseconds.
    assert min(gaps) >= 0.29


def test_per_minute_stops_at_the_limit_and_says_when_the_rest_goes(
    real_mr: Mailroom, timing_server: tuple[Timing, LoopbackListener]
) -> None:
    timing, listener = timing_server
    setup_channel(real_mr, listener.port, per_minute=4)
    started = datetime.now(UTC)

    asyncio.run(real_mr.delivery().run(until_idle=True))

    assert len(timing.mail_times) == 4
    waiting = unsent(real_mr)
    assert len(waiting) == 2
    for state, reason, next_at in waiting:
        assert state == "queued"
        assert "4 messages/minute" in reason
        due = datetime.fromisoformat(next_at).replace(tzinfo=UTC)
        assert started + timedelta(seconds=55) <= due <= started + timedelta(seconds=65)


def test_limits_survive_a_restart_of_the_worker(
    real_mr: Mailroom, timing_server: tuple[Timing, LoopbackListener], tmp_path: Path
) -> None:
    timing, listener = timing_server
    setup_channel(real_mr, listener.port, per_minute=4)
    asyncio.run(real_mr.delivery().run(until_idle=True))

    # A new process would open the database afresh and know nothing in memory.
    again = Mailroom(real_mr.settings, SystemClock())
    try:
        again.outbox.claims.recover()
        asyncio.run(again.delivery().run(until_idle=True))
    finally:
        again.close()

    assert len(timing.mail_times) == 4
    assert [state for state, _, _ in unsent(real_mr)] == ["queued", "queued"]


def unsent(mr: Mailroom) -> list[tuple[str, str, str]]:
    with mr.db.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT state, reason, next_attempt_at FROM messages "
            "WHERE state != 'sent' ORDER BY id"
        )
        return [tuple(row) for row in rows]
