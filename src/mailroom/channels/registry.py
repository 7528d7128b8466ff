"""Storing channels: settings in the clear, the secret sealed with the cipher."""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, update

from mailroom.channels.model import Channel, ChannelStatus, Limits, Scope, Security
from mailroom.channels.presets import get_preset
from mailroom.clock import Clock
from mailroom.errors import InputError, NotFoundError
from mailroom.i18n import Text
from mailroom.secrets import Cipher, Secret
from mailroom.store import schema as t
from mailroom.store.database import new_id

NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass(slots=True)
class ChannelSpec:
    """What a person asks for when adding a channel; unset fields use the preset."""

    name: str
    kind: str
    team_id: int | None
    host: str | None = None
    port: int | None = None
    security: Security | None = None
    scope: Scope | None = None
    username: str | None = None
    secret: Secret | None = None
    owner: str | None = None
    domains: list[str] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    limits: dict[str, Any] = field(default_factory=dict)
    ca_bundle: str | None = None
    verify_tls: bool = True
    connections: int = 1


# The settings a failed connection may have been caused by.
CONNECTION_SETTINGS = frozenset(
    {"host", "port", "security", "username", "secret", "ca_bundle", "verify_tls"}
)


class ChannelRegistry:
    def __init__(self, engine: Engine, cipher: Cipher, clock: Clock) -> None:
        self.engine = engine
        self.cipher = cipher
        self.clock = clock

    def add(self, spec: ChannelSpec) -> Channel:
        channel = self._resolve(spec)
        channel.status = ChannelStatus.untested
        self._check_unique(channel)
        self._check_team(channel)
        now = self.clock.now()
        with self.engine.begin() as conn:
            result = conn.execute(
                insert(t.channels).values(
                    **self._row(channel), created_at=now, updated_at=now
                )
            )
        channel.id = new_id(result)
        return channel

    def get(self, channel_id: int) -> Channel:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.channels).where(t.channels.c.id == channel_id)
            ).first()
        if row is None:
            raise NotFoundError(Text("no channel with id {id}", id=channel_id))
        return self._channel(row)

    def find(self, team_id: int | None, name: str) -> Channel:
        query = select(t.channels).where(t.channels.c.name == name)
        if team_id is None:
            query = query.where(t.channels.c.team_id.is_(None))
        else:
            query = query.where(t.channels.c.team_id == team_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(_no_channel(name))
        return self._channel(row)

    def find_anywhere(self, name: str) -> Channel:
        """The one channel of that name, whichever team (or the platform) has it."""
        query = (
            select(t.channels)
            .where(t.channels.c.name == name)
            .where(t.channels.c.status != ChannelStatus.retired)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query.limit(2)).all()
        if not rows:
            raise NotFoundError(_no_channel(name))
        if len(rows) > 1:
            problem = Text(
                "more than one team (or the platform) has a channel {name!r}",
                name=name,
            )
            fix = Text("pass --team to say whose, or --platform for the platform's")
            raise InputError("channel", problem, fix)
        return self._channel(rows[0])

    def list(
        self, team_id: int | None = None, *, everything: bool = False
    ) -> list[Channel]:
        """Channels of a team and the platform's (or every team's); never the
        retired."""
        query = (
            select(t.channels)
            .where(t.channels.c.status != ChannelStatus.retired)
            .order_by(t.channels.c.id)
        )
        if not everything:
            query = query.where(
                (t.channels.c.team_id == team_id) | t.channels.c.team_id.is_(None)
            )
        with self.engine.connect() as conn:
            return [self._channel(row) for row in conn.execute(query)]

    def update(self, channel: Channel, **changes: Any) -> Channel:
        """Change settings.

        A new secret reconnects a disconnected channel; new connection
        settings end a pause, since they may be what caused it.
        """
        updated = replace(channel, **changes)
        reconnects = (
            "secret" in changes and channel.status is ChannelStatus.disconnected
        )
        unpauses = bool(CONNECTION_SETTINGS & changes.keys()) and (
            channel.status is ChannelStatus.paused
        )
        if reconnects or unpauses:
            updated.status = ChannelStatus.connected
            updated.status_reason = ""
            updated.paused_until = None
        self._write(updated)
        return updated

    def set_status(
        self,
        channel_id: int,
        status: ChannelStatus,
        reason: str = "",
        until: datetime | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.channels)
                .where(t.channels.c.id == channel_id)
                .values(
                    status=status,
                    status_reason=reason,
                    paused_until=until,
                    updated_at=self.clock.now(),
                )
            )

    def remove(self, channel: Channel) -> bool:
        """Remove a channel; one that carried mail is retired, not deleted, so
        that its messages keep their history.  Returns whether it was deleted.
        """
        with self.engine.begin() as conn:
            waiting, carried = self._mail_counts(conn, channel.id)
            if waiting:
                raise InputError(
                    "channel",
                    Text(
                        "{name!r} still has {count} message(s) to send",
                        name=channel.name,
                        count=waiting,
                    ),
                    Text(
                        "cancel them with `mailroom message cancel` or "
                        "`mailroom campaign cancel`, or let them go out first"
                    ),
                )
            if carried:
                conn.execute(
                    update(t.channels)
                    .where(t.channels.c.id == channel.id)
                    .values(
                        name=f"{channel.name}.retired-{channel.id}",
                        status=ChannelStatus.retired,
                        updated_at=self.clock.now(),
                    )
                )
                return False
            conn.execute(delete(t.channels).where(t.channels.c.id == channel.id))
            return True

    def _mail_counts(self, conn: Any, channel_id: int) -> tuple[int, int]:
        m = t.messages.c
        waiting = ["queued", "deferred", "held", "sending"]
        rows = conn.execute(
            select(m.state.in_(waiting), func.count())
            .where(m.channel_id == channel_id)
            .group_by(m.state.in_(waiting))
        ).all()
        counts = {bool(key): count for key, count in rows}
        return counts.get(True, 0), counts.get(False, 0)

    # Internals ---------------------------------------------------------------

    def _resolve(self, spec: ChannelSpec) -> Channel:
        preset = get_preset(spec.kind)
        _check_name(spec.name)
        limits = Limits(**{**_limits_dict(preset.limits), **spec.limits})
        channel = Channel(
            id=0,
            team_id=spec.team_id,
            name=spec.name,
            kind=spec.kind,
            scope=spec.scope or preset.scope,
            host=spec.host or preset.host,
            port=spec.port or preset.port,
            security=spec.security or preset.security,
            username=spec.username
            if spec.username is not None
            else preset.username or "",
            owner=spec.owner.lower() if spec.owner else None,
            domains=[d.lower() for d in spec.domains],
            aliases=[a.lower() for a in spec.aliases],
            limits=limits,
            ca_bundle=spec.ca_bundle,
            verify_tls=spec.verify_tls,
            connections=spec.connections,
            secret=spec.secret,
        )
        _check_channel(channel)
        return channel

    def _check_team(self, channel: Channel) -> None:
        """A team channel covers the team's own domains; a mailbox, a member."""
        if channel.team_id is None:
            return
        with self.engine.connect() as conn:
            domains = set(
                conn.scalars(
                    select(t.team_domains.c.domain).where(
                        t.team_domains.c.team_id == channel.team_id
                    )
                )
            )
            members = set(
                conn.scalars(
                    select(t.members.c.address).where(
                        t.members.c.team_id == channel.team_id
                    )
                )
            )
        _check_domains(channel, domains)
        _check_owner(channel, members)

    def _check_unique(self, channel: Channel) -> None:
        try:
            self.find(channel.team_id, channel.name)
        except NotFoundError:
            return
        raise InputError(
            "name",
            Text("a channel named {name!r} exists", name=channel.name),
            Text("choose another name"),
        )

    def _row(self, channel: Channel) -> dict[str, Any]:
        secret = self.cipher.seal(channel.secret) if channel.secret else None
        limits = channel.limits
        return {
            "team_id": channel.team_id,
            "name": channel.name,
            "kind": channel.kind,
            "scope": channel.scope,
            "owner": channel.owner,
            "host": channel.host,
            "port": channel.port,
            "security": channel.security,
            "username": channel.username,
            "secret": secret,
            "domains": channel.domains,
            "aliases": channel.aliases,
            "per_minute": limits.per_minute,
            "per_day": limits.per_day,
            "min_interval": limits.min_interval,
            "max_recipients": limits.max_recipients,
            "ca_bundle": channel.ca_bundle,
            "verify_tls": channel.verify_tls,
            "connections": channel.connections,
            "status": channel.status,
            "status_reason": channel.status_reason,
            "paused_until": channel.paused_until,
        }

    def _write(self, channel: Channel) -> None:
        _check_channel(channel)
        with self.engine.begin() as conn:
            conn.execute(
                update(t.channels)
                .where(t.channels.c.id == channel.id)
                .values(**self._row(channel), updated_at=self.clock.now())
            )

    def _channel(self, row: Any) -> Channel:
        return Channel(
            id=row.id,
            team_id=row.team_id,
            name=row.name,
            kind=row.kind,
            scope=Scope(row.scope),
            host=row.host,
            port=row.port,
            security=Security(row.security),
            username=row.username,
            owner=row.owner,
            domains=list(row.domains or []),
            aliases=list(row.aliases or []),
            limits=Limits(
                row.per_minute, row.per_day, row.min_interval, row.max_recipients
            ),
            ca_bundle=row.ca_bundle,
            verify_tls=row.verify_tls,
            connections=row.connections,
            status=ChannelStatus(row.status),
            status_reason=row.status_reason,
            paused_until=row.paused_until,
            secret=self.cipher.open(row.secret) if row.secret else None,
        )


