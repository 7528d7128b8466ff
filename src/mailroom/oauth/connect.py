"""Connecting a mailbox: the use case behind `mailroom channel connect`.

``Connector.start`` and ``Connector.finish`` are the two steps for any
receiver of the redirect (the web app keeps the ``Authorization`` between its
two requests); ``connect_loopback`` runs both around the command line's
loopback listener.

Finishing stores the grant as the channel's secret (sealed by the registry)
and, for a channel that exists already, reconnects it: its held mail is queued
again in its original order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass

from mailroom.addresses import parse_address
from mailroom.channels.model import Channel
from mailroom.channels.registry import ChannelSpec
from mailroom.core import Mailroom
from mailroom.errors import InputError, NotFoundError
from mailroom.i18n import Text
from mailroom.oauth.flow import (
    Authorization,
    Callback,
    Grant,
    begin,
    complete,
    confirm_identity,
)
from mailroom.oauth.loopback import LoopbackReceiver
from mailroom.oauth.providers import ProviderConfig
from mailroom.oauth.tokens import StoredGrant, TokenManager

log = logging.getLogger("mailroom.oauth")

DEFAULT_TIMEOUT = 300.0
_NAME_UNSAFE = re.compile(r"[^a-z0-9._-]+")


@dataclass(slots=True)
class ConnectRequest:
    """Which mailbox to connect, for which team; the rest defaults to presets."""

    provider: str
    owner: str
    team_id: int | None
    name: str | None = None
    # Overrides of the preset, for a private server or a test.
    host: str | None = None
    port: int | None = None
    ca_bundle: str | None = None


@dataclass(frozen=True, slots=True)
class Connected:
    channel: Channel
    reconnected: bool
    resumed: int


class Connector:
    def __init__(
        self,
        mr: Mailroom,
        providers: dict[str, ProviderConfig],
        tokens: TokenManager | None = None,
    ) -> None:
        self.mr = mr
        self.providers = providers
        self.tokens = tokens

    def start(self, request: ConnectRequest, redirect_uri: str) -> Authorization:
        """Step one: the consent address for ``redirect_uri``."""
        owner = parse_address(request.owner, "owner").addr_spec.lower()
        return begin(self._provider(request), redirect_uri, login_hint=owner)

    async def finish(
        self,
        request: ConnectRequest,
        authorization: Authorization,
        callback: Callback,
    ) -> Connected:
        """Step two: exchange the code, check the mailbox, store the grant."""
        grant = await complete(authorization, callback)
        confirm_identity(grant, request.owner)
        return self._store(request, grant)

    async def connect_loopback(
        self,
        request: ConnectRequest,
        show: Callable[[str], None],
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> Connected:
        """Both steps around a loopback listener (RFC 8252 7.3).

        ``show`` receives the consent address, to print or open in a browser.
        """
        provider = self._provider(request)
        receiver = LoopbackReceiver(
            redirect_host=provider.redirect_host,
            path=provider.redirect_path,
            timeout=timeout,
        )
        async with receiver:
            authorization = self.start(request, receiver.redirect_uri)
            show(authorization.url)
            callback = await receiver.wait()
        return await self.finish(request, authorization, callback)

    # Internals ---------------------------------------------------------------

    def _provider(self, request: ConnectRequest) -> ProviderConfig:
        provider = self.providers.get(request.provider)
        if provider is None:
            choices = ", ".join(self.providers)
            raise InputError(
                "provider",
                Text("unknown provider {name!r}", name=request.provider),
                Text("use {choices}", choices=choices),
            )
        return provider

    def _store(self, request: ConnectRequest, grant: Grant) -> Connected:
        provider = self._provider(request)
        secret = StoredGrant.from_grant(grant).to_secret()
        existing = self._existing(request, provider)
        if existing is None:
            channel = self.mr.channels.add(self._spec(request, provider, grant))
            self.mr.outbox.add_event(
                "channel-connected", f"{provider.title} mailbox", channel_id=channel.id
            )
            self._remember(channel, grant)
            log.info("channel=%s connected with %s", channel.name, provider.title)
            return Connected(channel, reconnected=False, resumed=0)

        # A new secret reconnects a disconnected (or paused) channel; the mail
        # it held goes out again, oldest first.
        updated = self.mr.update_channel(
            existing, why="new authorization", secret=secret, username=grant.email
        )
        self._remember(updated.channel, grant)
        log.info(
            "channel=%s reconnected, %d message(s) resumed",
            existing.name,
            updated.queued,
        )
        return Connected(updated.channel, reconnected=True, resumed=updated.queued)

    def _existing(
        self, request: ConnectRequest, provider: ProviderConfig
    ) -> Channel | None:
        owner = request.owner.lower()
        if request.name is None:
            mine = (provider.kind, owner, request.team_id)
            for channel in self.mr.channels.list(request.team_id):
                if (channel.kind, channel.owner, channel.team_id) == mine:
                    return channel
            return None
        try:
            channel = self.mr.channels.find(request.team_id, request.name)
        except NotFoundError:
            return None
        if channel.kind != provider.kind or channel.owner != owner:
            raise InputError(
                "name",
                Text(
                    "channel {name!r} is not {owner}'s {provider} mailbox",
                    name=request.name,
                    owner=owner,
                    provider=provider.title,
                ),
                Text("choose another --name"),
            )
        return channel

    def _spec(
        self, request: ConnectRequest, provider: ProviderConfig, grant: Grant
    ) -> ChannelSpec:
        return ChannelSpec(
            name=request.name or default_name(provider, grant.email),
            kind=provider.kind,
            team_id=request.team_id,
            host=request.host,
            port=request.port,
            # XOAUTH2's user is the mailbox (Google's XOAUTH2 format).
            username=grant.email,
            owner=grant.email,
            secret=StoredGrant.from_grant(grant).to_secret(),
            ca_bundle=request.ca_bundle,
        )

    def _remember(self, channel: Channel, grant: Grant) -> None:
        if self.tokens is not None:
            self.tokens.forget(channel.id)
            self.tokens.remember(channel.id, grant)


def default_name(provider: ProviderConfig, email: str) -> str:
    """``gmail-alice-at-example.com``: unique per mailbox, a valid name."""
    name = f"{provider.key}-{email.lower().replace('@', '-at-')}"
    return _NAME_UNSAFE.sub("-", name)[:100]
