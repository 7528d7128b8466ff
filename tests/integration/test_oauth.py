"""Gmail and Microsoft 365 mailboxes connected with OAuth, end to end.

Every server is started here on 127.0.0.1: a test authorization server
(``OAuthServer``), an SMTP server that takes XOAUTH2 only and asks that
authorization server about tokens, and mailroom's own loopback listener.  A
thread with httpx plays the browser: it follows the consent address, the test
server approves at once and redirects to the listener.  No real provider is
ever contacted: every provider setting points at the test server.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest
from rich.console import Console
from sqlalchemy import select

from mailroom.channels.model import Channel, ChannelStatus
from mailroom.channels.presets import PRESETS
from mailroom.cli.oauth_commands import connect_command
from mailroom.clock import FakeClock
from mailroom.config import Settings
from mailroom.core import Mailroom
from mailroom.oauth import AccessEnded, AuthorizationError, IdentityMismatch, install
from mailroom.oauth.connect import Connected, Connector, ConnectRequest
from mailroom.oauth.flow import Callback
from mailroom.oauth.providers import OAUTH_PRESETS, load_providers
from mailroom.oauth.tokens import StoredGrant, TokenManager
from mailroom.secrets import Secret
from mailroom.sending import OneOff, submit
from mailroom.store import schema as t
from mailroom.teams import Team
from tests.support.oauth_server import REVOKED_TEXT, OAuthServer
from tests.support.tls import TestCA
from tests.support.xoauth2_smtp import XOAuth2Server

OWNER: Final = "alice@example.com"
BROWSER_THREAD: Final = "test-browser"
# Loggers of the test servers, which play the provider: not mailroom's output.
SERVER_LOGGERS: Final = ("mail.log",)


# -- the browser ----------------------------------------------------------


class Browser:
    """Follows a consent address in a thread, as a person's browser would."""

    def __init__(self) -> None:
        self.urls: list[str] = []
        self.final_status: int | None = None
        self._thread: threading.Thread | None = None

    def visit(self, url: str) -> None:
        self.urls.append(url)
        self._thread = threading.Thread(
            target=self._get, args=(url,), name=BROWSER_THREAD, daemon=True
        )
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _get(self, url: str) -> None:
        with httpx.Client(follow_redirects=True, timeout=10) as client:
            self.final_status = client.get(url).status_code


# -- fixtures -------------------------------------------------------------


@pytest.fixture
def oauth() -> Iterator[OAuthServer]:
    with OAuthServer(user=OWNER) as server:
        yield server


@pytest.fixture
def smtp(oauth: OAuthServer, tls_ca: TestCA) -> Iterator[XOAuth2Server]:
    with XOAuth2Server(oauth, tls_ca) as server:
        yield server


