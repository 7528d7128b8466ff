"""Closing a connection and waiting, within a bound, until its socket is gone."""

from __future__ import annotations

import asyncio
from typing import Final

# How long closing waits for the socket to go, polled in small steps.
_CLOSE_POLLS: Final = 100
_CLOSE_POLL_SECONDS: Final = 0.01


async def let_go(transport: asyncio.BaseTransport) -> None:
    """Close a transport and wait, briefly, until its socket is released.

    Closing TLS first sends close_notify and waits for the peer's (RFC 8446
    6.1); a peer that never answers is cut off, so the wait stays bounded.
    """
    sock = transport.get_extra_info("socket")
    transport.close()
    for _ in range(_CLOSE_POLLS):
        if sock is None or sock.fileno() == -1:
            return
        await asyncio.sleep(_CLOSE_POLL_SECONDS)

    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    # abort() releases the socket on the loop's next turn.
    await asyncio.sleep(0)
