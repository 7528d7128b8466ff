"""Settings from the environment: where the data lives and which database."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "MAILROOM_HOME"
DATABASE_ENV = "MAILROOM_DATABASE_URL"


@dataclass(frozen=True, slots=True)
class Settings:
    home: Path
    database_url: str

    @property
    def key_file(self) -> Path:
        return self.home / "secret.key"

    @classmethod
    def from_env(
        cls, home: Path | None = None, database_url: str | None = None
    ) -> Settings:
        home = home or Path(os.environ.get(HOME_ENV) or Path.home() / ".mailroom")
        url = database_url or os.environ.get(DATABASE_ENV)
        return cls(home=home, database_url=url or f"sqlite:///{home / 'mailroom.db'}")
