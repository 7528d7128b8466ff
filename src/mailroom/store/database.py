"""Opening the database and bringing its schema up to date.

SQLite runs in WAL mode with ``synchronous=NORMAL``: a commit survives the
process being killed (the write is in the operating system's hands) though not
a power cut, which is the durability the outbox promises on one machine.
PostgreSQL is used as is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Table,
    create_engine,
    event,
    inspect,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from mailroom.errors import InputError
from mailroom.i18n import Text

MIGRATIONS = Path(__file__).with_name("migrations")


def open_engine(url: str) -> Engine:
    """An engine for ``url`` with the connection settings the outbox relies on."""
    try:
        if url.startswith("sqlite"):
            return _sqlite_engine(url)
        return create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError) as exc:
        raise InputError(
            "database_url",
            Text(
                "is not a database URL mailroom can use ({error})",
                error=type(exc).__name__,
            ),
            Text("use sqlite:///PATH or postgresql+psycopg://USER@HOST/DB"),
        ) from None


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def upgrade(engine: Engine) -> None:
    """Apply every Alembic migration not yet applied."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def is_initialised(engine: Engine) -> bool:
    return inspect(engine).has_table("alembic_version")


def new_id(result: CursorResult[Any]) -> int:
    """The primary key of the row an INSERT just made."""
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def insert_new(conn: Connection, table: Table, row: dict[str, Any]) -> None:
    """INSERT a row unless its key is taken already (ON CONFLICT DO NOTHING).

    Checking first and inserting after is a race between two workers; this is
    one statement on both SQLite and PostgreSQL.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(postgresql_insert(table).values(row).on_conflict_do_nothing())
    else:
        conn.execute(sqlite_insert(table).values(row).on_conflict_do_nothing())
