"""What a delivery channel is, independent of how it is stored."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from mailroom.secrets import Secret


class Security(enum.StrEnum):
    """How the connection is protected (RFC 3207 STARTTLS, RFC 8314 implicit TLS)."""

    starttls = "starttls"
    tls = "tls"
    none = "none"


class Scope(enum.StrEnum):
    # Domain-based credentials: any team member may send from the domains.
    team = "team"
    # Mailbox credentials: only the owner, only as the owner's addresses.
    personal = "personal"
    # The operator's default relay, for teams with no channel of their own.
    platform = "platform"


class ChannelStatus(enum.StrEnum):
    # Added and usable, not yet proven: the first session or `channel test`
    # that gets through makes it connected.
    untested = "untested"
    # Usable: a session got through (connected, secured, logged in).
    connected = "connected"
    # Credentials refused: mail is held until the credentials are updated.
    disconnected = "disconnected"
    # Throttled or out of quota: mail waits until ``paused_until``.
    paused = "paused"
    # Removed by a person; kept, under another name, for its mail's history.
    retired = "retired"


@dataclass(frozen=True, slots=True)
class Limits:
    """A channel's sending limits; ``None`` means no limit of that kind."""

    per_minute: int | None = None
    per_day: int | None = None
    min_interval: float | None = None
    max_recipients: int | None = None

    def describe(self) -> str:
        parts = []
        if self.per_minute:
            parts.append(f"{self.per_minute} messages/minute")
        if self.per_day:
            parts.append(f"{self.per_day} recipients/24h")
        if self.min_interval:
            parts.append(f"{self.min_interval:g}s between messages")
        if self.max_recipients:
            parts.append(f"{self.max_recipients} recipients/message")
        return ", ".join(parts) or "no limits"


@dataclass(slots=True)
class Channel:
    """A configured delivery channel (settings and state, secret unopened)."""

    id: int
    team_id: int | None
    name: str
    kind: str
    scope: Scope
    host: str
    port: int
    security: Security
    username: str
    owner: str | None = None
    domains: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    ca_bundle: str | None = None
    verify_tls: bool = True
    connections: int = 1
    status: ChannelStatus = ChannelStatus.connected
    status_reason: str = ""
    paused_until: datetime | None = None
    secret: Secret | None = None

    def may_send_as(self, address: str) -> bool:
        """Whether ``address`` is a From this channel's scope permits."""
        address = address.lower()
        if self.scope is Scope.personal:
            own = {a.lower() for a in [self.owner or "", *self.aliases]}
            return address in own

        if self.scope is Scope.platform:
            return True

        domain = address.rpartition("@")[2]
        return domain in {d.lower() for d in self.domains}