def _limits_dict(limits: Limits) -> dict[str, Any]:
    return {
        "per_minute": limits.per_minute,
        "per_day": limits.per_day,
        "min_interval": limits.min_interval,
        "max_recipients": limits.max_recipients,
    }


def _check_name(name: str) -> None:
    if not name or not set(name.lower()) <= NAME_CHARS or len(name) > 100:
        raise InputError(
            "name",
            Text("{name!r} is not a valid channel name", name=name),
            Text("use letters, digits, '-', '_' or '.', at most 100 characters"),
        )


def _check_channel(channel: Channel) -> None:
    if not channel.host:
        raise InputError("host", Text("is required for this kind"), Text("pass --host"))
    if not 0 < channel.port < 65536:
        raise InputError(
            "port",
            Text("{port} is out of range", port=channel.port),
            Text("use 1-65535"),
        )
    if channel.scope is Scope.personal and not channel.owner:
        raise InputError(
            "owner",
            Text("a personal (mailbox) channel needs its owner's address"),
            Text("pass --owner you@example.com"),
        )
    if channel.scope is Scope.team and not channel.domains:
        raise InputError(
            "domains",
            Text("a team channel needs the domains it may send from"),
            Text("pass --domain example.com"),
        )
    _check_limits(channel.limits)
    _check_ca_bundle(channel.ca_bundle)
    if channel.connections < 1:
        raise InputError(
            "connections", Text("must be at least 1"), Text("pass --connections 1")
        )


