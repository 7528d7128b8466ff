"""Shared fixtures: a core on SQLite and on PostgreSQL, a fake clock, a team."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from mailroom.clock import FakeClock
from mailroom.config import Settings
from mailroom.core import Mailroom
from mailroom.teams import Team

pytest_plugins = ["tests.support.plugin", "tests.support.postfix_plugin"]

POSTGRES_URL = os.environ.get(
    "MAILROOM_TEST_POSTGRES_URL",
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same tests run on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mailroom.db'}"
        return
    yield from _postgres_schema()


def _postgres_schema() -> Iterator[str]:
    # A schema per test keeps tests apart without creating databases.
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def mr(tmp_path: Path, database_url: str, clock: FakeClock) -> Iterator[Mailroom]:
    home = tmp_path / "home"
    core = Mailroom.init(Settings(home=home, database_url=database_url), clock)
    yield core
    core.close()


@pytest.fixture
def sqlite_mr(tmp_path: Path, clock: FakeClock) -> Iterator[Mailroom]:
    """A core on SQLite only, for tests about real-time behaviour."""
    home = tmp_path / "home"
    url = f"sqlite:///{tmp_path / 'mailroom.db'}"
    core = Mailroom.init(Settings(home=home, database_url=url), clock)
    yield core
    core.close()


@pytest.fixture
def team(mr: Mailroom) -> Team:
    return mr.teams.add(
        "acme", ["example.com"], ["alice@example.com", "bob@example.com"]
    )
