"""Access tokens for OAuth channels.

The channel's stored secret is a ``StoredGrant``: a small JSON document with
the refresh token, sealed with mailroom's cipher like any channel secret (see
``ChannelRegistry``).  Access tokens live only in memory, one per channel, and
are refreshed (RFC 6749 6) a margin before they expire on the injected clock,
and once more when the SMTP server refuses one that looked fresh.

A per-channel ``asyncio.Lock`` makes concurrent sends wait for one refresh
instead of each starting their own.  When the provider answers
``invalid_grant`` (RFC 6749 5.2: the password changed, consent was revoked)
access has ended: the channel is disconnected with the provider's reason, its
mail is held, an event is recorded and ``AccessEnded`` is raised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
from authlib.integrations.base_client import OAuthError as AuthlibOAuthError

from mailroom.channels.model import Channel
from mailroom.channels.registry import ChannelRegistry
from mailroom.channels.status import disconnect
from mailroom.clock import Clock
from mailroom.errors import InputError
from mailroom.i18n import english
from mailroom.oauth import AccessEnded, TokenRefreshError
from mailroom.oauth.flow import Grant, describe_oauth_error, oauth_client
from mailroom.oauth.providers import ProviderConfig, provider_key
from mailroom.secrets import Secret
from mailroom.store.outbox import Outbox

log = logging.getLogger("mailroom.oauth")

GRANT_TYPE: Final = "oauth2"
# Refresh this long before expiry, so a token never runs out mid-session.
DEFAULT_MARGIN: Final = 300.0
# RFC 6749 5.1 makes ``expires_in`` optional; both providers say an hour.
DEFAULT_LIFETIME: Final = 3600.0


@dataclass(frozen=True, slots=True)
class StoredGrant:
    """What a channel keeps: the provider, the mailbox and the refresh token."""

    provider: str
    email: str
    refresh_token: Secret
    scope: str = ""

    @classmethod
    def from_grant(cls, grant: Grant) -> StoredGrant:
        return cls(grant.provider, grant.email, grant.refresh_token, grant.scope)

    def to_secret(self) -> Secret:
        document = {
            "type": GRANT_TYPE,
            "provider": self.provider,
            "email": self.email,
            "scope": self.scope,
            "refresh_token": self.refresh_token.reveal(),
        }
        return Secret(json.dumps(document))

    @classmethod
    def from_secret(cls, secret: Secret | None) -> StoredGrant:
        try:
            document = json.loads(secret.reveal()) if secret else None
        except ValueError:
            document = None
        if not isinstance(document, dict) or document.get("type") != GRANT_TYPE:
            raise AccessEnded("the channel holds no OAuth grant; connect it again")
        return cls(
            provider=str(document["provider"]),
            email=str(document["email"]),
            refresh_token=Secret(str(document["refresh_token"])),
            scope=str(document.get("scope", "")),
        )

    @property
    def fingerprint(self) -> str:
        return _fingerprint(self.refresh_token)


@dataclass(slots=True)
class _Entry:
    """One channel's access token, and the lock its refreshes take."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    access: Secret | None = None
    expires_at: datetime | None = None
    # The refresh tokens this access token belongs with; another stored grant
    # (a reconnection, maybe in another process) makes it stale.
    grants: frozenset[str] = frozenset()


class ChannelTokens:
    """A channel's token source, as ``Endpoint.token_source`` expects.

    Calling it gives a fresh access token; ``renew`` replaces one the server
    refused.  Tokens are revealed here only because XOAUTH2 writes them to
    the wire next.
    """

    def __init__(self, manager: TokenManager, channel: Channel) -> None:
        self._manager = manager
        self._channel = channel

    async def __call__(self) -> str:
        return (await self._manager.token(self._channel)).reveal()

    async def renew(self, refused: str) -> str:
        return (await self._manager.renew(self._channel, Secret(refused))).reveal()

    def __repr__(self) -> str:
        return f"ChannelTokens(channel={self._channel.name!r})"