def _check_limits(limits: Limits) -> None:
    for name in ("per_minute", "per_day", "max_recipients"):
        value = getattr(limits, name)
        if value is not None and not 1 <= value <= 1_000_000_000:
            raise InputError(
                name,
                Text("must be a whole number from 1 to 1,000,000,000"),
                Text("or leave it unset"),
            )
    gap = limits.min_interval
    if gap is not None and not (math.isfinite(gap) and 0 <= gap <= 86_400):
        raise InputError(
            "min_interval",
            Text("{gap} is not a number of seconds", gap=gap),
            Text("use 0 to 86400"),
        )


def _check_domains(channel: Channel, team_domains: set[str]) -> None:
    foreign = sorted(set(channel.domains) - team_domains)
    if foreign:
        raise InputError(
            "domains",
            Text(
                "{domains} is not a sending domain of this team",
                domains=", ".join(foreign),
            ),
            Text("add it first with `mailroom team add-domain`"),
        )


def _check_owner(channel: Channel, members: set[str]) -> None:
    if channel.scope is Scope.personal and channel.owner not in members:
        raise InputError(
            "owner",
            Text("{owner} is not a member of this team", owner=channel.owner),
            Text("add the mailbox's owner with `mailroom team add-member`"),
        )


def _check_ca_bundle(path: str | None) -> None:
    if path is None:
        return
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise InputError(
            "ca_bundle",
            Text("{path} does not exist", path=path),
            Text("give a PEM file"),
        ) from None
    except (ssl.SSLError, OSError) as exc:
        raise InputError(
            "ca_bundle",
            Text(
                "{path} holds no usable certificate ({reason})",
                path=path,
                reason=str(exc),
            ),
            Text("give a PEM file"),
        ) from None


def _no_channel(name: str) -> Text:
    return Text(
        "no channel named {name!r}; `mailroom channel list` shows them", name=name
    )
