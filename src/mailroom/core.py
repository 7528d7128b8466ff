"""The core, assembled: one object the edges (CLI, web app, submission server)
hold to reach teams, channels, the outbox and the delivery engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from mailroom.channels.model import Channel, ChannelStatus
from mailroom.channels.registry import ChannelRegistry
from mailroom.channels.status import disconnect, reopen
from mailroom.clock import Clock, SystemClock
from mailroom.config import Settings
from mailroom.delivery.engine import Engine, EngineOptions, Progress, TokenSources
from mailroom.delivery.probe import ProbeReport
from mailroom.delivery.replies import ReplyClass, classify
from mailroom.errors import InputError, MailroomError
from mailroom.i18n import Text
from mailroom.secrets import create_key_file, load_cipher
from mailroom.store.database import is_initialised, open_engine, upgrade
from mailroom.store.outbox import Outbox
from mailroom.teams import Teams


@dataclass(frozen=True, slots=True)
class ChannelUpdate:
    channel: Channel
    # Messages that were held or paused and may now go again.
    queued: int


class NotInitialisedError(MailroomError):
    """The data folder or database has not been set up."""


class DatabaseUnavailableError(MailroomError):
    """The database cannot be reached or opened."""


def _refuse_missing_sqlite_file(settings: Settings) -> None:
    # Opening a SQLite file creates it; a command run before `init` must not
    # leave an empty database behind.
    try:
        url = make_url(settings.database_url)
    except ArgumentError:
        raise InputError(
            "database_url",
            Text("is not a database URL"),
            Text("use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"),
        ) from None
    if url.get_backend_name() != "sqlite" or not url.database:
        return
    if url.database != ":memory:" and not Path(url.database).exists():
        raise NotInitialisedError(
            Text(
                "no mailroom database at {path}; run `mailroom init` first "
                "(or check MAILROOM_HOME and MAILROOM_DATABASE_URL)",
                path=url.database,
            )
        )


def shown_url(url: str) -> str:
    """A database URL fit to print: any password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


class Mailroom:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        _refuse_missing_sqlite_file(settings)
        self.db = open_engine(settings.database_url)
        if not self._initialised():
            self.db.dispose()
            raise NotInitialisedError(
                Text(
                    "no mailroom database at {url}; run `mailroom init` first",
                    url=shown_url(settings.database_url),
                )
            )
        upgrade(self.db)
        self.cipher = load_cipher(settings.key_file)
        self.teams = Teams(self.db, self.clock)
        self.channels = ChannelRegistry(self.db, self.cipher, self.clock)
        self.outbox = Outbox(self.db, self.clock)
        self.token_sources: TokenSources | None = None
        self._install_oauth()

    def _install_oauth(self) -> None:
        # Access tokens for OAuth channels; nothing is contacted until a send.
        from mailroom.oauth import install

        install(self)

    def _initialised(self) -> bool:
        try:
            return is_initialised(self.db)
        except OperationalError as exc:
            # The driver's text may name the server but never the password,
            # which shown_url hides; only the first line is useful.
            first_line = str(exc.orig).splitlines()[0] if exc.orig else ""
            raise DatabaseUnavailableError(
                Text(
                    "cannot open the database at {url}: {problem} (run "
                    "`mailroom init` first, or check MAILROOM_HOME and "
                    "MAILROOM_DATABASE_URL)",
                    url=shown_url(self.settings.database_url),
                    problem=first_line,
                )
            ) from None

    @classmethod
    def init(cls, settings: Settings, clock: Clock | None = None) -> Mailroom:
        """Create the data folder, the secret key (mode 0600) and the schema."""
        settings.home.mkdir(parents=True, exist_ok=True)
        settings.home.chmod(0o700)
        if not settings.key_file.exists():
            create_key_file(settings.key_file)
        engine = open_engine(settings.database_url)
        try:
            upgrade(engine)
        finally:
            engine.dispose()
        return cls(settings, clock)

    def update_channel(
        self,
        channel: Channel,
        *,
        why: str = "its settings were updated",
        **changes: Any,
    ) -> ChannelUpdate:
        """Change a channel's settings, and let its waiting mail go again.

        New credentials for a disconnected channel queue the mail it held; new
        connection settings for a paused one make its waiting mail due now.
        """
        updated = self.channels.update(channel, **changes)
        if updated.status is channel.status:
            return ChannelUpdate(updated, 0)
        return self._reopened(channel, why)

    def apply_test(self, channel: Channel, report: ProbeReport) -> ChannelUpdate:
        """Let what `channel test` found set the channel's status.

        A test that got through proves a new channel, and reconnects a
        disconnected or paused one and lets its mail go; one whose
        credentials were refused disconnects it and holds its mail, as a
        delivery would.  Anything else (a network or certificate problem)
        changes nothing: delivery retries those.
        """
        if report.ok:
            if channel.status is ChannelStatus.connected:
                return ChannelUpdate(channel, 0)
            self.channels.set_status(channel.id, ChannelStatus.connected)
            if channel.status is ChannelStatus.untested:
                return ChannelUpdate(self.channels.get(channel.id), 0)
            return self._reopened(channel, "a channel test got through")

        refused = report.reply is not None and classify(report.reply) is ReplyClass.auth
        if not refused or channel.status is ChannelStatus.disconnected:
            return ChannelUpdate(channel, 0)
        reason = (
            f"a channel test was refused: {report.diagnosis}; store new credentials "
            f"with `mailroom channel update {channel.name} --password`"
        )
        disconnect(self.channels, self.outbox, channel.id, reason)
        return ChannelUpdate(self.channels.get(channel.id), 0)

    def _reopened(self, before: Channel, why: str) -> ChannelUpdate:
        queued = reopen(self.outbox, before, why)
        return ChannelUpdate(self.channels.get(before.id), queued)

    def delivery(
        self,
        options: EngineOptions | None = None,
        on_outcome: Progress | None = None,
    ) -> Engine:
        return Engine(
            self.outbox,
            self.channels,
            self.clock,
            options,
            token_sources=self.token_sources,
            on_outcome=on_outcome,
        )

    def close(self) -> None:
        self.db.dispose()
