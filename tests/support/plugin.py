"""pytest fixtures for servers the tests talk to, all on loopback.

Loaded with ``pytest_plugins = ["tests.support.plugin"]`` (or ``-p``).

- ``tls_ca``: the session's trustme CA (``TestCA``: ``.ca``, ``.ca_path``).
- ``fault_server``: a plain ``FaultServer``, no TLS, no AUTH.
- ``fault_server_tls``: a ``FaultServer`` that requires STARTTLS and then
  AUTH as ``FAULT_USERNAME`` / ``FAULT_PASSWORD``.
- ``sandbox_server``: a ``SandboxServer`` in ``tmp_path``, user ``sandbox``,
  password ``SANDBOX_PASSWORD``.

The servers run in a thread, so sync and async tests can both use them.
``connected(client)`` opens an aiosmtplib client and, on the way out, waits
until its socket is really closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final

import aiosmtplib
import pytest

from mailroom.sandbox import SandboxServer
from mailroom.secrets import Secret
from tests.support.faults import FaultServer
from tests.support.tls import TestCA, make_test_ca

FAULT_USERNAME: Final = "user@example.com"
FAULT_PASSWORD: Final = Secret("fake-password-1")
SANDBOX_USERNAME: Final = "sandbox"
SANDBOX_PASSWORD: Final = Secret("fake-sandbox-password")

# How long ``connected`` waits for a client socket to close, in small steps.
CLOSE_POLLS: Final = 200
CLOSE_POLL_SECONDS: Final = 0.01


@asynccontextmanager
async def connected(client: aiosmtplib.SMTP) -> AsyncIterator[aiosmtplib.SMTP]:
    """Connect ``client``; afterwards QUIT and wait for its socket to close.

    After STARTTLS, asyncio closes the socket only once both sides have sent
    close_notify (RFC 8446 6.1).  Waiting for it keeps the test's event loop
    from ending first and leaving an unclosed socket to a later test.
    """
    await client.connect()
    sock = client.get_transport_info("socket")
    try:
        yield client
    finally:
        # The server may already have gone, which some tests want.
        with suppress(aiosmtplib.SMTPException, ConnectionError):
            await client.quit()
        client.close()
        await wait_socket_closed(sock)


async def wait_socket_closed(sock: Any) -> None:
    """Poll, within a bound, until asyncio has closed the socket."""
    for _ in range(CLOSE_POLLS):
        if sock.fileno() == -1:
            return
        await asyncio.sleep(CLOSE_POLL_SECONDS)


@pytest.fixture(scope="session")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    """One CA for the whole run; its PEM file is at ``tls_ca.ca_path``."""
    return make_test_ca(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    """A started plain fault server: no TLS, no AUTH."""
    with FaultServer() as server:
        yield server


@pytest.fixture
def fault_server_tls(tls_ca: TestCA) -> Iterator[FaultServer]:
    """A started fault server requiring STARTTLS, then AUTH."""
    server = FaultServer(tls=tls_ca, username=FAULT_USERNAME, password=FAULT_PASSWORD)
    with server:
        yield server


@pytest.fixture
def sandbox_server(tmp_path: Path) -> Iterator[SandboxServer]:
    """A started sandbox with its certificate and Maildir under ``tmp_path``."""
    server = SandboxServer(
        tmp_path / "sandbox", username=SANDBOX_USERNAME, password=SANDBOX_PASSWORD
    )
    with server:
        yield server
