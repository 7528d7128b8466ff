"""Statements compiled once and run on the driver's cursor.

Delivery writes a few rows for every message it sends.  SQLAlchemy's
``Connection.execute`` spends more time preparing each call than SQLite takes
to run it, so these statements are compiled once per dialect (by SQLAlchemy,
with its own type processors) and handed to the DBAPI cursor's
``executemany`` inside the caller's SQLAlchemy transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

Processor = Callable[[Any], Any] | None


class Prepared:
    """One statement, compiled for one dialect, with its bind processors."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        self.positional = compiled.positiontup
        self.processors: dict[str, Processor] = {
            name: bind.type.bind_processor(dialect)
            for bind, name in compiled.bind_names.items()
        }
        # Values written into the statement itself (``state == "sending"``).
        self.constants = {
            name: bind.value
            for bind, name in compiled.bind_names.items()
            if not bind.required
        }

    def params(self, row: dict[str, Any]) -> Any:
        values = {
            name: _apply(self.processors.get(name), v)
            for name, v in (self.constants | row).items()
        }
        if self.positional is None:
            return values
        return tuple(values[name] for name in self.positional)


class PreparedSet:
    """Statements prepared lazily, once per dialect."""

    def __init__(self, **statements: ClauseElement) -> None:
        self._statements = statements
        self._prepared: dict[tuple[str, str], Prepared] = {}

    def executemany(
        self, conn: Connection, name: str, rows: Sequence[dict[str, Any]]
    ) -> None:
        prepared = self._get(name, conn.dialect)
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.executemany(prepared.sql, [prepared.params(r) for r in rows])
        finally:
            cursor.close()

    def _get(self, name: str, dialect: Dialect) -> Prepared:
        key = (name, dialect.name)
        if key not in self._prepared:
            self._prepared[key] = Prepared(self._statements[name], dialect)
        return self._prepared[key]


def _apply(processor: Processor, value: Any) -> Any:
    return value if processor is None else processor(value)
