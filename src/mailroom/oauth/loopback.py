"""The command line's redirect receiver: a one-shot HTTP listener on loopback.

RFC 8252 7.3: a native app receives the authorization answer on a loopback
IP address and a port the system picks at the moment, so no other program's
redirect can be squatted on a fixed port.  RFC 8252 8.3: the listener binds
the loopback literal, never all interfaces.

The listener takes the first request to its path, answers with a short page
and stops; it reads at most a few kilobytes and waits at most ``timeout``
seconds for the person to finish in the browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from typing import Final, Self
from urllib.parse import parse_qsl, urlsplit

from mailroom.oauth import CallbackTimeout
from mailroom.oauth.flow import Callback

log = logging.getLogger("mailroom.oauth")

LISTEN_HOST: Final = "127.0.0.1"
MAX_LINE: Final = 8192
MAX_HEADERS: Final = 100
READ_TIMEOUT: Final = 10.0

_DONE_PAGE: Final = (
    "<!doctype html><title>mailroom</title>"
    "<p>mailroom received the answer. You can close this tab.</p>"
)
_ERROR_PAGE: Final = (
    "<!doctype html><title>mailroom</title>"
    "<p>mailroom could not read this answer; see the terminal.</p>"
)


class LoopbackReceiver:
    """Receives one redirect on ``http://HOST:PORT/PATH``; use ``async with``."""

    def __init__(
        self,
        *,
        redirect_host: str = LISTEN_HOST,
        path: str = "/callback",
        timeout: float = 300.0,
    ) -> None:
        self._redirect_host = redirect_host
        self._path = path
        self._timeout = timeout
        self._server: asyncio.Server | None = None
        self._answer: asyncio.Future[Callback] | None = None
        self._port = 0

    @property
    def redirect_uri(self) -> str:
        """The address to give the provider, with the port the system chose."""
        return f"http://{self._redirect_host}:{self._port}{self._path}"

    async def __aenter__(self) -> Self:
        self._answer = asyncio.get_running_loop().create_future()
        self._server = await asyncio.start_server(
            self._serve, LISTEN_HOST, 0, limit=MAX_LINE
        )
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait(self) -> Callback:
        """The answer, or ``CallbackTimeout`` once ``timeout`` has passed."""
        assert self._answer is not None, "use the receiver with `async with`"
        try:
            return await asyncio.wait_for(
                asyncio.shield(self._answer), timeout=self._timeout
            )
        except TimeoutError:
            raise CallbackTimeout(
                f"no answer from the browser within {self._timeout:g} seconds; "
                "run the command again"
            ) from None

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            target = await asyncio.wait_for(_read_target(reader), READ_TIMEOUT)
            await self._answer_request(writer, target)
        except (TimeoutError, ValueError, ConnectionError, asyncio.LimitOverrunError):
            await _respond(writer, 400, _ERROR_PAGE)
        finally:
            writer.close()

    async def _answer_request(self, writer: asyncio.StreamWriter, target: str) -> None:
        parts = urlsplit(target)
        if parts.path != self._path or self._answer is None or self._answer.done():
            await _respond(writer, 404, _ERROR_PAGE)
            return

        pairs = parse_qsl(parts.query, keep_blank_values=True)
        params = dict(pairs)
        # RFC 6749 3.1: a parameter sent more than once makes the answer void.
        if len(params) != len(pairs):
            params = {"state": params.get("state", ""), "error": "invalid_request"}
        self._answer.set_result(Callback.from_query(params))
        log.debug("redirect received on the loopback listener")
        await _respond(writer, 200, _DONE_PAGE)


async def _read_target(reader: asyncio.StreamReader) -> str:
    """The request target of a GET; headers are read and ignored."""
    request_line = (await reader.readline()).decode("ascii", "replace")
    for _ in range(MAX_HEADERS):
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
    method, target, *_rest = request_line.split(" ")
    if method != "GET":
        raise ValueError("only GET is answered")
    return target


async def _respond(writer: asyncio.StreamWriter, status: int, page: str) -> None:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}[status]
    body = page.encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        # The page must not be kept: its address held the authorization code.
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    # The browser may have closed the page already; the code is what matters.
    with contextlib.suppress(ConnectionError):
        writer.write(head.encode("ascii") + body)
        await writer.drain()
