"""Servers that break the protocol cannot make a session hang or grow."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from mailroom.channels.model import Security
from mailroom.delivery.pipelining import MAX_REPLY_LINES, MAX_UNREAD_REPLIES
from mailroom.delivery.transport import Endpoint, SessionError, SmtpSession

Answer = Callable[[], bytes]


async def serve(answer_to_mail: Answer) -> AsyncIterator[int]:
    """A loopback server offering PIPELINING that answers MAIL with a flood."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        writers.append(writer)
        writer.write(b"220 hostile.example.com\r\n")
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-hostile.example.com\r\n250 PIPELINING\r\n")
                elif verb == b"MAIL":
                    writer.write(answer_to_mail())
                await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1]
        for writer in writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_an_endless_reply_ends_the_session_at_once() -> None:
    flood = b"250-more\r\n" * (MAX_REPLY_LINES + 50)
    async for session in connected(lambda: flood):
        with pytest.raises(SessionError, match=f"more than {MAX_REPLY_LINES} lines"):
            # Far less than the 30 s timeout: the flood itself ends it.
            async with asyncio.timeout(10):
                await session.send("a@example.com", ["b@example.net"], CONTENT)
        assert not session.is_open


async def test_replies_to_commands_never_sent_end_the_session() -> None:
    flood = b"250 ok\r\n" * (MAX_UNREAD_REPLIES + 50)
    async for session in connected(lambda: flood):
        async with asyncio.timeout(10):
            txn = await session.send("a@example.com", ["b@example.net"], CONTENT)

        # A 250 where DATA needs 354 is no delivery: nothing was sent.
        assert txn.data is not None
        assert (txn.data.code, txn.delivered) == (451, False)
        async with asyncio.timeout(10):  # until the rest of the flood is read
            while session.is_open:
                await asyncio.sleep(0.01)


CONTENT = b"Subject: x\r\n\r\nhi\r\n"


async def connected(answer_to_mail: Answer) -> AsyncIterator[SmtpSession]:
    async for port in serve(answer_to_mail):
        session = SmtpSession(Endpoint("127.0.0.1", port, Security.none, timeout=30))
        await session.open()
        try:
            yield session
        finally:
            await session.close()
