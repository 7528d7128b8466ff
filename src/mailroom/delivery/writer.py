"""Group commit of delivery outcomes.

A session may start its next transaction while its last outcome is being
committed, but it sends the final "." of the next message (the moment the
server may accept it) only once that commit is done.  So at most one
accepted-but-unrecorded message per session exists at any moment (the
unavoidable window of RFC 5321 6.1).
Outcomes of the channel's other sessions share the same transaction: a group
is written as soon as every running session has joined it, or after
``linger`` seconds, so the cost of a commit is paid once per group.

A group that fails is written again one outcome at a time, so that one bad
outcome costs the others nothing.  An outcome that still fails is logged; its
message stays claimed (and is sent again once its lease runs out), and the
session waiting on that commit gives up its transaction before the final "."
(``SmtpSession.send``), so the failure costs at most that one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from mailroom.store.outbox import Outbox
from mailroom.store.records import Outcome, Pending

Round = tuple[Pending, int, Outcome]

log = logging.getLogger("mailroom.delivery")


class OutcomeWriter:
    """Commits delivery outcomes in groups; ``submit`` returns their futures."""

    def __init__(self, outbox: Outbox, linger: float = 0.002) -> None:
        self.outbox = outbox
        self.linger = linger
        self.sessions = 0
        # Outcomes that could not be committed, for the worker's exit status.
        self.unrecorded = 0
        self._waiting: list[tuple[Round, asyncio.Future[None]]] = []
        self._full = asyncio.Event()
        self._flush: asyncio.Task[None] | None = None

    def submit(
        self, message: Pending, channel_id: int, outcome: Outcome
    ) -> asyncio.Future[None]:
        """Queue the outcome; the future is done once it is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A failure is logged here; a session that never waits for this
        # commit must not make asyncio warn of an unread exception.
        done.add_done_callback(_mark_seen)
        self._waiting.append(((message, channel_id, outcome), done))
        if len(self._waiting) >= self.sessions:
            self._full.set()
        if self._flush is None:
            self._flush = asyncio.ensure_future(self._flush_soon())
        return done

    async def _flush_soon(self) -> None:
        if not self._full.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self.linger)
        group, self._waiting = self._waiting, []
        self._full.clear()
        self._flush = None
        self._write(group)

    def _write(self, group: list[tuple[Round, asyncio.Future[None]]]) -> None:
        try:
            self.outbox.record_many([round_ for round_, _ in group])
        except Exception as exc:
            if len(group) == 1:
                self._failed(group[0], exc)
                return
            # One bad outcome (or a clash with another worker) must not cost
            # the others theirs: each is tried again in its own transaction.
            for entry in group:
                self._write([entry])
            return
        for _, done in group:
            done.set_result(None)

    def _failed(
        self, entry: tuple[Round, asyncio.Future[None]], error: Exception
    ) -> None:
        (message, _, outcome), done = entry
        self.unrecorded += 1
        log.error(
            "message=%s state=%s: the outcome could not be recorded; the message "
            "stays claimed and is tried again once its lease runs out",
            message.message_id,
            outcome.state,
            exc_info=error,
        )
        done.set_exception(error)


def _mark_seen(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