@pytest.fixture(autouse=True)
def provider_env(oauth: OAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both providers point at the test server; the OAuth kinds are known."""
    for provider in ("GOOGLE", "MICROSOFT"):
        for key, value in oauth.environ(provider).items():
            monkeypatch.setenv(key, value)
    # Until the two presets are in the lead's table (see OAUTH_PRESETS).
    for preset in OAUTH_PRESETS:
        if preset.kind not in PRESETS:
            monkeypatch.setitem(PRESETS, preset.kind, preset)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def core(tmp_path: Path, fake_clock: FakeClock) -> Iterator[Mailroom]:
    settings = Settings(
        home=tmp_path / "home", database_url=f"sqlite:///{tmp_path}/m.db"
    )
    mr = Mailroom.init(settings, fake_clock)
    yield mr
    mr.close()


@pytest.fixture
def acme(core: Mailroom) -> Team:
    return core.teams.add("acme", ["example.com"], [OWNER, "bob@example.com"])


@pytest.fixture
def tokens(core: Mailroom) -> TokenManager:
    return install(core)


def _request(
    smtp: XOAuth2Server, tls_ca: TestCA, team: Team, provider: str = "gmail"
) -> ConnectRequest:
    return ConnectRequest(
        provider,
        OWNER,
        team.id,
        host=smtp.host,
        port=smtp.port,
        ca_bundle=str(tls_ca.ca_path),
    )


async def _connect(
    core: Mailroom, tokens: TokenManager | None, request: ConnectRequest
) -> Connected:
    browser = Browser()
    connector = Connector(core, load_providers(), tokens)
    try:
        return await connector.connect_loopback(request, browser.visit, timeout=10)
    finally:
        browser.join()


def _send(core: Mailroom, team: Team, subject: str) -> int:
    request = OneOff(OWNER, ["carol@example.org"], subject, text="Hello.")
    return submit(core, team, request).id


def _state(core: Mailroom, message_id: int) -> str:
    with core.db.connect() as conn:
        query = select(t.messages.c.state).where(t.messages.c.id == message_id)
        return str(conn.scalar(query))


def _events(core: Mailroom, kind: str) -> list[str]:
    with core.db.connect() as conn:
        query = select(t.events.c.detail).where(t.events.c.kind == kind)
        return [str(detail) for detail in conn.scalars(query)]


async def _connected(
    core: Mailroom,
    tokens: TokenManager,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    team: Team,
) -> Channel:
    return (await _connect(core, tokens, _request(smtp, tls_ca, team))).channel


# -- (1) connecting ---------------------------------------------------------


async def test_connect_through_loopback_stores_the_grant_sealed(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
    tmp_path: Path,
) -> None:
    browser = Browser()
    connector = Connector(core, load_providers(), tokens)
    request = _request(smtp, tls_ca, acme)

    result = await connector.connect_loopback(request, browser.visit, timeout=10)
    browser.join()

    assert browser.final_status == 200
    [url] = browser.urls
    assert "code_challenge_method=S256" in url
    assert "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in url
    channel = core.channels.get(result.channel.id)
    assert (channel.kind, channel.owner, channel.username) == (
        "gmail-oauth",
        OWNER,
        OWNER,
    )
    # Authorized; no SMTP session has used the token yet.
    assert channel.status is ChannelStatus.untested
    assert oauth.exchanges == 1

    grant = StoredGrant.from_secret(channel.secret)
    assert grant.refresh_token.reveal() in oauth.seen
    stored = (tmp_path / "m.db").read_bytes()
    assert grant.refresh_token.reveal().encode() not in stored
    assert b"refresh_token" not in stored


async def test_forged_state_is_refused_before_any_exchange(
    core: Mailroom, oauth: OAuthServer, smtp: XOAuth2Server, tls_ca: TestCA, acme: Team
) -> None:
    connector = Connector(core, load_providers())
    request = _request(smtp, tls_ca, acme)
    authorization = connector.start(request, "http://127.0.0.1:9/callback")

    forged = Callback(state="forged-state", code=Secret("stolen-code"))
    with pytest.raises(AuthorizationError, match="state"):
        await connector.finish(request, authorization, forged)
    assert oauth.exchanges == 0


# -- (7) identity -----------------------------------------------------------


async def test_another_mailbox_than_the_owner_is_refused(
    core: Mailroom, oauth: OAuthServer, smtp: XOAuth2Server, tls_ca: TestCA, acme: Team
) -> None:
    oauth.user = "bob@example.com"

    with pytest.raises(IdentityMismatch, match=r"bob@example\.com, not alice"):
        await _connect(core, None, _request(smtp, tls_ca, acme))
    assert core.channels.list(acme.id) == []


async def test_microsoft_identity_comes_from_the_id_token(
    core: Mailroom, oauth: OAuthServer, smtp: XOAuth2Server, tls_ca: TestCA, acme: Team
) -> None:
    oauth.id_tokens = True
    request = _request(smtp, tls_ca, acme, provider="microsoft")

    result = await _connect(core, None, request)

    assert result.channel.kind == "microsoft-oauth"
    assert result.channel.owner == OWNER


# -- (2) sending ------------------------------------------------------------


async def test_mail_goes_out_with_xoauth2(
    core: Mailroom,
    tokens: TokenManager,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
) -> None:
    await _connected(core, tokens, smtp, tls_ca, acme)
    message = _send(core, acme, "First")

    await core.delivery().run(watch=[message])

    assert _state(core, message) == "sent"
    [delivered] = smtp.delivered
    assert delivered.user == OWNER
    assert delivered.envelope_rcpts == ("carol@example.org",)
    assert b"Subject: First" in delivered.data


# -- (3) expiry and (4) one refresh at a time -------------------------------


async def test_token_is_refreshed_a_margin_before_it_expires(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
    fake_clock: FakeClock,
) -> None:
    channel = await _connected(core, tokens, smtp, tls_ca, acme)
    first = await tokens.token(channel)
    assert oauth.refreshes == 0

    # The test server's tokens live 600 s; the margin is 300 s.
    fake_clock.advance(299)
    assert await tokens.token(channel) == first
    fake_clock.advance(2)
    second = await tokens.token(channel)

    assert second != first
    assert oauth.refreshes == 1


async def test_concurrent_sends_share_one_refresh(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
    fake_clock: FakeClock,
) -> None:
    channel = await _connected(core, tokens, smtp, tls_ca, acme)
    fake_clock.advance(3600)

    results = await asyncio.gather(*(tokens.token(channel) for _ in range(20)))

    assert oauth.refreshes == 1
    assert len(set(results)) == 1


async def test_a_refused_token_is_renewed_once_for_all_sessions(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
) -> None:
    channel = await _connected(core, tokens, smtp, tls_ca, acme)
    refused = await tokens.token(channel)
    source = tokens.token_source(channel)
    assert source is not None

    renewed = await asyncio.gather(*(source.renew(refused.reveal()) for _ in range(5)))

    assert oauth.refreshes == 1
    assert len(set(renewed)) == 1


async def test_a_token_revoked_early_is_renewed_and_mail_still_goes(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
) -> None:
    await _connected(core, tokens, smtp, tls_ca, acme)
    # The server forgets the access token while mailroom still thinks it fresh.
    oauth.expire_access_tokens()
    message = _send(core, acme, "Renewed")

    await core.delivery().run(watch=[message])

    assert _state(core, message) == "sent"
    assert (smtp.auth_refusals, oauth.refreshes) == (1, 1)


# -- (5) access ends, (6) reconnection --------------------------------------


async def test_revoked_consent_disconnects_and_holds_the_mail(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
) -> None:
    channel = await _connected(core, tokens, smtp, tls_ca, acme)
    oauth.revoke(OWNER)
    first = _send(core, acme, "Held one")

    await core.delivery().run(watch=[first])

    after = core.channels.get(channel.id)
    assert after.status is ChannelStatus.disconnected
    assert REVOKED_TEXT in after.status_reason
    assert _state(core, first) == "held"
    assert any(
        REVOKED_TEXT in detail for detail in _events(core, "channel-disconnected")
    )
    assert _state(core, _send(core, acme, "Held two")) == "held"
    assert smtp.delivered == []


async def test_refresh_refused_outside_delivery_ends_access_too(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
    fake_clock: FakeClock,
) -> None:
    channel = await _connected(core, tokens, smtp, tls_ca, acme)
    queued = _send(core, acme, "Waiting")
    oauth.revoke(OWNER)
    fake_clock.advance(3600)

    with pytest.raises(AccessEnded, match="invalid_grant"):
        await tokens.token(channel)

    assert core.channels.get(channel.id).status is ChannelStatus.disconnected
    assert _state(core, queued) == "held"


async def test_reconnecting_sends_the_held_mail_once_in_order(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
) -> None:
    channel = await _connected(core, tokens, smtp, tls_ca, acme)
    oauth.revoke(OWNER)
    first = _send(core, acme, "One")
    await core.delivery().run(watch=[first])
    second = _send(core, acme, "Two")
    oauth.restore(OWNER)

    result = await _connect(core, tokens, _request(smtp, tls_ca, acme))
    await core.delivery().run(watch=[first, second])
    await core.delivery().run(until_idle=True)

    assert result.reconnected and result.resumed == 2
    assert result.channel.id == channel.id
    assert core.channels.get(channel.id).status is ChannelStatus.connected
    subjects = [_subject(d.data) for d in smtp.delivered]
    assert subjects == ["One", "Two"]
    assert (_state(core, first), _state(core, second)) == ("sent", "sent")


def _subject(data: bytes) -> str:
    match = re.search(rb"^Subject: (.*?)\r?$", data, re.MULTILINE)
    assert match is not None
    return match.group(1).decode()


# -- (8) no secret anywhere ---------------------------------------------------


def test_cli_connect_prints_and_logs_no_secret(
    core: Mailroom,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    browser = Browser()
    output = _BrowsingConsole(browser)

    status = connect_command(core, "gmail", OWNER, "acme", None, False, output)
    browser.join()

    printed = output.text()
    assert status == 0, printed
    assert "connected channel gmail-alice-at-example.com" in printed
    assert browser.urls and browser.urls[0] in printed
    _assert_no_secret(oauth, [printed, *_mailroom_logs(caplog)])


def test_cli_refusal_prints_the_reason_and_no_secret(
    core: Mailroom,
    oauth: OAuthServer,
    acme: Team,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    oauth.user = "bob@example.com"
    browser = Browser()
    output = _BrowsingConsole(browser)

    status = connect_command(core, "gmail", OWNER, None, None, False, output)
    browser.join()

    assert status == 1
    assert "not alice@example.com" in output.text()
    _assert_no_secret(oauth, [output.text(), *_mailroom_logs(caplog)])


async def test_logs_errors_and_reprs_hold_no_secret(
    core: Mailroom,
    tokens: TokenManager,
    oauth: OAuthServer,
    smtp: XOAuth2Server,
    tls_ca: TestCA,
    acme: Team,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    connector = Connector(core, load_providers(), tokens)
    authorization = connector.start(_request(smtp, tls_ca, acme), "http://127.0.0.1:9/")
    channel = await _connected(core, tokens, smtp, tls_ca, acme)
    await core.delivery().run(watch=[_send(core, acme, "Logged")])
    fake_clock.advance(3600)
    await tokens.token(channel)
    oauth.revoke(OWNER)
    fake_clock.advance(3600)
    with pytest.raises(AccessEnded) as ended:
        await tokens.token(channel)

    seen = [
        *_mailroom_logs(caplog),
        str(ended.value),
        repr(ended.value),
        repr(authorization),
        repr(core.channels.get(channel.id)),
        repr(tokens.token_source(channel)),
        *_events(core, "channel-disconnected"),
        core.channels.get(channel.id).status_reason,
    ]
    _assert_no_secret(oauth, seen)
    assert authorization.verifier.reveal() not in " ".join(seen)


class _BrowsingConsole(Console):
    """A console that records what it prints and visits the consent address."""

    def __init__(self, browser: Browser) -> None:
        self._captured = io.StringIO()
        super().__init__(file=self._captured, width=200)
        self._visitor = browser

    def print(self, *objects: object, **kwargs: object) -> None:  # type: ignore[override]
        super().print(*objects, **kwargs)  # type: ignore[arg-type]
        for item in objects:
            if isinstance(item, str) and item.startswith("http://127.0.0.1"):
                self._visitor.visit(item)

    def text(self) -> str:
        return self._captured.getvalue()


def _mailroom_logs(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every captured line but the test servers' and the test browser's."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.threadName != BROWSER_THREAD
        and not record.name.startswith(SERVER_LOGGERS)
    ]


def _assert_no_secret(oauth: OAuthServer, texts: list[str]) -> None:
    secrets = [value for value in oauth.seen if value]
    assert len(secrets) >= 4
    for text in texts:
        for value in secrets:
            assert value not in text
