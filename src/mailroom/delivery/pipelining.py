"""Command pipelining (RFC 2920) for the MAIL, RCPT and DATA of a transaction.

aiosmtplib sets the session up (greeting, EHLO, STARTTLS, AUTH) but reads one
reply per command it writes, so it cannot pipeline.  When the server offers
PIPELINING, ``ReplyStream`` takes over reading the connection: it keeps every
complete reply in order, so a transaction costs two round trips (MAIL, RCPT...,
DATA in one write; then the content) instead of three plus one per recipient.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import Final

from mailroom.delivery.replies import Reply, ReplyCode

# RFC 5321 4.5.3.1.5 allows 512 octets per reply line; be generous, not endless.
MAX_REPLY_LINE: Final = 8192
MAX_BUFFER: Final = 1 << 20
# Nor may a server grow our memory with one endless "250-" reply, or with
# replies to commands never sent (a transaction waits for at most one per
# recipient and two more).
MAX_REPLY_LINES: Final = 1000
MAX_UNREAD_REPLIES: Final = 10_000

# RFC 5321 4.5.2: a line of content that starts with a period gets another.
_LEADING_DOT: Final = re.compile(rb"(?m)^\.")


class StreamClosed(ConnectionError):
    """The connection ended, timed out or sent something that is not SMTP."""


class ReplyStream(asyncio.Protocol):
    """Reads a connection's SMTP replies into a queue, in order."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        # How many replies the reader waits for; fewer do not wake it.
        self._wanted = 1
        self._closed: str | None = None

    @classmethod
    def attach(cls, transport: asyncio.Transport) -> ReplyStream:
        """Take over reading ``transport`` from whatever protocol had it."""
        stream = cls(transport)
        transport.set_protocol(stream)
        return stream

    @property
    def is_open(self) -> bool:
        return self._closed is None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.is_open:
            raise StreamClosed(self._closed or "the connection is closed")
        self.transport.write(data)

    async def read(self, timeout: float) -> Reply:
        """The next reply; raises ``StreamClosed`` if none can come."""
        [reply] = await self.read_many(1, timeout)
        return reply

    async def read_many(self, count: int, timeout: float) -> list[Reply]:
        """The next ``count`` replies, waiting once for all of them."""
        if len(self._replies) < count:
            await self._wait_for(count, timeout)
        return [self._replies.popleft() for _ in range(count)]

    async def _wait_for(self, count: int, timeout: float) -> None:
        # One timer for the whole wait: a plain handle costs far less than
        # asyncio.timeout, and this runs for every transaction.
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, self._time_out, timeout)
        try:
            while len(self._replies) < count:
                if self._closed is not None:
                    raise StreamClosed(self._closed)
                self._wanted = count
                self._waiter = loop.create_future()
                await self._waiter
        finally:
            timer.cancel()

    def close(self) -> None:
        self._close("closed by mailroom")
        self.transport.close()

    # asyncio.Protocol -------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > MAX_BUFFER:
            self._refuse("the server sent more than any reply needs")
            return
        self._take_lines()
        self._wake()

    def eof_received(self) -> bool:
        self._close("the server closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._close("the connection was lost")

    # Parsing ----------------------------------------------------------------

    def _take_lines(self) -> None:
        start = 0
        while self._closed is None and (end := self._buffer.find(b"\n", start)) != -1:
            self._take_line(bytes(self._buffer[start : end + 1]))
            start = end + 1
        del self._buffer[:start]
        if len(self._buffer) > MAX_REPLY_LINE:
            self._refuse("a reply line is too long")

    def _take_line(self, line: bytes) -> None:
        # RFC 5321 4.2.1: "250-" continues a reply, "250 " (or "250") ends it.
        if len(line) > MAX_REPLY_LINE or not line[:3].isdigit():
            self._refuse(f"not an SMTP reply: {line[:40]!r}")
            return
        self._lines.append(line)
        if line[3:4] == b"-":
            if len(self._lines) > MAX_REPLY_LINES:
                self._refuse(f"a reply of more than {MAX_REPLY_LINES} lines")
            return
        code = int(line[:3])
        text = "\n".join(
            part[4:].strip().decode("utf-8", "replace") for part in self._lines
        )
        self._lines = []
        self._replies.append(Reply.parse(code, text))
        if len(self._replies) > MAX_UNREAD_REPLIES:
            self._refuse("the server sent replies to commands never sent")

    def _refuse(self, reason: str) -> None:
        """Stop reading a server that breaks the protocol, and hang up."""
        self._close(reason)
        self.transport.close()

    def _time_out(self, timeout: float) -> None:
        self._close(f"no reply within {timeout:g} s")

    def _close(self, reason: str) -> None:
        if self._closed is None:
            self._closed = reason
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._closed is not None or len(self._replies) >= self._wanted:
            waiter.set_result(None)


# RFC 5321 4.1.1.4: the content ends with a line holding only a period.
END_OF_DATA: Final = b".\r\n"


def dot_stuff(data: bytes) -> bytes:
    """Content ready for DATA, up to but not including the final ".CRLF"."""
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if not data.startswith(b".") and b"\n." not in data:
        return data  # the usual case, found without the regex
    return _LEADING_DOT.sub(b"..", data)


def is_closing(reply: Reply) -> bool:
    """RFC 5321 3.8: 421 means the server is closing the connection."""
    return reply.code == ReplyCode.service_unavailable
