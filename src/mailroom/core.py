"""The core, assembled: one object the edges (CLI, web app, submission server)
hold to reach teams, channels, the outbox and the delivery engine."""

from __future__ import annotations

from mailroom.channels.registry import ChannelRegistry
from mailroom.clock import Clock, SystemClock
from mailroom.config import Settings
from mailroom.delivery.engine import Engine, EngineOptions, Progress, TokenSources
from mailroom.errors import MailroomError
from mailroom.secrets import create_key_file, load_cipher
from mailroom.store.database import is_initialised, open_engine, upgrade
from mailroom.store.outbox import Outbox
from mailroom.teams import Teams


class NotInitialisedError(MailroomError):
    """The data folder or database has not been set up."""


class Mailroom:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = open_engine(settings.database_url)
        if not is_initialised(self.db):
            self.db.dispose()
            raise NotInitialisedError(
                f"no mailroom database at {settings.database_url}; "
                "run `mailroom init` first"
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
