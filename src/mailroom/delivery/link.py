"""What one session worker of a channel holds between two messages.

A ``Link`` keeps the worker's SMTP session open across messages, the commit
of its last outcome (the next final "." waits for it, see ``writer.py``) and
the last message it built, for that message's further transactions.
"""

from __future__ import annotations

import asyncio
import contextlib

from mailroom.delivery.transport import SmtpSession

# A built message: (message id, SMTPUTF8, 8BITMIME) and its bytes.
Built = tuple[tuple[int, bool, bool], bytes]


class Link:
    """A session worker's current SMTP session, if any, and its last commit."""

    def __init__(self) -> None:
        self.session: SmtpSession | None = None
        # The commit of this session's last outcome, perhaps still running.
        self.committed: asyncio.Future[None] | None = None
        # The last message built on this session, for its further transactions.
        self.built: Built | None = None

    @property
    def is_open(self) -> bool:
        return self.session is not None and self.session.is_open

    async def settle(self) -> None:
        """Wait for the last outcome to be committed (the writer logs a
        failure; the message then stays claimed until its lease runs out)."""
        if self.committed is not None:
            committed, self.committed = self.committed, None
            with contextlib.suppress(Exception):
                await committed

    def forget_done_commit(self) -> None:
        """Forget the last commit once it is done: a transaction has waited
        for it, or it finished meanwhile.  A failure is the writer's to log."""
        committed = self.committed
        if committed is not None and committed.done():
            if not committed.cancelled():
                committed.exception()  # seen, so asyncio does not warn
            self.committed = None

    async def close(self) -> None:
        """QUIT and close the session, if there is one."""
        if self.session is not None:
            session, self.session = self.session, None
            await session.close()

    def abort(self) -> None:
        """Drop the session without QUIT; its state is unknown."""
        if self.session is not None:
            session, self.session = self.session, None
            session.abort()
