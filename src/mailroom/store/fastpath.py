"""Statements compiled once and run on the driver's cursor.

Delivery writes a few rows for every message it sends.  SQLAlchemy's
``Connection.execute`` spends more time preparing each call than SQLite takes
to run it, so these statements are compiled once per dialect (by SQLAlchemy,
with its own type processors) and handed to the DBAPI cursor's
``executemany`` inside the caller's SQLAlchemy transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


class Prepared:
    """One statement, compiled for one dialect, with its bind processors."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)
        self.sql = compiled.string
        binds = compiled.bind_names
        # Parameter order for a positional driver (SQLite); names otherwise.
        self.names = list(compiled.positiontup or binds.values())
        self.positional = compiled.positiontup is not None
        # Values written into the statement itself (``state == "sending"``).
        self.constants = {n: b.value for b, n in binds.items() if not b.required}
        processors = {n: b.type.bind_processor(dialect) for b, n in binds.items()}
        self.processed = [
            (i, p) for i, n in enumerate(self.names) if (p := processors.get(n))
        ]

    def params(self, rows: Sequence[dict[str, Any]]) -> list[Any]:
        """Driver parameters for ``rows``.

        The rows of one group share many values (the same "now" in every
        row), so each distinct value is converted once.
        """
        converted: dict[tuple[int, Any], Any] = {}
        out: list[Any] = []
        for row in rows:
            values = [row[n] if n in row else self.constants[n] for n in self.names]
            for i, processor in self.processed:
                value = values[i]
                try:
                    values[i] = converted[i, value]
                except KeyError:
                    values[i] = converted[i, value] = processor(value)
                except TypeError:  # unhashable (a JSON value): no sharing
                    values[i] = processor(value)
            if self.positional:
                out.append(tuple(values))
            else:
                out.append(dict(zip(self.names, values, strict=True)))
        return out


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
            cursor.executemany(prepared.sql, prepared.params(rows))
        finally:
            cursor.close()

    def _get(self, name: str, dialect: Dialect) -> Prepared:
        key = (name, dialect.name)
        if key not in self._prepared:
            self._prepared[key] = Prepared(self._statements[name], dialect)
        return self._prepared[key]