class TokenManager:
    """Per-channel access tokens; ``token_source`` plugs into ``Mailroom``."""

    def __init__(
        self,
        registry: ChannelRegistry,
        outbox: Outbox,
        providers: Mapping[str, ProviderConfig],
        clock: Clock,
        *,
        margin: float = DEFAULT_MARGIN,
    ) -> None:
        self.registry = registry
        self.outbox = outbox
        self.providers = dict(providers)
        self.clock = clock
        self.margin = timedelta(seconds=margin)
        self._entries: dict[int, _Entry] = {}

    def token_source(self, channel: Channel) -> ChannelTokens | None:
        """The token source of an OAuth channel; None for a password channel."""
        if provider_key(channel.kind) is None:
            return None
        return ChannelTokens(self, channel)

    async def token(self, channel: Channel) -> Secret:
        """A valid access token, refreshed first if it is about to expire."""
        entry = self._entry(channel)
        if self._fresh(entry):
            return _present(entry)

        async with entry.lock:
            # Another send may have refreshed while this one waited.
            if self._fresh(entry):
                return _present(entry)
            return await self._refresh(channel, entry)

    async def renew(self, channel: Channel, refused: Secret) -> Secret:
        """A new access token after the server refused ``refused``."""
        entry = self._entry(channel)
        async with entry.lock:
            # Several sessions refused with the same token renew it once.
            if entry.access != refused and self._fresh(entry):
                return _present(entry)
            return await self._refresh(channel, entry)

    def remember(self, channel_id: int, grant: Grant) -> None:
        """Keep the access token a just-completed flow brought with it."""
        entry = self._entries.setdefault(channel_id, _Entry())
        stored = StoredGrant.from_grant(grant)
        self._keep(entry, grant.access_token, grant.expires_in, {stored.fingerprint})

    def forget(self, channel_id: int) -> None:
        """Drop a channel's access token (it was disconnected or reconnected)."""
        entry = self._entries.get(channel_id)
        if entry is not None:
            entry.access = None
            entry.expires_at = None
            entry.grants = frozenset()

    # Internals ---------------------------------------------------------------

    def _entry(self, channel: Channel) -> _Entry:
        entry = self._entries.setdefault(channel.id, _Entry())
        if entry.grants and _fingerprint_of(channel) not in entry.grants:
            self.forget(channel.id)
        return entry

    def _fresh(self, entry: _Entry) -> bool:
        if entry.access is None or entry.expires_at is None:
            return False
        return self.clock.now() < entry.expires_at - self.margin

    async def _refresh(self, channel: Channel, entry: _Entry) -> Secret:
        # The stored grant, not the caller's copy of the channel: a rotated
        # or reconnected grant must be the one used.
        current = self.registry.get(channel.id)
        grant = StoredGrant.from_secret(current.secret)
        provider = self._provider(grant)
        token = await self._request(current, provider, grant)

        access = Secret(str(token["access_token"]))
        lifetime = float(token.get("expires_in") or DEFAULT_LIFETIME)
        fingerprints = {grant.fingerprint}
        rotated = token.get("refresh_token")
        if rotated and rotated != grant.refresh_token.reveal():
            fingerprints.add(self._store_rotated(current, grant, Secret(str(rotated))))
        self._keep(entry, access, lifetime, fingerprints)
        log.debug("channel=%s access token refreshed", channel.name)
        return access

    def _provider(self, grant: StoredGrant) -> ProviderConfig:
        provider = self.providers.get(grant.provider)
        if provider is None:
            raise TokenRefreshError(f"no OAuth provider {grant.provider!r} configured")
        try:
            provider.require_client()
        except InputError as exc:
            # A delivery reason is stored, so it stays English (see i18n).
            problem = english(exc)
            raise TokenRefreshError(
                f"cannot refresh the access token: {problem}"
            ) from None
        return provider

    async def _request(
        self, channel: Channel, provider: ProviderConfig, grant: StoredGrant
    ) -> dict[str, Any]:
        try:
            async with oauth_client(provider) as client:
                token = await client.refresh_token(
                    provider.token_url, refresh_token=grant.refresh_token.reveal()
                )
        except AuthlibOAuthError as exc:
            # RFC 6749 5.2: only invalid_grant says the grant itself is gone.
            if exc.error == "invalid_grant":
                reason = self._end_access(channel, provider, describe_oauth_error(exc))
                raise AccessEnded(reason) from None
            raise TokenRefreshError(
                f"{provider.title} refused to refresh the access token: "
                f"{describe_oauth_error(exc)}"
            ) from None
        except httpx.HTTPError as exc:
            raise TokenRefreshError(
                f"cannot reach {provider.title}'s token endpoint: {type(exc).__name__}"
            ) from None
        return dict(token)

    def _end_access(
        self, channel: Channel, provider: ProviderConfig, detail: str
    ) -> str:
        reason = (
            f"{provider.title} ended access ({detail}); reconnect with "
            f"`mailroom channel connect {provider.key} --owner {channel.owner}`"
        )
        self.forget(channel.id)
        held = disconnect(self.registry, self.outbox, channel.id, reason)
        log.warning(
            "channel=%s disconnected, %d message(s) held: %s",
            channel.name,
            held,
            reason,
        )
        return reason

    def _store_rotated(
        self, channel: Channel, grant: StoredGrant, refresh_token: Secret
    ) -> str:
        # Microsoft may send a new refresh token with each refresh; keep the
        # newest, as RFC 6749 6 allows the server to retire the old one.
        rotated = StoredGrant(grant.provider, grant.email, refresh_token, grant.scope)
        self.registry.update(channel, secret=rotated.to_secret())
        return rotated.fingerprint

    def _keep(
        self, entry: _Entry, access: Secret, lifetime: float, grants: set[str]
    ) -> None:
        entry.access = access
        entry.expires_at = self.clock.now() + timedelta(seconds=lifetime)
        entry.grants = frozenset(grants)


def _present(entry: _Entry) -> Secret:
    assert entry.access is not None
    return entry.access


def _fingerprint(secret: Secret) -> str:
    # A digest to compare grants by; never shown, and no use for refreshing.
    return hashlib.sha256(secret.reveal().encode("utf-8")).hexdigest()


def _fingerprint_of(channel: Channel) -> str:
    try:
        return StoredGrant.from_secret(channel.secret).fingerprint
    except AccessEnded:
        return ""
